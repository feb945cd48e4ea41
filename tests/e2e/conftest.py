"""One stack for every end-to-end test: Azurite, the sandbox and the real function app.

Starting it costs seconds, so the tests share it (package scope: it stops when the last e2e test
finished, and the process environment it set goes back before other packages run). Tests keep
out of each other's way by using their own timum resources, Outlook calendars and — where they
revoke tokens or consent — their own tenants. Fault rules and sandbox behaviour a test changes
are put back by the ``clean_sandbox`` fixture.

Assertions wait for states with a deadline, never for a time; the lag from an action to its
effect is written to the log (``e2e`` logger) for whoever reads the run.
"""

from __future__ import annotations

import copy
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from devtools.sandbox.directory import SandboxUser
from devtools.sandbox.timum.state import Slot, TimumState
from devtools.stack import Stack, running_stack
from shared.domain import LinkKey

LOG = logging.getLogger("e2e")
BERLIN = ZoneInfo("Europe/Berlin")
PROVIDER = "prov-e2e"
#: seeded demo user whose mailbox most tests use (their own calendars in it)
ANNA = "anna.weber@praxis-sonnenschein.example"
#: deadline for one sync to show up; generous for a loaded 2-core machine, never a speed claim
DEADLINE = 45.0


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


@dataclass(frozen=True)
class Names:
    provider: str
    resource: str
    calendar: str

    @property
    def key(self) -> LinkKey:
        return LinkKey(self.provider, self.resource)


@pytest.fixture
def names(request: pytest.FixtureRequest) -> Names:
    """A resource and a calendar name of this test's own."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:28]
    tag = uuid.uuid4().hex[:6]
    return Names(PROVIDER, f"res-{slug}-{tag}", f"E2E {slug} {tag}")


def fresh_user(stack: Stack, *, name: str = "Praxis") -> SandboxUser:
    """An administrator in a tenant of its own, for tests that revoke tokens or consent."""
    tag = uuid.uuid4().hex[:8]
    tenant = stack.directory.add_tenant(f"{name} {tag}", f"e2e-{tag}.example")
    return stack.directory.add_user(tenant.id, f"Test {tag}", "admin", is_admin=True)


def berlin(days: int, hour: int, minute: int = 0) -> datetime:
    """A wall time in Berlin ``days`` from today, as an aware datetime."""
    day = datetime.now(BERLIN).date() + timedelta(days=days)
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=BERLIN)


def berlin_day(days: int) -> date:
    return datetime.now(BERLIN).date() + timedelta(days=days)


def slots(stack: Stack, names: Names) -> list[Slot]:
    return stack.timum.list_slots(names.provider, names.resource, "outlook")


def wait_slots(stack: Stack, names: Names, predicate: Callable[[list[Slot]], bool], *, what: str,
               started: float | None = None, timeout: float = DEADLINE) -> list[Slot]:
    """Wait until the resource's Outlook slots satisfy ``predicate``; log the lag since ``started``."""
    start = time.monotonic() if started is None else started

    def ready(state: TimumState) -> bool:
        return predicate(state.list_slots(names.provider, names.resource, "outlook"))

    stack.wait_timum(ready, timeout, what=what)
    LOG.info("lag %s: %.2f s", what, time.monotonic() - start)
    return slots(stack, names)


def by_id(found: list[Slot]) -> dict[str, Slot]:
    return {s.external_id: s for s in found}


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)
