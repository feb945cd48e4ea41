"""The booking writer after a worker died between a Graph write and the row that records it.

Each case is a sequence the writer's state machine (``test_writer_machine.py``) found under
random seeds; here each runs once, by hand, so it is read as a plain story and stays pinned
whatever the machine's draw.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.adapters.graph_memory import MemoryGraphProvider
from shared.adapters.timum_memory import MemoryTimum
from shared.bookings.payload import booking_to_json
from shared.bookings.service import LEASE_TTL, _lease_key, apply_booking_message
from shared.bookings.store import BookingRepository
from shared.domain import Booking, BookingStatus, Customer, Link, LinkKey, LinkMode
from shared.repos.links import LeaseRepository, LinkRepository
from shared.repos.sync_state import BookingEventState, BookingMapRepository
from tests.support.crashing_graph import CrashingGraph
from tests.support.outlook_world import SimulatedCrash, TripwireStorage
from tests.support.twins import twin_services

PROVIDER = "prov-1"
MAILBOX = "anna@praxis.example"
START = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class World:
    """Two linked resources (res-1, res-2) and an unlinked one (res-3)."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.storage = TripwireStorage()
        self.graph = CrashingGraph(clock=self.clock)
        self.graph.add_mailbox(MAILBOX, display_name="Dr. Anna Weber")
        self.graph.sign_in(MAILBOX)
        self.calendars = {r: self.graph.add_calendar(MAILBOX, f"Behandlungsraum {n}")
                          for n, r in enumerate(("res-1", "res-2"), start=1)}
        timum = MemoryTimum()
        for n, r in enumerate(("res-1", "res-2", "res-3"), start=1):
            timum.add_resource(PROVIDER, f"Behandlungsraum {n}", resource_id=r)
        self.services = twin_services(storage=self.storage, graph=self.graph,
                                      provider=MemoryGraphProvider(self.graph), timum=timum, clock=self.clock)

    async def link_all(self) -> None:
        for resource, calendar in self.calendars.items():
            await LinkRepository(self.storage).save(Link(
                provider_id=PROVIDER, resource_id=resource, mode=LinkMode.DELEGATED, tenant_id="tenant-memory",
                mailbox_id=MAILBOX, calendar_id=calendar, calendar_name=resource, calendar_owner=MAILBOX,
                account_id="acc-anna"))

    async def send(self, booking: Booking, *, delivery: str = "") -> str:
        data = json.loads(json.dumps({"delivery": f"d-{booking.version}", "type": "booking.updated",
                                      "booking": booking_to_json(booking)}))
        return (await apply_booking_message(self.services, data, delivery=delivery)).result

    async def send_dying_after_graph(self, booking: Booking) -> None:
        """Deliver ``booking``; the worker dies right after its Graph write."""
        self.graph.crash_next_write = True
        with pytest.raises(SimulatedCrash):
            await self.send(booking)
        assert not self.graph.crash_next_write, "the delivery made no Graph write"

    def events(self) -> list[tuple[str, datetime, datetime]]:
        return sorted((e.calendar_id, e.start, e.end) for e in self.graph.events.values() if e.booking_id)


def booking(version: int, *, resource: str = "res-1", minutes: int = 0,
            status: BookingStatus = BookingStatus.CONFIRMED) -> Booking:
    start = START + timedelta(minutes=minutes)
    return Booking(id="bk-1", provider_id=PROVIDER, resource_id=resource, version=version, start=start,
                   end=start + timedelta(minutes=45), status=status, service_name="Erstgespräch",
                   customer=Customer("Jörg Müller"), updated_at=START - timedelta(days=1, minutes=-version))


@pytest.fixture
async def world() -> World:
    w = World()
    await w.link_all()
    return w


async def test_a_cancellation_finds_the_event_a_dead_create_left(world: World) -> None:
    await world.send_dying_after_graph(booking(1))
    assert len(world.events()) == 1   # created in Outlook, the row still PENDING

    assert await world.send(booking(2, status=BookingStatus.CANCELLED)) == "deleted"
    assert world.events() == []
    # Settled once: replays of either version ask Graph nothing.
    before = sum(world.graph.requests.values())
    assert await world.send(booking(2, status=BookingStatus.CANCELLED)) == "stale"
    assert await world.send(booking(1)) == "stale"
    assert sum(world.graph.requests.values()) == before


async def test_a_cancellation_after_a_create_that_never_reached_graph_writes_nothing(world: World) -> None:
    world.storage.arm("bookingmap", after=1)      # the PENDING row is written, the ACTIVE one is not
    world.graph.fail_next(SimulatedCrash("died before the POST"))
    with pytest.raises(SimulatedCrash):
        await world.send(booking(1))
    world.storage.disarm()
    assert world.events() == []

    assert await world.send(booking(2, status=BookingStatus.CANCELLED)) == "cancelled_without_event"
    row = await BookingMapRepository(world.storage).get(LinkKey(PROVIDER, "res-1"), "bk-1")
    assert row is not None and row.state is BookingEventState.ACTIVE and row.version == 2


async def test_a_replayed_create_shows_the_newer_version_not_the_first_attempt(world: World) -> None:
    await world.send_dying_after_graph(booking(1))
    # Graph answers the repeated transactionId with the event as the dead attempt created it.
    assert await world.send(booking(2, minutes=30)) == "created"
    cal = world.calendars["res-1"]
    assert world.events() == [(cal, START + timedelta(minutes=30), START + timedelta(minutes=75))]


async def test_a_reconfirmation_restores_the_event_a_dead_cancellation_deleted(world: World) -> None:
    assert await world.send(booking(1)) == "created"
    await world.send_dying_after_graph(booking(2, status=BookingStatus.CANCELLED))
    assert world.events() == []          # deleted in Outlook, the row still names the event

    assert await world.send(booking(3)) == "recreated"
    assert world.events() == [(world.calendars["res-1"], START, START + timedelta(minutes=45))]


async def test_moving_back_after_a_dead_reschedule_rewrites_the_times(world: World) -> None:
    assert await world.send(booking(1)) == "created"
    await world.send_dying_after_graph(booking(2, minutes=15))
    # Back to the first times: the row must not call that "unchanged" — Outlook shows +15 min.
    assert await world.send(booking(3)) == "updated"
    assert world.events() == [(world.calendars["res-1"], START, START + timedelta(minutes=45))]


async def test_a_booking_back_on_its_resource_gets_its_event_again_after_a_dead_removal(world: World) -> None:
    assert await world.send(booking(1)) == "created"
    # Moved to an unlinked resource: its event in res-1 is removed, and the worker dies right then.
    await world.send_dying_after_graph(booking(2, resource="res-3"))
    assert world.events() == []
    assert await world.send(booking(3, resource="res-1")) == "recreated"
    assert world.events() == [(world.calendars["res-1"], START, START + timedelta(minutes=45))]


async def test_a_booking_that_moved_leaves_no_stored_copy_behind_after_a_dead_move(world: World) -> None:
    store = BookingRepository(world.storage)
    assert await world.send(booking(1, resource="res-3")) == "no_link"
    # Moved to res-2 (v2) and rescheduled there (v3); v3 arrives first, and its worker dies before
    # dropping the res-3 copy (after the res-2 row, its revision and the index were written).
    world.storage.arm("bookings", after=2)
    with pytest.raises(SimulatedCrash):
        await world.send(booking(3, resource="res-2", minutes=15))
    world.storage.disarm()
    # v2 arrives late: older than what the index holds, on the same resource.
    await world.send(booking(2, resource="res-2"))
    await world.send(booking(4, resource="res-2", minutes=30))
    assert [s.booking.id for s in await store.list_for_resource(PROVIDER, "res-3")] == []
    assert [s.booking.version for s in await store.list_for_resource(PROVIDER, "res-2")] == [4]


async def test_the_retry_of_a_message_takes_back_the_lease_its_failed_run_could_not_let_go(world: World) -> None:
    # The run took the booking's lease and wrote the event; then the leases table failed for the
    # rest of it, so not even its clean-up could let go. The lease stays for minutes.
    world.storage.arm("leases", after=1, lasting=True)
    with pytest.raises(SimulatedCrash):
        await world.send(booking(1), delivery="queue-msg-1")
    world.storage.disarm()
    # A reschedule arrives meanwhile: stored, and it gives way to the held lease.
    assert await world.send(booking(2, minutes=15), delivery="queue-msg-2") == "coalesced"
    assert world.events() == [(world.calendars["res-1"], START, START + timedelta(minutes=45))]

    # The host retries the failed message within seconds, under its own id: it takes the lease
    # back and writes the stored newest version (a new owner would give way and complete).
    assert await world.send(booking(1), delivery="queue-msg-1") == "updated"
    assert world.events() == [(world.calendars["res-1"], START + timedelta(minutes=15), START + timedelta(minutes=60))]
    # It let go: the next message runs at once.
    assert await world.send(booking(3, minutes=30), delivery="queue-msg-3") == "updated"


async def test_a_message_without_an_id_is_its_own_owner(world: World) -> None:
    leases = LeaseRepository(world.storage, ttl=LEASE_TTL)
    assert await leases.acquire(_lease_key(PROVIDER, "bk-1"), "message-", now=world.clock())
    assert await world.send(booking(1)) == "coalesced"


async def test_the_booking_queue_trigger_owns_the_lease_by_message_id(world: World,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import azure.functions as func

    import shared.wiring as wiring
    from shared.jobs import booking_bp

    monkeypatch.setattr(wiring, "get_services", lambda: world.services)
    leases = LeaseRepository(world.storage, ttl=LEASE_TTL)
    assert await leases.acquire(_lease_key(PROVIDER, "bk-1"), "message-q-1", now=world.clock())
    body = json.dumps({"delivery": "d-1", "type": "booking.created", "booking": booking_to_json(booking(1))})

    await booking_bp.booking_worker(func.QueueMessage(id="q-2", body=body.encode()))   # gives way
    assert world.events() == []
    await booking_bp.booking_worker(func.QueueMessage(id="q-1", body=body.encode()))   # the retry of q-1
    assert world.events() == [(world.calendars["res-1"], START, START + timedelta(minutes=45))]
