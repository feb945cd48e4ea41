"""One contract suite for the storage port, run against Azurite and the in-memory twin."""

from __future__ import annotations

import uuid

import pytest

from shared.errors import BadRequest, Conflict, NotFound
from shared.storage import StoragePort, decode_key, encode_key
from shared.storage.base import MAX_BATCH


def _name() -> str:
    return "c" + uuid.uuid4().hex[:12]


async def test_insert_get_roundtrip_with_types(storage: StoragePort) -> None:
    from datetime import UTC, datetime

    table = storage.table(_name())
    when = datetime(2026, 11, 23, 10, 30, tzinfo=UTC)
    stored = await table.insert({"PartitionKey": "p", "RowKey": "r", "s": "x", "n": 3, "big": 2**40,
                                 "b": True, "when": when})
    assert stored.etag
    row = await table.get("p", "r")
    assert row is not None
    assert (row["s"], row["n"], row["big"], row["b"], row["when"]) == ("x", 3, 2**40, True, when)
    assert row.etag == stored.etag
    assert await table.get("p", "missing") is None


async def test_insert_twice_conflicts(storage: StoragePort) -> None:
    table = storage.table(_name())
    await table.insert({"PartitionKey": "p", "RowKey": "r"})
    with pytest.raises(Conflict):
        await table.insert({"PartitionKey": "p", "RowKey": "r"})


async def test_update_with_stale_etag_conflicts(storage: StoragePort) -> None:
    table = storage.table(_name())
    first = await table.insert({"PartitionKey": "p", "RowKey": "r", "v": 1})
    second = await table.update({"PartitionKey": "p", "RowKey": "r", "v": 2}, etag=first.etag)
    assert second.etag != first.etag
    with pytest.raises(Conflict):
        await table.update({"PartitionKey": "p", "RowKey": "r", "v": 3}, etag=first.etag)
    row = await table.get("p", "r")
    assert row is not None and row["v"] == 2


async def test_update_missing_row_is_not_found(storage: StoragePort) -> None:
    table = storage.table(_name())
    await table.insert({"PartitionKey": "p", "RowKey": "other"})
    with pytest.raises(NotFound):
        await table.update({"PartitionKey": "p", "RowKey": "r"}, etag='W/"x"')


async def test_upsert_replaces_fields(storage: StoragePort) -> None:
    table = storage.table(_name())
    await table.upsert({"PartitionKey": "p", "RowKey": "r", "a": 1, "b": 2})
    await table.upsert({"PartitionKey": "p", "RowKey": "r", "a": 5})
    row = await table.get("p", "r")
    assert row is not None and row["a"] == 5 and "b" not in row


async def test_delete_reports_and_honours_etag(storage: StoragePort) -> None:
    table = storage.table(_name())
    first = await table.insert({"PartitionKey": "p", "RowKey": "r", "v": 1})
    await table.update({"PartitionKey": "p", "RowKey": "r", "v": 2}, etag=first.etag)
    with pytest.raises(Conflict):
        await table.delete("p", "r", etag=first.etag)
    assert await table.delete("p", "r") is True
    assert await table.delete("p", "r") is False


async def test_query_partition_and_equals(storage: StoragePort) -> None:
    table = storage.table(_name())
    for pk, rk, kind in [("a", "2", "x"), ("a", "1", "y"), ("b", "1", "x")]:
        await table.insert({"PartitionKey": pk, "RowKey": rk, "kind": kind})
    assert [r.rk for r in await table.query("a")] == ["1", "2"]
    assert [(r.pk, r.rk) for r in await table.query(equals={"kind": "x"})] == [("a", "2"), ("b", "1")]
    assert len(await table.query(limit=2)) == 2


async def test_queue_send_counts(storage: StoragePort) -> None:
    queue = storage.queue("q" + uuid.uuid4().hex[:12])
    await queue.send({"link": "p|r"})
    await queue.send({"link": "p|r"}, delay_seconds=30)
    assert await queue.peek_count() >= 1


async def test_ping(storage: StoragePort) -> None:
    await storage.ping()


@pytest.mark.parametrize("value", ["plain-id_1", "AAMkAD/x+y==", "a#b?c\\d", "~tilde", "ümlaut"])
def test_key_encoding_roundtrips(value: str) -> None:
    key = encode_key(value)
    assert not any(c in key for c in "/\\#?")
    assert decode_key(key) == value


async def test_upsert_many_writes_one_partition_in_batches(storage: StoragePort) -> None:
    table = storage.table(_name())
    await table.upsert({"PartitionKey": "p", "RowKey": "r0000", "v": -1, "old": True})
    # More than one transaction's worth, a row named twice (the later wins, as with sequential
    # upserts), and a row that exists already (replaced, not merged).
    rows = [{"PartitionKey": "p", "RowKey": f"r{i:04d}", "v": i} for i in range(MAX_BATCH * 2 + 5)]
    rows.append({"PartitionKey": "p", "RowKey": "r0003", "v": 333})
    await table.upsert_many(rows)
    stored = {r.rk: r for r in await table.query("p")}
    assert len(stored) == MAX_BATCH * 2 + 5
    assert stored["r0003"]["v"] == 333
    assert stored["r0000"]["v"] == 0 and "old" not in stored["r0000"]
    assert all(r.etag for r in stored.values())
    await table.upsert_many([])


async def test_upsert_many_refuses_rows_of_two_partitions_and_writes_nothing(storage: StoragePort) -> None:
    table = storage.table(_name())
    await table.upsert({"PartitionKey": "a", "RowKey": "seed"})
    with pytest.raises(BadRequest):
        await table.upsert_many([{"PartitionKey": "a", "RowKey": "1"}, {"PartitionKey": "b", "RowKey": "1"}])
    assert [r.rk for r in await table.query()] == ["seed"]


async def test_delete_many_removes_rows_and_ignores_absent_ones(storage: StoragePort) -> None:
    table = storage.table(_name())
    await table.upsert_many([{"PartitionKey": "p", "RowKey": f"r{i:04d}"} for i in range(MAX_BATCH + 10)])
    await table.upsert({"PartitionKey": "q", "RowKey": "r0001"})
    # Absent rows in the first chunk (a transaction naming one fails as a whole in Azure) and a repeat.
    doomed = ["missing", *(f"r{i:04d}" for i in range(MAX_BATCH + 5)), "r0001", "also-missing"]
    await table.delete_many("p", doomed)
    assert [r.rk for r in await table.query("p")] == [f"r{i:04d}" for i in range(MAX_BATCH + 5, MAX_BATCH + 10)]
    assert await table.get("q", "r0001") is not None, "another partition's row stays"
    await table.delete_many("p", [])
