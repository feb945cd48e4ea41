"""One contract for ``GraphCalendarPort``: the in-memory twin and the msgraph-sdk adapter talking to
the Graph stand-in must behave the same for everything the sync engine relies on."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from shared.adapters.graph_constants import SUBSCRIPTION_FORBIDDEN
from shared.domain import DeltaPage, OutlookEvent
from shared.errors import AuthError, BadRequest, NotFound, RemoteGone, SyncStateExpired, Throttled
from tests.support.graph_harness import T0, GraphHarness, draft

BERLIN = ZoneInfo("Europe/Berlin")
WINDOW_START = datetime(2031, 3, 1, tzinfo=UTC)
WINDOW_END = datetime(2031, 6, 1, tzinfo=UTC)
class Round:
    """Everything one delta round reported, pages merged; later reports of an id win."""

    def __init__(self, pages: list[DeltaPage]) -> None:
        self.pages = pages
        self.events: dict[str, OutlookEvent] = {}
        self.removed: set[str] = set()
        for page in pages:
            for event in page.events:
                self.events[event.id] = event
                self.removed.discard(event.id)
            for gone in page.removed:
                self.removed.add(gone)
                self.events.pop(gone, None)
        self.delta_link = pages[-1].delta_link

    def by_subject(self, subject: str) -> OutlookEvent:
        (event,) = [e for e in self.events.values() if e.subject == subject]
        return event


async def delta_round(graph: GraphHarness, link: str = "", *, calendar: str = "", page_size: int = 50) -> Round:
    """Follow next links until the delta link, as the sync engine does."""
    pages: list[DeltaPage] = []
    while True:
        page = await graph.port.delta(graph.mailbox, calendar or graph.calendar_id, start=WINDOW_START,
                                      end=WINDOW_END, link=link, page_size=page_size)
        pages.append(page)
        assert bool(page.next_link) != bool(page.delta_link), "a page has exactly one of the two links"
        if page.delta_link:
            return Round(pages)
        link = page.next_link
        assert len(pages) < 100, "delta never finished"


# --- identity and calendars ------------------------------------------------------------------------

async def test_me_and_mailbox_time_zone(graph: GraphHarness) -> None:
    me = await graph.port.me()
    assert me["id"] == graph.mailbox
    assert me["displayName"] == graph.display_name
    assert graph.mail in (me["mail"], me["userPrincipalName"])
    assert await graph.port.mailbox_time_zone(graph.mailbox) == graph.time_zone


async def test_list_calendars_includes_shared_ones(graph: GraphHarness) -> None:
    calendars = {c.id: c for c in await graph.port.list_calendars(graph.mailbox)}

    own = calendars[graph.calendar_id]
    assert own.is_default and own.can_edit and not own.is_shared
    assert own.owner_address.lower() == graph.mail.lower()
    shared = calendars[graph.shared_calendar_id]
    assert shared.is_shared and shared.can_edit and not shared.is_default
    assert shared.owner_address.lower() == graph.colleague_mail.lower()
    assert {c.mailbox_id for c in calendars.values()} == {graph.mailbox}


# --- events we write ------------------------------------------------------------------------------

async def test_create_update_delete_show_up_in_delta(graph: GraphHarness) -> None:
    event_id = await graph.port.create_event(graph.mailbox, graph.calendar_id,
                                             draft("bk-1", show_as="tentative", categories=("timum", "Praxis")),
                                             transaction_id="tx-bk-1")
    first = await delta_round(graph)
    created = first.events[event_id]
    assert created.subject == "Physiotherapie (bk-1)"
    assert created.start == T0 and created.end == T0 + timedelta(minutes=45)
    assert created.show_as == "tentative" and created.categories == ("timum", "Praxis")
    assert created.transaction_id == "tx-bk-1"
    assert not created.is_all_day and created.type == "singleInstance"

    moved = T0 + timedelta(days=1, hours=2)
    await graph.port.update_event(graph.mailbox, event_id, draft("bk-1", start=moved, subject="Verschoben"))
    second = await delta_round(graph, first.delta_link)
    updated = second.events[event_id]
    assert updated.subject == "Verschoben" and updated.start == moved

    await graph.port.delete_event(graph.mailbox, event_id)
    third = await delta_round(graph, second.delta_link)
    assert event_id in third.removed and event_id not in third.events


async def test_a_repeated_transaction_id_makes_one_event(graph: GraphHarness) -> None:
    first = await graph.port.create_event(graph.mailbox, graph.calendar_id, draft("bk-2"), transaction_id="tx-bk-2")
    again = await graph.port.create_event(graph.mailbox, graph.calendar_id, draft("bk-2"), transaction_id="tx-bk-2")
    assert again == first
    reported = await delta_round(graph)
    assert [e.id for e in reported.events.values() if e.transaction_id == "tx-bk-2"] == [first]


async def test_find_event_by_booking_tag(graph: GraphHarness) -> None:
    event_id = await graph.port.create_event(graph.mailbox, graph.calendar_id, draft("bk-3"), transaction_id="tx-3")
    await graph.port.create_event(graph.mailbox, graph.calendar_id, draft("bk-4"), transaction_id="tx-4")

    assert await graph.port.find_event_by_booking(graph.mailbox, graph.calendar_id, "bk-3") == event_id
    assert await graph.port.find_event_by_booking(graph.mailbox, graph.calendar_id, "bk-unknown") is None
    await graph.port.delete_event(graph.mailbox, event_id)
    assert await graph.port.find_event_by_booking(graph.mailbox, graph.calendar_id, "bk-3") is None


async def test_updating_a_deleted_event_is_not_found_and_deleting_twice_is_fine(graph: GraphHarness) -> None:
    event_id = await graph.port.create_event(graph.mailbox, graph.calendar_id, draft("bk-5"), transaction_id="tx-5")
    graph.user_deletes(event_id)

    with pytest.raises(NotFound):
        await graph.port.update_event(graph.mailbox, event_id, draft("bk-5"))
    await graph.port.delete_event(graph.mailbox, event_id)
    await graph.port.delete_event(graph.mailbox, event_id)


async def test_writing_to_a_shared_calendar(graph: GraphHarness) -> None:
    event_id = await graph.port.create_event(graph.mailbox, graph.shared_calendar_id, draft("bk-6"),
                                             transaction_id="tx-6")
    reported = await delta_round(graph, calendar=graph.shared_calendar_id)
    assert reported.events[event_id].subject == "Physiotherapie (bk-6)"
    assert await graph.port.find_event_by_booking(graph.mailbox, graph.shared_calendar_id, "bk-6") == event_id


async def test_bad_drafts_change_nothing(graph: GraphHarness) -> None:
    with pytest.raises(BadRequest):
        await graph.port.create_event(graph.mailbox, graph.calendar_id, draft("bk-7", time_zone="Nowhere/Land"),
                                      transaction_id="tx-7")
    with pytest.raises(BadRequest):
        await graph.port.create_event(graph.mailbox, graph.calendar_id, draft("bk-7", minutes=-30),
                                      transaction_id="tx-7")
    assert (await delta_round(graph)).events == {}


# --- what the user does in Outlook ----------------------------------------------------------------

async def test_delta_full_round_then_incremental_changes(graph: GraphHarness) -> None:
    keep = graph.user_creates("Teammeeting", T0, T0 + timedelta(hours=1), False, "")
    gone = graph.user_creates("Fortbildung", T0 + timedelta(days=2), T0 + timedelta(days=2, hours=3), False, "")
    away = graph.user_creates("Urlaubsplanung", T0 + timedelta(days=3), T0 + timedelta(days=3, hours=1), False, "")
    holiday = graph.user_creates("Betriebsausflug", date(2031, 4, 10), date(2031, 4, 11), True, "")

    full = await delta_round(graph)
    assert set(full.events) == {keep, gone, away, holiday} and not full.removed
    assert full.events[keep].start == T0 and full.events[keep].subject == "Teammeeting"
    outing = full.events[holiday]
    assert outing.is_all_day
    assert outing.start == datetime(2031, 4, 10, tzinfo=BERLIN) and outing.end == datetime(2031, 4, 11, tzinfo=BERLIN)
    assert outing.start.utcoffset() == timedelta(hours=2) and outing.start.astimezone(BERLIN).hour == 0

    quiet = await delta_round(graph, full.delta_link)
    assert quiet.events == {} and quiet.removed == set(), "no change, nothing to report"

    graph.user_renames(keep, "Teammeeting (verschoben)")
    graph.user_deletes(gone)
    graph.user_moves(away, datetime(2031, 9, 1, 8, tzinfo=UTC), datetime(2031, 9, 1, 9, tzinfo=UTC))
    added = graph.user_creates("Supervision", T0 + timedelta(days=5), T0 + timedelta(days=5, hours=1), False, "")

    changes = await delta_round(graph, quiet.delta_link)
    assert set(changes.events) == {keep, added}
    assert changes.events[keep].subject == "Teammeeting (verschoben)"
    assert changes.removed == {gone, away}, "deleted and moved out of the window both come back as removed"


async def test_series_occurrences_are_expanded(graph: GraphHarness) -> None:
    master = graph.user_creates_weekly("Sprechstunde", T0, T0 + timedelta(hours=2), 3)

    reported = await delta_round(graph)
    occurrences = sorted((e for e in reported.events.values() if e.type == "occurrence"), key=lambda e: e.start)
    assert [e.start for e in occurrences] == [T0 + timedelta(weeks=n) for n in range(3)]
    assert {e.series_master_id for e in occurrences} == {master}
    assert len({e.id for e in occurrences}) == 3 and master not in {e.id for e in occurrences}


async def test_small_pages_carry_next_links_until_the_delta_link(graph: GraphHarness) -> None:
    made = {graph.user_creates(f"Termin {n}", T0 + timedelta(hours=n), T0 + timedelta(hours=n, minutes=30), False, "")
            for n in range(5)}
    reported = await delta_round(graph, page_size=2)
    assert len(reported.pages) >= 3
    assert all(len(p.events) + len(p.removed) <= 2 for p in reported.pages)
    assert set(reported.events) == made


async def test_lost_delta_state_is_sync_state_expired(graph: GraphHarness) -> None:
    graph.user_creates("Termin", T0, T0 + timedelta(hours=1), False, "")
    full = await delta_round(graph)
    graph.lose_delta_state()
    with pytest.raises(SyncStateExpired):
        await delta_round(graph, full.delta_link)
    # A fresh round works again.
    assert len((await delta_round(graph)).events) == 1


async def test_a_delta_link_of_another_host_is_expired(graph: GraphHarness) -> None:
    with pytest.raises(SyncStateExpired):
        await graph.port.delta(graph.mailbox, graph.calendar_id, start=WINDOW_START, end=WINDOW_END,
                               link="https://graph.elsewhere.example/v1.0/me/calendarView/delta?$deltatoken=x")


async def test_a_calendar_taken_away_is_remote_gone(graph: GraphHarness) -> None:
    full = await delta_round(graph, calendar=graph.shared_calendar_id)
    graph.unshare()
    with pytest.raises(RemoteGone):
        await graph.port.delta(graph.mailbox, graph.shared_calendar_id, start=WINDOW_START, end=WINDOW_END)
    with pytest.raises(RemoteGone):
        await graph.port.delta(graph.mailbox, graph.shared_calendar_id, start=WINDOW_START, end=WINDOW_END,
                               link=full.delta_link)


async def test_a_naive_window_is_refused(graph: GraphHarness) -> None:
    with pytest.raises(BadRequest):
        await graph.port.delta(graph.mailbox, graph.calendar_id, start=datetime(2031, 3, 1), end=WINDOW_END)
    with pytest.raises(BadRequest):
        await graph.port.delta(graph.mailbox, graph.calendar_id, start=WINDOW_START, end=WINDOW_END, page_size=0)


# --- subscriptions --------------------------------------------------------------------------------

async def test_subscription_create_renew_reauthorize_delete(graph: GraphHarness) -> None:
    wanted = (datetime.now(UTC) + timedelta(hours=24)).replace(microsecond=0)
    info = await graph.subscribe(client_state="state-1", expires_at=wanted)
    assert info.id
    assert abs(info.expires_at - wanted) < timedelta(minutes=1)
    assert info.resource == f"/users/{graph.mailbox}/calendars/{graph.calendar_id}/events"

    later = wanted + timedelta(hours=24)
    renewed = await graph.port.renew_subscription(info.id, later)
    assert renewed.id == info.id and abs(renewed.expires_at - later) < timedelta(minutes=1)
    await graph.port.reauthorize_subscription(info.id)

    await graph.port.delete_subscription(info.id)
    await graph.port.delete_subscription(info.id)
    with pytest.raises(RemoteGone):
        await graph.port.renew_subscription(info.id, later)
    with pytest.raises(RemoteGone):
        await graph.port.reauthorize_subscription(info.id)


async def test_delegated_subscription_on_a_shared_calendar_is_refused(graph: GraphHarness) -> None:
    with pytest.raises(AuthError) as refused:
        await graph.subscribe(calendar_id=graph.shared_calendar_id, client_state="state-2",
                              expires_at=datetime.now(UTC) + timedelta(hours=2))
    assert refused.value.code == SUBSCRIPTION_FORBIDDEN


async def test_a_subscription_beyond_graphs_lifetime_is_a_bad_request(graph: GraphHarness) -> None:
    with pytest.raises(BadRequest):
        await graph.subscribe(client_state="state-3", expires_at=datetime.now(UTC) + timedelta(days=30))


async def test_a_failed_endpoint_validation_is_a_bad_request(graph: GraphHarness) -> None:
    graph.break_validation()
    with pytest.raises(BadRequest):
        await graph.subscribe(client_state="state-4", expires_at=datetime.now(UTC) + timedelta(hours=2))


# --- throttling -----------------------------------------------------------------------------------

async def test_throttling_surfaces_with_its_retry_after(graph: GraphHarness) -> None:
    graph.throttle_next(7.5)
    with pytest.raises(Throttled) as throttled:
        await graph.port.delta(graph.mailbox, graph.calendar_id, start=WINDOW_START, end=WINDOW_END)
    assert throttled.value.retry_after == 7.5
    # The throttle passed: the same call works.
    assert (await delta_round(graph)).events == {}


# --- mailbox addressing and the mailbox-wide subscription -------------------------------------------

async def test_user_object_id_of_an_address_and_of_an_unknown_user(graph: GraphHarness) -> None:
    assert await graph.port.user_object_id(graph.mail) == graph.mailbox
    assert await graph.port.user_object_id(graph.mailbox) == graph.mailbox
    with pytest.raises(NotFound):
        await graph.port.user_object_id("niemand@praxis.example")


async def test_a_mailbox_wide_subscription_uses_the_documented_resource(graph: GraphHarness) -> None:
    info = await graph.subscribe(client_state="state-9", expires_at=datetime.now(UTC) + timedelta(hours=2),
                                 mailbox_wide=True)
    assert info.id and info.resource == f"/users/{graph.mailbox}/events"
    await graph.port.delete_subscription(info.id)
