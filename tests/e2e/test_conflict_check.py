"""The live conflict check end to end: the real app reads the sandbox Graph live, falls back to the
synced state under an outage or past its budget, and the sandbox timum refuses a booking that
Outlook already has, with a clear message."""

from __future__ import annotations

import time

import httpx

from devtools.stack import Stack
from tests.support.e2e import ANNA, LOG, Names, berlin, check_conflicts, live_conflicts, utc


def test_conflict_check_live_and_under_an_outage(stack: Stack, names: Names) -> None:
    linked = stack.link_app_only(ANNA, names.calendar, names.provider, names.resource)
    owner = linked.user
    stack.graph.create_event(owner.id, "Zahnarzt", berlin(20, 9), berlin(20, 10), calendar_id=linked.calendar_id)
    stack.graph.create_event(owner.id, "Homeoffice", berlin(20, 11), berlin(20, 12), calendar_id=linked.calendar_id,
                             show_as="workingElsewhere")

    # Live, at once: the event need not have reached timum through the sync yet.
    busy = live_conflicts(stack, names, berlin(20, 9, 30), berlin(20, 10, 30))
    assert busy["free"] is False and busy["fallbackReason"] is None
    assert [(c["start"], c["showAs"]) for c in busy["conflicts"]] == [
        (utc(berlin(20, 9)).strftime("%Y-%m-%dT%H:%M:%SZ"), "busy")]
    assert "title" not in busy["conflicts"][0], "title privacy 'none' by default"
    free = check_conflicts(stack, names, berlin(20, 11), berlin(20, 12))
    assert free["free"] is True and free["checkedLive"] is True

    # Graph fails: still an answer, from the synced state, with its freshness.
    stack.wait_for(lambda: stack.timum.list_slots(names.provider, names.resource, "outlook") or None,
                   what="the event synced to timum")
    stack.graph.add_fault("503", path="calendarView", retry_after=30)
    fallback = check_conflicts(stack, names, berlin(20, 9, 30), berlin(20, 10, 30))
    assert (fallback["checkedLive"], fallback["fallbackReason"], fallback["free"]) == (False, "graph_failed", False)
    assert fallback["syncedThrough"] is not None and fallback["ageSeconds"] >= 0
    stack.graph.clear_faults()

    # Graph hangs: the budget cuts the read off.
    stack.graph.add_fault("slow", path="calendarView", delay=5.0)
    began = time.monotonic()
    slow = check_conflicts(stack, names, berlin(20, 9, 30), berlin(20, 10, 30))
    LOG.info("conflict check under a hanging Graph answered in %.2f s", time.monotonic() - began)
    assert (slow["checkedLive"], slow["fallbackReason"], slow["free"]) == (False, "timeout", False)


def test_sandbox_timum_refuses_a_booking_outlook_already_has(stack: Stack, names: Names) -> None:
    linked = stack.link_app_only(ANNA, names.calendar, names.provider, names.resource)
    stack.graph.create_event(linked.user.id, "Privat", berlin(21, 14), berlin(21, 15), calendar_id=linked.calendar_id)
    live_conflicts(stack, names, berlin(21, 14), berlin(21, 15))   # the app's Graph client is warm

    def book(hour: int) -> httpx.Response:
        form = {"resourceId": names.resource, "date": berlin(21, hour).date().isoformat(), "time": f"{hour:02d}:15",
                "duration": "30", "customerName": "Erika Muster", "lang": "de"}
        with stack.http(follow_redirects=False) as client:
            return client.post(f"{stack.sandbox.http_base}/timum/providers/{names.provider}/bookings", data=form)

    before = len(stack.timum.list_bookings(names.provider, names.resource))
    refused = book(14)
    assert refused.status_code == 409
    assert "Diese Zeit ist im verbundenen Outlook-Kalender belegt" in refused.text
    assert len(stack.timum.list_bookings(names.provider, names.resource)) == before
    accepted = book(16)
    assert accepted.status_code == 303
    assert len(stack.timum.list_bookings(names.provider, names.resource)) == before + 1
