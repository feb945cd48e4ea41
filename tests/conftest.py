"""Session-wide fixtures: a real Azurite on free ports, and per-test isolated storage."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from devtools import azurite as azurite_mod
from shared.storage.azure import AzureStorage
from shared.storage.memory import MemoryStorage


@pytest.fixture(scope="session")
def azurite() -> Iterator[azurite_mod.Azurite]:
    server = azurite_mod.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def azure_storage(azurite: azurite_mod.Azurite) -> AsyncIterator[AzureStorage]:
    """Real Azure storage adapter on Azurite; each test gets its own table prefix."""
    storage = AzureStorage(connection_string=azurite.connection_string,
                           table_prefix="t" + uuid.uuid4().hex[:10])
    try:
        yield storage
    finally:
        await storage.close()


@pytest.fixture
def memory_storage() -> MemoryStorage:
    return MemoryStorage()


@pytest.fixture(params=["memory", "azure"])
async def storage(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    """Both implementations of the storage port, for contract tests."""
    if request.param == "memory":
        yield MemoryStorage()
        return
    server = request.getfixturevalue("azurite")
    store = AzureStorage(connection_string=server.connection_string, table_prefix="t" + uuid.uuid4().hex[:10])
    try:
        yield store
    finally:
        await store.close()
