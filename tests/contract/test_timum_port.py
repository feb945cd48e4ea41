"""One contract for ``TimumPort``, run against the in-memory twin and against the HTTP adapter talking
to the sandbox timum; then what only the HTTP adapter has to get right (mapping of transport failures,
Retry-After forms, secrecy of the API key), on ``httpx.MockTransport``."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from devtools.sandbox.timum.harness import RunningTimum, serve_timum
from shared.adapters.timum_http import TimumHttpAdapter, parse_retry_after
from shared.adapters.timum_memory import MemoryTimum
from shared.domain import BlockedSlot, Booking, BookingStatus, Customer
from shared.errors import (
    AuthError,
    BadRequest,
    Conflict,
    NotFound,
    RemoteGone,
    SyncError,
    Throttled,
    TransientError,
)
from shared.ports import TimumPort
from shared.signing import SIGNATURE_HEADER, verify_webhook

BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def slot(ext: str, start: datetime = T0, minutes: int = 60, **kw: Any) -> BlockedSlot:
    return BlockedSlot(external_id=ext, start=start, end=start + timedelta(minutes=minutes), **kw)


@dataclass
class Harness:
    """What a contract test needs besides the port: set-up behind timum's back, and fault switches."""

    port: TimumPort
    provider_id: str
    add_resource: Callable[[str], str]
    remove_resource: Callable[[str], None]
    archive_resource: Callable[[str], None]
    add_booking: Callable[[str, datetime, datetime, str], str]
    fail_next: Callable[[int, float | None], None]        # HTTP status, Retry-After
    received_statuses: Callable[[], list[dict[str, Any]]]
    bad_key_port: Callable[[], TimumPort]
    closers: list[TimumPort] = field(default_factory=list)


@pytest.fixture(scope="module")
def running_timum() -> Iterator[RunningTimum]:
    with serve_timum() as running:
        yield running


def _memory_harness() -> Harness:
    provider = "prov-" + uuid.uuid4().hex[:8]
    twin = MemoryTimum(providers=[provider])

    def add_booking(rid: str, start: datetime, end: datetime, status: str) -> str:
        bid = "bk_" + uuid.uuid4().hex[:10]
        twin.add_booking(Booking(id=bid, provider_id=provider, resource_id=rid, version=1, start=start, end=end,
                                 status=BookingStatus(status), service_name="Manuelle Therapie",
                                 customer=Customer("Jürgen Schäfer"), time_zone="Europe/Berlin"))
        return bid

    def fail_next(status: int, retry_after: float | None) -> None:
        error: SyncError = (Throttled("timum asks to slow down", retry_after=retry_after) if status == 429
                            else TransientError(f"timum failed: HTTP {status}"))
        twin.fail_next(error)

    def bad_key_port() -> TimumPort:
        twin.api_key_valid = False
        return twin

    return Harness(
        port=twin, provider_id=provider, add_resource=lambda name: twin.add_resource(provider, name),
        remove_resource=lambda rid: twin.remove_resource(provider, rid),
        archive_resource=lambda rid: twin.archive_resource(provider, rid), add_booking=add_booking,
        fail_next=fail_next, received_statuses=lambda: list(twin.status_webhooks), bad_key_port=bad_key_port)


def _http_harness(running: RunningTimum) -> Harness:
    state, cfg = running.state, running.config
    provider = "prov-" + uuid.uuid4().hex[:8]
    state.add_provider(provider, "Physiopraxis Sonnenschein")

    def adapter(api_key: str = cfg.timum_api_key, **kw: Any) -> TimumHttpAdapter:
        # A small page size makes every list in the suite walk the cursor.
        return TimumHttpAdapter(running.api_base_url, api_key, cfg.timum_webhook_secrets, running.status_webhook_url,
                                client=httpx.AsyncClient(timeout=5.0), page_size=2, **kw)

    def add_booking(rid: str, start: datetime, end: datetime, status: str) -> str:
        made = state.make_booking(provider, rid, start, end, service_name="Manuelle Therapie",
                                  customer=Customer("Jürgen Schäfer"), force=True, emit=False)
        if status == "cancelled":
            state.cancel_booking(made.id, emit=False)
        return made.id

    def fail_next(status: int, retry_after: float | None) -> None:
        state.inject_fault(status, count=1, retry_after=retry_after, path_contains=f"/providers/{provider}/")

    def received() -> list[dict[str, Any]]:
        return [r.payload for r in state.list_received_statuses() if r.provider_id == provider]

    harness = Harness(
        port=adapter(), provider_id=provider,
        add_resource=lambda name: state.create_resource(provider, name).id,
        remove_resource=lambda rid: state.delete_resource(provider, rid),
        archive_resource=lambda rid: state.archive_resource(provider, rid), add_booking=add_booking,
        fail_next=fail_next, received_statuses=received, bad_key_port=lambda: adapter("not-the-key"))
    original = harness.bad_key_port

    def tracked_bad_key_port() -> TimumPort:
        port = original()
        harness.closers.append(port)
        return port

    harness.bad_key_port = tracked_bad_key_port
    return harness


@pytest.fixture(params=["memory", "http"])
async def timum(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        yield _memory_harness()
        return
    running: RunningTimum = request.getfixturevalue("running_timum")
    harness = _http_harness(running)
    try:
        yield harness
    finally:
        running.state.clear_faults()
        for port in [harness.port, *harness.closers]:
            await port.close()


class TestTimumPortContract:
    async def test_create_and_read_resource(self, timum: Harness) -> None:
        rid = await timum.port.create_resource(timum.provider_id, "Dr. Anna Weber")
        assert rid
        found = await timum.port.get_resource(timum.provider_id, rid)
        assert found is not None
        assert (found["id"], found["name"], found["timeZone"]) == (rid, "Dr. Anna Weber", "Europe/Berlin")

    async def test_unknown_resource_reads_as_none(self, timum: Harness) -> None:
        assert await timum.port.get_resource(timum.provider_id, "res-missing") is None
        assert await timum.port.get_resource("prov-missing", "res-missing") is None

    async def test_create_resource_for_unknown_provider_is_not_found(self, timum: Harness) -> None:
        with pytest.raises(NotFound):
            await timum.port.create_resource("prov-" + uuid.uuid4().hex, "Behandlungsraum 1")

    async def test_create_resource_without_name_is_refused(self, timum: Harness) -> None:
        with pytest.raises(BadRequest) as caught:
            await timum.port.create_resource(timum.provider_id, "   ")
        assert caught.value.field == "name"

    async def test_put_is_an_idempotent_upsert(self, timum: Harness) -> None:
        rid = timum.add_resource("Dr. Anna Weber")
        await timum.port.put_blocked_slot(timum.provider_id, rid, slot("ol-a", title="Outlook"))
        await timum.port.put_blocked_slot(timum.provider_id, rid, slot("ol-a", title="Outlook"))
        assert await timum.port.list_blocked_slots(timum.provider_id, rid) == [slot("ol-a", title="Outlook")]
        moved = slot("ol-a", T0 + timedelta(hours=3), 30, all_day=False, title="")
        await timum.port.put_blocked_slot(timum.provider_id, rid, moved)
        assert await timum.port.list_blocked_slots(timum.provider_id, rid) == [moved]

    async def test_times_come_back_as_the_same_instants_in_utc(self, timum: Harness) -> None:
        rid = timum.add_resource("Dr. Anna Weber")
        local = datetime(2026, 12, 24, 0, 0, tzinfo=BERLIN)
        day = BlockedSlot("ol-day", local, local + timedelta(days=1), all_day=True)
        await timum.port.put_blocked_slot(timum.provider_id, rid, day)
        [back] = await timum.port.list_blocked_slots(timum.provider_id, rid)
        assert back.start == local and back.end == local + timedelta(days=1) and back.all_day
        assert back.start.utcoffset() == timedelta(0)

    async def test_list_filters_by_source_and_orders_by_start(self, timum: Harness) -> None:
        rid = timum.add_resource("Behandlungsraum 1")
        for ext, hours, source in [("ol-3", 3, "outlook"), ("ics-1", 1, "ics"), ("ol-1", 1, "outlook"),
                                   ("ol-2", 2, "outlook"), ("ics-2", 5, "ics")]:
            await timum.port.put_blocked_slot(timum.provider_id, rid, slot(ext, T0 + timedelta(hours=hours),
                                                                           source=source))
        everything = await timum.port.list_blocked_slots(timum.provider_id, rid)
        assert [s.external_id for s in everything] == ["ics-1", "ol-1", "ol-2", "ol-3", "ics-2"]
        outlook = await timum.port.list_blocked_slots(timum.provider_id, rid, source="outlook")
        assert [s.external_id for s in outlook] == ["ol-1", "ol-2", "ol-3"]
        ics = await timum.port.list_blocked_slots(timum.provider_id, rid, source="ics")
        assert [s.external_id for s in ics] == ["ics-1", "ics-2"]
        with pytest.raises(BadRequest) as caught:
            await timum.port.list_blocked_slots(timum.provider_id, rid, source="google")
        assert caught.value.field == "source"

    async def test_delete_removes_and_missing_is_done(self, timum: Harness) -> None:
        rid = timum.add_resource("Dr. Anna Weber")
        await timum.port.put_blocked_slot(timum.provider_id, rid, slot("ol-a"))
        await timum.port.put_blocked_slot(timum.provider_id, rid, slot("ol-b", T0 + timedelta(hours=2)))
        await timum.port.delete_blocked_slot(timum.provider_id, rid, "ol-a")
        await timum.port.delete_blocked_slot(timum.provider_id, rid, "ol-a")
        await timum.port.delete_blocked_slot(timum.provider_id, rid, "ol-never-existed")
        await timum.port.delete_blocked_slot(timum.provider_id, "res-missing", "ol-a")
        assert [s.external_id for s in await timum.port.list_blocked_slots(timum.provider_id, rid)] == ["ol-b"]

    async def test_resource_deleted_in_timum_is_remote_gone(self, timum: Harness) -> None:
        rid = timum.add_resource("Dr. Anna Weber")
        timum.remove_resource(rid)
        with pytest.raises(RemoteGone):
            await timum.port.put_blocked_slot(timum.provider_id, rid, slot("ol-a"))
        with pytest.raises(RemoteGone):
            await timum.port.list_blocked_slots(timum.provider_id, rid)

    async def test_archived_resource_conflicts_and_keeps_its_slots(self, timum: Harness) -> None:
        rid = timum.add_resource("Behandlungsraum 1")
        await timum.port.put_blocked_slot(timum.provider_id, rid, slot("ol-a"))
        timum.archive_resource(rid)
        with pytest.raises(Conflict):
            await timum.port.put_blocked_slot(timum.provider_id, rid, slot("ol-b"))
        assert [s.external_id for s in await timum.port.list_blocked_slots(timum.provider_id, rid)] == ["ol-a"]
        found = await timum.port.get_resource(timum.provider_id, rid)
        assert found is not None and found["archived"] is True

    @pytest.mark.parametrize(("bad", "field_name"), [
        (BlockedSlot("ol-a", T0, T0), "end"),
        (BlockedSlot("ol-a", T0, T0 - timedelta(minutes=5)), "end"),
        (BlockedSlot("ol-a", T0, T0 + timedelta(hours=1), source="google"), "source"),
        (BlockedSlot("ol-a", T0, T0 + timedelta(hours=1), title="x" * 256), "title"),
        (BlockedSlot("ol a/b", T0, T0 + timedelta(hours=1)), "externalId"),
        (BlockedSlot("ol-a", datetime(2026, 12, 1, 8, 0), datetime(2026, 12, 1, 9, 0)), "start"),
    ])
    async def test_invalid_slot_is_refused_and_changes_nothing(self, timum: Harness, bad: BlockedSlot,
                                                              field_name: str) -> None:
        rid = timum.add_resource("Dr. Anna Weber")
        with pytest.raises(BadRequest) as caught:
            await timum.port.put_blocked_slot(timum.provider_id, rid, bad)
        assert caught.value.field == field_name
        assert await timum.port.list_blocked_slots(timum.provider_id, rid) == []

    async def test_429_is_throttled_with_retry_after(self, timum: Harness) -> None:
        rid = timum.add_resource("Dr. Anna Weber")
        timum.fail_next(429, 2.5)
        with pytest.raises(Throttled) as caught:
            await timum.port.put_blocked_slot(timum.provider_id, rid, slot("ol-a"))
        assert caught.value.retry_after == 2.5
        await timum.port.put_blocked_slot(timum.provider_id, rid, slot("ol-a"))
        assert len(await timum.port.list_blocked_slots(timum.provider_id, rid)) == 1

    @pytest.mark.parametrize("status", [500, 502, 503])
    async def test_5xx_is_transient(self, timum: Harness, status: int) -> None:
        rid = timum.add_resource("Dr. Anna Weber")
        timum.fail_next(status, None)
        with pytest.raises(TransientError) as caught:
            await timum.port.list_blocked_slots(timum.provider_id, rid)
        assert not isinstance(caught.value, Throttled)

    async def test_wrong_api_key_is_an_auth_error(self, timum: Harness) -> None:
        rid = timum.add_resource("Dr. Anna Weber")
        port = timum.bad_key_port()
        with pytest.raises(AuthError):
            await port.put_blocked_slot(timum.provider_id, rid, slot("ol-a"))
        with pytest.raises(AuthError):
            await port.get_resource(timum.provider_id, rid)

    async def test_link_status_reaches_timum_complete(self, timum: Harness) -> None:
        rid = timum.add_resource("Dr. Anna Weber")
        await timum.port.send_link_status({"providerId": timum.provider_id, "resourceId": rid,
                                           "status": "needs_reconnect", "mode": "delegated",
                                           "reason": "Die Anmeldung bei Microsoft ist abgelaufen.",
                                           "calendarName": "Kalender"})
        event: dict[str, Any] = {
            "id": "evt-" + uuid.uuid4().hex, "type": "link.status_changed", "occurredAt": "2026-12-01T08:00:00Z",
            "data": {"providerId": timum.provider_id, "resourceId": rid, "status": "ok", "mode": "ics"}}
        await timum.port.send_link_status(event)
        first, second = timum.received_statuses()
        assert first["type"] == "link.status_changed" and first["id"] and first["occurredAt"]
        assert first["data"]["status"] == "needs_reconnect"
        assert first["data"]["reason"] == "Die Anmeldung bei Microsoft ist abgelaufen."
        assert (second["id"], second["occurredAt"]) == (event["id"], event["occurredAt"])
        assert second["data"] == {**event["data"], "reason": "", "calendarName": ""}

    @pytest.mark.parametrize(("data", "field_name"), [
        ({"status": "broken", "mode": "delegated"}, "data.status"),
        ({"status": "ok", "mode": "carrier-pigeon"}, "data.mode"),
        ({"status": "ok", "mode": "ics", "resourceId": ""}, "data.resourceId"),
    ])
    async def test_malformed_link_status_is_refused_before_sending(self, timum: Harness, data: dict[str, Any],
                                                                  field_name: str) -> None:
        with pytest.raises(BadRequest) as caught:
            await timum.port.send_link_status({"providerId": timum.provider_id, "resourceId": "res-x", **data})
        assert caught.value.field == field_name
        assert timum.received_statuses() == []

    async def test_list_bookings_in_a_window(self, timum: Harness) -> None:
        rid = timum.add_resource("Dr. Anna Weber")
        day = datetime(2026, 12, 2, 9, 0, tzinfo=BERLIN)
        ids = [timum.add_booking(rid, day + timedelta(hours=h), day + timedelta(hours=h, minutes=30), status)
               for h, status in [(0, "confirmed"), (1, "cancelled"), (2, "confirmed"), (30, "confirmed")]]
        port = timum.port
        assert isinstance(port, MemoryTimum | TimumHttpAdapter)
        found = await port.list_bookings(timum.provider_id, rid, start=day, end=day + timedelta(hours=12))
        assert [b.id for b in found] == ids[:3]
        assert [b.status for b in found] == [BookingStatus.CONFIRMED, BookingStatus.CANCELLED,
                                             BookingStatus.CONFIRMED]
        assert found[0].start == day and found[0].service_name == "Manuelle Therapie"
        assert found[0].customer.name == "Jürgen Schäfer"


# --- what only the HTTP adapter must get right ----------------------------------------------------------

API = "https://timum.example/api"
STATUS_URL = "https://timum.example/hooks/link-status"
KEY = "key-8f2b5c7d1e"


def mock_adapter(handler: Callable[[httpx.Request], httpx.Response], *, status_url: str = STATUS_URL,
                 clock: Callable[[], float] = time.time) -> TimumHttpAdapter:
    return TimumHttpAdapter(API, KEY, ["whsec-new", "whsec-old"], status_url,
                            client=httpx.AsyncClient(transport=httpx.MockTransport(handler)), clock=clock)


async def test_sends_the_key_as_bearer_only_to_the_api() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/link-status"):
            return httpx.Response(202)
        return httpx.Response(200, json={"id": "res-1", "name": "Raum", "timeZone": "Europe/Berlin"})

    adapter = mock_adapter(handler)
    await adapter.get_resource("prov 1", "res/1")
    await adapter.send_link_status({"providerId": "p", "resourceId": "r", "status": "ok", "mode": "delegated"})
    api_call, status_call = seen
    assert api_call.headers["Authorization"] == f"Bearer {KEY}"
    assert api_call.url.raw_path == b"/api/v1/providers/prov%201/resources/res%2F1"
    assert "Authorization" not in status_call.headers
    assert KEY not in repr(adapter)
    await adapter.close()


async def test_status_webhook_is_signed_with_the_first_secret_only() -> None:
    captured: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        captured.append(request)
        return httpx.Response(202)

    adapter = mock_adapter(handler, clock=lambda: 1_767_225_600.0)
    await adapter.send_link_status({"providerId": "p", "resourceId": "r", "status": "error", "mode": "app_only",
                                    "reason": "Kalender nicht gefunden"})
    [request] = captured
    body = request.content
    header = request.headers[SIGNATURE_HEADER]
    assert header.startswith("t=1767225600,v1=") and header.count("v1=") == 1
    assert verify_webhook(body, header, ["whsec-new"], now=1_767_225_600) == 1_767_225_600
    with pytest.raises(BadRequest):
        verify_webhook(body, header, ["whsec-old"], now=1_767_225_600)
    event = json.loads(body)
    assert request.headers["Timum-Delivery"] == event["id"]
    assert event["occurredAt"] == "2026-01-01T00:00:00Z"
    await adapter.close()


async def test_empty_status_url_sends_nothing() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    adapter = mock_adapter(handler, status_url="")
    await adapter.send_link_status({"providerId": "p", "resourceId": "r", "status": "ok", "mode": "delegated"})
    await adapter.close()


@pytest.mark.parametrize(("status", "expected"), [
    (401, AuthError), (403, AuthError), (409, Conflict), (422, BadRequest), (400, BadRequest),
    (500, TransientError), (429, Throttled),
])
async def test_status_webhook_answers_map_to_the_error_tree(status: int, expected: type[SyncError]) -> None:
    adapter = mock_adapter(lambda request: httpx.Response(status))
    with pytest.raises(expected):
        await adapter.send_link_status({"providerId": "p", "resourceId": "r", "status": "ok", "mode": "ics"})
    await adapter.close()


@pytest.mark.parametrize("exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
                                 httpx.RemoteProtocolError("cut")])
async def test_network_failures_are_transient(exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    adapter = mock_adapter(handler)
    with pytest.raises(TransientError) as caught:
        await adapter.put_blocked_slot("p", "r", slot("ol-a"))
    assert caught.value.__cause__ is exc
    await adapter.close()


def test_retry_after_forms() -> None:
    now = 1_767_225_600.0
    assert parse_retry_after("3", now=now) == 3.0
    assert parse_retry_after("0.25", now=now) == 0.25
    assert parse_retry_after(format_datetime(datetime.fromtimestamp(now + 90, UTC), usegmt=True), now=now) == 90.0
    assert parse_retry_after(format_datetime(datetime.fromtimestamp(now - 90, UTC), usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None, now=now) is None


async def test_503_with_retry_after_is_throttled_and_without_is_transient() -> None:
    answers = iter([httpx.Response(503, headers={"Retry-After": "7"}), httpx.Response(503)])
    adapter = mock_adapter(lambda request: next(answers))
    with pytest.raises(Throttled) as caught:
        await adapter.delete_blocked_slot("p", "r", "ol-a")
    assert caught.value.retry_after == 7.0
    with pytest.raises(TransientError) as plain:
        await adapter.delete_blocked_slot("p", "r", "ol-a")
    assert not isinstance(plain.value, Throttled)
    await adapter.close()


async def test_key_never_appears_in_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    answers = iter([httpx.Response(401, json={"detail": "nope", "code": "unauthorized"}),
                    httpx.Response(500, text="boom"), httpx.Response(422, json={"detail": "bad", "field": "end"})])
    adapter = mock_adapter(lambda request: next(answers))
    messages = []
    for _ in range(3):
        with pytest.raises(SyncError) as caught:
            await adapter.put_blocked_slot("p", "r", slot("ol-a"))
        messages.append(str(caught.value))
    assert all(KEY not in m for m in messages)
    assert KEY not in caplog.text
    await adapter.close()


async def test_malformed_answers_are_transient() -> None:
    answers = iter([httpx.Response(200, text="<html>"), httpx.Response(200, json={"items": "x"}),
                    httpx.Response(200, json={"items": [{"externalId": "a"}], "nextCursor": None}),
                    httpx.Response(200, json={"items": [], "nextCursor": "c1"}),
                    httpx.Response(200, json={"items": [], "nextCursor": "c1"})])
    adapter = mock_adapter(lambda request: next(answers))
    for _ in range(4):
        with pytest.raises(TransientError):
            await adapter.list_blocked_slots("p", "r")
    await adapter.close()


async def test_owned_client_is_closed_and_injected_one_is_left_open() -> None:
    own = TimumHttpAdapter(API, KEY, ["s"], "")
    await own.close()
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(204)))
    injected = TimumHttpAdapter(API, KEY, ["s"], "", client=client)
    await injected.close()
    assert not client.is_closed
    await client.aclose()


async def test_twin_failure_injection_targets_one_operation() -> None:
    twin = MemoryTimum()
    rid = twin.add_resource("p", "Raum")
    twin.fail_next(TransientError("down"), op="put_blocked_slot", times=2)
    assert await twin.list_blocked_slots("p", rid) == []
    for _ in range(2):
        with pytest.raises(TransientError):
            await twin.put_blocked_slot("p", rid, slot("ol-a"))
    await twin.put_blocked_slot("p", rid, slot("ol-a"))
    assert twin.writes() == 1 and twin.slot_count() == 1


# --- booking conflict reports (an Outlook edit of a booking's event) ----------------------------------

CONFLICT = {"id": "bc-1", "occurredAt": "2026-12-01T08:00:00Z",
            "data": {"providerId": "p", "resourceId": "r", "bookingId": "bk-1", "change": "edited",
                     "outlookStart": "2026-12-01T11:00:00Z", "outlookEnd": "2026-12-01T11:30:00Z"}}


async def test_booking_conflict_reaches_the_sandbox_and_twin_alike(running_timum: RunningTimum) -> None:
    twin = MemoryTimum()
    await twin.send_booking_conflict(CONFLICT)
    await twin.send_booking_conflict(CONFLICT)  # a repeated report: timum keeps one
    assert twin.booking_conflicts == [{**CONFLICT, "type": "booking.outlook_conflict"}]
    running = running_timum
    cfg = running.config
    adapter = TimumHttpAdapter(running.api_base_url, cfg.timum_api_key, cfg.timum_webhook_secrets,
                               running.status_webhook_url, client=httpx.AsyncClient(timeout=5.0))
    try:
        await adapter.send_booking_conflict(CONFLICT)
        await adapter.send_booking_conflict(CONFLICT)
    finally:
        await adapter.close()
    assert [c for c in running.state.list_booking_conflicts() if c["id"] == "bc-1"] == twin.booking_conflicts


@pytest.mark.parametrize(("change", "field_name"), [
    ({"change": "moved"}, "data.change"), ({"bookingId": ""}, "data.bookingId"),
    ({"outlookStart": 5}, "data.outlookStart"),
])
async def test_malformed_booking_conflict_is_refused_before_sending(change: dict[str, Any], field_name: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    for port in (MemoryTimum(), mock_adapter(handler)):
        with pytest.raises(BadRequest) as caught:
            await port.send_booking_conflict({**CONFLICT, "data": {**CONFLICT["data"], **change}})  # type: ignore[dict-item]
        assert caught.value.field == field_name
        await port.close()


# --- many slot writes at once (writeBlockedSlots) ------------------------------------------------------------

class TestSlotBatchContract:
    async def test_upserts_and_deletes_in_one_call_are_idempotent(self, timum: Harness) -> None:
        rid = timum.add_resource("Dr. Anna Weber")
        await timum.port.put_blocked_slot(timum.provider_id, rid, slot("ol-old"))
        writes: list[BlockedSlot | str] = [slot(f"ol-{n}", T0 + timedelta(hours=n)) for n in range(250)]
        writes += ["ol-old", "ol-never-existed"]
        for _ in range(2):
            assert await timum.port.write_blocked_slots(timum.provider_id, rid, writes) == [None] * 252
        listed = await timum.port.list_blocked_slots(timum.provider_id, rid)
        assert [s.external_id for s in listed] == [f"ol-{n}" for n in range(250)]
        assert listed[7] == slot("ol-7", T0 + timedelta(hours=7))

    async def test_one_bad_slot_never_fails_the_others(self, timum: Harness) -> None:
        rid = timum.add_resource("Dr. Anna Weber")
        writes: list[BlockedSlot | str] = [
            slot("ol-a"), BlockedSlot("ol-b", T0, T0), slot("ol-c", source="google"),
            BlockedSlot("ol d/e", T0, T0 + timedelta(hours=1)),
            BlockedSlot("ol-f", datetime(2026, 12, 1, 8, 0), datetime(2026, 12, 1, 9, 0)),
            slot("ol-g", title="x" * 256), slot("ol-h", T0 + timedelta(hours=2))]
        results = await timum.port.write_blocked_slots(timum.provider_id, rid, writes)
        assert [type(r).__name__ if r else None for r in results] == [
            None, "BadRequest", "BadRequest", "BadRequest", "BadRequest", "BadRequest", None]
        assert [r.field for r in results if isinstance(r, BadRequest)] == ["end", "source", "externalId", "start",
                                                                            "title"]
        assert [s.external_id for s in await timum.port.list_blocked_slots(timum.provider_id, rid)] == ["ol-a", "ol-h"]

    async def test_a_repeated_external_id_lands_in_order(self, timum: Harness) -> None:
        rid = timum.add_resource("Dr. Anna Weber")
        moved = slot("ol-a", T0 + timedelta(hours=5))
        results = await timum.port.write_blocked_slots(timum.provider_id, rid, [slot("ol-a"), "ol-a", moved])
        assert results == [None, None, None]
        assert await timum.port.list_blocked_slots(timum.provider_id, rid) == [moved]

    async def test_archived_resource_refuses_upserts_but_takes_deletes(self, timum: Harness) -> None:
        rid = timum.add_resource("Behandlungsraum 1")
        await timum.port.put_blocked_slot(timum.provider_id, rid, slot("ol-a"))
        timum.archive_resource(rid)
        results = await timum.port.write_blocked_slots(timum.provider_id, rid, [slot("ol-b"), "ol-a"])
        assert isinstance(results[0], Conflict) and results[1] is None
        assert await timum.port.list_blocked_slots(timum.provider_id, rid) == []

    async def test_deleted_resource_is_remote_gone_for_upserts_and_done_for_deletes(self, timum: Harness) -> None:
        rid = timum.add_resource("Dr. Anna Weber")
        timum.remove_resource(rid)
        results = await timum.port.write_blocked_slots(timum.provider_id, rid, [slot("ol-a"), "ol-b"])
        assert isinstance(results[0], RemoteGone) and results[1] is None

    async def test_throttling_fails_each_write_of_the_exchange_and_a_retry_writes(self, timum: Harness) -> None:
        rid = timum.add_resource("Dr. Anna Weber")
        timum.fail_next(429, 2.5)
        results = await timum.port.write_blocked_slots(timum.provider_id, rid, [slot("ol-a"), "ol-b"])
        assert all(isinstance(r, Throttled) and r.retry_after == 2.5 for r in results)
        assert await timum.port.write_blocked_slots(timum.provider_id, rid, [slot("ol-a"), "ol-b"]) == [None, None]
        assert len(await timum.port.list_blocked_slots(timum.provider_id, rid)) == 1

    async def test_wrong_api_key_is_an_auth_error_for_each_write(self, timum: Harness) -> None:
        rid = timum.add_resource("Dr. Anna Weber")
        port = timum.bad_key_port()
        results = await port.write_blocked_slots(timum.provider_id, rid, [slot("ol-a")])
        assert isinstance(results[0], AuthError)


def _batch_results(request: httpx.Request, status: int = 201) -> httpx.Response:
    items = json.loads(request.content)["items"]
    return httpx.Response(200, json={"results": [{"index": n, "externalId": item["externalId"], "status": status}
                                                 for n, item in enumerate(items)]})


async def test_batches_carry_at_most_100_writes_and_no_id_twice() -> None:
    sizes: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path.endswith("/blocked-slots/batch")
        sizes.append([item["externalId"] for item in json.loads(request.content)["items"]])
        return _batch_results(request)

    adapter = mock_adapter(handler)
    writes: list[BlockedSlot | str] = [slot(f"ol-{n}") for n in range(150)] + ["ol-3"]
    assert await adapter.write_blocked_slots("p", "r", writes) == [None] * 151
    assert [len(s) for s in sizes] == [100, 51] and sizes[1][-1] == "ol-3"  # the second write to ol-3 goes last
    assert all(len(set(s)) == len(s) <= 100 for s in sizes)
    await adapter.close()


@pytest.mark.parametrize(("status", "body"), [(405, None), (501, None), (404, {"code": "not_found"}), (404, None)])
async def test_a_timum_without_batches_gets_single_calls_and_is_remembered(status: int, body: Any) -> None:
    seen: list[str] = []
    api = f"https://timum-{status}-{uuid.uuid4().hex[:6]}.example/api"

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if request.method == "POST":
            return httpx.Response(status, json=body) if body else httpx.Response(status)
        return httpx.Response(201 if request.method == "PUT" else 404)

    adapter = TimumHttpAdapter(api, KEY, ["s"], "", client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    assert await adapter.write_blocked_slots("p", "r", [slot("ol-a"), "ol-b"]) == [None, None]
    assert sorted(seen) == ["DELETE", "POST", "PUT"]
    seen.clear()
    other = TimumHttpAdapter(api, KEY, ["s"], "", client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    assert await other.write_blocked_slots("p", "r", [slot("ol-c")]) == [None]
    assert seen == ["PUT"], "the process remembers that this timum has no batch operation"
    for port in (adapter, other):
        await port.close()


async def test_a_404_naming_the_resource_is_remote_gone_not_a_missing_operation() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        return httpx.Response(404, json={"type": "urn:problem-type:timum:resource_not_found", "title": "Not found",
                                         "status": 404, "code": "resource_not_found", "detail": "no such resource"})

    adapter = mock_adapter(handler)
    results = await adapter.write_blocked_slots("p", "r", [slot("ol-a"), "ol-b"])
    assert isinstance(results[0], RemoteGone) and results[1] is None
    assert calls == ["POST"]
    await adapter.close()


@pytest.mark.parametrize("answer", [
    httpx.Response(200, text="<html>"), httpx.Response(200, json={"results": "x"}),
    httpx.Response(200, json={"results": [{"index": 0, "externalId": "ol-a", "status": 201}]}),
    httpx.Response(200, json={"results": [{"index": 0, "status": "ok"}, {"index": 1, "status": 204}]}),
])
async def test_malformed_batch_answers_fail_the_writes_they_leave_unknown(answer: httpx.Response) -> None:
    adapter = mock_adapter(lambda request: answer)
    results = await adapter.write_blocked_slots("p", "r", [slot("ol-a"), "ol-b"])
    assert isinstance(results[0], TransientError)
    await adapter.close()


async def test_item_statuses_map_to_the_error_tree() -> None:
    statuses = iter([201, 200, 204, 404, 404, 409, 422, 429, 503])

    def handler(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["items"]
        return httpx.Response(200, json={"results": [
            {"index": n, "externalId": item["externalId"], "status": next(statuses)} for n, item in enumerate(items)]})

    adapter = mock_adapter(handler)
    writes: list[BlockedSlot | str] = [slot("ol-1"), slot("ol-2"), "ol-3", "ol-4", slot("ol-5"), slot("ol-6"),
                                       slot("ol-7"), slot("ol-8"), slot("ol-9")]
    results = await adapter.write_blocked_slots("p", "r", writes)
    assert [type(r).__name__ if r else None for r in results] == [
        None, None, None, None, "RemoteGone", "Conflict", "BadRequest", "Throttled", "TransientError"]
    await adapter.close()


async def test_the_twin_counts_one_exchange_per_100_writes() -> None:
    twin = MemoryTimum()
    rid = twin.add_resource("p", "Raum")
    await twin.write_blocked_slots("p", rid, [slot(f"ol-{n}") for n in range(230)])
    ops = [op for op, *_ in twin.calls]
    assert ops.count("write_blocked_slots") == 3 and ops.count("put_blocked_slot") == 230
