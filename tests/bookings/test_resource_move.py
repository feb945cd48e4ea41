"""A booking that timum reassigns to another resource (another person or room): its event moves
to the other linked calendar, the old calendar keeps nothing, and each resource's stored
bookings (its ICS feed) follow — whatever order and however often the webhooks arrive."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from shared.bookings.store import BookingRepository
from shared.domain import Booking, BookingStatus, Link, LinkHealth, LinkKey, LinkMode
from shared.repos.links import LinkRepository
from shared.repos.sync_state import BookingMapRepository
from shared.storage import StoragePort
from tests.support.booking_world import KEY, World, booking

OTHER = LinkKey(KEY.provider_id, "res-2")


class TwoRooms(World):
    def __init__(self, storage: StoragePort) -> None:
        super().__init__(storage)
        self.timum.add_resource(OTHER.provider_id, "Behandlungsraum 2", resource_id=OTHER.resource_id)
        self.other_calendar = self.graph.add_calendar("anna@praxis.example", "Behandlungsraum 2")

    async def link_other(self, **changes: object) -> Link:
        link = Link(provider_id=OTHER.provider_id, resource_id=OTHER.resource_id, mode=LinkMode.DELEGATED,
                    tenant_id="tenant-memory", mailbox_id="anna@praxis.example", calendar_id=self.other_calendar,
                    calendar_name="Behandlungsraum 2", calendar_owner="anna@praxis.example", account_id="acc-anna")
        return await LinkRepository(self.services.storage).save(replace(link, **changes))  # type: ignore[arg-type]

    def events_in(self, calendar_id: str) -> list[object]:
        return [e for e in self.graph.events.values() if e.booking_id and e.calendar_id == calendar_id]

    async def stored_at(self, key: LinkKey) -> list[tuple[str, int]]:
        found = await BookingRepository(self.services.storage).list_for_resource(key.provider_id, key.resource_id)
        return [(s.booking.id, s.booking.version) for s in found]


def moved(version: int, minutes: int = 0, **changes: object) -> Booking:
    return replace(booking(version, minutes=minutes), resource_id=OTHER.resource_id, **changes)  # type: ignore[arg-type]


@pytest.fixture
async def rooms(storage: StoragePort) -> TwoRooms:
    w = TwoRooms(storage)
    await w.link()
    await w.link_other()
    return w


async def test_a_reassigned_booking_moves_its_event_and_its_feed_entry(rooms: TwoRooms) -> None:
    assert await rooms.send(booking(1)) == "created"
    assert len(rooms.events_in(rooms.calendar)) == 1
    revision = await BookingRepository(rooms.services.storage).revision(KEY.provider_id, KEY.resource_id)

    assert await rooms.send(moved(2, minutes=30)) == "created"
    assert rooms.events_in(rooms.calendar) == []
    [event] = rooms.events_in(rooms.other_calendar)
    assert event.subject == "Krankengymnastik 30 min – Jörg Müller"  # type: ignore[attr-defined]
    assert await rooms.stored_at(KEY) == [] and await rooms.stored_at(OTHER) == [("bk-1", 2)]
    # The old resource's revision rose: a cached feed of it is stale now and drops the booking.
    assert await BookingRepository(rooms.services.storage).revision(KEY.provider_id, KEY.resource_id) > revision
    where = await BookingRepository(rooms.services.storage).locate(KEY.provider_id, "bk-1")
    assert where is not None and (where.resource_id, where.version, where.moved_from) == ("res-2", 2, ())


async def test_an_old_version_for_the_old_resource_never_comes_back(rooms: TwoRooms) -> None:
    await rooms.send(booking(1))
    await rooms.send(moved(2))
    writes = sum(rooms.graph.requests.values())
    assert await rooms.send(booking(1)) == "stale"
    assert sum(rooms.graph.requests.values()) == writes
    assert await rooms.stored_at(KEY) == [] and len(rooms.events_in(rooms.calendar)) == 0
    assert len(rooms.events_in(rooms.other_calendar)) == 1


@pytest.mark.parametrize("order", [(1, 2, 3), (1, 3, 2), (3, 2, 1), (2, 1, 3)])
async def test_back_and_forth_in_any_order_ends_where_the_newest_version_says(rooms: TwoRooms,
                                                                             order: tuple[int, ...]) -> None:
    versions = {1: booking(1), 2: moved(2, minutes=30), 3: booking(3, minutes=60)}  # room 1 → 2 → 1
    for v in order:
        await rooms.send(versions[v])
    assert await rooms.stored_at(KEY) == [("bk-1", 3)] and await rooms.stored_at(OTHER) == []
    assert rooms.events_in(rooms.other_calendar) == []
    [event] = rooms.events_in(rooms.calendar)
    assert event.start == versions[3].start  # type: ignore[attr-defined]


async def test_concurrent_deliveries_to_two_resources_leave_one_copy(rooms: TwoRooms) -> None:
    await rooms.send(booking(1))
    third = LinkKey(KEY.provider_id, "res-3")
    await asyncio.gather(rooms.send(moved(2)), rooms.send(replace(booking(3), resource_id=third.resource_id)))
    assert await rooms.stored_at(KEY) == [] and await rooms.stored_at(OTHER) == []
    assert await rooms.stored_at(third) == [("bk-1", 3)]
    # res-3 has no link: no calendar keeps an event of the booking.
    assert rooms.events_in(rooms.calendar) == [] and rooms.events_in(rooms.other_calendar) == []


async def test_a_cancelled_move_target_removes_the_old_event_too(rooms: TwoRooms) -> None:
    await rooms.send(booking(1))
    await rooms.send(moved(2, status=BookingStatus.CANCELLED))
    assert rooms.events_in(rooms.calendar) == [] and rooms.events_in(rooms.other_calendar) == []


async def test_the_old_event_goes_once_its_link_is_reconnected(rooms: TwoRooms) -> None:
    from shared.bookings.service import replay_link_bookings

    await rooms.send(booking(1))
    repo = LinkRepository(rooms.services.storage)
    old = await repo.require(KEY)
    await repo.save(replace(old, health=LinkHealth.NEEDS_RECONNECT))
    await rooms.send(moved(2))
    assert len(rooms.events_in(rooms.calendar)) == 1  # no token for the old calendar yet
    where = await BookingRepository(rooms.services.storage).locate(KEY.provider_id, "bk-1")
    assert where is not None and where.moved_from == ("res-1",)

    await repo.save(replace(await repo.require(KEY), health=LinkHealth.OK))
    await replay_link_bookings(rooms.services, KEY)  # what reconnecting runs
    assert rooms.events_in(rooms.calendar) == []
    row = await BookingMapRepository(rooms.services.storage).get(KEY, "bk-1")
    assert row is not None and row.event_id == ""
    where = await BookingRepository(rooms.services.storage).locate(KEY.provider_id, "bk-1")
    assert where is not None and where.moved_from == ()
