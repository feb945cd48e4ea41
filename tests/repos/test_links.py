"""Link repository, indexes and leases on both storage implementations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.domain import Link, LinkHealth, LinkKey, LinkMode, ProviderSettings, SyncMode, TitlePrivacy
from shared.errors import Conflict
from shared.repos.links import LeaseRepository, LinkRepository, ProviderSettingsRepository, SubscriptionRepository
from shared.storage import StoragePort


def _link(resource: str = "res-1", calendar: str = "AAMk/cal=1") -> Link:
    return Link(provider_id="prov-1", resource_id=resource, mode=LinkMode.DELEGATED, tenant_id="tid",
                mailbox_id="anna@example.org", calendar_id=calendar, calendar_name="Behandlungsraum 1",
                calendar_owner="anna@example.org", account_id="acc.1",
                subscription_expires_at=datetime(2026, 11, 25, 8, 0, tzinfo=UTC))


async def test_save_get_list_roundtrip(storage: StoragePort) -> None:
    repo = LinkRepository(storage)
    link = await repo.save(_link())
    assert link.etag
    got = await repo.get(LinkKey("prov-1", "res-1"))
    assert got == link
    assert got is not None and got.mode is LinkMode.DELEGATED and got.sync_mode is SyncMode.PUSH
    assert got.subscription_expires_at == datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    assert [lk.resource_id for lk in await repo.list_for_provider("prov-1")] == ["res-1"]
    assert await repo.list_for_provider("prov-2") == []


async def test_concurrent_save_conflicts(storage: StoragePort) -> None:
    repo = LinkRepository(storage)
    await repo.save(_link())
    a = await repo.require(LinkKey("prov-1", "res-1"))
    b = await repo.require(LinkKey("prov-1", "res-1"))
    a.health = LinkHealth.NEEDS_RECONNECT
    await repo.save(a)
    b.last_error = "stale writer"
    with pytest.raises(Conflict):
        await repo.save(b)


async def test_one_calendar_one_resource(storage: StoragePort) -> None:
    repo = LinkRepository(storage)
    first = _link("res-1")
    await repo.claim_calendar(first)
    await repo.claim_calendar(first)  # idempotent for the same resource
    with pytest.raises(Conflict):
        await repo.claim_calendar(_link("res-2"))
    await repo.save(first)
    await repo.delete(first.key)
    await repo.release_calendar(first)
    await repo.claim_calendar(_link("res-2"))
    assert await repo.calendar_owner("tid", "ANNA@example.org", "AAMk/cal=1") == LinkKey("prov-1", "res-2")


async def test_subscription_index_checks_client_state(storage: StoragePort) -> None:
    index = SubscriptionRepository(storage)
    await index.put("sub-1", LinkKey("prov-1", "res-1"), "s3cret-state")
    record = await index.get("sub-1")
    assert record is not None and record.link == LinkKey("prov-1", "res-1")
    assert record.client_state_matches("s3cret-state")
    assert not record.client_state_matches("other")
    assert not record.client_state_matches(None)
    assert "s3cret" not in record.client_state_hash
    await index.delete("sub-1")
    assert await index.get("sub-1") is None


async def test_lease_coalesces(storage: StoragePort) -> None:
    leases = LeaseRepository(storage)
    key = LinkKey("prov-1", "res-1")
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert await leases.acquire(key, "worker-a", now=now)
    assert not await leases.acquire(key, "worker-b", now=now)   # marks dirty
    assert not await leases.acquire(key, "worker-c", now=now)
    assert await leases.release(key, "worker-a", now=now) is True    # run once more
    assert await leases.release(key, "worker-a", now=now) is False   # clean: released
    assert await leases.acquire(key, "worker-b", now=now)


async def test_expired_lease_is_taken_over(storage: StoragePort) -> None:
    leases = LeaseRepository(storage, ttl=timedelta(minutes=1))
    key = LinkKey("prov-1", "res-1")
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert await leases.acquire(key, "crashed", now=now)
    assert await leases.acquire(key, "worker-b", now=now + timedelta(minutes=2))
    assert await leases.release(key, "crashed", now=now) is False


async def test_provider_settings_default_and_save(storage: StoragePort) -> None:
    repo = ProviderSettingsRepository(storage)
    assert (await repo.get("p")).title_privacy is TitlePrivacy.NONE
    await repo.save(ProviderSettings("p", title_privacy=TitlePrivacy.SUBJECT, tentative_blocks=False))
    got = await repo.get("p")
    assert got.title_privacy is TitlePrivacy.SUBJECT and got.tentative_blocks is False
