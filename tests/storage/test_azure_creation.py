"""The Azure adapter creates each table and queue once, and only hands out a client for one
that exists: concurrent first writes all land, and a creation that failed is tried again."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from azure.core.exceptions import ServiceRequestError

from devtools import azurite as azurite_mod
from shared.errors import StorageError
from shared.storage.azure import AzureStorage


def _name() -> str:
    return "k" + uuid.uuid4().hex[:12]


async def test_concurrent_first_writes_to_a_new_table_all_land(azure_storage: AzureStorage) -> None:
    table = azure_storage.table(_name())
    await asyncio.gather(*(table.upsert({"PartitionKey": "p", "RowKey": f"r{i}", "v": i}) for i in range(20)))
    rows = await table.query("p")
    assert sorted(int(row["v"]) for row in rows) == list(range(20))


async def test_concurrent_first_sends_to_a_new_queue_all_land(azure_storage: AzureStorage) -> None:
    queue = azure_storage.queue(_name())
    await asyncio.gather(*(queue.send({"n": i}) for i in range(10)))
    # Azurite's approximate count is exact for a queue nobody reads
    assert await queue.peek_count() == 10


async def test_a_failed_table_creation_is_tried_again(azurite: azurite_mod.Azurite,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    storage = AzureStorage(connection_string=azurite.connection_string)
    try:
        name = _name()
        table = storage.table(name)
        service = storage._clients().tables
        real = service.create_table_if_not_exists
        calls = 0

        async def flaky(table_name: str) -> object:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise ServiceRequestError("storage briefly unreachable")
            return await real(table_name)

        monkeypatch.setattr(service, "create_table_if_not_exists", flaky)
        with pytest.raises(StorageError):
            await table.upsert({"PartitionKey": "p", "RowKey": "r"})
        await table.upsert({"PartitionKey": "p", "RowKey": "r", "v": 1})
        row = await table.get("p", "r")
        assert row is not None and row["v"] == 1
        assert calls == 2
    finally:
        await storage.close()
