"""The msgraph-sdk adapter against a scripted Graph: headers, mapping, errors, concurrency."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest

from shared.adapters.graph_constants import BOOKING_PROPERTY_ID, SUBSCRIPTION_FORBIDDEN
from shared.adapters.graph_sdk import GraphSdkAdapter, graph_adapter_from_settings
from shared.domain import EventDraft
from shared.errors import (
    AuthError,
    BadRequest,
    ConfigError,
    NeedsReconnect,
    NotFound,
    RemoteGone,
    SyncError,
    SyncStateExpired,
    Throttled,
    TransientError,
)
from tests.support.graph_stub import (
    ACCESS_TOKEN,
    BASE_URL,
    GraphStub,
    StaticCredential,
    body,
    error,
    prefer,
    stub_adapter,
)
from tests.support.settings import make_settings

MAILBOX = "anna@praxis.example"
CAL = "AAMkCal1"
START = datetime(2024, 5, 1, tzinfo=UTC)
END = datetime(2024, 8, 1, tzinfo=UTC)
DELTA = r"/calendars/[^/]+/calendarView/delta"


def graph_event(event_id: str, start: str, end: str, **extra: object) -> dict[str, object]:
    return {"id": event_id, "subject": "Termin",
            "start": {"dateTime": start, "timeZone": "UTC"}, "end": {"dateTime": end, "timeZone": "UTC"},
            **extra}


def draft(**changes: object) -> EventDraft:
    values: dict[str, object] = {
        "subject": "Massage – Erika Muster", "body_html": "<p>Gebucht über timum</p>",
        "start": datetime(2024, 7, 1, 8, 0, tzinfo=UTC), "end": datetime(2024, 7, 1, 9, 0, tzinfo=UTC),
        "time_zone": "Europe/Berlin", "show_as": "busy", "categories": ("timum",), "booking_id": "bk-42",
    }
    values.update(changes)
    return EventDraft(**values)  # type: ignore[arg-type]


def link(path: str) -> str:
    return f"{BASE_URL}/users/{MAILBOX}/calendars/{CAL}/calendarView/delta(){path}"


# --- headers --------------------------------------------------------------------------------------

async def test_every_request_asks_for_immutable_ids_and_carries_the_token(
        adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    stub.on("GET", r"/me$", {"id": "u1", "displayName": "Anna", "mail": MAILBOX, "userPrincipalName": MAILBOX})
    stub.on("GET", r"/calendars$", {"value": []})
    stub.on("GET", r"/mailboxSettings$", {"timeZone": "W. Europe Standard Time"})
    stub.on("GET", DELTA, {"value": [], "@odata.deltaLink": link("?$deltatoken=d1")})
    stub.on("POST", r"/events$", httpx.Response(201, json={"id": "ev1"}))
    stub.on("GET", r"/events$", {"value": []})
    stub.on("PATCH", r"/events/", {"id": "ev1"})
    stub.on("DELETE", r"/events/", httpx.Response(204))
    stub.on("POST", r"/subscriptions$", httpx.Response(201, json={"id": "s1", "expirationDateTime": END.isoformat()}))
    stub.on("PATCH", r"/subscriptions/", {"id": "s1", "expirationDateTime": END.isoformat()})
    stub.on("POST", r"/reauthorize$", httpx.Response(204))
    stub.on("DELETE", r"/subscriptions/", httpx.Response(204))

    await adapter.me()
    await adapter.list_calendars(MAILBOX)
    await adapter.mailbox_time_zone(MAILBOX)
    page = await adapter.delta(MAILBOX, CAL, start=START, end=END)
    await adapter.delta(MAILBOX, CAL, start=START, end=END, link=page.delta_link)
    await adapter.create_event(MAILBOX, CAL, draft(), transaction_id="tx-1")
    await adapter.update_event(MAILBOX, "ev1", draft())
    await adapter.find_event_by_booking(MAILBOX, CAL, "bk-42")
    await adapter.delete_event(MAILBOX, "ev1")
    await adapter.create_subscription(MAILBOX, CAL, notification_url="https://svc.example/api/graph/notify",
                                      lifecycle_url="https://svc.example/api/graph/lifecycle",
                                      client_state="cs", expires_at=END)
    await adapter.renew_subscription("s1", END)
    await adapter.reauthorize_subscription("s1")
    await adapter.delete_subscription("s1")

    assert len(stub.requests) == 13
    for request in stub.requests:
        assert 'IdType="ImmutableId"' in prefer(request), request.url.path
        assert request.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    for request in stub.calls("GET", DELTA):
        assert {"odata.maxpagesize=100", 'outlook.timezone="UTC"'} <= prefer(request)


async def test_fresh_delta_round_uses_the_window_and_the_sdk_path(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    stub.on("GET", DELTA, {"value": [], "@odata.deltaLink": link("?$deltatoken=d1")})

    await adapter.delta(MAILBOX, CAL, start=datetime(2024, 5, 1, 2, 0, tzinfo=ZoneInfo("Europe/Berlin")),
                        end=END, page_size=25)

    (request,) = stub.requests
    assert request.url.path == f"/v1.0/users/{MAILBOX}/calendars/{CAL}/calendarView/delta()"
    query = parse_qs(urlsplit(str(request.url)).query)
    assert query["startDateTime"] == ["2024-05-01T00:00:00Z"]
    assert query["endDateTime"] == ["2024-08-01T00:00:00Z"]
    assert "odata.maxpagesize=25" in prefer(request)


# --- delta mapping --------------------------------------------------------------------------------

async def test_delta_pages_map_events_removals_and_links(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    first = {
        "@odata.nextLink": link("?$skiptoken=p2"),
        "value": [
            graph_event("e1", "2024-05-02T08:00:00.0000000", "2024-05-02T09:30:00.0000000",
                        showAs="tentative", sensitivity="private", isCancelled=False, type="occurrence",
                        seriesMasterId="m1", transactionId="tx-9", categories=["timum", "Blau"],
                        singleValueExtendedProperties=[{"id": BOOKING_PROPERTY_ID.upper(), "value": "bk-7"}]),
            {"@odata.type": "#microsoft.graph.event", "id": "gone-1", "@removed": {"reason": "deleted"}},
        ],
    }
    second = {"@odata.deltaLink": link("?$deltatoken=d2"),
              "value": [graph_event("e2", "2024-05-03T10:00:00.0000000", "2024-05-03T11:00:00.0000000",
                                    isCancelled=True, showAs="free")]}
    stub.on("GET", DELTA, httpx.Response(200, json=first), httpx.Response(200, json=second))

    page1 = await adapter.delta(MAILBOX, CAL, start=START, end=END)
    page2 = await adapter.delta(MAILBOX, CAL, start=START, end=END, link=page1.next_link)

    assert page1.next_link == link("?$skiptoken=p2") and page1.delta_link == ""
    assert page1.removed == ["gone-1"]
    (e1,) = page1.events
    assert e1.id == "e1"
    assert e1.start == datetime(2024, 5, 2, 8, 0, tzinfo=UTC) and e1.end == datetime(2024, 5, 2, 9, 30, tzinfo=UTC)
    assert (e1.show_as, e1.sensitivity, e1.type, e1.series_master_id) == ("tentative", "private", "occurrence", "m1")
    assert (e1.transaction_id, e1.booking_id, e1.categories) == ("tx-9", "bk-7", ("timum", "Blau"))
    assert not e1.is_cancelled and not e1.is_all_day

    assert page2.delta_link == link("?$deltatoken=d2") and page2.next_link == "" and page2.removed == []
    (e2,) = page2.events
    assert e2.is_cancelled and e2.show_as == "free" and e2.booking_id == ""
    assert "skiptoken=p2" in str(stub.requests[1].url)


async def test_all_day_events_become_midnights_in_the_mailbox_zone(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    all_day = graph_event("a1", "2024-03-10T00:00:00.0000000", "2024-03-11T00:00:00.0000000", isAllDay=True)
    stub.on("GET", r"/mailboxSettings$", {"timeZone": "Pacific Standard Time"})
    stub.on("GET", DELTA, {"value": [all_day], "@odata.nextLink": link("?$skiptoken=2")},
            {"value": [dict(all_day, id="a2")], "@odata.deltaLink": link("?$deltatoken=3")})

    page = await adapter.delta(MAILBOX, CAL, start=START, end=END)
    again = await adapter.delta(MAILBOX, CAL, start=START, end=END, link=page.next_link)

    pacific = ZoneInfo("America/Los_Angeles")
    (event,) = page.events
    assert event.is_all_day
    assert event.start == datetime(2024, 3, 10, tzinfo=pacific)
    assert event.end == datetime(2024, 3, 11, tzinfo=pacific)
    assert event.start.tzinfo == pacific and event.start.hour == 0
    assert again.events[0].start == datetime(2024, 3, 10, tzinfo=pacific)
    assert len(stub.calls("GET", r"/mailboxSettings$")) == 1, "the mailbox zone is looked up once"


@pytest.mark.parametrize("item", [
    {"id": "e1", "subject": "no times"},
    {"id": "e1", "start": {"dateTime": "gestern", "timeZone": "UTC"}, "end": {"dateTime": "", "timeZone": "UTC"}},
    {"subject": "no id", "start": {"dateTime": "2024-05-02T08:00:00", "timeZone": "UTC"},
     "end": {"dateTime": "2024-05-02T09:00:00", "timeZone": "UTC"}},
    {"@removed": {"reason": "deleted"}},
    "not an object",
])
async def test_an_unreadable_delta_item_is_skipped_and_the_page_goes_on(adapter: GraphSdkAdapter, stub: GraphStub,
                                                                        item: object) -> None:
    good = graph_event("ok", "2024-05-02T08:00:00.0000000", "2024-05-02T09:00:00.0000000")
    stub.on("GET", DELTA, {"value": [item, good], "@odata.deltaLink": link("?$deltatoken=d1")})
    # A partial item is read in full first; here the full read has no times either.
    stub.on("GET", r"/events/e1$", {"id": "e1", "subject": "no times"})
    page = await adapter.delta(MAILBOX, CAL, start=START, end=END)
    assert [e.id for e in page.events] == ["ok"] and page.removed == []
    assert len(page.skipped) == 1 and page.skipped[0].reason
    assert page.delta_link == link("?$deltatoken=d1")


async def test_a_delta_body_that_is_not_json_is_transient(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    stub.on("GET", DELTA, httpx.Response(200, text="<html>proxy</html>", headers={"Content-Type": "text/html"}))
    with pytest.raises(TransientError) as caught:
        await adapter.delta(MAILBOX, CAL, start=START, end=END)
    assert caught.value.code == "graph_unexpected"


async def test_delta_fields_graph_may_add_later_pass_through(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    # A showAs value this code does not know must reach the planner (which blocks on it), not vanish.
    stub.on("GET", DELTA, {"value": [graph_event("e1", "2024-05-02T08:00:00.0000000", "2024-05-02T09:00:00.0000000",
                                                 showAs="somethingNew", isCancelled=None, newField={"x": 1})],
                           "@odata.deltaLink": link("?$deltatoken=d1")})
    (event,) = (await adapter.delta(MAILBOX, CAL, start=START, end=END)).events
    assert event.show_as == "somethingNew" and not event.is_cancelled
    assert (event.sensitivity, event.type) == ("normal", "singleInstance")


async def test_expired_delta_state_is_sync_state_expired(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    stub.on("GET", DELTA, error(410, "SyncStateNotFound", "gone"),
            error(400, "syncStateNotFound", "The sync state is missing"),
            error(400, "resyncRequired"))
    for _ in range(3):
        with pytest.raises(SyncStateExpired):
            await adapter.delta(MAILBOX, CAL, start=START, end=END, link=link("?$deltatoken=old"))


async def test_plain_410_on_delta_is_sync_state_expired_and_404_is_a_gone_calendar(
        adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    stub.on("GET", DELTA, httpx.Response(410), error(404, "ErrorItemNotFound"))
    with pytest.raises(SyncStateExpired):
        await adapter.delta(MAILBOX, CAL, start=START, end=END, link=link("?$deltatoken=old"))
    with pytest.raises(RemoteGone) as gone:
        await adapter.delta(MAILBOX, CAL, start=START, end=END)
    assert not isinstance(gone.value, SyncStateExpired)


async def test_a_delta_link_for_another_host_is_not_followed(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    with pytest.raises(SyncStateExpired):
        await adapter.delta(MAILBOX, CAL, start=START, end=END,
                            link="https://elsewhere.example/v1.0/users/x/calendarView/delta()?$deltatoken=d")
    assert stub.requests == []


# --- throttling and errors -------------------------------------------------------------------------

async def test_429_with_fractional_retry_after_surfaces_as_throttled(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    stub.on("GET", DELTA, error(429, "ApplicationThrottled", headers={"Retry-After": "2.5"}))
    with pytest.raises(Throttled) as caught:
        await adapter.delta(MAILBOX, CAL, start=START, end=END)
    assert caught.value.retry_after == 2.5
    assert len(stub.requests) == 1, "the SDK must not wait out the throttle itself"


async def test_a_short_retry_after_is_retried_once_in_place(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    stub.on("GET", r"/mailboxSettings$", error(429, "ApplicationThrottled", headers={"Retry-After": "0.01"}),
            {"timeZone": "Romance Standard Time"})
    assert await adapter.mailbox_time_zone(MAILBOX) == "Europe/Paris"
    assert len(stub.requests) == 2


async def test_a_second_short_throttle_is_not_retried_again(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    stub.on("GET", r"/mailboxSettings$", error(429, "ApplicationThrottled", headers={"Retry-After": "0.01"}))
    with pytest.raises(Throttled) as caught:
        await adapter.mailbox_time_zone(MAILBOX)
    assert caught.value.retry_after == pytest.approx(0.01)
    assert len(stub.requests) == 2


@pytest.mark.parametrize(("response", "expected", "code"), [
    (error(503, "ServiceUnavailable", headers={"Retry-After": "7"}), Throttled, "throttled"),
    (error(503, "ServiceUnavailable"), TransientError, "transient"),
    (error(504, "GatewayTimeout"), TransientError, "transient"),
    (error(500, "InternalServerError"), TransientError, "transient"),
    (httpx.Response(502, text="<html>bad gateway</html>"), TransientError, "transient"),
    (error(401, "InvalidAuthenticationToken"), AuthError, "graph_unauthorized"),
    (error(403, "ErrorAccessDenied"), AuthError, "graph_forbidden"),
    (error(404, "ErrorItemNotFound"), NotFound, "not_found"),
    (error(400, "ErrorInvalidRequest"), BadRequest, "graph_bad_request"),
])
async def test_status_codes_map_to_the_error_tree(adapter: GraphSdkAdapter, stub: GraphStub,
                                                  response: httpx.Response, expected: type[SyncError],
                                                  code: str) -> None:
    stub.on("GET", r"/me$", response)
    with pytest.raises(expected) as caught:
        await adapter.me()
    assert caught.value.code == code
    assert not isinstance(caught.value, Throttled) or expected is Throttled
    assert len(stub.requests) == 1


async def test_unreadable_mailbox_settings_fall_back_to_berlin(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    stub.on("GET", r"/mailboxSettings$", error(403, "ErrorAccessDenied"))
    assert await adapter.mailbox_time_zone(MAILBOX) == "Europe/Berlin"
    assert await adapter.mailbox_time_zone(MAILBOX) == "Europe/Berlin"
    assert len(stub.requests) == 1  # remembered for the run


@pytest.mark.parametrize(("failure", "code"), [
    (httpx.ConnectError("connection refused"), "unreachable"),
    (httpx.ReadTimeout("read timed out"), "timeout"),
])
async def test_network_failures_are_transient(stub: GraphStub, failure: Exception, code: str) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise failure

    graph = stub_adapter(broken)
    try:
        with pytest.raises(TransientError) as caught:
            await graph.me()
    finally:
        await graph.close()
    assert caught.value.code == code
    assert isinstance(caught.value.__cause__, type(failure))


async def test_error_text_never_contains_the_token_or_links(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    stub.on("GET", DELTA, error(429, "ApplicationThrottled", headers={"Retry-After": "30"}),
            error(410, "SyncStateNotFound"), error(500, "InternalServerError"))
    secret_link = link("?$deltatoken=SECRET-DELTA-TOKEN")
    for _ in range(3):
        with pytest.raises(SyncError) as caught:
            await adapter.delta(MAILBOX, CAL, start=START, end=END, link=secret_link)
        text = "".join(traceback.format_exception(caught.value))
        assert ACCESS_TOKEN not in text
        assert "SECRET-DELTA-TOKEN" not in str(caught.value)


async def test_urls_in_graph_messages_are_not_repeated(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    notify = "https://svc.example/api/graph/notify?code=FUNCTION-KEY"
    stub.on("POST", r"/subscriptions$", error(400, "InvalidRequest", f"Validation of {notify} failed."))
    with pytest.raises(BadRequest) as caught:
        await adapter.create_subscription(MAILBOX, CAL, notification_url=notify, lifecycle_url="https://svc.example/l",
                                          client_state="cs", expires_at=END)
    assert "FUNCTION-KEY" not in str(caught.value)
    assert "Validation of <url> failed." in str(caught.value)


async def test_needs_reconnect_from_the_credential_propagates_unchanged(stub: GraphStub) -> None:
    revoked = NeedsReconnect("refresh token revoked (AADSTS700082)")
    graph = stub_adapter(stub, StaticCredential(error=revoked))
    try:
        with pytest.raises(NeedsReconnect) as caught:
            await graph.delta(MAILBOX, CAL, start=START, end=END)
    finally:
        await graph.close()
    assert caught.value is revoked
    assert stub.requests == []


async def test_the_token_goes_only_to_the_configured_host(credential: StaticCredential) -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "u", "displayName": "", "mail": "", "userPrincipalName": ""})

    graph = GraphSdkAdapter(credential, base_url="https://127.0.0.1:7443/v1.0", verify=False,
                            http_client=httpx.AsyncClient(transport=httpx.MockTransport(record)))
    try:
        await graph.me()
    finally:
        await graph.close()
    assert str(seen[0].url) == "https://127.0.0.1:7443/v1.0/me"
    assert seen[0].headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert credential.calls == [("https://graph.microsoft.com/.default",)]


# --- concurrency ------------------------------------------------------------------------------------

async def test_at_most_max_concurrency_requests_per_mailbox(credential: StaticCredential) -> None:
    release = asyncio.Event()
    in_flight: dict[str, int] = {}
    peak: dict[str, int] = {}
    arrived = asyncio.Condition()

    async def slow(request: httpx.Request) -> httpx.Response:
        mailbox = request.url.path.split("/")[3]
        async with arrived:
            in_flight[mailbox] = in_flight.get(mailbox, 0) + 1
            peak[mailbox] = max(peak.get(mailbox, 0), in_flight[mailbox])
            arrived.notify_all()
        await release.wait()
        in_flight[mailbox] -= 1
        return httpx.Response(204)

    def make() -> GraphSdkAdapter:
        return stub_adapter(slow, credential, max_concurrency=3)

    # Two adapters in one process share the cap: it is per mailbox, not per adapter.
    graph, other = make(), make()
    try:
        busy = [asyncio.create_task(g.delete_event("busy@x.example", f"ev{i}"))
                for g in (graph, other) for i in range(5)]
        async with arrived:
            await arrived.wait_for(lambda: in_flight.get("busy@x.example", 0) == 3)
        # Another mailbox is not held up by the busy one.
        calm = asyncio.create_task(graph.delete_event("calm@x.example", "ev"))
        async with arrived:
            await arrived.wait_for(lambda: in_flight.get("calm@x.example", 0) == 1)
        for _ in range(20):
            await asyncio.sleep(0)
        assert in_flight["busy@x.example"] == 3
        release.set()
        await asyncio.gather(*busy, calm)
    finally:
        await graph.close()
        await other.close()
    assert peak == {"busy@x.example": 3, "calm@x.example": 1}


# --- events ---------------------------------------------------------------------------------------

async def test_create_event_sends_tag_transaction_id_and_wall_times(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    stub.on("POST", r"/events$", httpx.Response(201, json={"id": "AAkALgImmutable1"}))

    event_id = await adapter.create_event(MAILBOX, CAL, draft(show_as="tentative", categories=("timum", "Massage")),
                                          transaction_id="timum-abc")

    assert event_id == "AAkALgImmutable1"
    (request,) = stub.requests
    assert request.url.path == f"/v1.0/users/{MAILBOX}/calendars/{CAL}/events"
    sent = body(request)
    assert sent["transactionId"] == "timum-abc"
    assert sent["singleValueExtendedProperties"] == [{"id": BOOKING_PROPERTY_ID, "value": "bk-42"}]
    assert sent["subject"] == "Massage – Erika Muster"
    assert sent["body"] == {"contentType": "html", "content": "<p>Gebucht über timum</p>"}
    assert sent["showAs"] == "tentative"
    assert sent["categories"] == ["timum", "Massage"]
    # 08:00 UTC in July is 10:00 in Berlin, written in the zone's Windows name
    assert sent["start"] == {"dateTime": "2024-07-01T10:00:00", "timeZone": "W. Europe Standard Time"}
    assert sent["end"] == {"dateTime": "2024-07-01T11:00:00", "timeZone": "W. Europe Standard Time"}


async def test_a_refused_repeat_of_a_create_returns_the_existing_event(adapter: GraphSdkAdapter,
                                                                       stub: GraphStub) -> None:
    stub.on("POST", r"/events$", error(409, "ErrorDuplicateTransactionId"))
    stub.on("GET", r"/calendars/[^/]+/events$", {"value": [{"id": "first-one"}]})
    assert await adapter.create_event(MAILBOX, CAL, draft(), transaction_id="tx") == "first-one"


async def test_booking_tag_round_trips_through_find(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    stub.on("GET", r"/calendars/[^/]+/events$", {"value": [{"id": "tagged-1"}]})

    assert await adapter.find_event_by_booking(MAILBOX, CAL, "bk-o'brien") == "tagged-1"

    (request,) = stub.requests
    query = parse_qs(urlsplit(str(request.url)).query)
    assert query["$filter"] == [f"singleValueExtendedProperties/Any(ep: ep/id eq '{BOOKING_PROPERTY_ID}'"
                                " and ep/value eq 'bk-o''brien')"]


async def test_find_returns_none_without_a_match(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    stub.on("GET", r"/calendars/[^/]+/events$", {"value": []})
    assert await adapter.find_event_by_booking(MAILBOX, CAL, "bk-none") is None


async def test_update_patches_and_a_deleted_event_is_not_found(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    stub.on("PATCH", r"/events/ev-1$", {"id": "ev-1"})
    stub.on("PATCH", r"/events/ev-gone$", error(404, "ErrorItemNotFound"))

    await adapter.update_event(MAILBOX, "ev-1", draft(subject="Verschoben"))
    with pytest.raises(NotFound):
        await adapter.update_event(MAILBOX, "ev-gone", draft())

    sent = body(stub.requests[0])
    assert stub.requests[0].url.path == f"/v1.0/users/{MAILBOX}/events/ev-1"
    assert sent["subject"] == "Verschoben" and "transactionId" not in sent


async def test_delete_of_a_missing_event_is_fine(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    stub.on("DELETE", r"/events/", error(404, "ErrorItemNotFound"))
    await adapter.delete_event(MAILBOX, "ev-gone")
    assert len(stub.requests) == 1


@pytest.mark.parametrize("bad", [
    {"time_zone": "Mars/Olympus"},
    {"start": datetime(2024, 7, 1, 8, 0)},
    {"end": datetime(2024, 7, 1, 7, 0, tzinfo=UTC)},
    {"show_as": "maybe"},
])
async def test_bad_drafts_are_refused_before_sending(adapter: GraphSdkAdapter, stub: GraphStub,
                                                     bad: dict[str, object]) -> None:
    with pytest.raises(BadRequest):
        await adapter.create_event(MAILBOX, CAL, draft(**bad), transaction_id="tx")
    assert stub.requests == []


# --- calendars, user, time zone ---------------------------------------------------------------------

async def test_list_calendars_marks_shared_ones_and_follows_pages(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    # Addressed by object id: own calendars are recognised by the default calendar's owner.
    stub.on("GET", r"/calendars$",
            {"value": [{"id": "c2", "name": "Raum 1", "canEdit": False, "isDefaultCalendar": False,
                        "owner": {"name": "Empfang", "address": "empfang@praxis.example"}}],
             "@odata.nextLink": f"{BASE_URL}/users/u-0001/calendars?$skip=1"},
            {"value": [{"id": "c1", "name": "Kalender", "canEdit": True, "isDefaultCalendar": True,
                        "owner": {"name": "Anna", "address": "Anna@Praxis.example"}},
                       {"id": "c3", "name": "Hausbesuche", "canEdit": True, "isDefaultCalendar": False,
                        "owner": {"name": "Anna", "address": "anna@praxis.example"}}]})

    calendars = await adapter.list_calendars("u-0001")

    assert [(c.id, c.is_default, c.can_edit, c.is_shared) for c in calendars] == [
        ("c2", False, False, True), ("c1", True, True, False), ("c3", False, True, False)]
    assert calendars[0].owner_name == "Empfang" and calendars[0].owner_address == "empfang@praxis.example"
    assert {c.mailbox_id for c in calendars} == {"u-0001"}
    assert [r.url.path for r in stub.requests] == ["/v1.0/users/u-0001/calendars"] * 2, "no user read needed"
    assert "skip=1" in str(stub.requests[-1].url)


async def test_me_and_time_zone(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    stub.on("GET", r"/me$", {"id": "u1", "displayName": "Anna", "mail": None, "userPrincipalName": MAILBOX})
    stub.on("GET", r"/users/a/mailboxSettings$", {"timeZone": "W. Europe Standard Time"})
    stub.on("GET", r"/users/b/mailboxSettings$", {"timeZone": "Asia/Tokyo"})
    stub.on("GET", r"/users/c/mailboxSettings$", {"timeZone": "Klingon Standard Time"})

    assert await adapter.me() == {"id": "u1", "displayName": "Anna", "mail": "", "userPrincipalName": MAILBOX}
    assert await adapter.mailbox_time_zone("a") == "Europe/Berlin"
    assert await adapter.mailbox_time_zone("b") == "Asia/Tokyo"
    # An unknown (custom) zone: timum's home market, never UTC (which would move all-day events).
    assert await adapter.mailbox_time_zone("c") == "Europe/Berlin"


# --- subscriptions ----------------------------------------------------------------------------------

async def test_create_subscription_sends_what_graph_needs(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    expires = datetime(2024, 7, 3, 12, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    stub.on("POST", r"/subscriptions$", httpx.Response(201, json={
        "id": "sub-1", "expirationDateTime": "2024-07-03T10:00:00Z",
        "resource": f"/users/{MAILBOX}/calendars/{CAL}/events"}))

    info = await adapter.create_subscription(MAILBOX, CAL, notification_url="https://svc.example/api/graph/notify",
                                             lifecycle_url="https://svc.example/api/graph/lifecycle",
                                             client_state="s3cr3t-state", expires_at=expires)

    assert info.id == "sub-1" and info.expires_at == expires
    assert info.resource == f"/users/{MAILBOX}/calendars/{CAL}/events"
    sent = body(stub.requests[0])
    assert sent["changeType"] == "created,updated,deleted"
    assert sent["resource"] == f"/users/{MAILBOX}/calendars/{CAL}/events"
    assert sent["notificationUrl"] == "https://svc.example/api/graph/notify"
    assert sent["lifecycleNotificationUrl"] == "https://svc.example/api/graph/lifecycle"
    assert sent["clientState"] == "s3cr3t-state"
    assert datetime.fromisoformat(sent["expirationDateTime"]) == expires


@pytest.mark.parametrize(("response", "expected", "code"), [
    (error(403, "ExtensionError", "Operation: Create; Exception: [Status Code: Forbidden]"), AuthError,
     SUBSCRIPTION_FORBIDDEN),
    (error(400, "InvalidRequest", "Subscription validation request failed."), BadRequest, "graph_bad_request"),
])
async def test_subscription_refusals(adapter: GraphSdkAdapter, stub: GraphStub, response: httpx.Response,
                                     expected: type[SyncError], code: str) -> None:
    stub.on("POST", r"/subscriptions$", response)
    with pytest.raises(expected) as caught:
        await adapter.create_subscription(MAILBOX, CAL, notification_url="https://svc.example/n",
                                          lifecycle_url="https://svc.example/l", client_state="cs", expires_at=END)
    assert caught.value.code == code
    assert "cs" not in caught.value.message.split()


async def test_renew_reauthorize_and_delete_subscription(adapter: GraphSdkAdapter, stub: GraphStub) -> None:
    stub.on("PATCH", r"/subscriptions/sub-1$", {"id": "sub-1", "expirationDateTime": "2024-07-05T00:00:00Z"})
    stub.on("PATCH", r"/subscriptions/sub-gone$", error(404, "ResourceNotFound"))
    stub.on("POST", r"/subscriptions/sub-1/reauthorize$", httpx.Response(204))
    stub.on("DELETE", r"/subscriptions/", error(404, "ResourceNotFound"))

    info = await adapter.renew_subscription("sub-1", datetime(2024, 7, 5, tzinfo=UTC))
    await adapter.reauthorize_subscription("sub-1")
    await adapter.delete_subscription("sub-gone")
    with pytest.raises(RemoteGone):
        await adapter.renew_subscription("sub-gone", END)

    assert info.expires_at == datetime(2024, 7, 5, tzinfo=UTC)
    assert body(stub.requests[0]) == {"expirationDateTime": "2024-07-05T00:00:00+00:00"}
    assert [r.method for r in stub.requests] == ["PATCH", "POST", "DELETE", "PATCH"]


# --- construction -----------------------------------------------------------------------------------

def test_a_relative_base_url_is_a_config_error(credential: StaticCredential) -> None:
    with pytest.raises(ConfigError):
        GraphSdkAdapter(credential, base_url="graph.microsoft.com/v1.0", verify=True)


async def test_factory_uses_the_settings(credential: StaticCredential, stub: GraphStub) -> None:
    settings = make_settings(GRAPH_BASE_URL="https://127.0.0.1:7443/v1.0")
    stub.on("GET", r"/me$", {"id": "u1"})
    graph = graph_adapter_from_settings(credential, settings,
                                        http_client=httpx.AsyncClient(transport=httpx.MockTransport(stub)))
    try:
        await graph.me()
    finally:
        await graph.close()
    assert str(stub.requests[0].url) == "https://127.0.0.1:7443/v1.0/me"


def test_importing_the_adapter_module_does_not_load_the_sdk() -> None:
    probe = ("import sys, shared.adapters.graph_sdk; "
             "print(sorted(m for m in ('msgraph', 'kiota_http') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.stdout.strip() == "[]"
