"""The conflict check's fallback reads only the status rows that can overlap the asked interval,
filtered in the store (``TablePort.query_where``), not the link's whole event map. Its cost at
10,000 rows is measured in ``bench/scenarios/conflict_check.py``."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest

from shared.core.outlook_plan import StatusRow
from shared.errors import BadRequest, TransientError
from shared.repos.sync_state import EVENT_MAP, EventMapRepository
from shared.safety import conflicts
from shared.storage import StoragePort
from shared.storage.base import Entity, QueuePort, TablePort
from tests.safety.test_conflicts import HOUR, KEY, T0, check, seed
from tests.support.connect_world import MemoryWorld

# --- the port: both implementations ---------------------------------------------------------------


async def test_query_where_keeps_the_rows_every_clause_holds_for(storage: StoragePort) -> None:
    table = storage.table("q" + uuid.uuid4().hex[:12])
    for n in range(6):
        await table.upsert({"PartitionKey": "p", "RowKey": f"r{n}", "start": T0 + n * HOUR,
                            "end": T0 + (n + 1) * HOUR, "n": n})
    await table.upsert({"PartitionKey": "p", "RowKey": "no-times", "n": 9})
    await table.upsert({"PartitionKey": "other", "RowKey": "r0", "start": T0, "end": T0 + HOUR})
    # Overlapping [T0+2h, T0+4h): rows 2 and 3; a row without the fields matches nothing.
    rows = await table.query_where("p", [("start", "lt", T0 + 4 * HOUR), ("end", "gt", T0 + 2 * HOUR)])
    assert sorted(row.rk for row in rows) == ["r2", "r3"]
    assert {row.pk for row in rows} == {"p"}
    assert rows[0]["start"] == T0 + 2 * HOUR  # the row as ``get`` hands it out
    assert sorted(r.rk for r in await table.query_where("p", [("n", "ge", 4)])) == ["no-times", "r4", "r5"]
    assert [r.rk for r in await table.query_where("p", [("n", "eq", 2)])] == ["r2"]
    assert await table.query_where("nobody", [("n", "eq", 2)]) == []


@pytest.mark.parametrize("clause", [("n", "like", 1), ("n) or (true", "eq", 1), ("PartitionKey", "eq", "p")])
async def test_query_where_refuses_what_is_no_plain_comparison(storage: StoragePort,
                                                               clause: tuple[str, str, Any]) -> None:
    table = storage.table("q" + uuid.uuid4().hex[:12])
    with pytest.raises(BadRequest):
        await table.query_where("p", [clause])


# --- the check's fallback -----------------------------------------------------------------------------

class CountingTable(TablePort):
    """A table that counts the rows it hands to its caller: what would cross the wire."""

    def __init__(self, inner: TablePort) -> None:
        self.inner, self.name, self.rows_read = inner, inner.name, 0

    async def get(self, pk: str, rk: str) -> Entity | None:
        return await self.inner.get(pk, rk)

    async def insert(self, entity: Mapping[str, Any]) -> Entity:
        return await self.inner.insert(entity)

    async def upsert(self, entity: Mapping[str, Any]) -> Entity:
        return await self.inner.upsert(entity)

    async def update(self, entity: Mapping[str, Any], *, etag: str) -> Entity:
        return await self.inner.update(entity, etag=etag)

    async def delete(self, pk: str, rk: str, *, etag: str | None = None) -> bool:
        return await self.inner.delete(pk, rk, etag=etag)

    async def query(self, pk: str | None = None, *, equals: Mapping[str, Any] | None = None,
                    limit: int | None = None) -> list[Entity]:
        rows = await self.inner.query(pk, equals=equals, limit=limit)
        self.rows_read += len(rows)
        return rows

    async def query_where(self, pk: str, clauses: Sequence[tuple[str, str, Any]]) -> list[Entity]:
        rows = await self.inner.query_where(pk, clauses)
        self.rows_read += len(rows)
        return rows

    async def upsert_many(self, entities: Sequence[Mapping[str, Any]]) -> None:
        await self.inner.upsert_many(entities)

    async def delete_many(self, pk: str, rks: Sequence[str]) -> None:
        await self.inner.delete_many(pk, rks)


class CountingStorage(StoragePort):
    def __init__(self, inner: StoragePort) -> None:
        self.inner = inner
        self.event_map = CountingTable(inner.table(EVENT_MAP))

    def table(self, name: str) -> TablePort:
        return self.event_map if name == EVENT_MAP else self.inner.table(name)

    def queue(self, name: str) -> QueuePort:
        return self.inner.queue(name)

    async def ping(self) -> None:
        await self.inner.ping()


async def test_the_fallback_reads_only_the_rows_that_can_overlap(world: MemoryWorld) -> None:
    await seed(world)
    # A long-lived link: a year of status rows, one of them in the asked hour.
    rows = [StatusRow(f"ev-{day}", f"ol-{day}", "h", T0 + timedelta(days=day), T0 + timedelta(days=day) + HOUR / 2)
            for day in range(-180, 180)]
    await EventMapRepository(world.storage).put_many(KEY, rows)
    counting = CountingStorage(world.storage)
    world.services.storage = counting
    world.graph.fail_next(TransientError("Graph answered 503", code="graph_unavailable"), op="calendar_view")
    status, body = await check(world)
    assert (status, body["checkedLive"], body["fallbackReason"]) == (200, False, "graph_failed")
    assert body["conflicts"] == [{"start": "2031-04-07T09:00:00Z", "end": "2031-04-07T09:30:00Z", "showAs": None,
                                  "allDay": False}]
    assert counting.event_map.rows_read == 1


async def test_rows_reaching_into_or_over_the_interval_still_count(world: MemoryWorld) -> None:
    await seed(world)
    repo = EventMapRepository(world.storage)
    await repo.put_many(KEY, [
        StatusRow("before", "o1", "h", T0 - 2 * HOUR, T0),                 # ends as the interval starts
        StatusRow("into", "o2", "h", T0 - HOUR, T0 + HOUR / 4),
        StatusRow("over", "o3", "h", T0 - timedelta(days=3), T0 + timedelta(days=3)),  # a week away
        StatusRow("after", "o4", "h", T0 + HOUR, T0 + 2 * HOUR)])          # starts as it ends
    assert sorted(r.event_id for r in await repo.overlapping(KEY, T0, T0 + HOUR)) == ["into", "over"]
    assert conflicts.synced_conflicts(await repo.overlapping(KEY, T0, T0 + HOUR), T0, T0 + HOUR)[0].start == \
        T0 - timedelta(days=3)
