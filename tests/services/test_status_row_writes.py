"""What a round asks of the event map, counted: a first sync reads no status row one by one and
adds one row per event in one transaction per page; an incremental round reads the page's rows,
adds the intents of its new slots and replaces every other row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.repos.sync_state import EVENT_MAP
from shared.storage.base import Entity, chunks, one_partition
from shared.storage.memory import MemoryTable
from tests.support.outlook_world import TripwireStorage, TripwireTable, World, make_world

T = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)


class CountingTable(TripwireTable):
    """Each request a storage adapter would send for the event map: (kind, rows)."""

    def __init__(self, name: str, owner: CountingStorage) -> None:
        super().__init__(name, owner)
        self.requests: list[tuple[str, int]] = []

    async def get(self, pk: str, rk: str) -> Entity | None:
        self.requests.append(("get", 1))
        return await super().get(pk, rk)

    async def query(self, pk: str | None = None, *, equals: Mapping[str, Any] | None = None,
                    limit: int | None = None) -> list[Entity]:
        self.requests.append(("query", 0))
        return await super().query(pk, equals=equals, limit=limit)

    async def upsert_many(self, entities: Sequence[Mapping[str, Any]]) -> None:
        self.requests += [("replace", len(chunk)) for chunk in chunks(one_partition(entities))]
        await super().upsert_many(entities)

    async def upsert_new_many(self, entities: Sequence[Mapping[str, Any]]) -> None:
        self.requests += [("add", len(chunk)) for chunk in chunks(one_partition(entities))]
        await TripwireTable.upsert_many(self, entities)

    async def delete_many(self, pk: str, rks: Sequence[str]) -> None:
        self.requests += [("delete", len(chunk)) for chunk in chunks(list(dict.fromkeys(rks)))]
        await super().delete_many(pk, rks)


class CountingStorage(TripwireStorage):
    def table(self, name: str) -> MemoryTable:
        if name not in self.tables:
            self.tables[name] = CountingTable(name, self) if name == EVENT_MAP else TripwireTable(name, self)
        return self.tables[name]

    def eventmap_requests(self) -> list[tuple[str, int]]:
        table = self.table(EVENT_MAP)
        assert isinstance(table, CountingTable)
        taken, table.requests = table.requests, []
        return taken


async def _world() -> tuple[World, CountingStorage]:
    storage = CountingStorage()
    return await make_world(storage, page_size=3), storage


async def test_a_first_sync_adds_one_row_per_event_and_reads_none_one_by_one() -> None:
    w, storage = await _world()
    ids = [w.add(subject=f"Termin {i}", start=T + i * H, end=T + (i + 1) * H) for i in range(8)]
    out = await w.sync()
    assert (out.status, out.upserts, out.pages) == ("ok", 8, 3)
    requests = storage.eventmap_requests()
    # The link's rows once at the start, the pending rows once at the end; each page's rows added
    # in one transaction; nothing replaced, nothing read row by row.
    assert [kind for kind, _ in requests if kind in ("get", "query")] == ["query", "query"]
    assert [(kind, n) for kind, n in requests if kind in ("add", "replace")] == [("add", 3), ("add", 3), ("add", 2)]
    assert set(await w.status_rows()) == set(ids)


async def test_an_incremental_round_adds_intents_and_replaces_rows_it_read() -> None:
    w, storage = await _world()
    moved = w.add(subject="Zahnarzt", start=T, end=T + H)
    w.add(subject="Teamrunde", start=T + 2 * H, end=T + 3 * H)
    await w.sync()
    storage.eventmap_requests()

    w.graph.edit_event(moved, start=T + 5 * H, end=T + 6 * H)
    new = w.add(subject="Physio", start=T + 8 * H, end=T + 9 * H)
    out = await w.sync()
    assert (out.status, out.full_rounds, out.upserts) == ("ok", 0, 2)
    requests = storage.eventmap_requests()
    assert ("get", 1) in requests, "the page's rows are read"
    # The new slot's pending row is added before its write; then the page's rows — the moved
    # event's and the new one's, both stored by now — are replaced.
    writes = [(kind, n) for kind, n in requests if kind in ("add", "replace")]
    assert writes[:2] == [("add", 1), ("replace", 2)]
    rows = await w.status_rows()
    assert {moved, new} <= set(rows)
    assert rows[new].pending, "a new slot's row stays pending until the next round confirms it"
