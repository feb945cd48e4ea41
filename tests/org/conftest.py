"""Fixtures of the organisation path: the connect fixtures (sandbox, live services, scripted
Microsoft sign-in, the in-memory world, the browser stack) plus a fresh sandbox tenant per test,
so consent changes never leak. What they build: ``tests/support/org_world.py``."""

from __future__ import annotations

import pytest

from devtools.sandbox.server import RunningSandbox
from tests.connect.conftest import browser, live, microsoft, page_factory, sandbox, stack, world
from tests.support.org_world import OrgTenant, make_org_tenant

# The connect package's fixtures, registered for this package too (pytest finds fixtures by name).
__all__ = ["browser", "live", "microsoft", "page_factory", "sandbox", "stack", "world"]


@pytest.fixture
def org_tenant(sandbox: RunningSandbox) -> OrgTenant:
    """A practice whose users may not consent (``make_org_tenant``)."""
    return make_org_tenant(sandbox)
