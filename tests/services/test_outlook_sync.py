"""The delta engine over the Graph and timum twins: what ends up in timum, and what it costs."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta

import pytest

from shared.adapters.graph_memory import Recurrence
from shared.domain import (
    BlockedSlot,
    EventDraft,
    LinkHealth,
    LinkMode,
    ProviderSettings,
    TitlePrivacy,
    booking_transaction_id,
    slot_external_id,
)
from shared.errors import NeedsReconnect, Throttled, TransientError
from shared.messages import SYNC_QUEUE, SyncMessage
from shared.repos.links import LeaseRepository, LinkRepository, ProviderSettingsRepository
from shared.repos.sync_state import BookingEventState, BookingMapRepository, BookingMapRow
from shared.storage.memory import MemoryStorage
from shared.sync.rounds import DEFAULT_RETRY_AFTER_SECONDS, HealthChange
from shared.sync.worker import run_sync
from tests.support.outlook_world import KEY, MAILBOX, NOW, PROVIDER, RESOURCE, SimulatedCrash, World

H = timedelta(hours=1)
T = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def ext(event_id: str) -> str:
    return slot_external_id(KEY, event_id)


async def test_create_move_delete(any_world: World) -> None:
    w = any_world
    eid = w.add(subject="Zahnarzt", start=T, end=T + H)
    out = await w.sync()
    assert (out.status, out.upserts, out.full_rounds) == ("ok", 1, 1)
    assert {k: (s.start, s.end) for k, s in w.slots().items()} == {ext(eid): (T, T + H)}

    w.graph.edit_event(eid, start=T + 2 * H, end=T + 3 * H)
    out = await w.sync()
    assert (out.upserts, out.deletes, out.full_rounds) == (1, 0, 0)
    assert {k: (s.start, s.end) for k, s in w.slots().items()} == {ext(eid): (T + 2 * H, T + 3 * H)}

    w.graph.user_delete(eid)
    out = await w.sync()
    assert (out.upserts, out.deletes) == (0, 1)
    assert w.slots() == {}
    assert await w.status_rows() == {}
    link = await w.link()
    assert link.delta_link and link.health is LinkHealth.OK and link.last_sync_at == NOW


async def test_recurring_series_blocks_each_occurrence(any_world: World) -> None:
    w = any_world
    series = w.add(subject="Teamrunde", start=T, end=T + H, recurrence=Recurrence("weekly", count=4))
    occurrences = w.graph.occurrence_ids(series, T - H, T + timedelta(days=60))
    w.graph.modify_occurrence(occurrences[1], start=T + timedelta(days=8), end=T + timedelta(days=8) + 2 * H)
    w.graph.user_delete(occurrences[2])
    await w.sync()
    assert ext(series) not in w.slots()  # the master is not a time of its own
    assert {k: (s.start, s.end) for k, s in w.slots().items()} == {
        ext(occurrences[0]): (T, T + H),
        ext(occurrences[1]): (T + timedelta(days=8), T + timedelta(days=8) + 2 * H),
        ext(occurrences[3]): (T + timedelta(days=21), T + timedelta(days=21) + H),
    }
    # An exception that kept its own status stays busy when the series is made free.
    w.graph.modify_occurrence(occurrences[1], show_as="busy")
    w.graph.edit_event(series, show_as="free")
    await w.sync()
    assert set(w.slots()) == {ext(occurrences[1])}


async def test_single_event_turned_into_a_series(world: World) -> None:
    eid = world.add(start=T, end=T + H)
    await world.sync()
    world.graph.edit_event(eid, recurrence=Recurrence("daily", count=3))
    await world.sync()
    occurrences = world.graph.occurrence_ids(eid, T - H, T + timedelta(days=5))
    assert set(world.slots()) == {ext(o) for o in occurrences}


async def test_all_day_private_free_tentative(world: World) -> None:
    await ProviderSettingsRepository(world.storage).save(
        ProviderSettings(PROVIDER, title_privacy=TitlePrivacy.SUBJECT, tentative_blocks=False))
    all_day = world.add(subject="Urlaub", start=date(2026, 12, 1), end=date(2026, 12, 3), all_day=True)
    private = world.add(subject="Arzttermin privat", start=T, end=T + H, sensitivity="private")
    normal = world.add(subject="Fortbildung", start=T + 2 * H, end=T + 3 * H)
    world.add(subject="frei", start=T, end=T + H, show_as="free")
    world.add(subject="vielleicht", start=T, end=T + H, show_as="tentative")
    world.add(subject="woanders", start=T, end=T + H, show_as="workingElsewhere")
    oof = world.add(subject="Abwesend", start=T + 4 * H, end=T + 5 * H, show_as="oof")
    await world.sync()
    slots = world.slots()
    assert set(slots) == {ext(all_day), ext(private), ext(normal), ext(oof)}
    day = slots[ext(all_day)]
    assert day.all_day and day.start == datetime(2026, 11, 30, 23, tzinfo=UTC)  # midnight in Berlin
    assert day.end - day.start == timedelta(days=2)
    assert slots[ext(private)].title == "Outlook"
    assert slots[ext(normal)].title == "Fortbildung"


async def test_our_own_booking_events_never_become_slots(world: World) -> None:
    draft = EventDraft(subject="Buchung", body_html="", start=T, end=T + H, time_zone="Europe/Berlin",
                       booking_id="bk-1")
    # One found by its transactionId (the booking map row not written yet), one by the booking map.
    by_transaction = await world.graph.create_event(MAILBOX, world.calendar, draft,
                                                    transaction_id=booking_transaction_id("bk-1"))
    by_map = world.add(subject="Buchung 2", start=T + H, end=T + 2 * H)
    await BookingMapRepository(world.storage).put(KEY, BookingMapRow("bk-2", by_map, 1, "h", "",
                                                                     BookingEventState.ACTIVE))
    foreign = world.add(subject="Privat", start=T + 3 * H, end=T + 4 * H)
    await world.sync()
    assert set(world.slots()) == {ext(foreign)}
    assert by_transaction not in await world.status_rows()


async def test_second_sync_writes_nothing_and_costs_one_request(any_world: World) -> None:
    w = any_world
    ids = [w.add(start=T + i * H, end=T + (i + 1) * H) for i in range(7)]
    first = await w.sync()
    assert first.pages == 3 and first.upserts == 7  # page size 3
    writes, before = w.timum.writes(), w.graph.requests["delta"]
    again = await w.sync()
    assert w.timum.writes() == writes
    assert w.graph.requests["delta"] - before == again.graph_requests == 1
    # An unchanged save in Outlook (new change key, same content) is reported but writes nothing.
    w.graph.edit_event(ids[0])
    bumped = await w.sync()
    assert bumped.upserts == 0 and w.timum.writes() == writes


async def test_empty_pages_replays_and_page_caps(world: World) -> None:
    world.graph.empty_page_rate = 0.5
    world.graph.replay_rate = 0.5
    world.graph.max_page_size = 2
    ids = {world.add(start=T + i * H, end=T + (i + 1) * H) for i in range(9)}
    await world.sync()
    writes = world.timum.writes()
    for _ in range(3):
        await world.sync()
    assert set(world.slots()) == {ext(i) for i in ids}
    assert world.timum.writes() == writes


async def test_duplicated_and_reordered_messages_give_one_slot_each(world: World) -> None:
    ids = [world.add(start=T + i * H, end=T + (i + 1) * H) for i in range(4)]
    messages = [SyncMessage(str(KEY)), SyncMessage(str(KEY), full=True), SyncMessage(str(KEY)),
                SyncMessage(str(KEY))]
    for message in reversed(messages + messages):
        await run_sync(world.services, message, worker_id="w")
    world.graph.user_delete(ids[0])
    for message in messages:
        await run_sync(world.services, message, worker_id="w")
    assert set(world.slots()) == {ext(i) for i in ids[1:]}
    ops = [op for op, *_ in world.timum.calls]
    # Each slot written once and deleted once, however many messages and in whatever order.
    assert (ops.count("put_blocked_slot"), ops.count("delete_blocked_slot")) == (4, 1)


async def test_concurrent_messages_coalesce_into_few_rounds(world: World) -> None:
    ids = [world.add(start=T + i * H, end=T + (i + 1) * H) for i in range(5)]
    outcomes = await asyncio.gather(*(world.sync(worker=f"w{i}") for i in range(10)))
    statuses = sorted(o.status for o in outcomes)
    assert statuses.count("ok") == 1 and statuses.count("coalesced") == 9
    holder = next(o for o in outcomes if o.status == "ok")
    assert holder.runs == 2 and holder.coalesced_runs == 1  # one rerun covers all nine
    assert world.graph.requests["delta"] == holder.graph_requests <= 3
    assert set(world.slots()) == {ext(i) for i in ids}
    assert await LeaseRepository(world.storage).acquire(KEY, "after", now=NOW)


async def test_full_request_meeting_a_held_lease_is_requeued(world: World) -> None:
    assert await LeaseRepository(world.storage).acquire(KEY, "someone-else", now=NOW)
    out = await world.sync(full=True)
    assert out.status == "requeued"
    queue = world.storage.queue(SYNC_QUEUE)
    assert isinstance(world.storage, MemoryStorage)
    assert [SyncMessage.parse(json.loads(m)) for m in queue.drain()] == [  # type: ignore[attr-defined]
        SyncMessage(str(KEY), full=True)]
    assert (await world.sync()).status == "coalesced"


async def test_crash_after_timum_write_replays_without_duplicates(any_world: World) -> None:
    w = any_world
    keep = w.add(start=T, end=T + H)
    doomed = w.add(start=T + H, end=T + 2 * H)
    w.timum.crash_after = 1  # the second PUT happens, then the process dies before recording it
    with pytest.raises(SimulatedCrash):
        await w.sync()
    assert len(w.slots()) == 2  # both written, neither confirmed, no delta link
    assert not (await w.link()).delta_link
    w.graph.user_delete(doomed)
    await w.sync()
    assert set(w.slots()) == {ext(keep)}
    assert set(await w.status_rows()) == {keep}


@pytest.mark.parametrize(("where", "after"), [("timum", 0), ("eventmap", 1), ("links", 0)])
async def test_crash_in_an_incremental_round_then_delete_leaves_no_orphan(world: World, where: str,
                                                                         after: int) -> None:
    first = world.add(start=T, end=T + H)
    await world.sync()
    assert (await world.link()).delta_link
    doomed = world.add(start=T + H, end=T + 2 * H)
    if where == "timum":
        world.timum.crash_after = after  # after the PUT, before its status row
    else:
        world.storage.arm(where, after=after)  # type: ignore[attr-defined]
    with pytest.raises(SimulatedCrash):
        await world.sync()
    world.graph.user_delete(doomed)
    out = await world.sync()
    assert out.full_rounds == 0  # the incremental replay, not a resync, cleans up
    assert set(world.slots()) == {ext(first)}
    assert set(await world.status_rows()) == {first}


async def test_crashed_full_round_is_not_continued_incrementally(world: World) -> None:
    await world.sync()
    doomed = world.add(start=T, end=T + H)
    world.timum.crash_after = 0
    with pytest.raises(SimulatedCrash):
        await world.sync(full=True)
    world.graph.user_delete(doomed)
    # A plain notification follows: it must not pick up the old delta link the full round replaced.
    out = await world.sync()
    assert out.full_rounds == 1
    assert world.slots() == {} and await world.status_rows() == {}


async def test_crash_before_the_delta_link_commit_then_delete_leaves_no_orphan(world: World) -> None:
    storage = world.storage
    assert hasattr(storage, "arm")
    first = world.add(start=T, end=T + H)
    await world.sync()
    second = world.add(start=T + H, end=T + 2 * H)
    storage.arm("links")  # type: ignore[attr-defined]
    with pytest.raises(SimulatedCrash):
        await world.sync()
    assert set(world.slots()) == {ext(first), ext(second)}
    world.graph.user_delete(second)
    world.graph.user_delete(first)
    await world.sync()
    assert world.slots() == {}


async def test_crash_between_pending_row_and_put_recovers(world: World) -> None:
    storage = world.storage
    await world.sync()  # pending rows belong to incremental rounds
    eid = world.add(start=T, end=T + H)
    storage.arm("eventmap", after=1)  # pending row written, the confirmed row write dies
    with pytest.raises(SimulatedCrash):
        await world.sync()
    rows = await world.status_rows()
    assert rows[eid].pending
    await world.sync()
    assert set(world.slots()) == {ext(eid)}
    row = (await world.status_rows())[eid]
    assert row.content_hash and row.pending  # written, settled by the next round
    await world.sync()
    assert not (await world.status_rows())[eid].pending


async def test_a_fresh_round_writes_settled_rows_and_no_intent(world: World) -> None:
    storage = world.storage
    assert hasattr(storage, "arm")
    kept = world.add(start=T, end=T + H)
    doomed = world.add(start=T + H, end=T + 2 * H)
    storage.arm("eventmap")  # both slots PUT, then the (only) status write of the round dies
    with pytest.raises(SimulatedCrash):
        await world.sync()
    assert set(world.slots()) == {ext(kept), ext(doomed)} and await world.status_rows() == {}
    world.graph.user_delete(doomed)
    out = await world.sync()
    assert out.full_rounds == 1  # the replay is fresh and reconciles the slot that has no row
    assert set(world.slots()) == {ext(kept)}
    rows = await world.status_rows()
    assert set(rows) == {kept} and not rows[kept].pending and rows[kept].content_hash
    writes = await world.sync()
    assert (writes.upserts, writes.deletes, writes.forgotten) == (0, 0, 0)


async def test_lost_delta_state_converges_and_removes_orphans(any_world: World) -> None:
    w = any_world
    a = w.add(start=T, end=T + H)
    b = w.add(start=T + H, end=T + 2 * H)
    await w.sync()
    w.graph.lose_state()
    w.graph.user_delete(a)
    c = w.add(start=T + 3 * H, end=T + 4 * H)
    # A slot of ours that lost its status row, and someone else's slot that must stay.
    await w.timum.put_blocked_slot(PROVIDER, RESOURCE, BlockedSlot(ext("ghost"), T, T + H))
    await w.timum.put_blocked_slot(PROVIDER, RESOURCE, BlockedSlot("ics-1", T, T + H, source="ics"))
    out = await w.sync()
    assert out.resynced and out.full_rounds == 1 and out.status == "ok"
    assert set(w.slots()) == {ext(b), ext(c)}
    assert "ics-1" in w.timum.slots[(PROVIDER, RESOURCE)]
    writes = w.timum.writes()
    await w.sync()
    assert w.timum.writes() == writes


async def test_needs_reconnect_is_reported_once_without_retry_loop(world: World) -> None:
    world.add(start=T, end=T + H)
    await world.sync()
    world.provider.revoked.add("acc-1")
    out = await world.sync()
    assert out.status == "needs_reconnect"
    assert out.health_change == HealthChange(LinkHealth.OK, LinkHealth.NEEDS_RECONNECT, out.reasons[0])
    link = await world.link()
    assert link.health is LinkHealth.NEEDS_RECONNECT and link.last_error.startswith("needs_reconnect")
    assert [e["data"]["status"] for e in world.timum.status_webhooks] == ["needs_reconnect"]
    requests = world.graph.request_count
    again = await world.sync()
    assert again.status == "needs_reconnect" and again.health_change is None
    assert world.graph.request_count == requests and len(world.timum.status_webhooks) == 1
    # Reconnected: the flow asks for a full sync, which succeeds and reports OK once.
    world.provider.revoked.clear()
    back = await world.sync(full=True)
    assert back.status == "ok" and back.health_change is not None and back.health_change.new is LinkHealth.OK
    assert [e["data"]["status"] for e in world.timum.status_webhooks] == ["needs_reconnect", "ok"]
    assert (await world.link()).last_error == ""


async def test_needs_reconnect_from_a_delta_call(world: World) -> None:
    world.graph.fail_next(NeedsReconnect("invalid_grant"), op="delta")
    out = await world.sync()
    assert out.status == "needs_reconnect" and out.health_change is not None
    assert (await world.link()).health is LinkHealth.NEEDS_RECONNECT


async def test_throttling_surfaces_retry_after_and_changes_nothing(world: World) -> None:
    world.add(start=T, end=T + H)
    world.graph.fail_next(Throttled("429", retry_after=7.5), op="delta")
    with pytest.raises(Throttled) as caught:
        await world.sync()
    assert caught.value.retry_after == 7.5
    world.graph.fail_next(TransientError("503"), op="delta")
    with pytest.raises(TransientError) as transient:
        await world.sync()
    assert transient.value.retry_after == DEFAULT_RETRY_AFTER_SECONDS
    link = await world.link()
    assert not link.delta_link and link.health is LinkHealth.OK
    # The lease was let go: the retry runs at once.
    assert (await world.sync()).status == "ok" and len(world.slots()) == 1
    assert world.graph.closed == world.provider.handed_out == 3  # closed after failures too


async def test_timum_throttling_mid_page_keeps_the_delta_link(world: World) -> None:
    ids = [world.add(start=T + i * H, end=T + (i + 1) * H) for i in range(3)]
    await world.sync()
    before = (await world.link()).delta_link
    world.graph.edit_event(ids[0], subject="neu", start=T + 5 * H, end=T + 6 * H)
    world.timum.fail_next(Throttled("timum 429", retry_after=3), op="put_blocked_slot")
    with pytest.raises(Throttled):
        await world.sync()
    assert (await world.link()).delta_link == before
    await world.sync()
    assert world.slots()[ext(ids[0])].start == T + 5 * H


async def test_calendar_gone_sets_error(world: World) -> None:
    await world.sync()
    world.graph.remove_calendar(world.calendar)
    out = await world.sync()
    assert out.status == "error" and out.health_change is not None
    link = await world.link()
    assert link.health is LinkHealth.ERROR and link.last_error.startswith("calendar_gone")
    assert [e["data"]["status"] for e in world.timum.status_webhooks] == ["error"]


async def test_timum_resource_gone_sets_error(world: World) -> None:
    world.add(start=T, end=T + H)
    world.timum.remove_resource(PROVIDER, RESOURCE)
    out = await world.sync()
    assert out.status == "error"
    assert (await world.link()).last_error.startswith("resource_gone")


async def test_window_slide_keeps_history_and_drops_moved_away_events(world: World) -> None:
    past = world.add(start=NOW - timedelta(hours=20), end=NOW - timedelta(hours=19))  # yesterday
    later = world.add(start=T, end=T + H)
    await world.sync()
    assert set(world.slots()) == {ext(past), ext(later)}
    world.clock.advance(days=2)
    out = await world.sync()
    assert out.full_rounds == 1
    # The past event slid out of the window: its slot stays as history, its row goes.
    assert set(world.slots()) == {ext(past), ext(later)}
    assert set(await world.status_rows()) == {later}
    link = await world.link()
    assert link.window_start == datetime(2026, 11, 24, tzinfo=UTC)


async def test_event_moved_out_of_the_window_is_removed(world: World) -> None:
    eid = world.add(start=T, end=T + H)
    await world.sync()
    far = datetime(2028, 6, 1, 9, tzinfo=UTC)
    world.graph.edit_event(eid, start=far, end=far + H)
    await world.sync()
    assert world.slots() == {}


async def test_links_that_do_not_sync(world: World) -> None:
    out = await run_sync(world.services, SyncMessage("prov-1|nope"), worker_id="w")
    assert out.status == "no_link"
    repo = LinkRepository(world.storage)
    link = await world.link()
    link.mode = LinkMode.ICS
    await repo.save(link)
    # An ICS link runs through the ICS source, never Graph; without an address it is an error.
    assert (await world.sync()).status == "error"
    assert (await repo.require(KEY)).last_error.startswith("ics_missing")
    assert world.graph.request_count == 0


async def test_dead_holder_lease_expires(world: World) -> None:
    world.add(start=T, end=T + H)
    assert await LeaseRepository(world.storage).acquire(KEY, "dead-worker", now=NOW)
    assert (await world.sync()).status == "coalesced"
    world.clock.advance(minutes=6)
    assert (await world.sync()).status == "ok" and len(world.slots()) == 1
