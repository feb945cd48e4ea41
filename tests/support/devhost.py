"""Settings of the local host's own tests (fixtures in ``tests/devhost/conftest.py``): keys of a
run of their own, and host.json timings small enough that queue behaviour shows within a second
or two."""

from __future__ import annotations

import copy
import uuid
from typing import Any

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
    """``FAST_HOST_JSON`` with other queue settings."""
    data = copy.deepcopy(FAST_HOST_JSON)
    data["extensions"]["queues"].update(queue_overrides)
    return data


def key_env() -> dict[str, str]:
    return {"FUNCTION_KEY": FUNCTION_KEY, "MASTER_KEY": MASTER_KEY, "DEVHOST_TICK_SCHEDULE": "* * * * * *"}


def storage_env(connection_string: str, keys: dict[str, str]) -> dict[str, str]:
    """App settings with queue names of their own, so tests never see each other's messages."""
    suffix = uuid.uuid4().hex[:10]
    return {**keys, "AzureWebJobsStorage": connection_string,
            "DEVHOST_WORK_QUEUE": f"work-{suffix}", "DEVHOST_OUT_QUEUE": f"out-{suffix}",
            "DEVHOST_TEXT_QUEUE": f"text-{suffix}"}
