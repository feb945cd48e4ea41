"""What the webhook scenarios (4 and 10) share: the webhook host measured alone, valid notification
bodies for it, the load generator process, and emptying the sync queue between levels."""

from __future__ import annotations

import functools
import json
import logging
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.report import ROOT
from bench.subhost import SubprocessHost
from devtools.stack_world import gather_bounded

if TYPE_CHECKING:
    from devtools.stack import Stack


def start_webhook_host(stack: Stack, workdir: Path) -> tuple[SubprocessHost, str]:
    """The Graph webhook in its own host process (``bench.webhook_app``) and its notification URL.
    The stack's in-process host stops: it would also work the queue the load fills, and the
    measured instance is alone."""
    from devtools.azurite import free_port

    stack.host.stop()
    host = SubprocessHost(app="bench.webhook_app", env=stack.env, port=free_port(), workdir=workdir).start()
    return host, f"{host.base_url}/api/graph/notifications"


def subscribed_bodies(stack: Stack, count: int, provider: str) -> list[str]:
    """One notification POST for each of ``count`` fresh subscriptions of ``provider``, registered
    in the subscription index with their right clientState."""
    from shared.domain import LinkKey
    from shared.repos.links import SubscriptionRepository

    index = SubscriptionRepository(stack.storage)
    subs = [(str(uuid.uuid4()), secrets.token_urlsafe(32), LinkKey(provider, f"r{i:03d}")) for i in range(count)]

    async def put() -> None:
        await gather_bounded([functools.partial(index.put, sub_id, key, state) for sub_id, state, key in subs])

    stack.run(put())
    bodies = []
    for sub_id, state, _ in subs:
        ext = "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A" + secrets.token_urlsafe(24)
        resource = f"Users/{provider}/Events/{ext}"
        bodies.append(json.dumps({"value": [{
            "subscriptionId": sub_id, "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
            "changeType": "updated", "resource": resource, "clientState": state,
            "tenantId": str(uuid.uuid4()),
            "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "@odata.id": resource,
                             "@odata.etag": 'W/"DwAAABYAAAA"', "id": ext}}]}))
    return bodies


def run_loadgen(url: str, bodies_file: Path, rate: float, duration: float, drain: float,
                *extra: str) -> dict[str, Any]:
    """One level from the load generator process (``bench.loadgen``; ``extra``: more of its options).
    It stops itself ``drain`` seconds after the last request was due; the timeout here is only a
    backstop against a generator that hangs."""
    out = subprocess.run([sys.executable, "-m", "bench.loadgen", "--url", url, "--bodies", str(bodies_file),
                          "--rate", str(rate), "--duration", str(duration), "--drain", str(drain), *extra],
                         cwd=ROOT, capture_output=True, text=True, timeout=duration + drain + 60, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def clear_queue(stack: Stack, name: str = "") -> None:
    """Empty a queue (the sync queue by default)."""
    from azure.core.exceptions import AzureError
    from azure.storage.queue import QueueClient

    from shared.messages import SYNC_QUEUE

    # Short timeouts and few retries: an Azurite still busy with a level's backlog must not stall
    # the scenario; messages left behind only make the next level's queue longer, not its answers.
    client = QueueClient.from_connection_string(stack.azurite.connection_string, name or SYNC_QUEUE, retry_total=0,
                                                connection_timeout=5, read_timeout=15)
    try:
        client.clear_messages()
    except AzureError as exc:
        logging.getLogger(__name__).warning("could not clear the queue: %s", exc)
    finally:
        client.close()


def sync_queue_depth(stack: Stack) -> int | None:
    """The sync queue's depth, or None if Azurite does not say within a few seconds."""
    import asyncio

    try:
        return stack.run(asyncio.wait_for(stack.storage.queue("link-sync").peek_count(), 5.0), timeout=10.0)
    except Exception:  # a busy Azurite; the caller waits a little instead
        return None


def settle(stack: Stack, timeout: float = 20.0) -> None:
    """Wait until the host has worked off what an overloaded level left in flight (the queue stops
    growing), so the next level starts on an idle instance; at most ``timeout`` seconds."""
    last: int | None = -1
    steady, deadline = 0, time.monotonic() + timeout
    while time.monotonic() < deadline and steady < 2:
        depth = sync_queue_depth(stack)
        steady = steady + 1 if depth is not None and depth == last else 0
        last = depth
        time.sleep(0.5)
