"""Fresh tenants in the sandbox directory for the sandbox's own tests (fixture ``tenant_factory``
in ``tests/sandbox/conftest.py``), so tests that change consent or revoke tokens do not disturb
each other or the demo data."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from devtools.sandbox.directory import SandboxTenant, SandboxUser
from devtools.sandbox.server import RunningSandbox


@dataclass
class FreshTenant:
    tenant: SandboxTenant
    admin: SandboxUser
    users: list[SandboxUser]

    @property
    def id(self) -> str:
        return self.tenant.id

    @property
    def user(self) -> SandboxUser:
        return self.users[0]


#: the ``tenant_factory`` fixture: ``make(user_consent_allowed=, users=, name=)``
TenantFactory = Callable[..., FreshTenant]


def make_fresh_tenant(sandbox: RunningSandbox, *, user_consent_allowed: bool = True, users: int = 2,
                      name: str = "Testpraxis") -> FreshTenant:
    """A tenant with an administrator and ``users`` members, under a name of its own."""
    suffix = uuid.uuid4().hex[:8]
    directory = sandbox.directory
    tenant = directory.add_tenant(f"{name} {suffix}", f"t{suffix}.example", user_consent_allowed=user_consent_allowed)
    admin = directory.add_user(tenant.id, "Maria Admin", "maria.admin", is_admin=True)
    members = [directory.add_user(tenant.id, f"Person {i}", f"person{i}") for i in range(1, users + 1)]
    return FreshTenant(tenant, admin, members)
