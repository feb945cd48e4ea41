"""Fixtures for the local host's tests: fresh recorders, per-test queue names on the session
Azurite, small host.json timings so queue behaviour shows within a second or two."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.storage.queue import QueueClient

from devtools import azurite as azurite_mod
from tests.devhost.sample_app import Recorder

FUNCTION_KEY = "fk-" + uuid.uuid4().hex
MASTER_KEY = "mk-" + uuid.uuid4().hex

FAST_HOST_JSON: dict[str, Any] = {
    "version": "2.0",
    "functionTimeout": "00:00:30",
    "extensions": {
        "http": {"routePrefix": "api"},
        "queues": {
            "batchSize": 4,
            "newBatchThreshold": 2,
            "maxDequeueCount": 3,
            "visibilityTimeout": "00:00:01",
            "maxPollingInterval": "00:00:00.200",
            "messageEncoding": "base64",
        },
    },
}


def host_json(**queue_overrides: Any) -> dict[str, Any]:
    data = copy.deepcopy(FAST_HOST_JSON)
    data["extensions"]["queues"].update(queue_overrides)
    return data


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def key_env() -> dict[str, str]:
    return {"FUNCTION_KEY": FUNCTION_KEY, "MASTER_KEY": MASTER_KEY, "DEVHOST_TICK_SCHEDULE": "* * * * * *"}


@pytest.fixture
def storage_env(azurite: azurite_mod.Azurite, key_env: dict[str, str]) -> dict[str, str]:
    """App settings with queue names of this test only, so tests never see each other's messages."""
    suffix = uuid.uuid4().hex[:10]
    return {**key_env, "AzureWebJobsStorage": azurite.connection_string,
            "DEVHOST_WORK_QUEUE": f"work-{suffix}", "DEVHOST_OUT_QUEUE": f"out-{suffix}",
            "DEVHOST_TEXT_QUEUE": f"text-{suffix}"}


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
