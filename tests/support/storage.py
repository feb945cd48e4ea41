"""Real storage for tests: an Azurite of its own, and the Azure storage adapter on it, by default
under a table prefix of the test's own so tests sharing one Azurite never see each other's rows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from devtools import azurite as azurite_mod
from shared.storage.azure import AzureStorage


@contextmanager
def running_azurite() -> Iterator[azurite_mod.Azurite]:
    """An Azurite on free ports, stopped afterwards."""
    # Through the module: the fast tier replaces ``start`` to refuse it.
    server = azurite_mod.start()
    try:
        yield server
    finally:
        server.stop()


def table_prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]


@asynccontextmanager
async def azure_storage(connection_string: str, *, isolated: bool = True) -> AsyncIterator[AzureStorage]:
    """The Azure adapter, closed afterwards; ``isolated=False`` uses the app's own (unprefixed)
    table names, as a command-line tool run beside the test reads them."""
    storage = AzureStorage(connection_string=connection_string, table_prefix=table_prefix() if isolated else "")
    try:
        yield storage
    finally:
        await storage.close()
