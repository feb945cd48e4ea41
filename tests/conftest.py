"""Session-wide fixtures: a real Azurite on free ports, per-test isolated storage, and the test tiers.

Tiers: a test that needs a running server — Azurite, the sandbox (identity platform, Graph, timum)
or the local Functions host — is marked ``stack`` at collection, from the fixtures it asks for
(``STACK_FIXTURES``, or a parametrised fixture's ``azure`` / ``sandbox`` variant). ``make
test-fast`` deselects ``stack`` and ``browser`` and sets ``TIMUM_TEST_TIER=fast``, under which
starting any of those servers fails the test with a message naming the marker — so a test that
starts one some other way cannot slip into the fast tier unnoticed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from devtools import azurite as azurite_mod
from shared.storage.azure import AzureStorage
from shared.storage.memory import MemoryStorage

# Fixtures that start (or stand for) a running server; any test asking for one is a stack test.
STACK_FIXTURES = frozenset({
    "azurite", "azure_storage", "stack", "fuzz_stack", "sandbox", "graph_env", "queues", "storage_env",
    "live", "microsoft", "sandbox_harness", "webhook_receiver",
})
# Values of parametrised fixtures (``storage``, ``graph``, ...) that select the real backend.
STACK_PARAMS = frozenset({"azure", "sandbox"})


def _needs_stack(item: pytest.Item) -> bool:
    if STACK_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return True
    callspec = getattr(item, "callspec", None)
    params: dict[str, Any] = callspec.params if callspec is not None else {}
    return any(isinstance(value, str) and value in STACK_PARAMS for value in params.values())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _needs_stack(item):
            item.add_marker(pytest.mark.stack)


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("TIMUM_TEST_TIER") != "fast":
        return
    from devtools.devhost import host as devhost_host
    from devtools.sandbox import server as sandbox_server

    def refuse(what: str) -> Any:
        def start(*_args: object, **_kwargs: object) -> None:
            raise RuntimeError(f"the fast test tier starts no {what}: mark this test 'stack' "
                               "(or ask for a fixture in tests/conftest.py STACK_FIXTURES)")
        return start

    azurite_mod.start = refuse("Azurite")
    sandbox_server.start_in_thread = refuse("sandbox")
    devhost_host.DevHost.start = refuse("local Functions host")


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
