"""Per-link sync state of both directions.

Tables and keys (access paths):

* ``eventmap``   PK link key, RK Outlook event id — Outlook → timum status rows: the slot we hold
  for each event (external id, content hash, slot times). A link's rows are one partition query;
  a delta page's rows are point reads; the live conflict check's fallback filters on the slot
  times in the store (``overlapping``).
* ``bookingmap`` PK link key, RK timum booking id — timum → Outlook: the Outlook event we wrote
  for each booking. Outlook → timum reads it too: those events must never become blocked slots.

Both use ``encode_key`` because Graph event ids contain ``/`` and ``=``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from shared.core.outlook_plan import PENDING_HASH, StatusRow
from shared.domain import LinkKey
from shared.storage.base import Entity, StoragePort, decode_key, encode_key

EVENT_MAP = "eventmap"
BOOKING_MAP = "bookingmap"

T = TypeVar("T")

#: Concurrent table writes per call: enough to hide latency, few enough not to flood storage.
_WRITE_CONCURRENCY = 8


def _pk(link: LinkKey) -> str:
    return encode_key(str(link))


async def for_each(fn: Callable[[T], Awaitable[object]], items: Iterable[T]) -> None:
    """Run ``fn`` on every item, a few at a time; the first failure cancels the rest and is raised."""
    gate = asyncio.Semaphore(_WRITE_CONCURRENCY)

    async def one(item: T) -> None:
        async with gate:
            await fn(item)

    try:
        async with asyncio.TaskGroup() as group:
            for item in items:
                group.create_task(one(item))
    except* Exception as failures:
        # Hand the caller one error of our tree, not an ExceptionGroup.
        raise failures.exceptions[0] from None


class EventMapRepository:
    """Outlook → timum status rows of one link."""

    def __init__(self, storage: StoragePort) -> None:
        self._table = storage.table(EVENT_MAP)

    @staticmethod
    def _row(entity: Entity) -> StatusRow:
        return StatusRow(event_id=decode_key(entity.rk), external_id=str(entity["external_id"]),
                         content_hash=str(entity.get("content_hash", PENDING_HASH)),
                         slot_start=_aware(entity["slot_start"]), slot_end=_aware(entity["slot_end"]),
                         pending_round=str(entity.get("pending_round", "")))

    @staticmethod
    def _entity(link: LinkKey, row: StatusRow) -> dict[str, Any]:
        return {"PartitionKey": _pk(link), "RowKey": encode_key(row.event_id), "external_id": row.external_id,
                "content_hash": row.content_hash, "pending": row.pending, "pending_round": row.pending_round,
                "slot_start": row.slot_start, "slot_end": row.slot_end}

    async def load(self, link: LinkKey) -> dict[str, StatusRow]:
        """Every row of the link (one partition query), by event id."""
        return {row.event_id: row for row in map(self._row, await self._table.query(_pk(link)))}

    async def overlapping(self, link: LinkKey, start: datetime, end: datetime) -> list[StatusRow]:
        """Rows whose slot overlaps [start, end), filtered in the store: the live conflict
        check's fallback reads an interval, not the link's whole map."""
        rows = await self._table.query_where(_pk(link), [("slot_start", "lt", end), ("slot_end", "gt", start)])
        return [self._row(entity) for entity in rows]

    async def pending(self, link: LinkKey) -> dict[str, StatusRow]:
        """Rows not yet settled by a committed round (see ``shared.core.outlook_plan``)."""
        rows = await self._table.query(_pk(link), equals={"pending": True})
        return {row.event_id: row for row in map(self._row, rows)}

    async def get(self, link: LinkKey, event_id: str) -> StatusRow | None:
        entity = await self._table.get(_pk(link), encode_key(event_id))
        return None if entity is None else self._row(entity)

    async def get_many(self, link: LinkKey, event_ids: Iterable[str]) -> dict[str, StatusRow]:
        ids = list(dict.fromkeys(event_ids))
        found: dict[str, StatusRow] = {}

        async def one(event_id: str) -> None:
            row = await self.get(link, event_id)
            if row is not None:
                found[event_id] = row

        await for_each(one, ids)
        return {event_id: found[event_id] for event_id in ids if event_id in found}

    async def put(self, link: LinkKey, row: StatusRow) -> None:
        await self._table.upsert(self._entity(link, row))

    async def put_many(self, link: LinkKey, rows: Iterable[StatusRow]) -> None:
        # A link's rows share a partition: one transaction per 100 rows, not one request per row.
        await self._table.upsert_many([self._entity(link, row) for row in rows])

    async def add_many(self, link: LinkKey, rows: Iterable[StatusRow]) -> None:
        """``put_many`` of rows the link's partition does not hold: the caller read it (whole, or
        these rows' keys) and, holding the link's lease, is its only writer. Stored the same way;
        a row that exists after all is replaced, as ``put_many`` would."""
        await self._table.upsert_new_many([self._entity(link, row) for row in rows])

    async def delete(self, link: LinkKey, event_id: str) -> None:
        await self._table.delete(_pk(link), encode_key(event_id))

    async def delete_many(self, link: LinkKey, event_ids: Iterable[str]) -> None:
        await self._table.delete_many(_pk(link), [encode_key(event_id) for event_id in event_ids])

    async def clear(self, link: LinkKey) -> int:
        rows = await self._table.query(_pk(link))
        await self._table.delete_many(_pk(link), [row.rk for row in rows])
        return len(rows)


class BookingEventState(StrEnum):
    PENDING = "pending"      # create sent (transactionId fixed), event id not confirmed yet
    ACTIVE = "active"        # the event exists and mirrors the booking
    CANCELLED = "cancelled"  # kept in Outlook, marked cancelled (cancel policy MARK)


@dataclass(frozen=True)
class BookingMapRow:
    """The Outlook event we wrote for one timum booking."""

    booking_id: str
    event_id: str = ""               # empty while PENDING
    version: int = 0                 # booking version last written
    content_hash: str = ""           # hash of the event draft last written
    transaction_id: str = ""
    state: BookingEventState = BookingEventState.ACTIVE


class BookingMapRepository:
    """timum → Outlook id map of one link; the echo guard of Outlook → timum reads ``event_ids``."""

    def __init__(self, storage: StoragePort) -> None:
        self._table = storage.table(BOOKING_MAP)

    @staticmethod
    def _row(entity: Entity) -> BookingMapRow:
        return BookingMapRow(booking_id=decode_key(entity.rk), event_id=str(entity.get("event_id", "")),
                             version=int(entity.get("version", 0)),
                             content_hash=str(entity.get("content_hash", "")),
                             transaction_id=str(entity.get("transaction_id", "")),
                             state=BookingEventState(entity.get("state", BookingEventState.ACTIVE.value)))

    async def get(self, link: LinkKey, booking_id: str) -> BookingMapRow | None:
        entity = await self._table.get(_pk(link), encode_key(booking_id))
        return None if entity is None else self._row(entity)

    async def put(self, link: LinkKey, row: BookingMapRow) -> None:
        await self._table.upsert({"PartitionKey": _pk(link), "RowKey": encode_key(row.booking_id),
                                  "event_id": row.event_id, "version": row.version,
                                  "content_hash": row.content_hash, "transaction_id": row.transaction_id,
                                  "state": row.state.value})

    async def delete(self, link: LinkKey, booking_id: str) -> None:
        await self._table.delete(_pk(link), encode_key(booking_id))

    async def list(self, link: LinkKey) -> list[BookingMapRow]:
        return [self._row(entity) for entity in await self._table.query(_pk(link))]

    async def event_ids(self, link: LinkKey) -> frozenset[str]:
        return frozenset(row.event_id for row in await self.list(link) if row.event_id)

    async def clear(self, link: LinkKey) -> int:
        rows = await self._table.query(_pk(link))
        await for_each(lambda row: self._table.delete(row.pk, row.rk), rows)
        return len(rows)


def _aware(value: Any) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise ValueError("status row holds a time without zone")
    return moment
