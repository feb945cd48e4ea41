"""One unreadable item never stops a calendar: the round skips and counts it, the link says so,
and the rest of the calendar keeps syncing (delta engine over the Graph and timum twins)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.connect.links_api import link_json
from shared.domain import LinkHealth, slot_external_id
from shared.storage.memory import MemoryStorage
from tests.support.outlook_world import KEY, World, make_world

H = timedelta(hours=1)
T = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def ext(event_id: str) -> str:
    return slot_external_id(KEY, event_id)


async def test_an_unreadable_event_is_skipped_counted_and_the_round_completes() -> None:
    w: World = await make_world(MemoryStorage())
    good = w.add(subject="Zahnarzt", start=T, end=T + H)
    bad = w.add(subject="Custom", start=T + 2 * H, end=T + 3 * H)
    w.graph.make_unreadable(bad)

    out = await w.sync()
    assert out.status == "ok" and out.skipped == 1
    assert set(w.slots()) == {ext(good)}
    link = await w.link()
    assert link.delta_link, "the round completed and stored its delta link"
    assert link.health is LinkHealth.OK
    assert (link.skipped_items, link.skipped_sample) == (1, "time zone 'Customized Time Zone' cannot be resolved")
    assert link_json(link)["skipped"] == {"count": 1, "sample": link.skipped_sample}

    # The calendar keeps syncing: a later change elsewhere arrives in the next incremental round.
    later = w.add(subject="Später", start=T + 5 * H, end=T + 6 * H)
    out = await w.sync()
    assert out.status == "ok" and set(w.slots()) == {ext(good), ext(later)}


async def test_a_skipped_item_keeps_its_slot_until_it_is_readable_again() -> None:
    w = await make_world(MemoryStorage())
    eid = w.add(subject="Termin", start=T, end=T + H)
    await w.sync()
    assert set(w.slots()) == {ext(eid)}

    w.graph.make_unreadable(eid)
    out = await w.sync(full=True)  # a fresh round reconciles: the unreadable item is not "gone"
    assert out.skipped == 1 and set(w.slots()) == {ext(eid)}
    assert (await w.link()).skipped_items == 1

    w.graph.make_readable(eid)
    w.graph.edit_event(eid, start=T + H, end=T + 2 * H)
    await w.sync(full=True)
    assert {k: s.start for k, s in w.slots().items()} == {ext(eid): T + H}
    link = await w.link()
    assert (link.skipped_items, link.skipped_sample) == (0, "")
    assert link_json(link)["skipped"] == {"count": 0, "sample": None}


async def test_incremental_rounds_add_to_the_count_until_a_fresh_round_counts_anew() -> None:
    w = await make_world(MemoryStorage())
    first = w.add(subject="A", start=T, end=T + H)
    second = w.add(subject="B", start=T + 2 * H, end=T + 3 * H)
    await w.sync()
    w.graph.make_unreadable(first)
    await w.sync()
    w.graph.make_unreadable(second)
    await w.sync()
    assert (await w.link()).skipped_items == 2
    await w.sync(full=True)
    assert (await w.link()).skipped_items == 2
    w.graph.make_readable(first)
    await w.sync(full=True)
    assert (await w.link()).skipped_items == 1
