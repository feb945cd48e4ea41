"""Fixtures of the ``GraphCalendarPort`` contract: the Graph stand-in served over HTTPS in this
process, a webhook receiver for its validation requests, and ``graph`` — each implementation's
harness (``tests/support/graph_harness.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from devtools.sandbox.graph.testing import GraphTestEnv, WebhookReceiver
from tests.support.graph_harness import GraphHarness, memory_harness, sandbox_harness


@pytest.fixture(scope="session")
def graph_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GraphTestEnv]:
    env = GraphTestEnv.standalone(tmp_path_factory.mktemp("graph-contract"))
    try:
        yield env
    finally:
        env.stop()


@pytest.fixture(scope="session")
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture(params=["memory", "sdk-sandbox"])
async def graph(request: pytest.FixtureRequest) -> AsyncIterator[GraphHarness]:
    """Each implementation of ``GraphCalendarPort``, with a fresh mailbox world."""
    if request.param == "memory":
        yield memory_harness()
        return
    env: GraphTestEnv = request.getfixturevalue("graph_env")
    receiver: WebhookReceiver = request.getfixturevalue("webhook_receiver")
    harness, adapter = sandbox_harness(env, receiver)
    try:
        yield harness
    finally:
        receiver.validation = "echo"
        env.reset()
        await adapter.close()
