"""A stack of its own for each soak-package test that asks for one (they change sandbox
behaviour and revoke tokens, so they never share it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.stack import Stack
from devtools.stack_world import bench_stack


@pytest.fixture
def stack() -> Iterator[Stack]:
    running = bench_stack()
    try:
        yield running
    finally:
        running.stop()
