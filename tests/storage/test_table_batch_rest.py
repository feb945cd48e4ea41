"""``upsert_many``'s plain-REST transaction (``shared.storage.table_batch_rest``) on Azurite: rows
come back exactly as the tables SDK's own transaction stores them, a refused transaction raises,
and ``upsert_many`` then writes through the SDK instead."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from devtools import azurite as azurite_mod
from shared.storage.azure import AzureStorage, _clean
from shared.storage.queue_rest import parse_connection_string
from shared.storage.table_batch_rest import RestBatchFailed, RestTableBatch


def _row(pk: str, n: int) -> dict[str, Any]:
    return {"PartitionKey": pk, "RowKey": f"ev-{n}'x", "text": f"Grüße {n} & <b>", "count": n, "big": 2**40 + n,
            "ratio": n / 3, "flag": n % 2 == 0, "at": datetime(2026, 12, 4, 8, n % 60, 7, 123000, tzinfo=UTC),
            "blob": bytes([n % 256]) * 3}


@pytest.fixture
async def storage(azurite: azurite_mod.Azurite) -> AsyncIterator[AzureStorage]:
    store = AzureStorage(connection_string=azurite.connection_string, table_prefix="t" + uuid.uuid4().hex[:10])
    try:
        yield store
    finally:
        await store.close()


async def test_rows_read_back_as_the_sdk_transaction_stores_them(storage: AzureStorage) -> None:
    rest = storage.rest_table_batch()
    assert rest is not None
    table = storage.table("rows")
    await table.upsert({"PartitionKey": "p", "RowKey": "warm"})  # creates the table
    rows = [_row("p", n) for n in range(100)]
    await rest.upsert(storage.prefix + "rows", [_clean(r) for r in rows])
    # The same rows through the SDK's own transaction, in another partition, for comparison.
    client = await table._client()
    await client.submit_transaction([("upsert", _clean({**r, "PartitionKey": "q"}), {"mode": "replace"})
                                     for r in rows[:5]])
    for n in (0, 1, 57, 99):
        mine = await table.get("p", f"ev-{n}'x")
        assert mine is not None
        assert {k: v for k, v in mine.items() if k != "Timestamp"} == {**_row("p", n)}
    for n in range(5):
        theirs = await table.get("q", f"ev-{n}'x")
        mine = await table.get("p", f"ev-{n}'x")
        assert theirs is not None and mine is not None
        assert {k: (v, type(v)) for k, v in theirs.items() if k not in ("PartitionKey", "Timestamp")} == \
               {k: (v, type(v)) for k, v in mine.items() if k not in ("PartitionKey", "Timestamp")}
    replaced = {"PartitionKey": "p", "RowKey": "ev-3'x", "text": "neu"}
    await rest.upsert(storage.prefix + "rows", [replaced])
    again = await table.get("p", "ev-3'x")
    assert again is not None and again["text"] == "neu" and "count" not in again  # replace, not merge


async def test_a_refused_transaction_raises_and_upsert_many_writes_through_the_sdk(
        storage: AzureStorage, azurite: azurite_mod.Azurite) -> None:
    endpoint, account, _key = parse_connection_string(azurite.connection_string, "table")
    forged = RestTableBatch(endpoint, account, key=base64.b64encode(b"not the key").decode())
    table = storage.table("rows")
    await table.upsert({"PartitionKey": "p", "RowKey": "warm"})
    try:
        with pytest.raises(RestBatchFailed):
            await forged.upsert(storage.prefix + "rows", [_clean(_row("p", 1))])
        assert await table.get("p", "ev-1'x") is None
        real = storage.rest_table_batch()
        storage._rest_batch = forged  # as if the REST path kept failing
        await table.upsert_many([_row("p", n) for n in range(3)])
        assert [r["RowKey"] for r in await table.query("p")] == ["ev-0'x", "ev-1'x", "ev-2'x", "warm"]
    finally:
        storage._rest_batch = real
        await forged.close()


async def test_a_transaction_is_all_or_nothing(storage: AzureStorage) -> None:
    rest = storage.rest_table_batch()
    assert rest is not None
    table = storage.table("rows")
    await table.upsert({"PartitionKey": "p", "RowKey": "warm"})
    bad = [_clean(_row("p", 1)), {"PartitionKey": "p", "RowKey": "too-big", "text": "x" * 70_000}]
    with pytest.raises(RestBatchFailed):
        await rest.upsert(storage.prefix + "rows", bad)
    assert await table.get("p", "ev-1'x") is None
