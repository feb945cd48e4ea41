"""Fixtures of the booking-writer tests; the world they build is ``tests/support/booking_world.py``."""

from __future__ import annotations

import pytest

from shared.storage import StoragePort
from tests.support.booking_world import World


@pytest.fixture
async def world(storage: StoragePort) -> World:
    """The world on both storage implementations, its calendar linked."""
    w = World(storage)
    await w.link()
    return w
