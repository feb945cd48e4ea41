"""Fixtures of the adapter tests: a scripted Graph behind ``httpx.MockTransport`` and the real
adapter on it (``tests/support/graph_stub.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.adapters.graph_sdk import GraphSdkAdapter
from tests.support.graph_stub import GraphStub, StaticCredential, stub_adapter


@pytest.fixture
def stub() -> GraphStub:
    return GraphStub()


@pytest.fixture
def credential() -> StaticCredential:
    return StaticCredential()


@pytest.fixture
async def adapter(stub: GraphStub, credential: StaticCredential) -> AsyncIterator[GraphSdkAdapter]:
    graph = stub_adapter(stub, credential)
    try:
        yield graph
    finally:
        await graph.close()
