"""timum → Outlook through the real stack: bookings made in the sandbox timum reach the sandbox
Outlook as tagged events — via timum's signed webhook, the queue and the booking worker — and
stay right under duplicates, reordering, forged requests and Graph throttling."""

from __future__ import annotations

import functools
import json
import time
from datetime import timedelta

import httpx

from devtools.sandbox.timum.state import TimumState
from devtools.stack import Stack
from shared.domain import Customer, slot_external_id
from shared.messages import BOOKING_QUEUE
from shared.signing import SIGNATURE_HEADER, sign_webhook
from tests.support.e2e import ANNA, LOG, Names, berlin, booking_events, by_id, times, utc, wait_event, wait_slots


def test_booking_create_reschedule_cancel(stack: Stack, names: Names) -> None:
    linked = stack.link_app_only(ANNA, names.calendar, names.provider, names.resource)
    start = berlin(20, 9)
    began = time.monotonic()
    booking = stack.timum.make_booking(names.provider, names.resource, start, duration=timedelta(minutes=45),
                                       service_name="Manuelle Therapie", customer=Customer("Sabine Müller"))
    event = wait_event(stack, linked, booking.id, what="booking created", began=began)
    assert event.subject == "Manuelle Therapie – Sabine Müller"
    assert event.categories == ["timum"]
    assert event.show_as == "busy"
    assert (event.transaction_id or "").startswith("timum-")
    assert times(stack, event) == (utc(start), utc(start + timedelta(minutes=45)))

    began = time.monotonic()
    moved = berlin(21, 14)
    stack.timum.reschedule_booking(booking.id, moved)
    rescheduled = wait_event(stack, linked, booking.id, lambda e: times(stack, e)[0] == utc(moved),
                             what="booking rescheduled", began=began)
    assert rescheduled.key == event.key  # the same event, moved — not a second one
    assert times(stack, rescheduled)[1] == utc(moved + timedelta(minutes=45))

    began = time.monotonic()
    stack.timum.cancel_booking(booking.id)
    stack.wait_for(lambda: not booking_events(stack, linked.calendar_id, booking.id), what="booking cancelled")
    LOG.info("lag booking cancelled: %.2f s", time.monotonic() - began)


def test_same_webhook_three_times_and_out_of_order_newest_wins(stack: Stack, names: Names) -> None:
    linked = stack.link_app_only(ANNA, names.calendar, names.provider, names.resource)
    first_seq = len(stack.timum.list_deliveries())
    stack.timum.pause_deliveries()
    start = berlin(22, 9)
    booking = stack.timum.make_booking(names.provider, names.resource, start, service_name="Erstgespräch")
    stack.timum.reschedule_booking(booking.id, berlin(22, 11))
    newest = stack.timum.update_booking(booking.id, service_name="Nachsorge")
    created = stack.timum.list_deliveries()[first_seq]
    stack.timum.resend_delivery(created.seq)
    stack.timum.resend_delivery(created.seq)
    began = time.monotonic()
    order = stack.timum.resume_deliveries(reverse=True)
    assert len(order) == 5 and order[-1] == created.seq  # the oldest change arrives last, the third time

    stack.wait_timum(lambda s: all(d.outcome == "delivered" for d in s.list_deliveries()[first_seq:]),
                     what="all five webhooks accepted")
    event = wait_event(stack, linked, booking.id, lambda e: e.subject == "Nachsorge", what="newest version",
                       began=began)
    stack.wait_for(lambda: stack.queue_depth(BOOKING_QUEUE) == 0, what="booking queue drained")
    found = booking_events(stack, linked.calendar_id, booking.id)
    assert [e.key for e in found] == [event.key]
    assert event.subject == "Nachsorge"
    assert times(stack, event) == (utc(newest.start), utc(newest.end))
    assert times(stack, event)[0] == utc(berlin(22, 11))


def _answered(seq: int, state: TimumState) -> bool:
    return len(state.deliveries) > seq and state.deliveries[seq].outcome != "pending"


def test_forged_stale_and_malformed_webhooks_are_refused(stack: Stack, names: Names) -> None:
    linked = stack.link_app_only(ANNA, names.calendar, names.provider, names.resource)
    runs_before = len(stack.host.records("booking_worker"))
    first_seq = len(stack.timum.list_deliveries())

    refused: dict[str, str] = {}
    for mode, hour in (("wrong_secret", 9), ("stale", 10)):
        # The sandbox signs when it sends: keep the mode until this webhook was answered.
        stack.timum.set_signature_mode(mode)
        seq = len(stack.timum.list_deliveries())
        booking = stack.timum.make_booking(names.provider, names.resource, berlin(23, hour), service_name=mode)
        stack.wait_timum(functools.partial(_answered, seq), what=f"{mode} webhook answered")
        refused[booking.id] = mode
    stack.timum.set_signature_mode("valid")
    answered = {d.booking_id: d.status for d in stack.timum.list_deliveries()[first_seq:]}
    assert answered == dict.fromkeys(refused, 401)
    # 401 is final for timum: neither webhook was retried.
    assert len(stack.timum.list_deliveries()[first_seq:]) == 2

    # Correctly signed, but not a booking event.
    secret = stack.settings.timum_webhook_secrets[0]
    with httpx.Client(timeout=10) as client:
        for body in (b"{not json", json.dumps({"id": "dlv_x", "type": "booking.created", "data": {}}).encode()):
            answer = client.post(stack.api_url("timum/bookings"), content=body, headers={
                SIGNATURE_HEADER: sign_webhook(body, [secret], timestamp=int(time.time())),
                "Content-Type": "application/json"})
            assert answer.status_code == 400, answer.text

    # A valid webhook afterwards: once it is applied, anything queued before it would have run too.
    good = stack.timum.make_booking(names.provider, names.resource, berlin(23, 12), service_name="Echt")
    wait_event(stack, linked, good.id, what="genuine booking", began=time.monotonic())
    stack.wait_for(lambda: stack.queue_depth(BOOKING_QUEUE) == 0, what="booking queue drained")
    assert len(stack.host.records("booking_worker")) == runs_before + 1
    for booking_id in refused:
        assert booking_events(stack, linked.calendar_id, booking_id) == []


def test_graph_throttling_delays_the_event_but_it_arrives_once(stack: Stack, names: Names) -> None:
    linked = stack.link_app_only(ANNA, names.calendar, names.provider, names.resource)
    rule = stack.graph.add_fault("429", path=r"/calendars/[^/]+/events$", method="POST", count=2, retry_after=2.0)
    began = time.monotonic()
    booking = stack.timum.make_booking(names.provider, names.resource, berlin(24, 9), service_name="Gedrosselt")
    wait_event(stack, linked, booking.id, what="booking after 429", began=began)
    assert rule.hits == 2
    stack.wait_for(lambda: stack.queue_depth(BOOKING_QUEUE) == 0, what="booking queue drained")
    assert len(booking_events(stack, linked.calendar_id, booking.id)) == 1


def test_booking_event_never_comes_back_as_a_blocked_slot(stack: Stack, names: Names) -> None:
    linked = stack.link_app_only(ANNA, names.calendar, names.provider, names.resource)
    booking = stack.timum.make_booking(names.provider, names.resource, berlin(25, 9), service_name="Kein Echo")
    event = wait_event(stack, linked, booking.id, what="booking event", began=time.monotonic())
    # An ordinary busy event made after it: once its slot exists, the delta round that reported
    # the booking's event has run too.
    marker = stack.graph.create_event(ANNA, "Marker", berlin(25, 14), berlin(25, 15), calendar_id=linked.calendar_id)
    found = wait_slots(stack, names, lambda s: len(s) >= 1, what="marker slot")
    assert set(by_id(found)) == {slot_external_id(names.key, marker.immutable_id)}
    # The booking's own event is busy and in the calendar, yet blocks nothing in timum.
    assert event.show_as == "busy"
    assert [s for s in stack.timum.list_slots(names.provider, names.resource)
            if s.external_id == slot_external_id(names.key, stack.graph.ids(event).immutable_id)] == []


def test_booking_reassigned_to_another_resource_moves_to_its_calendar(stack: Stack, names: Names) -> None:
    first = stack.link_app_only(ANNA, names.calendar, names.provider, names.resource)
    other = Names(names.provider, names.resource + "-b", names.calendar + " B")
    second = stack.link_app_only(ANNA, other.calendar, other.provider, other.resource)
    start = berlin(23, 10)
    booking = stack.timum.make_booking(names.provider, names.resource, start, service_name="Massage")
    wait_event(stack, first, booking.id, what="booking created", began=time.monotonic())

    began = time.monotonic()
    stack.timum.reschedule_booking(booking.id, start, resource_id=other.resource)
    moved = wait_event(stack, second, booking.id, what="booking at its new resource", began=began)
    assert moved.subject.startswith("Massage")
    stack.wait_for(lambda: not booking_events(stack, first.calendar_id, booking.id), what="event left the old calendar")
    # Both calendars are in one mailbox: the new event is a create of its own, not the old one.
    assert len(booking_events(stack, second.calendar_id, booking.id)) == 1
