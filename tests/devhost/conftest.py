"""Fixtures for the local host's tests: fresh recorders, per-test queue names on the session
Azurite, small host.json timings (``tests/support/devhost.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from azure.storage.queue import QueueClient

from devtools import azurite as azurite_mod
from tests.devhost.sample_app import Recorder
from tests.support import devhost


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def key_env() -> dict[str, str]:
    return devhost.key_env()


@pytest.fixture
def storage_env(azurite: azurite_mod.Azurite, key_env: dict[str, str]) -> dict[str, str]:
    """App settings with queue names of this test only, so tests never see each other's messages."""
    return devhost.storage_env(azurite.connection_string, key_env)


@pytest.fixture
def queues(azurite: azurite_mod.Azurite) -> Iterator[Any]:
    """``queues(name)`` → a raw (no encoding policy) sync client on Azurite."""
    clients: list[QueueClient] = []

    def make(name: str) -> QueueClient:
        client = QueueClient.from_connection_string(azurite.connection_string, name)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
