"""The ``read_calendar_view`` part of the ``GraphCalendarPort`` contract (the live conflict check's
read): the twin and the msgraph-sdk adapter against the Graph stand-in answer alike."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from shared.errors import BadRequest, RemoteGone, Throttled
from tests.support.graph_harness import T0, GraphHarness, draft

HOUR = timedelta(hours=1)


async def test_the_view_lists_what_overlaps_the_interval_with_its_status(graph: GraphHarness) -> None:
    inside = graph.user_creates("Zahnarzt", T0, T0 + HOUR, False, "")
    graph.user_creates("Später", T0 + 3 * HOUR, T0 + 4 * HOUR, False, "")
    touching = graph.user_creates("Davor", T0 - HOUR, T0, False, "")
    tentative = await graph.port.create_event(graph.mailbox, graph.calendar_id,
                                              draft("bk-view", start=T0 + HOUR / 2, show_as="tentative"),
                                              transaction_id="tx-view")

    view = await graph.port.read_calendar_view(graph.mailbox, graph.calendar_id, start=T0, end=T0 + 2 * HOUR)
    by_id = {e.id: e for e in view}
    assert set(by_id) == {inside, tentative}, "an event that ends where the interval starts does not overlap"
    assert touching not in by_id
    assert by_id[inside].subject == "Zahnarzt" and by_id[inside].show_as == "busy"
    assert (by_id[inside].start, by_id[inside].end) == (T0, T0 + HOUR)
    assert by_id[tentative].show_as == "tentative"
    # calendarView, unlike delta, carries our booking tag and the transaction id
    assert by_id[tentative].booking_id == "bk-view" and by_id[tentative].transaction_id == "tx-view"
    assert by_id[inside].booking_id == ""


async def test_series_come_as_occurrences_without_the_master(graph: GraphHarness) -> None:
    master = graph.user_creates_weekly("Sprechstunde", T0, T0 + 2 * HOUR, 3)
    view = await graph.port.read_calendar_view(graph.mailbox, graph.calendar_id, start=T0 + timedelta(days=6),
                                               end=T0 + timedelta(days=8))
    assert [(e.type, e.start, e.series_master_id) for e in view] == [("occurrence", T0 + timedelta(weeks=1), master)]


async def test_all_day_events_are_midnights_in_the_mailbox_zone(graph: GraphHarness) -> None:
    day = date(2031, 4, 9)
    holiday = graph.user_creates("Urlaub", day, day + timedelta(days=1), True, "")
    view = await graph.port.read_calendar_view(graph.mailbox, graph.calendar_id,
                                               start=datetime(2031, 4, 9, 10, tzinfo=UTC),
                                               end=datetime(2031, 4, 9, 11, tzinfo=UTC))
    [event] = view
    assert event.id == holiday and event.is_all_day
    assert event.start.date() == day and event.start.utcoffset() == timedelta(hours=2)   # Berlin, summer time


async def test_a_shared_calendar_taken_away_is_remote_gone(graph: GraphHarness) -> None:
    await graph.port.read_calendar_view(graph.mailbox, graph.shared_calendar_id, start=T0, end=T0 + HOUR)
    graph.unshare()
    with pytest.raises(RemoteGone):
        await graph.port.read_calendar_view(graph.mailbox, graph.shared_calendar_id, start=T0, end=T0 + HOUR)


async def test_a_bad_interval_is_refused(graph: GraphHarness) -> None:
    with pytest.raises(BadRequest):
        await graph.port.read_calendar_view(graph.mailbox, graph.calendar_id, start=datetime(2031, 4, 7),
                                            end=T0 + HOUR)
    with pytest.raises(BadRequest):
        await graph.port.read_calendar_view(graph.mailbox, graph.calendar_id, start=T0, end=T0)


async def test_throttling_surfaces(graph: GraphHarness) -> None:
    graph.throttle_next(30)
    with pytest.raises(Throttled) as throttled:
        await graph.port.read_calendar_view(graph.mailbox, graph.calendar_id, start=T0, end=T0 + HOUR)
    assert throttled.value.retry_after == 30
