"""In-memory twin of the storage port: same ETag, conflict and ordering rules as Azure Tables."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from shared.errors import Conflict, NotFound
from shared.storage.base import Entity, QueuePort, StoragePort, TablePort, chunks, dumps, one_partition

_etags = itertools.count(1)


def _new_etag() -> str:
    return f'W/"datetime\'{next(_etags)}\'"'


class MemoryTable(TablePort):
    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: dict[tuple[str, str], Entity] = {}
        self._lock = asyncio.Lock()

    @staticmethod
    def _key(entity: Mapping[str, Any]) -> tuple[str, str]:
        return str(entity["PartitionKey"]), str(entity["RowKey"])

    def _store(self, entity: Mapping[str, Any]) -> Entity:
        row = Entity({k: v for k, v in entity.items() if v is not None}, etag=_new_etag())
        row["Timestamp"] = datetime.now(UTC)
        self.rows[self._key(entity)] = row
        return Entity(row, etag=row.etag)

    async def get(self, pk: str, rk: str) -> Entity | None:
        row = self.rows.get((pk, rk))
        return None if row is None else Entity(row, etag=row.etag)

    async def insert(self, entity: Mapping[str, Any]) -> Entity:
        if self._key(entity) in self.rows:
            raise Conflict(f"row already exists in {self.name}")
        return self._store(entity)

    async def upsert(self, entity: Mapping[str, Any]) -> Entity:
        return self._store(entity)

    async def update(self, entity: Mapping[str, Any], *, etag: str) -> Entity:
        current = self.rows.get(self._key(entity))
        if current is None:
            raise NotFound(f"row not found in {self.name}")
        if current.etag != etag:
            raise Conflict(f"row in {self.name} was changed by someone else")
        return self._store(entity)

    async def delete(self, pk: str, rk: str, *, etag: str | None = None) -> bool:
        current = self.rows.get((pk, rk))
        if current is None:
            return False
        if etag is not None and current.etag != etag:
            raise Conflict(f"row in {self.name} was changed by someone else")
        del self.rows[(pk, rk)]
        return True

    async def query(self, pk: str | None = None, *, equals: Mapping[str, Any] | None = None,
                    limit: int | None = None) -> list[Entity]:
        out: list[Entity] = []
        # Azure returns rows ordered by PartitionKey, RowKey; so does the twin.
        for key in sorted(self.rows):
            row = self.rows[key]
            if pk is not None and key[0] != pk:
                continue
            if equals and any(row.get(k) != v for k, v in equals.items()):
                continue
            out.append(Entity(row, etag=row.etag))
            if limit is not None and len(out) >= limit:
                break
        return out


    async def upsert_many(self, entities: Sequence[Mapping[str, Any]]) -> None:
        # No await between the rows of a chunk: a chunk is all or nothing, as a transaction is.
        for chunk in chunks(one_partition(entities)):
            for entity in chunk:
                self._store(entity)

    async def delete_many(self, pk: str, rks: Sequence[str]) -> None:
        for chunk in chunks(list(dict.fromkeys(rks))):
            for rk in chunk:
                self.rows.pop((pk, rk), None)


class MemoryQueue(QueuePort):
    def __init__(self, name: str) -> None:
        self.name = name
        # (visible_at monotonic seconds, json text)
        self.messages: list[tuple[float, str]] = []

    async def send(self, message: Mapping[str, Any], *, delay_seconds: float = 0) -> None:
        self.messages.append((time.monotonic() + max(0.0, delay_seconds), dumps(message)))

    async def peek_count(self) -> int:
        return len(self.messages)

    def drain(self, *, include_delayed: bool = True) -> list[str]:
        """Take messages out (tests and in-memory workers)."""
        now = time.monotonic()
        taken = [m for at, m in self.messages if include_delayed or at <= now]
        self.messages = [] if include_delayed else [(at, m) for at, m in self.messages if at > now]
        return taken


class MemoryStorage(StoragePort):
    def __init__(self) -> None:
        self.tables: dict[str, MemoryTable] = {}
        self.queues: dict[str, MemoryQueue] = {}
        self.down = False

    def table(self, name: str) -> MemoryTable:
        return self.tables.setdefault(name, MemoryTable(name))

    def queue(self, name: str) -> MemoryQueue:
        return self.queues.setdefault(name, MemoryQueue(name))

    async def ping(self) -> None:
        if self.down:
            from shared.errors import StorageError

            raise StorageError("in-memory storage marked down")
