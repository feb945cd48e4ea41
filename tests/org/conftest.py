"""Fixtures of the organisation path: the connect fixtures (sandbox, live services, scripted
Microsoft sign-in) plus a fresh sandbox tenant per test, so consent changes never leak."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from devtools.sandbox.directory import SandboxTenant, SandboxUser
from devtools.sandbox.server import RunningSandbox
from tests.connect.conftest import live, microsoft, sandbox  # fixtures, used by name

__all__ = ["OrgTenant", "live", "microsoft", "sandbox"]


@dataclass
class OrgTenant:
    tenant: SandboxTenant
    admin: SandboxUser
    staff: SandboxUser
    outside: SandboxUser
    room: SandboxUser

    @property
    def id(self) -> str:
        return self.tenant.id


@pytest.fixture
def org_tenant(sandbox: RunningSandbox) -> OrgTenant:
    """A practice whose users may not consent: an administrator, two staff members (one outside
    the app's mailbox scope once a test sets it) and a treatment room."""
    suffix = uuid.uuid4().hex[:8]
    directory = sandbox.directory
    tenant = directory.add_tenant(f"Praxis {suffix}", f"praxis-{suffix}.example", user_consent_allowed=False)
    admin = directory.add_user(tenant.id, "Petra Admin", "petra", is_admin=True)
    staff = directory.add_user(tenant.id, "Anna Weber", "anna")
    outside = directory.add_user(tenant.id, "Jonas Extern", "jonas")
    room = directory.add_resource_mailbox(tenant.id, "Behandlungsraum 1", "raum1", kind="room")
    return OrgTenant(tenant, admin, staff, outside, room)
