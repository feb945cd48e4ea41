"""Fixtures of the Outlook → timum engine tests; the world they build is
``tests/support/outlook_world.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.storage.base import StoragePort
from tests.support.outlook_world import TripwireStorage, World, make_world


@pytest.fixture
async def world() -> World:
    return await make_world(TripwireStorage())


@pytest.fixture
async def any_world(storage: StoragePort) -> AsyncIterator[World]:
    """The same world on both storage implementations (in memory and Azurite)."""
    yield await make_world(storage)
