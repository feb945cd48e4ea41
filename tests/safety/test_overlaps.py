"""Conflict notices: one ``conflict`` per Outlook event landing on a confirmed booking, one
``resolved`` when it goes, again as a new conflict if it comes back — and nothing for an idle link."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.bookings.store import BookingRepository
from shared.core.outlook_plan import StatusRow
from shared.domain import Booking, BookingStatus, Link, LinkKey, LinkMode, SyncMode
from shared.errors import TransientError
from shared.repos.links import LinkRepository
from shared.repos.sync_state import EventMapRepository
from shared.safety.overlaps import diff_overlaps, find_overlaps
from shared.safety.watch import sweep
from tests.support.connect_world import MemoryWorld

NOW = datetime(2031, 4, 7, 6, 0, tzinfo=UTC)
T0 = datetime(2031, 4, 8, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
KEY = LinkKey("prov-1", "res-1")


def booking(bid: str, start: datetime, end: datetime, *, version: int = 1,
            state: BookingStatus = BookingStatus.CONFIRMED) -> Booking:
    return Booking(id=bid, provider_id="prov-1", resource_id="res-1", version=version, start=start, end=end,
                   status=state)


def row(event_id: str, start: datetime, end: datetime) -> StatusRow:
    return StatusRow(event_id, f"ol-{event_id}", "h", start, end)


def test_find_overlaps() -> None:
    rows = [row("e1", T0, T0 + HOUR), row("e2", T0 + 3 * HOUR, T0 + 4 * HOUR)]
    bookings = [booking("b1", T0 + HOUR / 2, T0 + 2 * HOUR),            # overlaps e1
                booking("b2", T0 + HOUR, T0 + 2 * HOUR),                # touches e1 only
                booking("b3", T0, T0 + HOUR, state=BookingStatus.CANCELLED),
                booking("b4", NOW - 2 * HOUR, NOW - HOUR),              # over
                booking("b5", T0 + 2 * HOUR, T0 + 5 * HOUR)]            # overlaps e2
    found = find_overlaps(rows, bookings, NOW)
    assert sorted((o.booking_id, o.start) for o in found.values()) == [("b1", T0), ("b5", T0 + 3 * HOUR)]
    assert find_overlaps(rows, bookings, NOW) == found, "ids are stable"


def test_a_conflict_that_comes_back_is_a_new_one() -> None:
    current = find_overlaps([row("e1", T0, T0 + HOUR)], [booking("b1", T0, T0 + HOUR)], NOW)
    [cid] = current
    first = diff_overlaps({}, {}, current)
    assert first.opened[cid]["generation"] == 1 and first.closed == {}
    gone = diff_overlaps(first.opened, {}, {})
    assert gone.opened == {} and gone.closed[cid]["generation"] == 1
    again = diff_overlaps({}, gone.closed, current)
    assert again.opened[cid]["generation"] == 2


async def seed(w: MemoryWorld) -> Link:
    w.services.clock = lambda: NOW
    return await LinkRepository(w.storage).save(Link(
        provider_id="prov-1", resource_id="res-1", mode=LinkMode.DELEGATED, tenant_id="tid-1", mailbox_id="anna",
        calendar_id="cal-room1", calendar_name="Behandlungsraum 1", calendar_owner="anna@praxis.example",
        sync_mode=SyncMode.POLLING, last_sync_at=NOW, created_at=NOW - timedelta(days=1)))


async def synced(w: MemoryWorld, link: Link) -> Link:
    """A completed round: what the sync worker changes that the watch looks at."""
    link.last_sync_at = (link.last_sync_at or NOW) + timedelta(seconds=1)
    return await LinkRepository(w.storage).save(link)


def kinds(w: MemoryWorld) -> list[tuple[str, Any]]:
    return [(e["data"]["kind"], e["data"].get("bookingId")) for e in w.timum.status_webhooks
            if e["data"].get("kind") in ("conflict", "resolved")]


async def test_conflict_then_resolved_once_each(world: MemoryWorld) -> None:
    link = await seed(world)
    await BookingRepository(world.storage).upsert_if_newer(booking("bk-1", T0, T0 + HOUR))
    await sweep(world.services)
    assert kinds(world) == []
    # Outlook gets an event over the booking; the sync writes its status row.
    await EventMapRepository(world.storage).put(KEY, row("ev-1", T0 + HOUR / 2, T0 + 2 * HOUR))
    link = await synced(world, link)
    outcome = await sweep(world.services)
    await sweep(world.services)
    assert outcome.conflicts == 1 and kinds(world) == [("conflict", "bk-1")]
    [notice] = [e["data"] for e in world.timum.status_webhooks if e["data"].get("kind") == "conflict"]
    assert (notice["start"], notice["end"]) == ("2031-04-08T09:30:00Z", "2031-04-08T11:00:00Z")
    assert "title" not in notice and notice["conflictId"].startswith("cf-")

    await EventMapRepository(world.storage).delete(KEY, "ev-1")
    link = await synced(world, link)
    await sweep(world.services)
    await sweep(world.services)
    assert kinds(world) == [("conflict", "bk-1"), ("resolved", "bk-1")]
    resolved = world.timum.status_webhooks[-1]["data"]
    assert resolved["conflictId"] == notice["conflictId"]

    # The same overlap again: a new conflict (a new delivery).
    await EventMapRepository(world.storage).put(KEY, row("ev-1", T0 + HOUR / 2, T0 + 2 * HOUR))
    await synced(world, link)
    await sweep(world.services)
    assert kinds(world)[-1] == ("conflict", "bk-1")
    ids = [e["id"] for e in world.timum.status_webhooks if e["data"].get("kind") == "conflict"]
    assert len(ids) == 2 and len(set(ids)) == 2


async def test_a_cancelled_booking_resolves_its_conflict(world: MemoryWorld) -> None:
    await seed(world)
    store = BookingRepository(world.storage)
    await store.upsert_if_newer(booking("bk-2", T0, T0 + HOUR))
    await EventMapRepository(world.storage).put(KEY, row("ev-2", T0, T0 + HOUR))
    await sweep(world.services)
    await store.upsert_if_newer(booking("bk-2", T0, T0 + HOUR, version=2, state=BookingStatus.CANCELLED))
    await sweep(world.services)
    assert kinds(world) == [("conflict", "bk-2"), ("resolved", "bk-2")]


async def test_failed_posts_are_retried_and_idle_links_cost_no_partition_reads(world: MemoryWorld) -> None:
    await seed(world)
    await BookingRepository(world.storage).upsert_if_newer(booking("bk-3", T0, T0 + HOUR))
    await EventMapRepository(world.storage).put(KEY, row("ev-3", T0, T0 + HOUR))
    world.timum.fail_next(TransientError("timum answered 503"), op="send_link_status")
    assert (await sweep(world.services)).failed == ["prov-1|res-1"]
    await asyncio.gather(sweep(world.services), sweep(world.services))
    assert kinds(world) == [("conflict", "bk-3")]
    # Nothing changed since: the rows are not read again (a new row would go unnoticed until a round).
    await EventMapRepository(world.storage).put(KEY, row("ev-4", T0, T0 + HOUR))
    await sweep(world.services)
    assert kinds(world) == [("conflict", "bk-3")]
