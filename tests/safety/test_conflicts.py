"""The live conflict check: the same rules as the sync, live when Graph answers in time, the synced
state (with its freshness) when it does not — never a 5xx for a remote failure."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from shared.connect.links_api import sign_api_request
from shared.core.outlook_plan import StatusRow
from shared.domain import Link, LinkHealth, LinkKey, LinkMode, OutlookEvent, ProviderSettings, SyncMode, TitlePrivacy
from shared.errors import BadRequest, TransientError
from shared.http.safety_bp import handle_conflicts
from shared.ports import GraphCalendarPort
from shared.repos.links import LEASES, LinkRepository, ProviderSettingsRepository
from shared.repos.sync_state import EventMapRepository
from shared.safety import conflicts
from shared.safety.conflicts import Busy, live_conflicts, parse_interval, synced_conflicts
from shared.storage.base import encode_key
from tests.support.connect_world import SERVICE_URL, WEBHOOK_SECRET, MemoryWorld

NOW = datetime(2031, 4, 7, 6, 0, tzinfo=UTC)
T0 = datetime(2031, 4, 7, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
KEY = LinkKey("prov-1", "res-1")


def request(body: Any, *, provider: str = "prov-1", resource: str = "res-1",
            signer: str | None = None) -> func.HttpRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    path = f"/api/providers/{provider}/resources/{resource}/conflicts"
    headers = sign_api_request("POST", path, signer or provider, raw, [WEBHOOK_SECRET], timestamp=int(NOW.timestamp()))
    return func.HttpRequest(method="POST", url=SERVICE_URL + path, headers=headers, body=raw,
                            route_params={"provider": provider, "resource": resource})


def interval(start: datetime = T0, end: datetime = T0 + HOUR) -> dict[str, str]:
    return {"start": start.isoformat(), "end": end.isoformat()}


async def seed(w: MemoryWorld, **changes: Any) -> Link:
    w.services.clock = lambda: NOW
    values: dict[str, Any] = {
        "provider_id": "prov-1", "resource_id": "res-1", "mode": LinkMode.DELEGATED, "tenant_id": "tid-1",
        "mailbox_id": "anna", "calendar_id": "cal-room1", "calendar_name": "Behandlungsraum 1",
        "calendar_owner": "anna@praxis.example", "account_id": "anna-oid.tid-1", "sync_mode": SyncMode.PUSH,
        "subscription_id": "sub-1", "subscription_expires_at": NOW + timedelta(days=2),
        "last_sync_at": NOW - timedelta(minutes=3)}
    values.update(changes)
    return await LinkRepository(w.storage).save(Link(**values))


async def check(w: MemoryWorld, body: Any = None, **kw: Any) -> tuple[int, dict[str, Any]]:
    response = await handle_conflicts(w.services, request(interval() if body is None else body, **kw))
    return response.status_code, json.loads(response.get_body())


def put(w: MemoryWorld, subject: str, start: datetime, end: datetime, **kw: Any) -> str:
    return w.graph.put_event("anna", "cal-room1", subject=subject, start=start, end=end, **kw)


# --- pure decisions ------------------------------------------------------------------------------

def ev(event_id: str, start: datetime, end: datetime, **kw: Any) -> OutlookEvent:
    return OutlookEvent(id=event_id, start=start, end=end, **kw)


def test_live_conflicts_follow_the_sync_rules() -> None:
    settings = ProviderSettings("p")
    events = [
        ev("busy", T0, T0 + HOUR, subject="Zahnarzt"),
        ev("free", T0, T0 + HOUR, show_as="free"),
        ev("elsewhere", T0, T0 + HOUR, show_as="workingElsewhere"),
        ev("own-tag", T0, T0 + HOUR, booking_id="bk-1"),
        ev("own-tx", T0, T0 + HOUR, transaction_id="timum-abc"),
        ev("cancelled", T0, T0 + HOUR, is_cancelled=True),
        ev("master", T0, T0 + HOUR, type="seriesMaster"),
        ev("before", T0 - HOUR, T0),                      # ends where the interval starts
        ev("after", T0 + HOUR, T0 + 2 * HOUR),            # starts where it ends
        ev("empty", T0 + HOUR / 2, T0 + HOUR / 2),
        ev("oof", T0 - HOUR, T0 + HOUR / 4, show_as="oof"),
    ]
    found = live_conflicts(events, settings, T0, T0 + HOUR)
    assert found == [Busy(T0 - HOUR, T0 + HOUR / 4, "oof"), Busy(T0, T0 + HOUR, "busy")]
    lenient = replace(settings, busy_blocks=False, working_elsewhere_blocks=True)
    assert [b.show_as for b in live_conflicts(events, lenient, T0, T0 + HOUR)] == ["oof", "workingElsewhere"]


def test_titles_only_where_privacy_allows() -> None:
    events = [ev("a", T0, T0 + HOUR, subject="Zahnarzt"), ev("b", T0, T0 + HOUR, subject="Geheim",
                                                            sensitivity="private")]
    assert [b.title for b in live_conflicts(events, ProviderSettings("p"), T0, T0 + HOUR)] == ["", ""]
    label = ProviderSettings("p", title_privacy=TitlePrivacy.LABEL)
    assert [b.title for b in live_conflicts(events, label, T0, T0 + HOUR)] == ["Outlook", "Outlook"]
    subject = ProviderSettings("p", title_privacy=TitlePrivacy.SUBJECT)
    assert sorted(b.title for b in live_conflicts(events, subject, T0, T0 + HOUR)) == ["Outlook", "Zahnarzt"]


def test_synced_conflicts_are_the_overlapping_status_rows() -> None:
    rows = [StatusRow("a", "ol-a", "h", T0 - HOUR, T0), StatusRow("b", "ol-b", "h", T0, T0 + HOUR),
            StatusRow("c", "ol-c", "", T0 + HOUR / 2, T0 + 3 * HOUR, pending_round="r1")]
    assert synced_conflicts(rows, T0, T0 + HOUR) == [Busy(T0, T0 + HOUR, None), Busy(T0 + HOUR / 2, T0 + 3 * HOUR,
                                                                                        None)]


@pytest.mark.parametrize(("body", "field"), [
    ({"start": "2031-04-07T09:00:00Z"}, "end"),
    ({"start": "2031-04-07T09:00:00", "end": "2031-04-07T10:00:00Z"}, "start"),
    ({"start": "gestern", "end": "2031-04-07T10:00:00Z"}, "start"),
    ({"start": "2031-04-07T10:00:00Z", "end": "2031-04-07T10:00:00Z"}, "end"),
    ({"start": "2031-04-07T10:00:00Z", "end": "2031-06-07T10:00:00Z"}, "end"),
    ({"start": "2031-04-07T09:00:00Z", "end": "2031-04-07T10:00:00Z", "title": "x"}, "title"),
    ({"start": 1, "end": 2}, "start"),
    (["2031-04-07T09:00:00Z"], None),
])
def test_bad_intervals_are_refused(body: Any, field: str | None) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_interval(body)
    assert refused.value.field == field


def test_offsets_become_utc() -> None:
    start, end = parse_interval({"start": "2031-04-07T11:00:00+02:00", "end": "2031-04-07T10:00:00Z"})
    assert (start, end) == (T0, T0 + HOUR)


# --- the check over the twins --------------------------------------------------------------------

async def test_live_answer_lists_the_conflict(world: MemoryWorld) -> None:
    await seed(world)
    put(world, "Zahnarzt", T0 + HOUR / 2, T0 + 2 * HOUR)
    put(world, "Mittag", T0 + 3 * HOUR, T0 + 4 * HOUR)
    status, body = await check(world)
    assert status == 200
    assert body == {"free": False, "checkedLive": True, "fallbackReason": None,
                    "conflicts": [{"start": "2031-04-07T09:30:00Z", "end": "2031-04-07T11:00:00Z", "showAs": "busy",
                                   "allDay": False}],
                    # push, live subscription, no round running: everything up to now is known
                    "syncedThrough": "2031-04-07T06:00:00Z", "ageSeconds": 0,
                    "calendars": [{"linkId": "res-1", "calendarName": "Behandlungsraum 1", "calendarRole": "bookings",
                                   "checkedLive": True, "syncedThrough": "2031-04-07T06:00:00Z",
                                   "fallbackReason": None, "conflicts": 1}]}


async def test_free_when_only_free_and_own_events_overlap(world: MemoryWorld) -> None:
    await seed(world)
    put(world, "Homeoffice", T0, T0 + HOUR, show_as="workingElsewhere")
    put(world, "Notiz", T0, T0 + HOUR, show_as="free")
    put(world, "Termin (timum)", T0, T0 + HOUR, booking_id="bk-7", transaction_id="timum-0007")
    status, body = await check(world)
    assert (status, body["free"], body["conflicts"], body["checkedLive"]) == (200, True, [], True)


async def test_the_providers_rules_and_title_privacy_apply(world: MemoryWorld) -> None:
    await seed(world)
    await ProviderSettingsRepository(world.storage).save(ProviderSettings(
        "prov-1", title_privacy=TitlePrivacy.SUBJECT, all_day_free_blocks=True))
    put(world, "Urlaub", T0.date(), T0.date() + timedelta(days=1), all_day=True, show_as="free")
    _, body = await check(world)
    [conflict] = body["conflicts"]
    assert conflict["allDay"] is True and conflict["showAs"] == "free" and conflict["title"] == "Urlaub"


async def test_a_round_running_means_only_the_last_round_is_known(world: MemoryWorld) -> None:
    await seed(world)
    await world.storage.table(LEASES).upsert({"PartitionKey": encode_key(str(KEY)), "RowKey": "", "owner": "w1",
                                              "expires_at": NOW + timedelta(minutes=5), "dirty": False})
    _, body = await check(world)
    assert body["checkedLive"] is True
    assert (body["syncedThrough"], body["ageSeconds"]) == ("2031-04-07T05:57:00Z", 180)


async def test_graph_failure_answers_from_the_synced_state(world: MemoryWorld) -> None:
    await seed(world)
    await EventMapRepository(world.storage).put(KEY, StatusRow("ev-1", "ol-1", "h", T0, T0 + HOUR / 2))
    await EventMapRepository(world.storage).put(KEY, StatusRow("ev-2", "ol-2", "h", T0 + 2 * HOUR, T0 + 3 * HOUR))
    world.graph.fail_next(TransientError("Graph answered 503", code="graph_unavailable"), op="calendar_view")
    status, body = await check(world)
    assert status == 200
    assert body == {"free": False, "checkedLive": False, "fallbackReason": "graph_failed",
                    "conflicts": [{"start": "2031-04-07T09:00:00Z", "end": "2031-04-07T09:30:00Z", "showAs": None,
                                   "allDay": False}],
                    # Graph did not answer: known only up to the last completed round
                    "syncedThrough": "2031-04-07T05:57:00Z", "ageSeconds": 180,
                    "calendars": [{"linkId": "res-1", "calendarName": "Behandlungsraum 1", "calendarRole": "bookings",
                                   "checkedLive": False, "syncedThrough": "2031-04-07T05:57:00Z",
                                   "fallbackReason": "graph_failed", "conflicts": 1}]}


async def test_a_revoked_sign_in_is_no_error_either(world: MemoryWorld) -> None:
    await seed(world)
    world.provider.revoked.add("anna-oid.tid-1")
    status, body = await check(world)
    assert (status, body["checkedLive"], body["fallbackReason"], body["free"]) == (200, False, "graph_failed", True)


class SlowProvider:
    """A Graph that never answers within the budget; records that the read was given up."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()

    async def for_link(self, link: Link) -> GraphCalendarPort:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        raise AssertionError("unreachable")


async def test_past_the_budget_the_read_is_given_up(world: MemoryWorld) -> None:
    await seed(world)
    slow = SlowProvider()
    world.services.graph = slow
    answer = await conflicts.check_conflicts(world.services, "prov-1", "res-1", interval(), live_budget=0.05)
    assert (answer["checkedLive"], answer["fallbackReason"], answer["free"]) == (False, "timeout", True)
    await asyncio.wait_for(slow.cancelled.wait(), timeout=5)


async def test_a_link_that_needs_a_reconnect_does_not_try_graph(world: MemoryWorld) -> None:
    await seed(world, health=LinkHealth.NEEDS_RECONNECT)
    before = world.graph.request_count
    _, body = await check(world)
    assert (body["checkedLive"], body["fallbackReason"]) == (False, "needs_reconnect")
    assert world.graph.request_count == before


async def test_an_ics_link_answers_from_the_last_import_with_its_age(world: MemoryWorld) -> None:
    await seed(world, mode=LinkMode.ICS, sync_mode=SyncMode.POLLING, subscription_id="",
               subscription_expires_at=None, last_sync_at=NOW - timedelta(minutes=12))
    await EventMapRepository(world.storage).put(KEY, StatusRow("ics-1", "ol-1", "h", T0 - HOUR, T0 + HOUR))
    _, body = await check(world)
    assert body["checkedLive"] is False and body["fallbackReason"] == "ics" and body["free"] is False
    assert (body["syncedThrough"], body["ageSeconds"]) == ("2031-04-07T05:48:00Z", 720)


async def test_refusals(world: MemoryWorld) -> None:
    await seed(world)
    assert (await check(world, resource="res-unknown"))[0] == 404
    assert (await check(world, {"start": "2031-04-07T09:00:00Z"}))[0] == 400
    assert (await check(world, b"{not json"))[0] == 400
    status, problem = await check(world, signer="prov-2")
    assert status == 403 and problem["code"] == "provider_scope"
    assert (await check(world, {"start": "x" * 5000}))[0] == 413


# --- block-only calendars ------------------------------------------------------------------------

async def test_block_only_calendars_count_too(world: MemoryWorld) -> None:
    from shared.domain import block_key

    await seed(world)
    # Jonas's calendar, shared with Anna: another calendar that only blocks res-1's time.
    jonas = world.graph.default_calendar("jonas@praxis.example")
    bkey = block_key("prov-1", "res-1", "tid-1", "anna", jonas)
    await seed(world, resource_id=bkey.resource_id, calendar_id=jonas, calendar_name="Jonas privat",
               block_of="res-1", sync_mode=SyncMode.POLLING, subscription_id="", subscription_expires_at=None,
               last_sync_at=NOW - timedelta(minutes=10))
    world.graph.put_event("jonas@praxis.example", jonas, subject="Zweitjob", start=T0 + HOUR / 2, end=T0 + HOUR)
    status, body = await check(world)
    assert status == 200 and body["free"] is False and body["checkedLive"] is True
    assert [c["calendarRole"] for c in body["calendars"]] == ["bookings", "block_only"]
    assert [c["conflicts"] for c in body["calendars"]] == [0, 1]
    # known up to the least fresh calendar (the polling one)
    assert body["syncedThrough"] == "2031-04-07T05:50:00Z"
    # A failure of one calendar makes the answer not live, but still an answer.
    world.graph.fail_next(TransientError("Graph answered 503", code="graph_unavailable"), op="calendar_view")
    _, partial = await check(world)
    assert partial["checkedLive"] is False and partial["fallbackReason"] == "graph_failed"
    # One of the resource's calendars is not a resource to ask about.
    assert (await check(world, resource=bkey.resource_id))[0] == 400
