"""One stack for the fuzz tests: one linked calendar with a live subscription and an ICS feed,
so that generated ids land near real ones whose secrets the fuzzer does not know."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.fuzz import QUIET_TIMERS, World, build_world
from devtools.stack import Stack, running_stack


@pytest.fixture(scope="package")
def fuzz_stack() -> Iterator[tuple[Stack, World]]:
    with running_stack(seed_demo=False, extra_env=QUIET_TIMERS) as stack:
        yield stack, build_world(stack)
