"""One stack for every end-to-end test: Azurite, the sandbox and the real function app.

Starting it costs seconds, so the tests share it (package scope: it stops when the last e2e test
finished, and the process environment it set goes back before other packages run). Tests keep
out of each other's way by using their own timum resources, Outlook calendars and — where they
revoke tokens or consent — their own tenants. Fault rules and sandbox behaviour a test changes
are put back by the ``clean_sandbox`` fixture.

Assertions wait for states with a deadline, never for a time; the lag from an action to its
effect is written to the log (``e2e`` logger) for whoever reads the run. What the tests share
(names, wall times, waiting for slots) is ``tests/support/e2e.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest

from devtools.stack import Stack, running_stack
from tests.support.e2e import Names, names_for


@pytest.fixture(scope="package")
def stack() -> Iterator[Stack]:
    # Persistent storage: the health test stops and restarts Azurite, and every other test must
    # still find its links afterwards, whatever order the tests run in.
    with running_stack(seed_demo=True, persistent_storage=True) as running:
        yield running


@pytest.fixture(autouse=True)
def clean_sandbox(stack: Stack) -> Iterator[None]:
    """Whatever a test switches in the sandbox (faults, Graph behaviour) is switched back."""
    behaviour = copy.copy(stack.graph.behaviour)
    yield
    stack.graph.clear_faults()
    stack.graph.behaviour = behaviour
    stack.timum.clear_faults()
    stack.timum.set_signature_mode("valid")
    stack.timum.resume_deliveries()


@pytest.fixture
def names(request: pytest.FixtureRequest) -> Names:
    """A resource and a calendar name of this test's own."""
    return names_for(request.node.name)
