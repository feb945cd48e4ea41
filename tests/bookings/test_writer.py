"""The booking event writer over the Graph and timum twins and both storage implementations."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from shared.bookings.service import apply_booking_message
from shared.bookings.store import BookingRepository
from shared.domain import (
    BookingStatus,
    CancelPolicy,
    LinkHealth,
    LinkKey,
    ProviderSettings,
    booking_transaction_id,
)
from shared.errors import Throttled
from shared.messages import SyncMessage, SyncReason
from shared.repos.links import LinkRepository, ProviderSettingsRepository
from shared.repos.sync_state import BookingMapRepository
from shared.storage import StoragePort
from tests.support.booking_world import KEY, START, World, booking


async def test_create_reschedule_cancel(world: World) -> None:
    assert await world.send(booking(1)) == "created"
    [event] = world.ours()
    assert event.start == START and event.transaction_id == booking_transaction_id("bk-1", "res-1")  # type: ignore[attr-defined]
    assert event.categories == ("timum",) and event.show_as == "busy"  # type: ignore[attr-defined]
    assert event.subject == "Krankengymnastik 30 min – Jörg Müller"  # type: ignore[attr-defined]
    assert await world.send(booking(2, minutes=90)) == "updated"
    [moved] = world.ours()
    assert moved.id == event.id and moved.start == START + timedelta(minutes=90)  # type: ignore[attr-defined]
    assert await world.send(booking(3, minutes=90, status=BookingStatus.CANCELLED)) == "deleted"
    assert world.ours() == []


async def test_replayed_and_reordered_webhooks_converge_on_the_newest(world: World) -> None:
    v1, v2, v3 = booking(1), booking(2, minutes=30), booking(3, minutes=60)
    for b in (v3, v1, v3, v2, v1, v3):
        await world.send(b)
    [event] = world.ours()
    assert event.start == START + timedelta(minutes=60)  # type: ignore[attr-defined]
    row = await BookingMapRepository(world.services.storage).get(KEY, "bk-1")
    assert row is not None and row.version == 3


async def test_second_delivery_writes_nothing(world: World) -> None:
    await world.send(booking(1))
    before = sum(world.graph.requests.values())
    assert await world.send(booking(1)) == "stale"
    assert sum(world.graph.requests.values()) == before


async def test_user_deleted_event_is_recreated_on_next_change(world: World) -> None:
    await world.send(booking(1))
    [event] = world.ours()
    world.graph.user_delete(event.id)  # type: ignore[attr-defined]
    assert await world.send(booking(2, minutes=15)) == "recreated"
    [again] = world.ours()
    assert again.id != event.id and again.start == START + timedelta(minutes=15)  # type: ignore[attr-defined]


async def test_lost_map_finds_event_by_its_tag_instead_of_duplicating(world: World) -> None:
    await world.send(booking(1))
    await BookingMapRepository(world.services.storage).clear(KEY)
    assert await world.send(booking(2, minutes=45)) == "updated"
    [event] = world.ours()
    assert event.start == START + timedelta(minutes=45)  # type: ignore[attr-defined]


async def test_crash_between_create_and_map_commit_replays_into_one_event(world: World) -> None:
    maps = BookingMapRepository(world.services.storage)
    original = maps.put.__func__  # type: ignore[attr-defined]
    calls = {"n": 0}

    async def flaky_put(self: BookingMapRepository, link: LinkKey, row: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the ACTIVE write after the create
            raise RuntimeError("worker killed")
        await original(self, link, row)

    BookingMapRepository.put = flaky_put  # type: ignore[method-assign]
    try:
        with pytest.raises(RuntimeError):
            await world.send(booking(1))
    finally:
        BookingMapRepository.put = original  # type: ignore[method-assign]
    assert len(world.ours()) == 1
    assert await world.send(booking(1)) == "created"  # the replay: same transactionId
    assert len(world.ours()) == 1


async def test_cancel_policy_mark_keeps_a_free_marked_event(world: World) -> None:
    await ProviderSettingsRepository(world.services.storage).save(
        ProviderSettings(KEY.provider_id, cancel_policy=CancelPolicy.MARK))
    await world.send(booking(1))
    assert await world.send(booking(2, status=BookingStatus.CANCELLED)) == "updated"
    [event] = world.ours()
    assert event.subject.startswith("Abgesagt:") and event.show_as == "free"  # type: ignore[attr-defined]
    assert await world.send(booking(3)) == "updated"  # confirmed again
    [event] = world.ours()
    assert not event.subject.startswith("Abgesagt:") and event.show_as == "busy"  # type: ignore[attr-defined]


async def test_no_link_is_recorded_for_the_ics_feed(storage: StoragePort) -> None:
    w = World(storage)
    assert await w.send(booking(1)) == "no_link"
    assert await BookingRepository(storage).get(KEY.provider_id, KEY.resource_id, "bk-1") is not None
    assert w.ours() == []


async def test_throttling_surfaces_for_requeue_and_later_delivery_succeeds(world: World) -> None:
    world.graph.fail_next(Throttled("slow down", retry_after=2.5), op="create_event")
    with pytest.raises(Throttled) as err:
        await world.send(booking(1))
    assert err.value.retry_after == 2.5
    assert await world.send(booking(1)) == "created"
    assert len(world.ours()) == 1


async def test_revoked_token_sets_needs_reconnect_once_and_replays_after_reconnect(world: World) -> None:
    world.provider.revoked.add("acc-anna")
    assert await world.send(booking(1)) == "needs_reconnect"
    assert await world.send(booking(2, minutes=30)) == "needs_reconnect"
    link = await LinkRepository(world.services.storage).require(KEY)
    assert link.health is LinkHealth.NEEDS_RECONNECT
    assert [w["data"]["status"] for w in world.timum.status_webhooks] == ["needs_reconnect"]
    # Reconnected: the link set-up replays the stored bookings.
    world.provider.revoked.clear()
    link.health = LinkHealth.OK
    await LinkRepository(world.services.storage).save(link)
    result = await apply_booking_message(world.services, {"replay_link": str(KEY)})
    assert result.result == "replayed:1"
    [event] = world.ours()
    assert event.start == START + timedelta(minutes=30)  # type: ignore[attr-defined]


async def test_our_events_never_come_back_as_blocked_slots(world: World) -> None:
    from shared.sync.worker import run_sync

    for i in range(3):
        await world.send(replace(booking(1), id=f"bk-{i}", start=START + timedelta(hours=i),
                                 end=START + timedelta(hours=i, minutes=30)))
    world.graph.put_event("anna@praxis.example", world.calendar, subject="Privat", start=START + timedelta(days=1),
                          end=START + timedelta(days=1, hours=1))
    await run_sync(world.services, SyncMessage(str(KEY), SyncReason.SETUP, full=True), worker_id="w1")
    slots = await world.timum.list_blocked_slots(KEY.provider_id, KEY.resource_id)
    assert [s.start for s in slots] == [START + timedelta(days=1)]
