"""Graph notification handling: clientState checks, grouping per link, failure semantics."""

from __future__ import annotations

import json

import pytest

from shared.domain import LinkKey
from shared.errors import BadRequest, StorageError
from shared.messages import LINK_ADMIN_QUEUE, SYNC_QUEUE, AdminAction, AdminMessage, SyncMessage, SyncReason
from shared.repos.links import SubscriptionRepository
from shared.services.notifications import (
    SubscriptionCache,
    accept_change_notifications,
    accept_lifecycle_notifications,
)
from shared.storage.memory import MemoryStorage

SUB_A = "0f8e2a3c-5b1d-4c7e-9a6f-1d2e3f4a5b6c"
SUB_B = "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
SUB_X = "c3b2a190-8f7e-4d6c-b5a4-e3d2c1b0a9f8"


def _note(sub: str, state: str, change: str = "updated", **extra: str) -> dict[str, str]:
    return {"subscriptionId": sub, "clientState": state, "changeType": change,
            "resource": "Users/u/Events/AAMk", "tenantId": "tid", **extra}


def _body(*items: dict[str, str]) -> bytes:
    return json.dumps({"value": list(items)}).encode()


async def _seed(storage: MemoryStorage) -> None:
    index = SubscriptionRepository(storage)
    await index.put(SUB_A, LinkKey("p1", "r1"), "state-a")
    await index.put(SUB_B, LinkKey("p1", "r2"), "state-b")


async def test_one_message_per_link_however_many_notifications() -> None:
    storage = MemoryStorage()
    await _seed(storage)
    body = _body(_note(SUB_A, "state-a", "created"), _note(SUB_A, "state-a", "updated"),
                 _note(SUB_B, "state-b"), _note(SUB_A, "state-a", "deleted"))
    result = await accept_change_notifications(storage, SubscriptionCache(), body, now=1000.0)
    assert (result.accepted, result.dropped) == (4, 0)
    sent = [SyncMessage.parse(json.loads(m)) for m in storage.queue(SYNC_QUEUE).drain()]
    assert sorted(m.link for m in sent) == ["p1|r1", "p1|r2"]
    assert all(m.reason is SyncReason.NOTIFICATION and m.observed_at == 1000.0 for m in sent)


async def test_forged_and_unknown_notifications_are_dropped() -> None:
    storage = MemoryStorage()
    await _seed(storage)
    body = _body(_note(SUB_A, "wrong"), _note(SUB_X, "state-a"), {"subscriptionId": SUB_B})
    result = await accept_change_notifications(storage, SubscriptionCache(), body)
    assert (result.accepted, result.dropped) == (0, 3)
    assert storage.queue(SYNC_QUEUE).drain() == []


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"value": 3}', b"{}", b"\xff\xfe"])
async def test_malformed_bodies_are_bad_requests_and_enqueue_nothing(body: bytes) -> None:
    storage = MemoryStorage()
    await _seed(storage)
    with pytest.raises(BadRequest):
        await accept_change_notifications(storage, SubscriptionCache(), body)
    assert storage.queue(SYNC_QUEUE).drain() == []


async def test_oversized_body_is_rejected() -> None:
    with pytest.raises(BadRequest):
        await accept_change_notifications(MemoryStorage(), SubscriptionCache(), b" " * (1024 * 1024 + 1))


async def test_enqueue_failure_surfaces_so_graph_retries() -> None:
    storage = MemoryStorage()
    await _seed(storage)

    async def broken(*_: object, **__: object) -> None:
        raise StorageError("queue down")

    storage.queue(SYNC_QUEUE).send = broken  # type: ignore[method-assign]
    with pytest.raises(StorageError):
        await accept_change_notifications(storage, SubscriptionCache(), _body(_note(SUB_A, "state-a")))


async def test_cache_avoids_repeated_lookups_and_expires() -> None:
    storage = MemoryStorage()
    await _seed(storage)
    cache = SubscriptionCache(ttl=60, miss_ttl=5)
    await accept_change_notifications(storage, cache, _body(_note(SUB_A, "state-a")), now=0.0)
    await SubscriptionRepository(storage).delete(SUB_A)
    # Within the TTL the cached record still routes (the worker ignores deleted links).
    hit = await accept_change_notifications(storage, cache, _body(_note(SUB_A, "state-a")), now=30.0)
    assert hit.accepted == 1
    expired = await accept_change_notifications(storage, cache, _body(_note(SUB_A, "state-a")), now=61.0)
    assert (expired.accepted, expired.dropped) == (0, 1)


async def test_lifecycle_events_map_to_actions() -> None:
    storage = MemoryStorage()
    await _seed(storage)
    body = _body(_note(SUB_A, "state-a", lifecycleEvent="reauthorizationRequired"),
                 _note(SUB_A, "state-a", lifecycleEvent="reauthorizationRequired"),
                 _note(SUB_B, "state-b", lifecycleEvent="subscriptionRemoved"),
                 _note(SUB_A, "state-a", lifecycleEvent="missed"),
                 _note(SUB_B, "state-b", lifecycleEvent="somethingNew"),
                 _note(SUB_B, "forged", lifecycleEvent="subscriptionRemoved"))
    result = await accept_lifecycle_notifications(storage, SubscriptionCache(), body)
    admin = [AdminMessage.parse(json.loads(m)) for m in storage.queue(LINK_ADMIN_QUEUE).drain()]
    assert sorted((m.link, m.action, m.subscription_id) for m in admin) == [
        ("p1|r1", AdminAction.REAUTHORIZE, SUB_A), ("p1|r2", AdminAction.RESUBSCRIBE, SUB_B)]
    syncs = [SyncMessage.parse(json.loads(m)) for m in storage.queue(SYNC_QUEUE).drain()]
    assert [(m.link, m.reason) for m in syncs] == [("p1|r1", SyncReason.RESYNC)]
    assert result.dropped == 2
