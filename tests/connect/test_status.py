"""Link health changes: saved once, one link-status webhook per change, also under retries."""

from __future__ import annotations

import pytest

from shared.connect.status import LINK_STATUS, set_health
from shared.domain import Link, LinkHealth, LinkKey, LinkMode, ProviderSettings
from shared.errors import TransientError
from shared.repos.links import LinkRepository, ProviderSettingsRepository
from tests.support.connect_world import MemoryWorld


async def _link(world: MemoryWorld, resource: str = "res-1") -> Link:
    return await LinkRepository(world.storage).save(Link(
        provider_id="prov-1", resource_id=resource, mode=LinkMode.DELEGATED, tenant_id="tid-1", mailbox_id="anna",
        calendar_id="cal-room1", calendar_name="Behandlungsraum 1", calendar_owner="", account_id="acc"))


async def test_one_webhook_per_change(world: MemoryWorld) -> None:
    link = await _link(world)
    link = await set_health(world.services, link, LinkHealth.NEEDS_RECONNECT, "needs_reconnect: invalid_grant")
    link = await set_health(world.services, link, LinkHealth.NEEDS_RECONNECT, "needs_reconnect: invalid_grant")
    link = await set_health(world.services, link, LinkHealth.OK, "reconnected")
    link = await set_health(world.services, link, LinkHealth.OK, "reconnected")
    hooks = world.timum.status_webhooks
    assert [h["data"]["status"] for h in hooks] == ["needs_reconnect", "ok"]
    assert len({h["id"] for h in hooks}) == 2
    stored = await LinkRepository(world.storage).require(link.key)
    assert stored.health is LinkHealth.OK and stored.last_error == "needs_reconnect: invalid_grant"
    assert hooks[0]["data"]["reason"].startswith("Die Anmeldung bei Microsoft") and hooks[1]["data"]["reason"] == ""
    assert hooks[0]["type"] == "link.status_changed" and hooks[0]["occurredAt"].endswith("Z")


async def test_reason_is_in_the_providers_language_and_never_raw(world: MemoryWorld) -> None:
    await ProviderSettingsRepository(world.storage).save(ProviderSettings("prov-1", locale="en"))
    link = await _link(world)
    await set_health(world.services, link, LinkHealth.ERROR, "remote_gone: GET /users/x/calendars/y → 404")
    [hook] = world.timum.status_webhooks
    assert hook["data"]["reason"] == "The Outlook calendar can no longer be reached (deleted or no longer shared)."
    link = await LinkRepository(world.storage).require(link.key)
    await set_health(world.services, link, LinkHealth.OK, "")
    link = await LinkRepository(world.storage).require(link.key)
    await set_health(world.services, link, LinkHealth.ERROR, "weird_code: detail")
    assert world.timum.status_webhooks[-1]["data"]["reason"] == "Syncing failed (weird_code). We keep trying."


async def test_a_failed_webhook_is_sent_by_the_retry_and_only_once(world: MemoryWorld) -> None:
    link = await _link(world)
    world.timum.fail_next(TransientError("timum is down"), op="send_link_status")
    with pytest.raises(TransientError):
        await set_health(world.services, link, LinkHealth.NEEDS_RECONNECT, "needs_reconnect")
    # the health is saved already; the queue retries the whole step with a fresh read
    fresh = await LinkRepository(world.storage).require(link.key)
    assert fresh.health is LinkHealth.NEEDS_RECONNECT and world.timum.status_webhooks == []
    await set_health(world.services, fresh, LinkHealth.NEEDS_RECONNECT, "needs_reconnect")
    await set_health(world.services, fresh, LinkHealth.NEEDS_RECONNECT, "needs_reconnect")
    assert len(world.timum.status_webhooks) == 1


async def test_racing_workers_send_the_same_delivery_id(world: MemoryWorld) -> None:
    await _link(world)
    repo = LinkRepository(world.storage)
    first = await repo.require(LinkKey("prov-1", "res-1"))
    second = await repo.require(LinkKey("prov-1", "res-1"))
    world.timum.fail_next(TransientError("lost answer"), op="send_link_status")
    with pytest.raises(TransientError):
        await set_health(world.services, first, LinkHealth.ERROR, "transient")
    await set_health(world.services, second, LinkHealth.ERROR, "transient")   # stale copy: re-reads
    await set_health(world.services, first, LinkHealth.ERROR, "transient")
    assert len(world.timum.status_webhooks) == 1


async def test_an_unlinked_link_tells_nobody(world: MemoryWorld) -> None:
    link = await _link(world)
    await LinkRepository(world.storage).delete(link.key)
    await set_health(world.services, link, LinkHealth.NEEDS_RECONNECT, "needs_reconnect")
    assert world.timum.status_webhooks == []
    assert await LinkRepository(world.storage).get(link.key) is None
    assert world.storage.table(LINK_STATUS).rows == {}
