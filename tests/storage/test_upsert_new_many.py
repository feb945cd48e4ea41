"""``TablePort.upsert_new_many``: rows the caller believes new end exactly as ``upsert_many`` leaves
them, on both implementations, even where the belief is wrong; on Azure storage they go as Insert
transactions (``RestTableBatch.insert``) and a chunk that meets an existing row is sent again as
upserts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest

from devtools import azurite as azurite_mod
from shared.errors import BadRequest
from shared.storage import StoragePort
from shared.storage.azure import AzureStorage, _clean
from shared.storage.base import MAX_BATCH
from shared.storage.table_batch_rest import RestBatchFailed, RestTableBatch


def _name() -> str:
    return "n" + uuid.uuid4().hex[:12]


async def test_new_rows_end_as_upserts_would_leave_them_even_where_one_existed(storage: StoragePort) -> None:
    table = storage.table(_name())
    await table.upsert({"PartitionKey": "p", "RowKey": f"r{MAX_BATCH + 7:04d}", "v": -1, "old": True})
    # Two transactions' worth and more; in the second chunk a row that exists (a wrong belief) and
    # a row named twice (the later wins).
    rows: list[dict[str, Any]] = [{"PartitionKey": "p", "RowKey": f"r{i:04d}", "v": i}
                                  for i in range(MAX_BATCH * 2 + 5)]
    rows.append({"PartitionKey": "p", "RowKey": "r0003", "v": 333})
    await table.upsert_new_many(rows)
    stored = {r.rk: r for r in await table.query("p")}
    assert len(stored) == MAX_BATCH * 2 + 5
    assert stored["r0003"]["v"] == 333
    replaced = stored[f"r{MAX_BATCH + 7:04d}"]
    assert replaced["v"] == MAX_BATCH + 7 and "old" not in replaced, "replaced, not merged"
    assert all(r.etag for r in stored.values())


async def test_new_rows_of_two_partitions_are_refused_and_nothing_is_written(storage: StoragePort) -> None:
    table = storage.table(_name())
    await table.upsert({"PartitionKey": "a", "RowKey": "seed"})
    with pytest.raises(BadRequest):
        await table.upsert_new_many([{"PartitionKey": "a", "RowKey": "1"}, {"PartitionKey": "b", "RowKey": "1"}])
    assert [r.rk for r in await table.query()] == ["seed"]
    await table.upsert_new_many([])
    assert [r.rk for r in await table.query()] == ["seed"]


class _Spy:
    """The storage's REST transaction client, with the transactions it was asked for."""

    def __init__(self, real: RestTableBatch) -> None:
        self.real = real
        self.calls: list[tuple[str, int]] = []

    async def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        self.calls.append(("insert", len(rows)))
        await self.real.insert(table, rows)

    async def upsert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        self.calls.append(("upsert", len(rows)))
        await self.real.upsert(table, rows)


@pytest.fixture
async def azure(azurite: azurite_mod.Azurite) -> AsyncIterator[AzureStorage]:
    store = AzureStorage(connection_string=azurite.connection_string, table_prefix="t" + uuid.uuid4().hex[:10])
    try:
        yield store
    finally:
        await store.close()


async def test_azure_storage_inserts_new_rows_and_upserts_a_chunk_that_met_an_existing_row(
        azure: AzureStorage) -> None:
    real = azure.rest_table_batch()
    assert real is not None
    spy = _Spy(real)
    azure._rest_batch = spy  # type: ignore[assignment]
    try:
        table = azure.table("rows")
        await table.upsert({"PartitionKey": "p", "RowKey": "r0150", "old": True})
        await table.upsert_new_many([{"PartitionKey": "p", "RowKey": f"r{i:04d}", "v": i} for i in range(250)])
        # The first and last chunks went in as inserts; the middle one met r0150, wrote nothing
        # as a transaction does, and went again as upserts.
        assert spy.calls == [("insert", 100), ("insert", 100), ("upsert", 100), ("insert", 50)]
        stored = {r.rk: r for r in await table.query("p")}
        assert sorted(stored) == [f"r{i:04d}" for i in range(250)]
        assert stored["r0150"]["v"] == 150 and "old" not in stored["r0150"]
    finally:
        azure._rest_batch = real


async def test_an_insert_transaction_meeting_an_existing_row_writes_nothing(azure: AzureStorage) -> None:
    rest = azure.rest_table_batch()
    assert rest is not None
    table = azure.table("rows")
    await table.upsert({"PartitionKey": "p", "RowKey": "b", "v": 1})
    rows = [{"PartitionKey": "p", "RowKey": key, "v": 2} for key in ("a", "b", "c")]
    with pytest.raises(RestBatchFailed):
        await rest.insert(azure.prefix + "rows", [_clean(row) for row in rows])
    stored = {r.rk: r["v"] for r in await table.query("p")}
    assert stored == {"b": 1}
    await rest.insert(azure.prefix + "rows", [_clean({**row, "RowKey": row["RowKey"] + "2"}) for row in rows])
    assert {r.rk for r in await table.query("p")} == {"b", "a2", "b2", "c2"}


async def test_inserted_rows_read_back_with_their_types(azure: AzureStorage) -> None:
    from datetime import UTC, datetime

    table = azure.table("rows")
    row = {"PartitionKey": "p", "RowKey": "ev-1'x", "text": "Grüße & <b>", "n": 3, "big": 2**40, "ratio": 0.5,
           "flag": False, "at": datetime(2026, 12, 5, 8, 30, 7, 123000, tzinfo=UTC), "blob": b"\x00\x01"}
    await table.upsert_new_many([row])
    stored = await table.get("p", "ev-1'x")
    assert stored is not None
    assert {k: (v, type(v)) for k, v in stored.items() if k != "Timestamp"} == {k: (v, type(v)) for k, v in row.items()}
