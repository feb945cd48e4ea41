"""The timum → Outlook booking writer as a state machine over the Graph and timum twins.

Rules play timum (new bookings, reschedules, cancellations and re-confirmations, reassignment to
another resource — linked or not) and the delivery of its webhooks: in any order, more than once,
with failures injected — a crash before a chosen storage write, a crash right after Graph
performed a write (the worker never heard the answer), a run that cannot let go of its lease,
Graph throttling — and the user deleting a booking's event in Outlook. Deliveries are queue
messages: a failed one is retried under its own id, with no time passing (the host's retry comes
in seconds, a lease lasts minutes). After every quiet point (every message retried until it
lands): each booking's newest version decides everything — exactly
one event, with its times, in the calendar of the resource it is on when it is confirmed and that
resource is linked; no event of it anywhere else; each resource's stored bookings are the ones
whose newest version is there — and delivering every version once more writes nothing to Graph.

Profiles: ``ci`` (default; derandomized) and ``deep`` (``HYPOTHESIS_PROFILE=deep``).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Coroutine
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from shared.adapters.graph_memory import MemoryGraphProvider
from shared.adapters.timum_memory import MemoryTimum
from shared.bookings.payload import booking_to_json
from shared.bookings.service import apply_booking_message
from shared.bookings.store import BookingRepository
from shared.context import Services
from shared.domain import Booking, BookingStatus, Customer, Link, LinkMode
from shared.errors import Throttled, TransientError
from shared.messages import BOOKING_QUEUE
from shared.repos.links import LinkRepository
from shared.storage.memory import MemoryQueue
from tests.support.crashing_graph import CrashingGraph
from tests.support.outlook_world import SimulatedCrash, TripwireStorage
from tests.support.settings import make_settings

settings.register_profile("ci", max_examples=40, stateful_step_count=30, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("deep", max_examples=1000, stateful_step_count=80, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])

T = TypeVar("T")
PROVIDER = "prov-1"
MAILBOX = "anna@praxis.example"
LINKED = ("res-1", "res-2")          # each linked to its own calendar of one mailbox
UNLINKED = "res-3"                   # bookings may move here: stored, never written to Outlook
BOOKINGS = ("bk-0", "bk-1", "bk-2")
START = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
EXPECTED_FAILURES = (SimulatedCrash, Throttled, TransientError)
# The writer's storage: a crash before any of these writes must replay to the same end.
TABLES = ("bookings", "bookingindex", "bookingmap", "leases")
_pick = st.integers(min_value=0, max_value=10_000)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class BookingWriterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.storage = TripwireStorage()
        self.clock = Clock()
        self.graph = CrashingGraph(clock=self.clock)
        self.graph.add_mailbox(MAILBOX, display_name="Dr. Anna Weber")
        self.graph.sign_in(MAILBOX)
        timum = MemoryTimum()
        self.calendars: dict[str, str] = {}
        for number, resource in enumerate((*LINKED, UNLINKED), start=1):
            timum.add_resource(PROVIDER, f"Behandlungsraum {number}", resource_id=resource)
        for number, resource in enumerate(LINKED, start=1):
            self.calendars[resource] = self.graph.add_calendar(MAILBOX, f"Behandlungsraum {number}")
        self.services = Services(settings=make_settings(), storage=self.storage, timum=timum,
                                 graph=MemoryGraphProvider(self.graph), clock=self.clock)
        for resource, calendar in self.calendars.items():
            self.run(LinkRepository(self.storage).save(Link(
                provider_id=PROVIDER, resource_id=resource, mode=LinkMode.DELEGATED, tenant_id="tenant-memory",
                mailbox_id=MAILBOX, calendar_id=calendar, calendar_name=resource, calendar_owner=MAILBOX,
                account_id="acc-anna")))
        self.newest: dict[str, Booking] = {}       # timum's truth: each booking's newest version
        self.sent: list[Booking] = []              # every version timum ever sent (replays draw from it)
        # queue messages not yet handled (their id, the same on each retry, and the version they carry)
        self.pending: list[tuple[str, Booking]] = []
        self.messages = 0
        # booking → what the event the user deleted showed (calendar, start, end)
        self.user_deleted: dict[str, tuple[str, datetime, datetime]] = {}

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.loop.close()

    # --- timum ----------------------------------------------------------------------------------
    def _send(self, booking: Booking) -> None:
        self.newest[booking.id] = booking
        self.sent.append(booking)
        self.pending.append((self._message_id(), booking))

    def _message_id(self) -> str:
        self.messages += 1
        return f"m-{self.messages}"

    @precondition(lambda self: len(self.newest) < len(BOOKINGS))
    @rule(resource=st.sampled_from((*LINKED, UNLINKED)), hour=st.integers(0, 20))
    def book(self, resource: str, hour: int) -> None:
        which = BOOKINGS[len(self.newest)]
        start = START + timedelta(days=BOOKINGS.index(which), hours=hour)
        self._send(Booking(
            id=which, provider_id=PROVIDER, resource_id=resource, version=1,
            start=start, end=start + timedelta(minutes=45), status=BookingStatus.CONFIRMED,
            service_name="Erstgespräch", customer=Customer("Jörg Müller"),
            updated_at=START - timedelta(days=2) + timedelta(minutes=len(self.sent))))

    @precondition(lambda self: bool(self.newest))
    @rule(pick=_pick, minutes=st.sampled_from([-60, 15, 30, 120]))
    def reschedule(self, pick: int, minutes: int) -> None:
        old = self._pick_newest(pick)
        self._send(self._next(old, start=old.start + timedelta(minutes=minutes),
                              end=old.end + timedelta(minutes=minutes)))

    # Each version timum sends changes something: an unchanged booking's new version writes
    # nothing by design (the content hash decides), so it would not restore a deleted event.
    @precondition(lambda self: bool(self.newest))
    @rule(pick=_pick)
    def cancel_or_reconfirm(self, pick: int) -> None:
        old = self._pick_newest(pick)
        flipped = (BookingStatus.CONFIRMED if old.status is BookingStatus.CANCELLED
                   else BookingStatus.CANCELLED)
        self._send(self._next(old, status=flipped))

    @precondition(lambda self: bool(self.newest))
    @rule(pick=_pick, step=st.integers(1, 2))
    def reassign(self, pick: int, step: int) -> None:
        old = self._pick_newest(pick)
        resources = (*LINKED, UNLINKED)
        target = resources[(resources.index(old.resource_id) + step) % len(resources)]
        self._send(self._next(old, resource_id=target))

    def _pick_newest(self, pick: int) -> Booking:
        return self.newest[sorted(self.newest)[pick % len(self.newest)]]

    def _next(self, old: Booking, **changes: Any) -> Booking:
        return replace(old, version=old.version + 1,
                       updated_at=old.updated_at + timedelta(minutes=1), **changes)

    # --- delivery -------------------------------------------------------------------------------
    def _deliver(self, message: tuple[str, Booking]) -> bool:
        """Hand one queue message to the worker, as the host does; a failed one stays pending and
        is retried under its own id (the host's retry)."""
        message_id, booking = message
        data = json.loads(json.dumps({"delivery": f"d-{message_id}", "type": "booking.updated",
                                      "booking": booking_to_json(booking)}))
        try:
            self.run(apply_booking_message(self.services, data, delivery=message_id))
        except EXPECTED_FAILURES:
            if message not in self.pending:
                self.pending.append(message)
            return False
        finally:
            self.storage.disarm()
            self.graph.crash_next_write = False
        if message in self.pending:
            self.pending.remove(message)
        return True

    @precondition(lambda self: bool(self.pending))
    @rule(pick=_pick)
    def deliver(self, pick: int) -> None:
        # Any pending version, not the oldest: webhooks overtake each other.
        self._deliver(self.pending[pick % len(self.pending)])

    @precondition(lambda self: bool(self.sent))
    @rule(pick=_pick)
    def redeliver(self, pick: int) -> None:
        # timum sends a version again: a new queue message.
        self._deliver((self._message_id(), self.sent[pick % len(self.sent)]))

    @precondition(lambda self: bool(self.pending))
    @rule(pick=_pick, table=st.sampled_from(TABLES), after=st.integers(0, 2))
    def crash_in_storage(self, pick: int, table: str, after: int) -> None:
        self.storage.arm(table, after=after)
        self._deliver(self.pending[pick % len(self.pending)])

    @precondition(lambda self: bool(self.pending))
    @rule(pick=_pick)
    def crash_holding_the_lease(self, pick: int) -> None:
        # The lease is taken, then the leases table fails for the rest of the invocation: it
        # cannot let go, and its lease stays until the TTL, minutes after the host's retry.
        self.storage.arm("leases", after=1, lasting=True)
        self._deliver(self.pending[pick % len(self.pending)])

    @precondition(lambda self: bool(self.pending))
    @rule(pick=_pick)
    def crash_after_graph_write(self, pick: int) -> None:
        self.graph.crash_next_write = True
        self._deliver(self.pending[pick % len(self.pending)])

    @precondition(lambda self: bool(self.pending))
    @rule(pick=_pick)
    def graph_throttles(self, pick: int) -> None:
        self.graph.fail_next(Throttled("throttled", retry_after=1.0))
        self._deliver(self.pending[pick % len(self.pending)])

    # --- the user in Outlook --------------------------------------------------------------------
    @precondition(lambda self: any(e.booking_id for e in self.graph.events.values()))
    @rule(pick=_pick)
    def user_deletes_event(self, pick: int) -> None:
        ours = sorted((e for e in self.graph.events.values() if e.booking_id), key=lambda e: e.id)
        event = ours[pick % len(ours)]
        self.graph.user_delete(event.id)
        self.user_deleted[event.booking_id] = (event.calendar_id, event.start, event.end)

    # --- quiet point ----------------------------------------------------------------------------
    @rule(order=st.permutations(range(8)))
    def quiet_point(self, order: list[int]) -> None:
        # No time passes: the host retries a failed message within seconds, long before a lease
        # its invocation could not let go expires, and the retry must take that lease back.
        for _ in range(2 * len(self.pending) + 10):
            if not self.pending:
                break
            ranked = sorted(range(len(self.pending)), key=lambda i: order[i % len(order)])
            self._deliver(self.pending[ranked[0]])
        assert not self.pending, "deliveries keep failing without injected faults"
        queue = self.storage.queue(BOOKING_QUEUE)
        assert isinstance(queue, MemoryQueue)
        for raw in queue.drain():
            self.run(apply_booking_message(self.services, json.loads(raw)))
        self._check_converged()
        before = sum(self.graph.requests.values())
        for booking in list(self.sent):
            assert self._deliver((self._message_id(), booking))
        assert sum(self.graph.requests.values()) == before, "a replay of known versions wrote to Graph"

    def _check_converged(self) -> None:
        for booking_id, booking in self.newest.items():
            events = [e for e in self.graph.events.values() if e.booking_id == booking_id]
            wanted = booking.status is BookingStatus.CONFIRMED and booking.resource_id in self.calendars
            if not wanted:
                assert events == [], f"{booking_id} v{booking.version}: stray events {events}"
                continue
            # The user's deletion stands until the booking shows something else: the writer judges
            # by content (a new version that renders the same event writes nothing), so versions
            # that changed it and changed it back before the writer saw them leave it deleted. Had
            # it seen them one by one, it re-created the event, which is as right.
            shown = (self.calendars[booking.resource_id], booking.start, booking.end)
            if self.user_deleted.get(booking_id) == shown and not events:
                continue
            self.user_deleted.pop(booking_id, None)
            assert len(events) == 1, f"{booking_id} v{booking.version}: {len(events)} events"
            [event] = events
            assert event.calendar_id == self.calendars[booking.resource_id], booking_id
            assert (event.start, event.end) == (booking.start, booking.end), booking_id
        store = BookingRepository(self.storage)
        for resource in (*LINKED, UNLINKED):
            stored = {s.booking.id: s.booking.version
                      for s in self.run(store.list_for_resource(PROVIDER, resource))}
            expected = {b.id: b.version for b in self.newest.values() if b.resource_id == resource}
            assert stored == expected, (resource, stored, expected)


BookingWriterMachine.TestCase.settings = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
TestBookingWriterMachine = BookingWriterMachine.TestCase

