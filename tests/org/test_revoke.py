"""Consent withdrawn or the app deleted: every link of the tenant needs a reconnect, timum hears it
once per provider (not once per link), and the mapping page says what happened."""

from __future__ import annotations

from devtools.sandbox.server import RunningSandbox
from shared.adapters.timum_memory import MemoryTimum
from shared.connect.flow import session_store
from shared.connect.store import ConnectContext
from shared.context import Services
from shared.domain import LinkHealth
from shared.messages import SyncMessage, SyncReason
from shared.org import service
from shared.org.revoke import ORG_EVENT, tenant_revoked
from shared.org.service import OrgPage
from shared.org.store import OrgRepository
from shared.repos.accounts import TenantRepository
from shared.repos.links import LinkRepository
from shared.sync.worker import run_sync
from tests.support.org_world import OrgTenant, connect_org_links, withdraw_and_grant_again


async def test_a_withdrawn_grant_stops_every_link_with_one_webhook_per_provider(
        live: Services, sandbox: RunningSandbox, org_tenant: OrgTenant) -> None:
    await connect_org_links(live, sandbox, org_tenant, {"prov-a": 3, "prov-b": 2})
    assert isinstance(live.timum, MemoryTimum)
    # Still granted: nothing happens.
    assert not await tenant_revoked(live, org_tenant.id)
    sandbox.identity.set_application_consent(org_tenant.id, None)

    assert await tenant_revoked(live, org_tenant.id)
    links = await LinkRepository(live.storage).list_all()
    mine = [k for k in links if k.tenant_id == org_tenant.id]
    assert len(mine) == 5 and all(k.health is LinkHealth.NEEDS_RECONNECT for k in mine)
    events = [e for e in live.timum.status_webhooks if e["type"] == ORG_EVENT]
    assert sorted(e["data"]["providerId"] for e in events) == ["prov-a", "prov-b"]
    assert sorted(next(e for e in events if e["data"]["providerId"] == "prov-a")["data"]["resourceIds"]) == [
        "prov-a-res-0", "prov-a-res-1", "prov-a-res-2"]
    # No per-link webhook on top.
    assert [e for e in live.timum.status_webhooks if e["type"] != ORG_EVENT] == []
    assert not await TenantRepository(live.storage).has_admin_consent(org_tenant.id)
    # A second worker noticing the same loss announces nothing new.
    assert await tenant_revoked(live, org_tenant.id)
    assert len(live.timum.status_webhooks) == 2
    connection = await OrgRepository(live.storage).get(org_tenant.id, "prov-a")
    assert connection is not None and not connection.connected and "roles" in connection.reason


async def test_a_deleted_app_is_noticed_by_the_sync_worker_and_shown_on_the_page(
        live: Services, sandbox: RunningSandbox, org_tenant: OrgTenant) -> None:
    await connect_org_links(live, sandbox, org_tenant, {"prov-1": 2})
    assert isinstance(live.timum, MemoryTimum)
    sandbox.identity.delete_service_principal(org_tenant.id)
    outcome = await run_sync(live, SyncMessage("prov-1|prov-1-res-0", SyncReason.POLL), worker_id="w1")
    assert outcome.status == "needs_reconnect"
    links = await LinkRepository(live.storage).list_for_provider("prov-1")
    assert all(k.health is LinkHealth.NEEDS_RECONNECT for k in links) and len(links) == 2
    assert [e["type"] for e in live.timum.status_webhooks] == [ORG_EVENT]
    connection = await OrgRepository(live.storage).get(org_tenant.id, "prov-1")
    assert connection is not None and "7000229" in connection.reason

    # The mapping page of this tenant says what happened (an org session: scope "org").
    context = ConnectContext(provider_id="prov-1", resource_id=None, locale="de",
                             return_url="http://127.0.0.1:7080/timum/providers/prov-1", scope="org")
    session_id = await session_store(live).create(context, account_id="", tenant_id=org_tenant.id,
                                                  account_name="", now=live.clock())
    page = await service.view(live, session_id, search="", cursor="", locale="de")
    assert isinstance(page, OrgPage) and page.values["revoked"]
    assert "die App wurde aus Ihrer Organisation entfernt" in page.values["revoked_text"]


async def test_connecting_the_organisation_again_brings_every_link_back(
        live: Services, sandbox: RunningSandbox, org_tenant: OrgTenant) -> None:
    from shared.messages import LINK_ADMIN_QUEUE
    from shared.org.service import connect_tenant

    await connect_org_links(live, sandbox, org_tenant, {"prov-1": 2})
    tid, roles = await withdraw_and_grant_again(live, sandbox, org_tenant)
    await connect_tenant(live, tid, "prov-1", roles)
    links = await LinkRepository(live.storage).list_for_provider("prov-1")
    assert all(k.health is LinkHealth.OK for k in links)
    queued = list(live.storage.queue(LINK_ADMIN_QUEUE).drain())  # type: ignore[attr-defined]
    assert sum('"resubscribe"' in m for m in queued) == 2
    connection = await OrgRepository(live.storage).get(org_tenant.id, "prov-1")
    assert connection is not None and connection.connected


async def test_a_status_webhook_timum_refuses_now_leaves_no_link_unrevived(
        live: Services, sandbox: RunningSandbox, org_tenant: OrgTenant) -> None:
    # timum's webhook endpoint fails while the administrator connects again: every link still gets
    # its set-up queued (a second consent would skip a link already marked healthy), and the
    # webhook that failed goes out with the link's next completed round.
    from shared.errors import TransientError
    from shared.messages import LINK_ADMIN_QUEUE
    from shared.org.service import connect_tenant

    await connect_org_links(live, sandbox, org_tenant, {"prov-1": 3})
    tid, roles = await withdraw_and_grant_again(live, sandbox, org_tenant)
    assert isinstance(live.timum, MemoryTimum)
    live.timum.fail_next(TransientError("timum is down", code="timum_unavailable"), op="send_link_status")
    await connect_tenant(live, tid, "prov-1", roles)
    links = await LinkRepository(live.storage).list_for_provider("prov-1")
    assert len(links) == 3 and all(k.health is LinkHealth.OK for k in links)
    queued = list(live.storage.queue(LINK_ADMIN_QUEUE).drain())  # type: ignore[attr-defined]
    assert sum('"resubscribe"' in m for m in queued) == 3
