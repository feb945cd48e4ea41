"""Each resource's current bookings (table ``bookings``), kept from timum's webhooks.

The ICS feed serves from here without calling timum. PK = provider|resource, RK = booking
id; a ``~meta`` row per resource carries a revision number that rises on every change, so
a cached feed is valid exactly while the revision is unchanged. The same row keeps a short log
of which booking (and version) each recent revision stands for, written in the same conditional
update as the revision: a reader holding a feed of revision N re-reads only the bookings of
revisions N+1.. instead of the whole partition (``Revision.changed_since``).

``sequence`` counts time changes (iCalendar SEQUENCE must rise when a booking moves).

A booking can change resource (timum reassigns it to another person or room). The table
``bookingindex`` (PK = provider, RK = booking id) says where its newest version lives, so a
version is judged against the newest one *anywhere*, not only in its own resource's partition:
an older version replayed for the old resource never comes back there. When a booking moves,
its row leaves the old partition (raising that revision, so the old feed drops it) and the old
resource joins ``moved_from``: the Outlook event written for it there is still to be removed,
which the event writer does under the booking's lease (``clear_moved`` when done).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.bookings.payload import booking_from_json, booking_to_json
from shared.domain import Booking, LinkKey
from shared.errors import Conflict, NotFound
from shared.storage.base import Entity, StoragePort, TablePort, encode_key

BOOKINGS = "bookings"
BOOKING_INDEX = "bookingindex"
META_RK = "~meta"
# Entries kept in the revision log, and the cap on its JSON text (a string property holds at most
# 32 Ki UTF-16 characters). A reader further behind than the log reaches reads the whole partition.
LOG_ENTRIES = 256
LOG_MAX_CHARS = 30_000


@dataclass(frozen=True)
class StoredBooking:
    booking: Booking
    sequence: int


@dataclass(frozen=True)
class Revision:
    """A resource's booking revision and the log of its recent changes, oldest first."""

    number: int
    changes: tuple[tuple[int, str, int], ...] = ()  # (revision, booking id, version)

    def changed_since(self, revision: int) -> list[str] | None:
        """The ids of the bookings changed after ``revision`` up to this one, or None when the log
        does not name every revision in between (too far behind, or raised by a writer that kept
        no log) — the caller must then read everything."""
        if revision > self.number:
            return None
        by_revision = {number: booking_id for number, booking_id, _ in self.changes}
        wanted = range(revision + 1, self.number + 1)
        if any(number not in by_revision for number in wanted):
            return None
        return list(dict.fromkeys(by_revision[number] for number in wanted))

    def logged(self, booking_id: str, version: int) -> bool:
        return any(b == booking_id and v == version for _, b, v in self.changes)


def _revision_of(meta: Mapping[str, Any] | None) -> Revision:
    if meta is None:
        return Revision(0)
    try:
        changes = tuple((int(r), str(b), int(v)) for r, b, v in json.loads(str(meta.get("changes") or "[]")))
    except (TypeError, ValueError):
        changes = ()  # an unreadable log only costs readers a full read
    return Revision(int(meta["revision"]), changes)


def _log_text(changes: list[tuple[int, str, int]]) -> str:
    changes = changes[-LOG_ENTRIES:]
    text = json.dumps(changes, ensure_ascii=False, separators=(",", ":"))
    while len(text) > LOG_MAX_CHARS and changes:
        changes = changes[len(changes) // 4 + 1:]
        text = json.dumps(changes, ensure_ascii=False, separators=(",", ":"))
    return text


@dataclass(frozen=True)
class Location:
    """Where a booking's newest version lives, and resources it left whose Outlook event may remain."""

    resource_id: str
    version: int
    moved_from: tuple[str, ...] = ()


def _location_of(row: Mapping[str, Any]) -> Location:
    try:
        moved = tuple(str(r) for r in json.loads(str(row.get("moved_from") or "[]")))
    except (TypeError, ValueError):
        moved = ()
    return Location(str(row["resource"]), int(row["version"]), moved)


async def _write_over(table: TablePort, entity: Mapping[str, Any], read: Entity | None) -> None:
    """Write ``entity`` over the row as it was read: insert when there was none, else update only
    if nobody changed it since (ETag). Raises Conflict / NotFound when another writer was first."""
    if read is None:
        await table.insert(entity)
    else:
        await table.update(entity, etag=read.etag)


class BookingRepository:
    def __init__(self, storage: StoragePort) -> None:
        self._table = storage.table(BOOKINGS)
        self._index = storage.table(BOOKING_INDEX)

    @staticmethod
    def _pk(provider_id: str, resource_id: str) -> str:
        return encode_key(str(LinkKey(provider_id, resource_id)))

    async def upsert_if_newer(self, booking: Booking) -> bool:
        """Store ``booking`` unless we hold the same or a newer version (at any resource). True if
        stored. A booking that changed resource leaves its old resource's partition."""
        ipk, irk = encode_key(booking.provider_id), encode_key(booking.id)
        stored = False
        for _ in range(5):
            row = await self._index.get(ipk, irk)
            where = _location_of(row) if row is not None else None
            if where is not None and where.version > booking.version:
                if where.resource_id != booking.resource_id:
                    # A newer version lives elsewhere: no copy this old may stay here (a
                    # concurrent older delivery may have written one before losing the race).
                    await self._drop(booking.provider_id, booking.resource_id, booking.id, booking.version)
                # The delivery that moved it may have died before it dropped its old rows.
                for old in where.moved_from:
                    await self._drop(booking.provider_id, old, booking.id, where.version)
                return stored
            stored = await self._store_row(booking) or stored
            moved = set(where.moved_from) if where is not None else set()
            if where is not None and where.resource_id != booking.resource_id:
                moved.add(where.resource_id)
            moved.discard(booking.resource_id)
            fresh = {"PartitionKey": ipk, "RowKey": irk, "resource": booking.resource_id,
                     "version": booking.version, "moved_from": json.dumps(sorted(moved))}
            if row is None or _location_of(fresh) != where:
                try:
                    await _write_over(self._index, fresh, row)
                except (Conflict, NotFound):
                    continue  # a concurrent delivery of this booking moved it; judge again
            for old in moved:
                await self._drop(booking.provider_id, old, booking.id, booking.version)
            return stored
        raise Conflict("booking kept changing while being stored")

    async def locate(self, provider_id: str, booking_id: str) -> Location | None:
        row = await self._index.get(encode_key(provider_id), encode_key(booking_id))
        return _location_of(row) if row is not None else None

    async def clear_moved(self, provider_id: str, booking_id: str, resource_id: str) -> None:
        """The booking's Outlook event at ``resource_id`` (which it left) is gone."""
        ipk, irk = encode_key(provider_id), encode_key(booking_id)
        for _ in range(10):
            row = await self._index.get(ipk, irk)
            if row is None:
                return
            where = _location_of(row)
            if resource_id not in where.moved_from:
                return
            # Once cleared, nothing names this resource as one to clean up: its stored copy goes
            # first (the delivery that moved the booking may have died before dropping it).
            await self._drop(provider_id, resource_id, booking_id, where.version)
            left = [r for r in where.moved_from if r != resource_id]
            try:
                await self._index.update({**row, "moved_from": json.dumps(left)}, etag=row.etag)
                return
            except (Conflict, NotFound):
                continue
        raise Conflict("booking location kept changing")

    async def _drop(self, provider_id: str, resource_id: str, booking_id: str, upto: int) -> None:
        """Remove the booking's row from a resource it no longer lives at, if that row's version is
        at most ``upto`` (a newer one was written there meanwhile: the booking came back). The
        revision rises, so that resource's feed drops it."""
        pk, rk = self._pk(provider_id, resource_id), encode_key(booking_id)
        for _ in range(5):
            row = await self._table.get(pk, rk)
            if row is None or int(row["version"]) > upto:
                return
            try:
                await self._table.delete(pk, rk, etag=row.etag)
            except (Conflict, NotFound):
                continue
            await self._bump(pk, booking_id, upto)
            return

    async def _store_row(self, booking: Booking) -> bool:
        """The booking's row in its resource's partition, unless that row is as new. True if stored."""
        pk, rk = self._pk(booking.provider_id, booking.resource_id), encode_key(booking.id)
        for _ in range(5):
            current = await self._table.get(pk, rk)
            if current is not None and int(current["version"]) >= booking.version:
                if int(current["version"]) == booking.version and not _revision_of(
                        await self._table.get(pk, META_RK)).logged(booking.id, booking.version):
                    # A delivery that stored this version and died before raising the revision:
                    # its retry raises it now, or feeds kept per revision would never show it.
                    # (When the entry has already left the log this costs one spare revision.)
                    await self._bump(pk, booking.id, booking.version)
                return False
            sequence = 0
            if current is not None:
                old = booking_from_json(json.loads(current["data"]))
                moved = (old.start, old.end) != (booking.start, booking.end)
                sequence = int(current.get("sequence", 0)) + (1 if moved else 0)
            row = {"PartitionKey": pk, "RowKey": rk, "version": booking.version, "sequence": sequence,
                   "status": booking.status.value, "start": booking.start, "end": booking.end,
                   "data": json.dumps(booking_to_json(booking), ensure_ascii=False)}
            try:
                await _write_over(self._table, row, current)
            except (Conflict, NotFound):
                continue  # a concurrent delivery wrote first; compare versions again
            await self._bump(pk, booking.id, booking.version)
            return True
        raise Conflict("booking kept changing while being stored")

    async def _bump(self, pk: str, booking_id: str, version: int) -> None:
        """Raise the revision and log which booking it stands for, in one conditional write."""
        for _ in range(10):
            meta = await self._table.get(pk, META_RK)
            current = _revision_of(meta)
            number = current.number + 1
            log = _log_text([*current.changes, (number, booking_id, version)])
            try:
                await _write_over(self._table, {**(meta or {}), "PartitionKey": pk, "RowKey": META_RK,
                                                "revision": number, "changes": log}, meta)
                return
            except (Conflict, NotFound):
                continue
        raise Conflict("booking revision kept changing")

    async def revision(self, provider_id: str, resource_id: str) -> int:
        return (await self.revision_log(provider_id, resource_id)).number

    async def revision_log(self, provider_id: str, resource_id: str) -> Revision:
        return _revision_of(await self._table.get(self._pk(provider_id, resource_id), META_RK))

    async def get(self, provider_id: str, resource_id: str, booking_id: str) -> StoredBooking | None:
        row = await self._table.get(self._pk(provider_id, resource_id), encode_key(booking_id))
        if row is None:
            return None
        return StoredBooking(booking_from_json(json.loads(row["data"])), int(row.get("sequence", 0)))

    async def list_for_resource(self, provider_id: str, resource_id: str) -> list[StoredBooking]:
        rows = await self._table.query(self._pk(provider_id, resource_id))
        return [StoredBooking(booking_from_json(json.loads(r["data"])), int(r.get("sequence", 0)))
                for r in rows if r.rk != META_RK]
