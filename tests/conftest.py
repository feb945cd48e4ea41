"""Session-wide fixtures: a real Azurite on free ports, per-test isolated storage, and the test tiers.

Tiers: a test that needs a running server — Azurite, the sandbox (identity platform, Graph, timum)
or the local Functions host — is marked ``stack`` at collection, from the fixtures it asks for
(``STACK_FIXTURES`` in ``tests/support/tiers.py``, or a parametrised fixture's ``azure`` /
``sandbox`` variant). ``make test-fast`` deselects ``stack`` and ``browser`` and sets
``TIMUM_TEST_TIER=fast``, under which starting any of those servers fails the test with a message
naming the marker — so a test that starts one some other way cannot slip into the fast tier
unnoticed.

Conftest files hold fixtures and hooks only; what they build lives in ``tests/support``
(``tests/test_test_layout.py`` holds that rule).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from devtools import azurite as azurite_mod
from shared.storage.azure import AzureStorage
from shared.storage.memory import MemoryStorage
from tests.support.storage import azure_storage as open_azure_storage
from tests.support.storage import running_azurite
from tests.support.tiers import needs_stack, refuse_servers


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if needs_stack(item):
            item.add_marker(pytest.mark.stack)


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("TIMUM_TEST_TIER") == "fast":
        refuse_servers()


@pytest.fixture(scope="session")
def azurite() -> Iterator[azurite_mod.Azurite]:
    with running_azurite() as server:
        yield server


@pytest.fixture
async def azure_storage(azurite: azurite_mod.Azurite) -> AsyncIterator[AzureStorage]:
    """Real Azure storage adapter on Azurite; each test gets its own table prefix."""
    async with open_azure_storage(azurite.connection_string) as storage:
        yield storage


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
    async with open_azure_storage(server.connection_string) as store:
        yield store
