"""What the organisation-path tests build (fixtures in ``tests/org/conftest.py``): a practice in
the sandbox directory whose users may not consent, and its app-only links stored under a granted
organisation connection."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from devtools.sandbox.directory import SandboxTenant, SandboxUser
from devtools.sandbox.server import RunningSandbox
from shared.adapters.timum_memory import MemoryTimum
from shared.context import Services
from shared.domain import Link, LinkMode, SyncMode
from shared.org.revoke import tenant_revoked
from shared.org.service import app_only_grant
from shared.org.store import OrgRepository
from shared.repos.accounts import TenantRepository
from shared.repos.links import LinkRepository


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


def make_org_tenant(sandbox: RunningSandbox) -> OrgTenant:
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


async def connect_org_links(live: Services, sandbox: RunningSandbox, org: OrgTenant,
                            providers: dict[str, int]) -> None:
    """The administrator granted the app; each provider is connected with ``count`` app-only push
    links to the room's calendars (resources ``{provider}-res-{i}``)."""
    sandbox.identity.set_admin_consent(org.id, True)
    assert isinstance(live.timum, MemoryTimum)
    for provider, count in providers.items():
        await OrgRepository(live.storage).connect(org.id, provider, frozenset({"Calendars.ReadWrite"}),
                                                  now=live.clock())
        for i in range(count):
            rid = f"{provider}-res-{i}"
            live.timum.add_resource(provider, f"Raum {i}", resource_id=rid)
            await LinkRepository(live.storage).save(Link(
                provider_id=provider, resource_id=rid, mode=LinkMode.APP_ONLY, tenant_id=org.id,
                mailbox_id=org.room.id, calendar_id=f"cal-{i}", calendar_name=f"Raum {i}", calendar_owner="",
                sync_mode=SyncMode.PUSH))
    await TenantRepository(live.storage).record_admin_consent(org.id, now=live.clock())


async def withdraw_and_grant_again(live: Services, sandbox: RunningSandbox,
                                   org: OrgTenant) -> tuple[str, frozenset[str]]:
    """The grant is withdrawn (and noticed as such), then the administrator consents again:
    (tenant id, application permissions) of the new grant, before the organisation is connected."""
    sandbox.identity.set_application_consent(org.id, None)
    assert await tenant_revoked(live, org.id)
    sandbox.identity.set_admin_consent(org.id, True)
    return await app_only_grant(live, org.id)
