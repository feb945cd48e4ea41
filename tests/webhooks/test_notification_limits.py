"""What one anonymous notification POST may cost: id shape, look-up cap, shared concurrency, LRU cache.

The webhook is open to anyone; these tests count the table reads a hostile POST causes and check
that valid notifications are still never lost (enqueued, or the POST answered so Graph retries).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from shared.domain import LinkKey
from shared.messages import SYNC_QUEUE, SyncMessage
from shared.repos.links import SUBSCRIPTIONS, SubscriptionRecord, SubscriptionRepository
from shared.services.notifications import (
    MAX_CONCURRENT_LOOKUPS,
    MAX_LOOKUPS_PER_POST,
    UNKNOWN_LOOKUP_BURST,
    UNKNOWN_LOOKUPS_PER_SECOND,
    LookupsDeferred,
    SubscriptionCache,
    accept_change_notifications,
    accept_lifecycle_notifications,
)
from shared.storage.memory import MemoryStorage


class CountingStorage:
    """A memory storage whose subscription reads are counted (and optionally slowed down)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.storage = MemoryStorage()
        self.reads = 0
        self.in_flight = 0
        self.max_in_flight = 0
        table = self.storage.table(SUBSCRIPTIONS)
        original = table.get

        async def get(*args: Any, **kwargs: Any) -> Any:
            self.reads += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if delay:
                    await asyncio.sleep(delay)
                return await original(*args, **kwargs)
            finally:
                self.in_flight -= 1

        table.get = get  # type: ignore[method-assign]


def _body(items: list[dict[str, Any]]) -> bytes:
    return json.dumps({"value": items}).encode()


def _hostile(count: int) -> bytes:
    return _body([{"subscriptionId": str(uuid.uuid4()), "clientState": "guess", "changeType": "updated"}
                  for _ in range(count)])


async def _subscriptions(storage: MemoryStorage, count: int) -> list[tuple[str, str, LinkKey]]:
    subs = [(str(uuid.uuid4()), f"state-{i}", LinkKey("p1", f"r{i}")) for i in range(count)]
    index = SubscriptionRepository(storage)
    for sid, state, link in subs:
        await index.put(sid, link, state)
    return subs


def _links(storage: MemoryStorage) -> list[str]:
    return sorted(SyncMessage.parse(json.loads(m)).link for m in storage.queue(SYNC_QUEUE).drain())


@pytest.mark.parametrize("sid", ["sub-1", "../../x", "0f8e2a3c-5b1d-4c7e-9a6f-1d2e3f4a5b6c\n", "", 42, None,
                                 "0f8e2a3c5b1d4c7e9a6f1d2e3f4a5b6c", "{0f8e2a3c-5b1d-4c7e-9a6f-1d2e3f4a5b6c}"])
async def test_ids_that_are_not_guids_cost_no_read(sid: object) -> None:
    counting = CountingStorage()
    result = await accept_change_notifications(counting.storage, SubscriptionCache(),
                                               _body([{"subscriptionId": sid, "clientState": "x"}] * 50))
    assert (result.accepted, result.dropped, counting.reads) == (0, 50, 0)


async def test_a_thousand_unknown_ids_cost_at_most_the_cap_and_enqueue_nothing() -> None:
    counting = CountingStorage()
    with pytest.raises(LookupsDeferred) as raised:
        await accept_change_notifications(counting.storage, SubscriptionCache(), _hostile(1000))
    assert counting.reads == MAX_LOOKUPS_PER_POST
    assert raised.value.retry_after
    assert counting.storage.queue(SYNC_QUEUE).drain() == []


async def test_lifecycle_webhook_has_the_same_cap() -> None:
    counting = CountingStorage()
    with pytest.raises(LookupsDeferred):
        await accept_lifecycle_notifications(counting.storage, SubscriptionCache(), _hostile(1000))
    assert counting.reads == MAX_LOOKUPS_PER_POST


async def test_a_post_over_the_cap_loses_no_valid_notification() -> None:
    """Graph retries a 5xx: verified notifications are enqueued at once, the rest on a later attempt."""
    counting = CountingStorage()
    subs = await _subscriptions(counting.storage, MAX_LOOKUPS_PER_POST + 5)
    body = _body([{"subscriptionId": sid, "clientState": state, "changeType": "updated"} for sid, state, _ in subs])
    cache = SubscriptionCache()
    with pytest.raises(LookupsDeferred):
        await accept_change_notifications(counting.storage, cache, body, now=100.0)
    first = _links(counting.storage)
    assert len(first) == MAX_LOOKUPS_PER_POST
    retry = await accept_change_notifications(counting.storage, cache, body, now=102.0)
    assert (retry.accepted, retry.dropped, retry.deferred) == (len(subs), 0, 0)
    assert _links(counting.storage) == sorted(str(link) for _, _, link in subs)
    assert counting.reads == len(subs)  # each subscription read once over both attempts


async def test_known_subscriptions_are_served_from_the_cache_amid_a_flood() -> None:
    counting = CountingStorage()
    (sid, state, link), = await _subscriptions(counting.storage, 1)
    cache = SubscriptionCache()
    normal = _body([{"subscriptionId": sid, "clientState": state}])
    await accept_change_notifications(counting.storage, cache, normal, now=0.0)
    for _ in range(20):
        with pytest.raises(LookupsDeferred):
            await accept_change_notifications(counting.storage, cache, _hostile(200), now=1.0)
    reads = counting.reads
    result = await accept_change_notifications(counting.storage, cache, normal, now=2.0)
    assert result.accepted == 1 and counting.reads == reads
    assert str(link) in _links(counting.storage)


async def test_lookups_of_concurrent_posts_share_one_bound() -> None:
    counting = CountingStorage(delay=0.01)
    cache = SubscriptionCache(unknown_lookup_burst=1000)

    async def post() -> None:
        with pytest.raises(LookupsDeferred):
            await accept_change_notifications(counting.storage, cache, _hostile(100))

    await asyncio.gather(*(post() for _ in range(6)))
    assert counting.reads == 6 * MAX_LOOKUPS_PER_POST
    assert counting.max_in_flight == MAX_CONCURRENT_LOOKUPS


async def test_a_fast_flood_spends_only_the_per_second_budget() -> None:
    counting = CountingStorage()
    cache = SubscriptionCache()
    for second in range(3):
        for _ in range(10):  # ten hostile POSTs a second
            with pytest.raises(LookupsDeferred):
                await accept_change_notifications(counting.storage, cache, _hostile(1000), now=1000.0 + second)
    assert counting.reads <= UNKNOWN_LOOKUP_BURST + 2 * UNKNOWN_LOOKUPS_PER_SECOND


async def test_known_subscriptions_are_re_read_outside_the_budget() -> None:
    """After its cache entry expired, a real subscription is read again even while a flood has spent
    the budget for unknown ids: an attacker cannot turn a random id into a known one."""
    counting = CountingStorage()
    (sid, state, link), = await _subscriptions(counting.storage, 1)
    cache = SubscriptionCache(ttl=60)
    normal = _body([{"subscriptionId": sid, "clientState": state}])
    await accept_change_notifications(counting.storage, cache, normal, now=0.0)
    for _ in range(20):
        with pytest.raises(LookupsDeferred):
            await accept_change_notifications(counting.storage, cache, _hostile(1000), now=100.0)
    assert cache.take_lookups(1, 100.0) == 0  # the budget is spent
    result = await accept_change_notifications(counting.storage, cache, normal, now=100.0)
    assert (result.accepted, result.deferred) == (1, 0)
    assert str(link) in _links(counting.storage)


def test_a_subscription_found_gone_loses_its_place_among_known_ones() -> None:
    cache = SubscriptionCache(ttl=60)
    cache.put("sub", _record("sub"), now=0.0)
    assert cache.get("sub", 61.0) == (False, None) and cache.seen("sub")
    cache.put("sub", None, now=61.0)
    assert not cache.seen("sub") and cache.get("sub", 62.0) == (True, None)


def _record(sid: str) -> SubscriptionRecord:
    return SubscriptionRecord(sid, LinkKey("p", sid), "hash")


def test_cache_evicts_the_least_recently_used_entry_one_at_a_time() -> None:
    cache = SubscriptionCache(max_entries=3)
    for sid in ("a", "b", "c"):
        cache.put(sid, _record(sid), now=0.0)
    assert cache.get("a", 1.0)[0]  # "a" is now the most recently used
    cache.put("d", _record("d"), now=1.0)
    assert [cache.get(s, 2.0)[0] for s in ("a", "b", "c", "d")] == [True, False, True, True]


def test_misses_never_evict_known_subscriptions() -> None:
    cache = SubscriptionCache(max_entries=10, max_misses=5)
    cache.put("known", _record("known"), now=0.0)
    for i in range(1000):
        cache.put(f"unknown-{i}", None, now=0.0)
    assert cache.get("known", 1.0) == (True, _record("known"))
    assert len(cache) == 6
    assert cache.get("unknown-999", 1.0) == (True, None)
    assert cache.get("unknown-0", 1.0) == (False, None)


def test_expired_entries_are_looked_up_again() -> None:
    cache = SubscriptionCache(ttl=60, miss_ttl=5)
    cache.put("known", _record("known"), now=0.0)
    cache.put("gone", None, now=0.0)
    assert cache.get("gone", 4.0) == (True, None)
    assert cache.get("gone", 6.0) == (False, None)
    assert cache.get("known", 61.0) == (False, None)


@pytest.mark.parametrize("route", ["graph_notifications", "graph_lifecycle"])
async def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_used(route: str) -> None:
    import azure.functions as func

    from shared.http import graph_bp

    request = func.HttpRequest(method="POST", url="http://localhost/api/graph/notifications", params={},
                               headers={"Content-Length": str(64 * 1024 * 1024)}, body=b'{"value": []}')
    answer = await getattr(graph_bp, route)(request)
    assert answer.status_code == 413
