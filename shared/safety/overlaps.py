"""Conflict notices: an Outlook event that now overlaps a confirmed upcoming booking.

Run by the link watch. What is compared are the link's status rows (every blocked slot the sync
holds, by Outlook event) and the resource's stored bookings. Both partitions are read only when
something changed since the last look — the link completed a round (``last_sync_at``) or the
resource's booking revision moved — so an idle link costs two point reads per sweep.

The per-link state row (``~conflicts``) keeps the open conflicts (with what a ``resolved`` notice
must repeat) and the closed ones with their generation, so an overlap that goes and comes back is
told again as a new conflict. Notices go through ``status.notice`` (one per key): a conflict's key
is its id and generation; a ``resolved`` notice not yet confirmed is retried by the next sweep.
No title is sent: the status rows keep none, and leaving it out is always within the provider's
title privacy.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.bookings.store import BookingRepository
from shared.connect import status
from shared.context import Services
from shared.core.outlook_plan import StatusRow
from shared.domain import Booking, BookingStatus, Link, stable_id
from shared.errors import Conflict
from shared.repos.sync_state import EventMapRepository

#: closed conflicts remembered (for their generation); older ones are forgotten first
MAX_CLOSED = 500


@dataclass(frozen=True)
class Overlap:
    conflict_id: str
    booking_id: str
    start: datetime      # the Outlook event's (slot's) time
    end: datetime


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def find_overlaps(rows: Iterable[StatusRow], bookings: Iterable[Booking], now: datetime) -> dict[str, Overlap]:
    """Every (event, booking) pair whose times overlap, for confirmed bookings that have not ended."""
    upcoming = sorted((b for b in bookings if b.status is BookingStatus.CONFIRMED and b.end > now),
                      key=lambda b: b.start)
    found: dict[str, Overlap] = {}
    for row in rows:
        for booking in upcoming:
            if booking.start >= row.slot_end:
                break  # sorted by start: no later booking can overlap this slot
            if booking.end > row.slot_start:
                cid = stable_id(row.event_id, booking.id, prefix="cf-", length=24)
                found[cid] = Overlap(cid, booking.id, row.slot_start, row.slot_end)
    return found


@dataclass(frozen=True)
class ConflictChanges:
    opened: dict[str, dict[str, Any]]     # id → entry (with its generation)
    closed: dict[str, dict[str, Any]]


def diff_overlaps(open_now: Mapping[str, dict[str, Any]], closed_before: Mapping[str, dict[str, Any]],
                  current: Mapping[str, Overlap]) -> ConflictChanges:
    """Which conflicts open and which close; a conflict seen before opens with the next generation."""
    opened: dict[str, dict[str, Any]] = {}
    for cid, overlap in current.items():
        if cid in open_now:
            continue
        generation = int(closed_before.get(cid, {}).get("generation", 0)) + 1
        opened[cid] = {"generation": generation, "bookingId": overlap.booking_id, "start": _iso(overlap.start),
                       "end": _iso(overlap.end)}
    closed = {cid: {**entry, "told": False} for cid, entry in open_now.items() if cid not in current}
    return ConflictChanges(opened, closed)


def _data(cid: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    # The generation orders the notices of one conflict id: two sweeps may tell them at once,
    # and webhooks may arrive out of order, so a late "resolved" of an overlap that has come back
    # since must not close the new one (timum keeps the highest generation it heard).
    return {"conflictId": cid, "generation": int(entry["generation"]), "bookingId": entry["bookingId"],
            "start": entry["start"], "end": entry["end"]}


async def check_conflicts(services: Services, link: Link, now: datetime) -> tuple[int, int]:
    """Look for new and gone overlaps of one link; returns (conflict notices, resolved notices) sent."""
    store = BookingRepository(services.storage)
    for _ in range(4):
        state = await status.notice_state(services, link, "conflicts")
        open_now: dict[str, dict[str, Any]] = json.loads(state["open"]) if state else {}
        closed: dict[str, dict[str, Any]] = json.loads(state["closed"]) if state else {}
        revision = await store.revision(link.provider_id, link.timum_resource_id)
        synced = link.last_sync_at.isoformat() if link.last_sync_at else ""
        unchanged = state is not None and state.get("synced") == synced and state.get("revision") == revision
        if unchanged:
            changes = ConflictChanges({}, {})
        else:
            rows = (await EventMapRepository(services.storage).load(link.key)).values()
            bookings = [s.booking for s in await store.list_for_resource(link.provider_id, link.timum_resource_id)]
            changes = diff_overlaps(open_now, closed, find_overlaps(rows, bookings, now))
            open_now = {cid: e for cid, e in open_now.items() if cid not in changes.closed} | changes.opened
            closed = {cid: e for cid, e in closed.items() if cid not in changes.opened} | changes.closed
            closed = dict(list(closed.items())[-MAX_CLOSED:])
            try:
                await status.save_notice_state(services, link, "conflicts",
                                               {"open": json.dumps(open_now), "closed": json.dumps(closed),
                                                "synced": synced, "revision": revision},
                                               state["etag"] if state else None)
            except Conflict:
                continue  # another sweep looked meanwhile: start over from its state
        break
    else:
        return (0, 0)
    told_conflicts = 0
    for cid, entry in open_now.items():
        # Every open conflict, not only new ones: a POST that failed last time goes out now (once).
        told_conflicts += await status.notice(services, link, "conflict", f"{cid}|{entry['generation']}",
                                              _data(cid, entry))
    told_resolved = 0
    untold = {cid: e for cid, e in closed.items() if not e.get("told")}
    for cid, entry in untold.items():
        told_resolved += await status.notice(services, link, "resolved", f"{cid}|{entry['generation']}",
                                             _data(cid, entry))
    if untold:
        # Remember they were told, so later sweeps skip them; a lost race only repeats the
        # (idempotent) notice calls next time.
        state = await status.notice_state(services, link, "conflicts")
        if state is not None:
            stored = json.loads(state["closed"])
            for cid in untold:
                if cid in stored:
                    stored[cid]["told"] = True
            with contextlib.suppress(Conflict):
                await status.save_notice_state(services, link, "conflicts", {**state, "closed": json.dumps(stored)},
                                               state["etag"])
    return told_conflicts, told_resolved
