"""The storage port: what the service needs from tables and queues, nothing more."""

from __future__ import annotations

import base64
import json
import operator
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

# Table keys may not contain / \ # ? or control characters and are limited to 1 KiB.
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_.@:=+-]{1,512}$")
_ENCODED_PREFIX = "~"
#: Most operations Azure Tables takes in one entity group transaction (all one partition).
MAX_BATCH = 100
#: Comparisons ``TablePort.query_where`` takes, by their OData names.
COMPARISONS: dict[str, Any] = {"eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le,
                               "gt": operator.gt, "ge": operator.ge}
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


def encode_key(value: str) -> str:
    """Make any string usable as PartitionKey/RowKey, reversibly.

    Plain ids stay readable; anything else (Graph event ids contain '/') is base64url'd.
    """
    if _SAFE_KEY.match(value) and not value.startswith(_ENCODED_PREFIX):
        return value
    return _ENCODED_PREFIX + base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_key(key: str) -> str:
    if not key.startswith(_ENCODED_PREFIX):
        return key
    raw = key[len(_ENCODED_PREFIX):]
    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()


class Entity(dict[str, Any]):
    """A table row: a dict with PartitionKey, RowKey and plain values, plus its ETag."""

    etag: str

    def __init__(self, data: Mapping[str, Any] | None = None, *, etag: str = "") -> None:
        super().__init__(data or {})
        self.etag = etag

    @property
    def pk(self) -> str:
        return str(self["PartitionKey"])

    @property
    def rk(self) -> str:
        return str(self["RowKey"])


class TablePort(ABC):
    """One table. Values are str, int, float, bool, datetime (aware, UTC) or bytes."""

    name: str

    @abstractmethod
    async def get(self, pk: str, rk: str) -> Entity | None: ...

    @abstractmethod
    async def insert(self, entity: Mapping[str, Any]) -> Entity:
        """Create; raise ``Conflict`` if the row exists. Returns the stored row with its ETag."""

    @abstractmethod
    async def upsert(self, entity: Mapping[str, Any]) -> Entity:
        """Create or replace unconditionally."""

    @abstractmethod
    async def update(self, entity: Mapping[str, Any], *, etag: str) -> Entity:
        """Replace only if the stored ETag still matches: ``Conflict`` if not, ``NotFound`` if gone."""

    @abstractmethod
    async def delete(self, pk: str, rk: str, *, etag: str | None = None) -> bool:
        """Delete; True if a row was deleted. With ``etag``: ``Conflict`` if it changed meanwhile."""

    @abstractmethod
    async def query(self, pk: str | None = None, *, equals: Mapping[str, Any] | None = None,
                    limit: int | None = None) -> list[Entity]:
        """Rows of one partition (or all, pk=None) whose fields equal ``equals``."""

    async def query_where(self, pk: str, clauses: Sequence[tuple[str, str, Any]]) -> list[Entity]:
        """Rows of partition ``pk`` for which every ``(field, op, value)`` holds (op: a key of
        ``COMPARISONS``). A row without the field matches no clause on it. Compare a field with
        values of the type it is stored as: stores differ on mixed types (Azurite compares text
        with a date-time, Azure Tables and the twin do not). ``BadRequest`` for an unknown op or
        a field name that is no identifier.

        Here: the whole partition, compared row by row. An adapter whose store can filter
        overrides it, so only the matching rows are sent and parsed.
        """
        checked = check_clauses(clauses)
        return [row for row in await self.query(pk) if all(_holds(row, clause) for clause in checked)]

    @abstractmethod
    async def upsert_many(self, entities: Sequence[Mapping[str, Any]]) -> None:
        """Create or replace rows of one partition, ending as ``upsert`` of each in order would
        (a later row with the same RowKey wins).

        One request per ``MAX_BATCH`` rows instead of one per row: each chunk is an entity group
        transaction, stored whole or not at all, and chunks go in order, so after a failure the
        rows stored are exactly those of the chunks before it. ``BadRequest`` if the rows span
        partitions (nothing is written then).
        """

    @abstractmethod
    async def delete_many(self, pk: str, rks: Sequence[str]) -> None:
        """Delete rows of partition ``pk`` unconditionally, in chunks of ``MAX_BATCH``; rows that
        do not exist are no error. Chunks go in order, as in ``upsert_many``."""

    async def upsert_new_many(self, entities: Sequence[Mapping[str, Any]]) -> None:
        """``upsert_many`` of rows the caller believes absent (it read the partition and has been
        its only writer since): it ends exactly as ``upsert_many`` would, so a wrong belief costs a
        second request, never a row. An adapter may write them as inserts where that is cheaper."""
        await self.upsert_many(entities)


class QueuePort(ABC):
    """One queue. Messages are JSON objects; the adapter encodes them as the Functions host expects."""

    name: str

    @abstractmethod
    async def send(self, message: Mapping[str, Any], *, delay_seconds: float = 0) -> None: ...

    @abstractmethod
    async def peek_count(self) -> int:
        """Approximate number of messages waiting (for health and metrics)."""


class StoragePort(ABC):
    """Factory for tables and queues; creates them on first use."""

    @abstractmethod
    def table(self, name: str) -> TablePort: ...

    @abstractmethod
    def queue(self, name: str) -> QueuePort: ...

    @abstractmethod
    async def ping(self) -> None:
        """Raise ``StorageError`` if storage cannot be reached."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release network resources."""


def one_partition(entities: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``entities`` as ``upsert_many`` stores them: one row per RowKey (the last wins, as sequential
    upserts would leave it — a transaction may not name a row twice), in first-seen order.
    ``BadRequest`` if they span partitions: a transaction cannot."""
    from shared.errors import BadRequest

    rows: dict[str, dict[str, Any]] = {}
    partitions = set()
    for entity in entities:
        partitions.add(str(entity["PartitionKey"]))
        rows[str(entity["RowKey"])] = dict(entity)
    if len(partitions) > 1:
        raise BadRequest("a batch write must stay within one partition", field="PartitionKey")
    return list(rows.values())


def chunks(items: Sequence[Any], size: int = MAX_BATCH) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def dumps(message: Mapping[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), sort_keys=True, default=str)


def check_clauses(clauses: Sequence[tuple[str, str, Any]]) -> list[tuple[str, str, Any]]:
    from shared.errors import BadRequest

    out = []
    for field, op, value in clauses:
        if op not in COMPARISONS:
            raise BadRequest(f"unknown comparison {op!r}", field="op")
        if not _FIELD.match(field) or field in ("PartitionKey", "RowKey"):
            raise BadRequest("a filtered field must be a property name", field="field")
        out.append((field, op, value))
    return out


def _holds(row: Mapping[str, Any], clause: tuple[str, str, Any]) -> bool:
    field, op, value = clause
    if field not in row or type(row[field]) is not type(value):
        return False
    return bool(COMPARISONS[op](row[field], value))
