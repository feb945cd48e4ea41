"""Microsoft's documented Graph payloads (``corpus/``, see ``corpus/SOURCES.md``) through the real
adapter — msgraph-sdk unpatched, only the network replaced — the notification intake and the
sync engine: the service must be right on what Graph documents, not only on what our stand-in
sends."""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from shared.adapters.graph_sdk import GraphSdkAdapter
from shared.context import Services
from shared.domain import Link, LinkKey, LinkMode, slot_external_id
from shared.errors import AuthError, BadRequest, SyncStateExpired, Throttled, TransientError
from shared.messages import LINK_ADMIN_QUEUE, SYNC_QUEUE, SyncMessage, SyncReason
from shared.repos.links import LinkRepository, SubscriptionRepository
from shared.services.notifications import (
    SubscriptionCache,
    accept_change_notifications,
    accept_lifecycle_notifications,
)
from shared.storage.memory import MemoryQueue, MemoryStorage
from shared.sync.worker import run_sync
from tests.support.graph_stub import GraphStub, stub_adapter
from tests.support.outlook_world import NOW, CrashingTimum, make_settings

CORPUS = Path(__file__).parent / "corpus"
BASE = "https://graph.microsoft.com/v1.0"
MAILBOX = "6f1c2b3a-9d4e-4f5a-8b7c-0d1e2f3a4b5c"
CALENDAR = "AAMkCorpusCal="
SUBSCRIPTION = "7f105c7d-2dc5-4530-97cd-4e7ae6534c07"
CLIENT_STATE = "corpus-client-state-3b9f"
KEY = LinkKey("prov-1", "res-1")
BERLIN = ZoneInfo("Europe/Berlin")
DELTA = r"/calendarView/delta"
START, END = datetime(2026, 11, 1, tzinfo=UTC), datetime(2027, 11, 1, tzinfo=UTC)
STORED_LINK = f"{BASE}/users/{MAILBOX}/calendars/{CALENDAR}/calendarView/delta?$deltatoken=K4"


def load(name: str) -> Any:
    text = (CORPUS / name).read_text(encoding="utf-8")
    http_date = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    text = text.replace("{{CLIENT_STATE}}", CLIENT_STATE).replace("{{HTTP_DATE_IN_120_SECONDS}}", http_date)
    return json.loads(text)


def answer(name: str) -> httpx.Response:
    data = load(name)
    return httpx.Response(data["status"], headers=data["headers"], json=data["body"])


def test_every_corpus_file_is_named_in_sources() -> None:
    sources = (CORPUS / "SOURCES.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`([a-z0-9*-]+\.json)`", sources))
    for path in CORPUS.glob("*.json"):
        assert path.name in named or any(n.endswith("*.json") and path.name.startswith(n[:-6]) for n in named), path


@pytest.fixture
def stub() -> GraphStub:
    return GraphStub()


@pytest.fixture
async def adapter(stub: GraphStub) -> AsyncIterator[GraphSdkAdapter]:
    graph = stub_adapter(stub, base_url=BASE)
    try:
        yield graph
    finally:
        await graph.close()


# --- delta pages ----------------------------------------------------------------------------------

async def test_a_documented_round_pages_through_next_links_to_a_delta_link(adapter: GraphSdkAdapter,
                                                                         stub: GraphStub) -> None:
    stub.on("GET", DELTA, answer("delta-first-page.json"), answer("delta-empty-page-with-next-link.json"),
            answer("delta-last-page.json"))
    stub.on("GET", r"/mailboxSettings$", answer("mailbox-settings.json"))
    first = await adapter.delta(MAILBOX, CALENDAR, start=START, end=END)
    timed, all_day = first.events
    assert (timed.start, timed.end) == (datetime(2026, 12, 1, 17, tzinfo=UTC),
                                        datetime(2026, 12, 1, 18, 30, tzinfo=UTC))
    assert (all_day.is_all_day, all_day.start, all_day.end) == (
        True, datetime(2026, 12, 3, tzinfo=BERLIN), datetime(2026, 12, 5, tzinfo=BERLIN))
    assert all_day.show_as == "oof" and all_day.sensitivity == "private"
    assert first.next_link and not first.delta_link and first.skipped == []
    empty = await adapter.delta(MAILBOX, CALENDAR, start=START, end=END, link=first.next_link)
    assert (empty.events, empty.removed, bool(empty.next_link)) == ([], [], True)
    last = await adapter.delta(MAILBOX, CALENDAR, start=START, end=END, link=empty.next_link)
    # Both documented reasons of @removed mean the item left the view.
    assert last.removed == ["AAMkCorpusGone1=", "AAMkCorpusGone2="] and last.delta_link.endswith("K4")


async def test_partial_items_are_read_in_full_and_unreadable_ones_are_skipped(adapter: GraphSdkAdapter,
                                                                              stub: GraphStub) -> None:
    page = load("delta-partial-and-unreadable.json")
    no_end = next(i for i in page["body"]["value"] if i.get("id") == "AAMkCorpusNoEnd=")
    stub.on("GET", DELTA, answer("delta-partial-and-unreadable.json"))
    stub.on("GET", r"/events/AAMkCorpusEv1=$", answer("event-get-complete.json"))
    stub.on("GET", r"/events/AAMkCorpusNoEnd=$", httpx.Response(200, json=no_end))
    stub.on("GET", r"/mailboxSettings$", answer("mailbox-settings-custom-zone.json"))
    result = await adapter.delta(MAILBOX, CALENDAR, start=START, end=END, link=STORED_LINK)
    by_id = {e.id: e for e in result.events}
    assert set(by_id) == {"AAMkCorpusEv1=", "AAMkCorpusCustom1="}
    assert by_id["AAMkCorpusEv1="].start == datetime(2026, 12, 1, 19, tzinfo=UTC)
    # A custom label resolves through the event's named original zone (10:00 in Berlin).
    assert by_id["AAMkCorpusCustom1="].start == datetime(2026, 12, 2, 10, tzinfo=BERLIN)
    assert {(s.id, s.reason) for s in result.skipped} == {
        ("AAMkCorpusNoEnd=", "event without end"),
        ("AAMkCorpusCustom2=", "time zone 'tzone://Microsoft/Custom' cannot be resolved")}
    assert result.removed == ["AAMkCorpusEv2="]
    # Only the partial items were read again, each once.
    assert len(stub.calls("GET", r"/events/")) == 2


# --- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "expected"), [
    ("error-410-sync-state-not-found.json", SyncStateExpired),
    ("error-400-resync-required-in-innererror.json", SyncStateExpired),
    ("error-400-nested-innererror.json", SyncStateExpired),
    ("error-400-not-sync-state.json", BadRequest),
])
async def test_delta_errors_by_every_code_in_the_chain(adapter: GraphSdkAdapter, stub: GraphStub, name: str,
                                                       expected: type[Exception]) -> None:
    stub.on("GET", DELTA, answer(name))
    with pytest.raises(expected) as caught:
        await adapter.delta(MAILBOX, CALENDAR, start=START, end=END, link=STORED_LINK)
    assert type(caught.value) is expected
    assert "https://" not in str(caught.value), "no link or URL in the message"


async def test_retry_after_in_seconds_and_as_an_http_date(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    stub.on("GET", DELTA, answer("error-429-retry-after-seconds.json"))
    with pytest.raises(Throttled) as seconds:
        await adapter.delta(MAILBOX, CALENDAR, start=START, end=END)
    assert seconds.value.retry_after == 2.5
    stub.on("GET", DELTA, answer("error-503-retry-after-date.json"))
    with pytest.raises(Throttled) as dated:
        await adapter.delta(MAILBOX, CALENDAR, start=START, end=END)
    assert dated.value.retry_after is not None and 100 < dated.value.retry_after <= 121


async def test_mailbox_info_is_stale_is_transient(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    stub.on("POST", r"/subscriptions$", answer("error-503-mailbox-info-stale.json"))
    with pytest.raises(TransientError) as caught:
        await adapter.create_subscription(MAILBOX, CALENDAR, notification_url="https://sync.example/n",
                                          lifecycle_url="https://sync.example/l", client_state="s",
                                          expires_at=datetime.now(UTC) + timedelta(hours=1))
    assert not isinstance(caught.value, Throttled) and "ExtensionError" in caught.value.message


# --- mailbox settings -------------------------------------------------------------------------------

async def test_mailbox_zone_reads_the_windows_name_and_survives_user_purpose_as_an_object(
        adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    stub.on("GET", rf"/users/{MAILBOX}/mailboxSettings$", answer("mailbox-settings.json"))
    assert await adapter.mailbox_time_zone(MAILBOX) == "Europe/Berlin"


async def test_a_custom_mailbox_zone_falls_back_without_shifting_all_day_events(adapter: GraphSdkAdapter,
                                                                               stub: GraphStub) -> None:
    stub.on("GET", r"/mailboxSettings$", answer("mailbox-settings-custom-zone.json"))
    assert await adapter.mailbox_time_zone(MAILBOX) == "Europe/Berlin"
    first = load("delta-first-page.json")["body"]
    all_day = dict(first["value"][1], originalStartTimeZone="Tokyo Standard Time")
    stub.on("GET", DELTA, httpx.Response(200, json={"value": [all_day], "@odata.deltaLink": f"{BASE}/d"}))
    [event] = (await adapter.delta(MAILBOX, CALENDAR, start=START, end=END)).events
    # The mailbox names no zone: the event's own original zone places its days.
    assert event.start == datetime(2026, 12, 3, tzinfo=ZoneInfo("Asia/Tokyo"))


async def test_user_object_id_is_read_with_select(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    stub.on("GET", r"/users/raum1@praxis.example$", {"id": MAILBOX})
    assert await adapter.user_object_id("raum1@praxis.example") == MAILBOX
    [request] = stub.calls("GET", r"/users/")
    assert request.url.params.get("$select") == "id"


# --- notifications ------------------------------------------------------------------------------------

async def notified_storage() -> MemoryStorage:
    storage = MemoryStorage()
    await SubscriptionRepository(storage).put(SUBSCRIPTION, KEY, CLIENT_STATE)
    return storage


def drained(storage: MemoryStorage, queue: str) -> list[dict[str, Any]]:
    q = storage.queue(queue)
    assert isinstance(q, MemoryQueue)
    return [json.loads(m) for m in q.drain()]


async def test_a_documented_change_notification_post_queues_one_sync_and_drops_the_forged_item() -> None:
    storage = await notified_storage()
    body = json.dumps(load("notification-change.json")).encode()
    result = await accept_change_notifications(storage, SubscriptionCache(), body)
    assert (result.accepted, result.dropped, result.links) == (2, 1, [KEY])
    [message] = drained(storage, SYNC_QUEUE)
    assert message["link"] == str(KEY)


@pytest.mark.parametrize(("event", "queue", "field", "value"), [
    ("reauthorizationRequired", LINK_ADMIN_QUEUE, "action", "reauthorize"),
    ("subscriptionRemoved", LINK_ADMIN_QUEUE, "action", "resubscribe"),
    ("missed", SYNC_QUEUE, "reason", SyncReason.RESYNC.value),
])
async def test_documented_lifecycle_notifications(event: str, queue: str, field: str, value: str) -> None:
    storage = await notified_storage()
    body = json.dumps(load(f"notification-lifecycle-{event}.json")).encode()
    result = await accept_lifecycle_notifications(storage, SubscriptionCache(), body)
    assert result.accepted == 1 and result.links == [KEY]
    [message] = drained(storage, queue)
    assert message[field] == value


# --- the sync engine over the documented rounds -------------------------------------------------------

class _CorpusGraphs:
    """A ``GraphProvider`` handing out the real adapter over the scripted Graph."""

    def __init__(self, stub: GraphStub) -> None:
        self.stub = stub

    async def for_link(self, link: Link) -> GraphSdkAdapter:
        return stub_adapter(self.stub, base_url=BASE)


async def test_the_engine_over_documented_rounds_syncs_what_it_can_read_and_reports_the_rest() -> None:
    stub = GraphStub()
    timum = CrashingTimum()
    timum.add_resource("prov-1", "Raum 1", resource_id="res-1")
    services = Services(settings=make_settings(), storage=MemoryStorage(), timum=timum,
                        graph=_CorpusGraphs(stub), clock=lambda: NOW)
    await LinkRepository(services.storage).save(Link(
        provider_id="prov-1", resource_id="res-1", mode=LinkMode.APP_ONLY, tenant_id="tid", mailbox_id=MAILBOX,
        calendar_id=CALENDAR, calendar_name="Raum 1", calendar_owner="raum1@praxis.example"))
    page = load("delta-partial-and-unreadable.json")
    no_end = next(i for i in page["body"]["value"] if i.get("id") == "AAMkCorpusNoEnd=")
    stub.on("GET", DELTA, answer("delta-first-page.json"), answer("delta-empty-page-with-next-link.json"),
            answer("delta-last-page.json"), answer("delta-partial-and-unreadable.json"))
    stub.on("GET", r"/mailboxSettings$", answer("mailbox-settings-custom-zone.json"))
    stub.on("GET", r"/events/AAMkCorpusEv1=$", answer("event-get-complete.json"))
    stub.on("GET", r"/events/AAMkCorpusNoEnd=$", httpx.Response(200, json=no_end))

    def slots() -> dict[str, tuple[datetime, datetime]]:
        return {s.external_id: (s.start, s.end) for s in timum.slots.get(("prov-1", "res-1"), {}).values()}

    first = await run_sync(services, SyncMessage(str(KEY), SyncReason.SETUP, full=True), worker_id="w")
    assert first.status == "ok" and first.skipped == 0
    assert slots() == {
        slot_external_id(KEY, "AAMkCorpusEv1="): (datetime(2026, 12, 1, 17, tzinfo=UTC),
                                                 datetime(2026, 12, 1, 18, 30, tzinfo=UTC)),
        # A custom mailbox zone: the all-day event keeps its days in its own zone (Berlin).
        slot_external_id(KEY, "AAMkCorpusEv2="): (datetime(2026, 12, 3, tzinfo=BERLIN),
                                                 datetime(2026, 12, 5, tzinfo=BERLIN)),
    }

    second = await run_sync(services, SyncMessage(str(KEY), SyncReason.NOTIFICATION), worker_id="w")
    assert second.status == "ok" and second.skipped == 2
    assert slots() == {
        slot_external_id(KEY, "AAMkCorpusEv1="): (datetime(2026, 12, 1, 19, tzinfo=UTC),
                                                 datetime(2026, 12, 1, 20, 30, tzinfo=UTC)),
        slot_external_id(KEY, "AAMkCorpusCustom1="): (datetime(2026, 12, 2, 10, tzinfo=BERLIN),
                                                     datetime(2026, 12, 2, 11, tzinfo=BERLIN)),
    }
    link = await LinkRepository(services.storage).require(KEY)
    assert link.delta_link.endswith("K5") and link.skipped_items == 2 and link.skipped_sample


async def test_a_mailbox_addressed_both_ways_shares_one_concurrency_gate(adapter: GraphSdkAdapter,
                                                                         stub: GraphStub) -> None:
    from shared.adapters.graph_sdk import _gate

    stub.on("GET", r"/users/raum2@praxis.example$", {"id": "0f1c2b3a-9d4e-4f5a-8b7c-0d1e2f3a4b5d"})
    assert _gate("raum2@praxis.example", 4) is not _gate("0f1c2b3a-9d4e-4f5a-8b7c-0d1e2f3a4b5d", 4)
    await adapter.user_object_id("raum2@praxis.example")
    assert _gate("Raum2@praxis.example", 4) is _gate("0F1C2B3A-9d4e-4f5a-8b7c-0d1e2f3a4b5d", 4)


async def test_a_partial_item_that_cannot_be_read_in_full_is_skipped_not_removed(adapter: GraphSdkAdapter,
                                                                                  stub: GraphStub) -> None:
    partial = load("delta-partial-and-unreadable.json")["body"]["value"][0]
    stub.on("GET", DELTA, httpx.Response(200, json={"value": [partial], "@odata.deltaLink": f"{BASE}/d"}))
    page = await adapter.delta(MAILBOX, CALENDAR, start=START, end=END)
    assert (page.events, page.removed) == ([], [])
    assert [s.id for s in page.skipped] == ["AAMkCorpusEv1="]
    [read] = stub.calls("GET", r"/events/")
    assert f"/calendars/{CALENDAR}/events/" in read.url.path


async def test_without_user_read_all_the_object_id_comes_from_the_mailbox_settings(adapter: GraphSdkAdapter,
                                                                                    stub: GraphStub) -> None:
    stub.on("GET", r"/users/raum3@praxis\.example$", httpx.Response(403, json={"error": {
        "code": "Authorization_RequestDenied", "message": "Insufficient privileges to complete the operation."}}))
    settings = load("mailbox-settings.json")["body"]
    stub.on("GET", r"/users/raum3@praxis\.example/mailboxSettings$", httpx.Response(200, json=settings))
    assert await adapter.user_object_id("raum3@praxis.example") == MAILBOX


async def test_without_any_way_to_read_the_id_the_refusal_surfaces(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    denied = httpx.Response(403, json={"error": {"code": "ErrorAccessDenied", "message": "Access is denied."}})
    stub.on("GET", r"/users/raum4@praxis\.example", denied)
    with pytest.raises(AuthError):
        await adapter.user_object_id("raum4@praxis.example")
