"""The one queue runner (``shared.jobs.common``) every queue trigger uses: decode, parse into the
typed message, run with correlation ids, map errors, and record a poison message on its link."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
import pytest

from shared.context import Services
from shared.domain import Booking, BookingStatus, Customer, LinkKey
from shared.errors import BadRequest, Throttled, TransientError
from shared.jobs.common import QueueJob, run_message, run_poison
from shared.messages import (
    SYNC_QUEUE,
    Backfill,
    BookingChange,
    ReplayLink,
    RestoreEvent,
    SyncMessage,
    parse_booking_message,
)
from shared.repos.links import LinkRepository
from shared.storage.memory import MemoryQueue, MemoryStorage
from tests.support.outlook_world import KEY, World, make_world


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> World:
    import shared.wiring as wiring

    w = await make_world(MemoryStorage())
    monkeypatch.setattr(wiring, "get_services", lambda: w.services)
    return w


def _job(fail: BaseException | None, ran: list[SyncMessage]) -> QueueJob[SyncMessage]:
    async def run(services: Services, message: SyncMessage, msg: func.QueueMessage) -> None:
        ran.append(message)
        if fail is not None:
            raise fail

    return QueueJob(SYNC_QUEUE, SyncMessage.parse, lambda m: m.key, run)


class _Delivered(func.QueueMessage):
    """A message as the host hands it over on its ``dequeue_count``-th delivery."""

    def __init__(self, body: bytes, dequeue_count: int) -> None:
        super().__init__(body=body)
        self._count = dequeue_count

    @property
    def dequeue_count(self) -> int:
        return self._count


def _msg(body: Any, dequeue_count: int = 1) -> func.QueueMessage:
    return _Delivered(body if isinstance(body, bytes) else json.dumps(body).encode(), dequeue_count)


def _queued(world: World) -> list[tuple[float, dict[str, Any]]]:
    """(seconds until visible, body) of each message on the sync queue."""
    queue = world.services.storage.queue(SYNC_QUEUE)
    assert isinstance(queue, MemoryQueue)
    now = time.monotonic()
    return [(at - now, json.loads(text)) for at, text in queue.messages]


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", {"reason": "poll"}, {"link": "no-separator"},
                                  {"link": str(KEY), "reason": "no such reason"}])
async def test_a_message_that_does_not_parse_is_dropped_unrun(world: World, body: Any) -> None:
    ran: list[SyncMessage] = []
    await run_message(_job(None, ran), _msg(body))
    assert ran == []


async def test_a_parsed_message_runs_once(world: World) -> None:
    ran: list[SyncMessage] = []
    await run_message(_job(None, ran), _msg({"link": str(KEY), "full": True}))
    assert [(m.key, m.full) for m in ran] == [(KEY, True)]


async def test_bad_request_from_the_run_drops_the_message(world: World) -> None:
    ran: list[SyncMessage] = []
    await run_message(_job(BadRequest("cannot be fixed by a retry"), ran), _msg({"link": str(KEY)}))
    assert len(ran) == 1 and _queued(world) == []


async def test_throttling_requeues_the_same_body_and_the_invocation_succeeds(world: World) -> None:
    body = {"link": str(KEY), "reason": "poll", "full": False, "observed_at": 0.0}
    await run_message(_job(Throttled("429", retry_after=30), []), _msg(body, dequeue_count=3))
    [(delay, queued)] = _queued(world)
    assert queued == body and 25 < delay <= 30


async def test_throttling_without_retry_after_backs_off_by_attempt(world: World) -> None:
    await run_message(_job(Throttled("429"), []), _msg({"link": str(KEY)}, dequeue_count=4))
    [(delay, _)] = _queued(world)
    assert 2 ** 4 / 2 - 1 <= delay <= 2 ** 4


@pytest.mark.parametrize("exc", [TransientError("5xx"), RuntimeError("a bug")], ids=lambda e: type(e).__name__)
async def test_everything_else_is_raised_for_the_hosts_retry(world: World, exc: BaseException) -> None:
    with pytest.raises(type(exc)):
        await run_message(_job(exc, []), _msg({"link": str(KEY)}))


async def test_a_poison_message_is_recorded_on_its_link(world: World) -> None:
    await run_poison(_job(None, []), _msg({"link": str(KEY)}, dequeue_count=5))
    link = await LinkRepository(world.services.storage).require(KEY)
    assert link.last_error.startswith("gave_up: link-sync: ")


async def test_an_unreadable_poison_message_changes_no_link(world: World) -> None:
    await run_poison(_job(None, []), _msg(b"{broken"))
    link = await LinkRepository(world.services.storage).require(KEY)
    assert link.last_error == ""


BOOKING = Booking(id="b-1", provider_id="p", resource_id="r", version=3,
                  start=datetime(2026, 12, 7, 9, tzinfo=UTC), end=datetime(2026, 12, 7, 10, tzinfo=UTC),
                  status=BookingStatus.CONFIRMED, service_name="Massage", time_zone="Europe/Berlin",
                  customer=Customer("Eva", "eva@example.com", ""))


@pytest.mark.parametrize("message", [
    BookingChange(BOOKING, delivery="d-1", type="booking.updated", received_at=1700000000.5),
    ReplayLink(LinkKey("p", "r")), RestoreEvent(LinkKey("p", "r"), "b-1", "AAMk="), Backfill(LinkKey("p", "r")),
], ids=lambda m: type(m).__name__)
def test_booking_messages_survive_the_queue(message: Any) -> None:
    assert parse_booking_message(json.loads(json.dumps(message.to_json()))) == message
    assert message.key == LinkKey("p", "r")


@pytest.mark.parametrize("data", [{}, {"replay_link": "x"}, {"backfill": "|r"}, {"restore_event": "x"},
                                  {"restore_event": {"link": "p|r"}}, {"booking": {"id": "b"}},
                                  {"booking": "x"}])
def test_a_booking_message_of_no_known_shape_is_a_bad_request(data: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        parse_booking_message(data)
