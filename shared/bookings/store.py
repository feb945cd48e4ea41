"""Each resource's current bookings (table ``bookings``), kept from timum's webhooks.

The ICS feed serves from here without calling timum. PK = provider|resource, RK = booking
id; a ``~meta`` row per resource carries a revision number that rises on every change, so
a cached feed is valid exactly while the revision is unchanged.

``sequence`` counts time changes (iCalendar SEQUENCE must rise when a booking moves).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from shared.bookings.payload import booking_from_json, booking_to_json
from shared.domain import Booking, LinkKey
from shared.errors import Conflict, NotFound
from shared.storage.base import StoragePort, encode_key

BOOKINGS = "bookings"
META_RK = "~meta"


@dataclass(frozen=True)
class StoredBooking:
    booking: Booking
    sequence: int


class BookingStore:
    def __init__(self, storage: StoragePort) -> None:
        self._table = storage.table(BOOKINGS)

    @staticmethod
    def _pk(provider_id: str, resource_id: str) -> str:
        return encode_key(str(LinkKey(provider_id, resource_id)))

    async def upsert_if_newer(self, booking: Booking) -> bool:
        """Store ``booking`` unless we hold the same or a newer version. True if stored."""
        pk, rk = self._pk(booking.provider_id, booking.resource_id), encode_key(booking.id)
        for _ in range(5):
            current = await self._table.get(pk, rk)
            if current is not None and int(current["version"]) >= booking.version:
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
                if current is None:
                    await self._table.insert(row)
                else:
                    await self._table.update(row, etag=current.etag)
            except (Conflict, NotFound):
                continue  # a concurrent delivery wrote first; compare versions again
            await self._bump(pk)
            return True
        raise Conflict("booking kept changing while being stored")

    async def _bump(self, pk: str) -> None:
        for _ in range(10):
            meta = await self._table.get(pk, META_RK)
            try:
                if meta is None:
                    await self._table.insert({"PartitionKey": pk, "RowKey": META_RK, "revision": 1})
                else:
                    await self._table.update({**meta, "revision": int(meta["revision"]) + 1}, etag=meta.etag)
                return
            except (Conflict, NotFound):
                continue
        raise Conflict("booking revision kept changing")

    async def revision(self, provider_id: str, resource_id: str) -> int:
        meta = await self._table.get(self._pk(provider_id, resource_id), META_RK)
        return 0 if meta is None else int(meta["revision"])

    async def get(self, provider_id: str, resource_id: str, booking_id: str) -> StoredBooking | None:
        row = await self._table.get(self._pk(provider_id, resource_id), encode_key(booking_id))
        if row is None:
            return None
        return StoredBooking(booking_from_json(json.loads(row["data"])), int(row.get("sequence", 0)))

    async def list_for_resource(self, provider_id: str, resource_id: str) -> list[StoredBooking]:
        rows = await self._table.query(self._pk(provider_id, resource_id))
        return [StoredBooking(booking_from_json(json.loads(r["data"])), int(r.get("sequence", 0)))
                for r in rows if r.rk != META_RK]
