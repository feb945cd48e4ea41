"""Backfill: bookings timum held before a link (or a feed) existed reach the store and Outlook,
and a backfill never undoes what a newer webhook stored (versions decide)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from shared.bookings.service import apply_booking_message
from shared.bookings.store import BookingRepository
from shared.domain import BookingStatus
from shared.errors import TransientError
from shared.repos.sync_state import BookingMapRepository
from shared.storage import StoragePort
from tests.support.booking_world import KEY, START, World, booking


def _in_timum(world: World) -> None:
    world.timum.add_booking(booking(2))
    world.timum.add_booking(replace(booking(1, minutes=120), id="bk-2"))
    world.timum.add_booking(replace(booking(4, minutes=240, status=BookingStatus.CANCELLED), id="bk-3"))
    # Outside the sync window (a year and more ahead): never read into Outlook.
    world.timum.add_booking(replace(booking(1), id="bk-far", start=START + timedelta(days=500),
                                    end=START + timedelta(days=500, minutes=30)))


async def test_link_replay_backfills_existing_bookings_into_outlook(world: World) -> None:
    _in_timum(world)
    outcome = await apply_booking_message(world.services, {"replay_link": str(KEY)})
    assert outcome.result == "replayed:2"
    events = {e.booking_id: e for e in world.ours()}  # type: ignore[attr-defined]
    assert set(events) == {"bk-1", "bk-2"}
    assert events["bk-2"].start == START + timedelta(minutes=120)  # type: ignore[attr-defined]
    bookings = BookingRepository(world.services.storage)
    stored = {s.booking.id: s.booking.version
              for s in await bookings.list_for_resource(KEY.provider_id, KEY.resource_id)}
    assert stored == {"bk-1": 2, "bk-2": 1, "bk-3": 4}

    # A second replay (a reconnect) reads timum again and writes nothing.
    before = sum(world.graph.requests.values())
    assert (await apply_booking_message(world.services, {"replay_link": str(KEY)})).result == "replayed:0"
    assert sum(world.graph.requests.values()) == before


async def test_backfill_never_overwrites_a_newer_webhook(world: World) -> None:
    _in_timum(world)
    assert await world.send(booking(3, minutes=60)) == "created"  # the webhook came first
    await apply_booking_message(world.services, {"replay_link": str(KEY)})  # timum still lists version 2
    [event] = [e for e in world.ours() if e.booking_id == "bk-1"]  # type: ignore[attr-defined]
    assert event.start == START + timedelta(minutes=60)  # type: ignore[attr-defined]
    row = await BookingMapRepository(world.services.storage).get(KEY, "bk-1")
    assert row is not None and row.version == 3
    # …and a webhook newer than the backfill still wins afterwards.
    assert await world.send(booking(5, minutes=75)) == "updated"
    [event] = [e for e in world.ours() if e.booking_id == "bk-1"]  # type: ignore[attr-defined]
    assert event.start == START + timedelta(minutes=75)  # type: ignore[attr-defined]


async def test_feed_backfill_fills_the_store_without_a_link(storage: StoragePort) -> None:
    world = World(storage)  # no link: a resource that only has an ICS feed
    _in_timum(world)
    outcome = await apply_booking_message(world.services, {"backfill": str(KEY)})
    assert outcome.result == "backfilled:3"
    assert world.ours() == []
    stored = await BookingRepository(storage).list_for_resource(KEY.provider_id, KEY.resource_id)
    assert sorted(s.booking.id for s in stored) == ["bk-1", "bk-2", "bk-3"]
    assert (await apply_booking_message(world.services, {"backfill": str(KEY)})).result == "backfilled:0"


async def test_backfill_of_a_resource_gone_in_timum_stores_nothing(storage: StoragePort) -> None:
    world = World(storage)
    world.timum.remove_resource(KEY.provider_id, KEY.resource_id)
    assert (await apply_booking_message(world.services, {"backfill": str(KEY)})).result == "backfilled:0"


async def test_transient_timum_failure_is_retried_by_the_queue(world: World) -> None:
    _in_timum(world)
    world.timum.fail_next(TransientError("timum is down"), op="list_bookings")
    with pytest.raises(TransientError):
        await apply_booking_message(world.services, {"replay_link": str(KEY)})
    assert world.ours() == []
    assert (await apply_booking_message(world.services, {"replay_link": str(KEY)})).result == "replayed:2"


async def test_malformed_backfill_key_is_a_bad_request(world: World) -> None:
    from shared.errors import BadRequest

    with pytest.raises(BadRequest):
        await apply_booking_message(world.services, {"backfill": "no-separator"})
