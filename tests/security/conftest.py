"""One stack for the whole package, and a client that speaks to it the way an attacker (or timum)
would (requests: ``tests/support/stack_requests.py``); the connect package's in-memory ``world``
and the ICS package's ``published`` calendar.

The local host is started with a request-body limit far above 1 MiB, so the limit the tests see is
the app's own, not the host's.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from devtools.stack import Stack, running_stack
from tests.connect.conftest import world
from tests.ics.conftest import published
from tests.support.stack_requests import HOST_BODY_LIMIT

# Registered for this package too (pytest finds fixtures by name).
__all__ = ["published", "world"]


@pytest.fixture(scope="package")
def stack() -> Iterator[Stack]:
    with running_stack(seed_demo=True, extra_env={"FUNCTIONS_REQUEST_BODY_SIZE_LIMIT": str(HOST_BODY_LIMIT)}) as up:
        yield up


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with stack.http(follow_redirects=False, timeout=30.0) as http:
        yield http
