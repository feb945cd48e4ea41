"""Graph change and lifecycle notifications: verify, group, enqueue — nothing else.

This runs inside Graph's 3-second deadline (our target: p99 ≤ 50 ms), so it never imports
msgraph-sdk and never calls Graph: it checks each notification's clientState against the
hash stored for its subscription and enqueues **one message per affected link**, however
many notifications the POST carried. The delta worker does the rest and makes duplicate
or reordered notifications harmless.

The endpoint is anonymous, so what one POST may cost is bounded:

* only GUIDs can be Graph subscription ids; other ids are dropped without a look-up;
* at most ``MAX_LOOKUPS_PER_POST`` distinct ids per POST are looked up in the table (ids the
  cache knows, as a subscription or as a recent miss, cost nothing). Notifications whose ids
  were not looked up are neither dropped nor acknowledged: the POST is answered 503
  (``LookupsDeferred``) after the verified ones were enqueued, so Graph delivers it again and
  the next attempt starts from a warmer cache. Real POSTs name few subscriptions; a POST that
  names a thousand unknown ones is a flood and costs ``MAX_LOOKUPS_PER_POST`` reads;
* look-ups of unknown ids draw on a per-process budget (``UNKNOWN_LOOKUPS_PER_SECOND``, bursts of
  ``UNKNOWN_LOOKUP_BURST``): a flood of POSTs, however fast, causes at most that many table reads
  per second; past it, a POST with unknown ids is answered 503 without any read. Subscriptions the
  process has seen before are re-read (after their cache entry expired) outside the budget: an
  attacker cannot make an id known, so the flood cannot delay them;
* look-ups of all POSTs of a process share ``MAX_CONCURRENT_LOOKUPS`` slots, so a flood cannot
  crowd storage with reads, while notifications of known subscriptions (cache hits) never wait;
* the cache keeps known subscriptions and misses in separate LRU lists: random ids evict only
  older misses, never a subscription the process has seen.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.domain import LinkKey
from shared.errors import BadRequest, TransientError
from shared.ids import is_subscription_id
from shared.messages import (
    LINK_ADMIN_QUEUE,
    SYNC_QUEUE,
    AdminAction,
    AdminMessage,
    SyncMessage,
    SyncReason,
)
from shared.repos.links import SubscriptionRecord, SubscriptionRepository
from shared.storage.base import StoragePort

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
MAX_NOTIFICATIONS = 1000
MAX_VALIDATION_TOKEN = 2048
#: distinct subscription ids one POST may cause to be read from the table
MAX_LOOKUPS_PER_POST = 10
#: table reads in flight at once for all notification POSTs of a process
MAX_CONCURRENT_LOOKUPS = 8
#: table reads per second (and the burst) one process spends on subscription ids it has never seen:
#: a new instance learns up to 20 subscriptions a second after a first 40; notifications beyond that
#: wait for Graph's next delivery of their POST, they are never dropped
UNKNOWN_LOOKUPS_PER_SECOND = 20.0
UNKNOWN_LOOKUP_BURST = 40.0
#: seconds Graph is asked to wait before delivering a POST again whose look-ups were deferred
DEFERRED_RETRY_AFTER = 2.0


class LookupsDeferred(TransientError):
    """A POST named more unknown subscriptions than the per-POST cap or the look-up budget allowed
    reading now (→ 503 with Retry-After; Graph delivers the POST again)."""

    code = "lookups_deferred"


class SubscriptionCache:
    """Per-process cache of subscription id → record, with a separate, smaller cache of misses.

    A subscription's link and clientState never change during its life, so a hit is always
    right; a stale hit for a deleted subscription only enqueues a sync the worker ignores.
    Misses are cached briefly too, so that a repeated unknown id costs one read, not one per
    POST. Both lists evict least recently used entries one at a time when full. The cache also
    holds the process's look-up budget for unknown ids and the semaphore bounding reads in flight.
    """

    def __init__(self, ttl: float = 300.0, miss_ttl: float = 10.0, max_entries: int = 50_000,
                 max_misses: int = 5_000, max_concurrent_lookups: int = MAX_CONCURRENT_LOOKUPS,
                 unknown_lookups_per_second: float = UNKNOWN_LOOKUPS_PER_SECOND,
                 unknown_lookup_burst: float = UNKNOWN_LOOKUP_BURST) -> None:
        self._ttl = ttl
        self._miss_ttl = miss_ttl
        self._max = max_entries
        self._max_misses = max_misses
        self._hits: OrderedDict[str, tuple[float, SubscriptionRecord]] = OrderedDict()
        self._misses: OrderedDict[str, float] = OrderedDict()
        self._concurrency = max_concurrent_lookups
        self._gate: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._rate = unknown_lookups_per_second
        self._burst = unknown_lookup_burst
        self._tokens = unknown_lookup_burst
        self._tokens_at: float | None = None

    def __len__(self) -> int:
        return len(self._hits) + len(self._misses)

    def get(self, subscription_id: str, now: float) -> tuple[bool, SubscriptionRecord | None]:
        """(known, record): known is False when the id must be looked up."""
        hit = self._hits.get(subscription_id)
        if hit is not None:
            if hit[0] >= now:
                self._hits.move_to_end(subscription_id)
                return True, hit[1]
            # Expired entries stay (until LRU eviction) so that ``seen`` can tell them apart.
            return False, None
        miss = self._misses.get(subscription_id)
        if miss is not None:
            if miss >= now:
                return True, None
            del self._misses[subscription_id]
        return False, None

    def put(self, subscription_id: str, record: SubscriptionRecord | None, now: float) -> None:
        if record is not None:
            self._misses.pop(subscription_id, None)
            self._hits[subscription_id] = (now + self._ttl, record)
            self._hits.move_to_end(subscription_id)
            while len(self._hits) > self._max:
                self._hits.popitem(last=False)
        else:
            self._hits.pop(subscription_id, None)
            self._misses[subscription_id] = now + self._miss_ttl
            self._misses.move_to_end(subscription_id)
            while len(self._misses) > self._max_misses:
                self._misses.popitem(last=False)

    def seen(self, subscription_id: str) -> bool:
        """True if the id was a subscription when last looked up (its entry may have expired)."""
        return subscription_id in self._hits

    def take_lookups(self, wanted: int, now: float) -> int:
        """How many of ``wanted`` look-ups of unknown ids the budget allows now (and spend them)."""
        if self._tokens_at is not None and now > self._tokens_at:
            self._tokens = min(self._burst, self._tokens + (now - self._tokens_at) * self._rate)
        self._tokens_at = now if self._tokens_at is None else max(now, self._tokens_at)
        granted = min(wanted, int(self._tokens))
        self._tokens -= granted
        return granted

    def forget(self, subscription_id: str) -> None:
        self._hits.pop(subscription_id, None)
        self._misses.pop(subscription_id, None)

    def lookup_gate(self) -> asyncio.Semaphore:
        """The semaphore bounding table reads in flight, one per event loop."""
        loop = asyncio.get_running_loop()
        if self._gate is None or self._gate[0] is not loop:
            self._gate = (loop, asyncio.Semaphore(self._concurrency))
        return self._gate[1]


@dataclass
class NotificationResult:
    links: list[LinkKey] = field(default_factory=list)
    accepted: int = 0
    dropped: int = 0
    #: notifications whose subscription was not looked up in this POST (per-POST cap or budget)
    deferred: int = 0


def parse_notifications(body: bytes) -> list[dict[str, Any]]:
    """The ``value`` array of a notification POST; ``BadRequest`` for anything else."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest("notification body too large")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("notification body is not JSON") from exc
    if not isinstance(data, dict) or not isinstance(data.get("value"), list):
        raise BadRequest("notification body has no 'value' array", field="value")
    items = data["value"]
    if len(items) > MAX_NOTIFICATIONS:
        raise BadRequest("too many notifications in one POST", field="value")
    return [i for i in items if isinstance(i, dict)]


async def _records(storage: StoragePort, cache: SubscriptionCache, ids: Iterable[str],
                   now: float) -> tuple[dict[str, SubscriptionRecord | None], set[str]]:
    """Records of ``ids`` (None: no such subscription) and the ids left unresolved by the cap."""
    index = SubscriptionRepository(storage)
    out: dict[str, SubscriptionRecord | None] = {}
    missing: list[str] = []
    for sid in ids:
        known, record = cache.get(sid, now)
        if known:
            out[sid] = record
        else:
            missing.append(sid)
    # Ids the process knew as subscriptions are re-read outside the caps: only real ids get there.
    lookups = [sid for sid in missing if cache.seen(sid)]
    # Sorted, so that Graph's retry of a deferred POST looks up the next ids, not the same ones.
    unknown = sorted(sid for sid in missing if not cache.seen(sid))
    allowed = cache.take_lookups(min(len(unknown), MAX_LOOKUPS_PER_POST), now) if unknown else 0
    lookups += unknown[:allowed]
    deferred = set(unknown[allowed:])
    if lookups:
        gate = cache.lookup_gate()

        async def one(sid: str) -> SubscriptionRecord | None:
            async with gate:
                return await index.get(sid)

        fetched = await asyncio.gather(*(one(sid) for sid in lookups))
        for sid, record in zip(lookups, fetched, strict=True):
            cache.put(sid, record, now)
            out[sid] = record
    return out, deferred


async def _verified(storage: StoragePort, cache: SubscriptionCache, items: list[dict[str, Any]],
                    now: float, result: NotificationResult) -> list[tuple[dict[str, Any], SubscriptionRecord]]:
    ids = {str(sid) for sid in (i.get("subscriptionId") for i in items) if is_subscription_id(sid)}
    records, deferred = await _records(storage, cache, ids, now)
    verified: list[tuple[dict[str, Any], SubscriptionRecord]] = []
    unknown = 0
    for item in items:
        sid = item.get("subscriptionId")
        if isinstance(sid, str) and sid in deferred:
            result.deferred += 1
            continue
        record = records.get(sid) if isinstance(sid, str) else None
        client_state = item.get("clientState")
        if record is None or not record.client_state_matches(client_state if isinstance(client_state, str) else None):
            # Unknown or forged: drop, but still answer 202 so Graph does not retry a lost cause.
            result.dropped += 1
            unknown += 1
            continue
        result.accepted += 1
        verified.append((item, record))
    if unknown:
        # One line per POST, not per item: a flood must not turn into a flood of log lines.
        log.warning("dropped %d notification(s): unknown subscription or clientState mismatch", unknown)
    return verified


def _raise_if_deferred(result: NotificationResult) -> None:
    if result.deferred:
        raise LookupsDeferred(f"{result.deferred} notification(s) name more unknown subscriptions than one "
                              f"POST may look up ({MAX_LOOKUPS_PER_POST}); deliver again",
                              retry_after=DEFERRED_RETRY_AFTER)


async def accept_change_notifications(storage: StoragePort, cache: SubscriptionCache, body: bytes, *,
                                      now: float | None = None) -> NotificationResult:
    """Enqueue one sync per link of the verified notifications.

    Raises ``LookupsDeferred`` (after enqueuing the verified ones) when some notifications were
    left unresolved by the per-POST look-up cap, and ``StorageError`` when enqueuing failed:
    both mean "answer 5xx, Graph delivers again"; the worker makes the repeats harmless.
    """
    now = time.time() if now is None else now
    result = NotificationResult()
    verified = await _verified(storage, cache, parse_notifications(body), now, result)
    links = list(dict.fromkeys(record.link for _, record in verified))
    queue = storage.queue(SYNC_QUEUE)
    # StorageError propagates: the trigger answers 5xx and Graph delivers again.
    await asyncio.gather(*(queue.send(SyncMessage(str(k), SyncReason.NOTIFICATION, observed_at=now).to_json())
                           for k in links))
    result.links = links
    _raise_if_deferred(result)
    return result


_LIFECYCLE_ACTIONS = {
    "reauthorizationRequired": AdminAction.REAUTHORIZE,
    "subscriptionRemoved": AdminAction.RESUBSCRIBE,
}


async def accept_lifecycle_notifications(storage: StoragePort, cache: SubscriptionCache, body: bytes, *,
                                         now: float | None = None) -> NotificationResult:
    now = time.time() if now is None else now
    result = NotificationResult()
    verified = await _verified(storage, cache, parse_notifications(body), now, result)
    sends = []
    seen: set[tuple[LinkKey, str]] = set()
    for item, record in verified:
        event = str(item.get("lifecycleEvent", ""))
        if (record.link, event) in seen:
            continue
        seen.add((record.link, event))
        action = _LIFECYCLE_ACTIONS.get(event)
        if action is not None:
            msg = AdminMessage(str(record.link), action, subscription_id=record.subscription_id)
            sends.append(storage.queue(LINK_ADMIN_QUEUE).send(msg.to_json()))
        elif event == "missed":
            # Graph lost notifications for us: a full delta round catches up whatever we missed.
            sync = SyncMessage(str(record.link), SyncReason.RESYNC, full=False, observed_at=now)
            sends.append(storage.queue(SYNC_QUEUE).send(sync.to_json()))
        else:
            result.accepted -= 1
            result.dropped += 1
            continue
        result.links.append(record.link)
    await asyncio.gather(*sends)
    _raise_if_deferred(result)
    return result
