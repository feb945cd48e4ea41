"""Token revocation and reconnect, the soak's step pinned down: booking changes made while a
delegated link waits for its user to reconnect reach Outlook once the user has reconnected."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from devtools.stack import Stack
from devtools.stack_world import add_tenant, event_times, wait_quiet

if TYPE_CHECKING:
    from devtools.sandbox.graph.model import Event


def _event_of(stack: Stack, calendar_id: str, booking_id: str) -> Event | None:
    for event in stack.graph.calendar_events(calendar_id):
        if any(value == booking_id for _, value in event.ext_props.values()):
            return event
    return None


def test_bookings_changed_while_the_link_needed_a_reconnect_reach_outlook_after_it(stack: Stack) -> None:
    _, (person,) = add_tenant(stack, "Einzelpraxis", 1, admin_consent=False)
    linked = stack.link_delegated(person.mail, "Sprechzimmer", "praxis", "zimmer-1")
    kept_start, _ = event_times(3, 2)
    kept = stack.timum.make_booking("praxis", "zimmer-1", kept_start, duration=timedelta(minutes=30), force=True)
    stack.wait_for(lambda: _event_of(stack, linked.calendar_id, kept.id), 60, what="the first booking's event")

    stack.sandbox.identity.revoke_refresh_tokens(person.id, reason="revoked")
    stack.sandbox.identity.expire_access_tokens(person.id)
    new_start, _ = event_times(4, 5)
    moved_start, _ = event_times(5, 7)
    made = stack.timum.make_booking("praxis", "zimmer-1", new_start, duration=timedelta(minutes=30), force=True)
    stack.timum.reschedule_booking(kept.id, moved_start, force=True)

    def needs_reconnect() -> bool:
        link = stack.link("praxis", "zimmer-1")
        return link is not None and link.health.value == "needs_reconnect"

    stack.wait_for(needs_reconnect, 60, what="the link to need a reconnect")
    wait_quiet(stack, timeout=120)
    stack.link_delegated(person.mail, "Sprechzimmer", "praxis", "zimmer-1")
    wait_quiet(stack, timeout=120, settle=2.0)

    created = _event_of(stack, linked.calendar_id, made.id)
    assert created is not None, "the booking made while the link needed a reconnect never reached Outlook"
    moved = _event_of(stack, linked.calendar_id, kept.id)
    assert moved is not None
    start = stack.graph.instance(moved, None).start_utc
    assert start == moved_start, "the reschedule made while the link needed a reconnect never reached Outlook"
