"""A stack of its own for each soak-package test that asks for one (they change sandbox
behaviour and revoke tokens, so they never share it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.world import bench_stack
from devtools.stack import Stack


@pytest.fixture
def stack() -> Iterator[Stack]:
    running = bench_stack()
    try:
        yield running
    finally:
        running.stop()
