"""Graph change and lifecycle notifications: verify, group, enqueue — nothing else.

This runs inside Graph's 3-second deadline (our target: p99 ≤ 50 ms), so it never imports
msgraph-sdk and never calls Graph: it checks each notification's clientState against the
hash stored for its subscription and enqueues **one message per affected link**, however
many notifications the POST carried. The delta worker does the rest and makes duplicate
or reordered notifications harmless.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.domain import LinkKey
from shared.errors import BadRequest
from shared.messages import (
    LINK_ADMIN_QUEUE,
    SYNC_QUEUE,
    AdminAction,
    AdminMessage,
    SyncMessage,
    SyncReason,
)
from shared.repos.links import SubscriptionIndex, SubscriptionRecord
from shared.storage.base import StoragePort

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
MAX_NOTIFICATIONS = 1000
MAX_VALIDATION_TOKEN = 2048


class SubscriptionCache:
    """Per-process cache of subscription id → record.

    A subscription's link and clientState never change during its life, so a hit is always
    right; a stale hit for a deleted subscription only enqueues a sync the worker ignores.
    Misses are cached briefly too: unknown ids in a flood must not each cost a table read.
    """

    def __init__(self, ttl: float = 300.0, miss_ttl: float = 10.0, max_entries: int = 50_000) -> None:
        self._ttl = ttl
        self._miss_ttl = miss_ttl
        self._max = max_entries
        self._entries: dict[str, tuple[float, SubscriptionRecord | None]] = {}

    def get(self, subscription_id: str, now: float) -> tuple[bool, SubscriptionRecord | None]:
        hit = self._entries.get(subscription_id)
        if hit is None or hit[0] < now:
            return False, None
        return True, hit[1]

    def put(self, subscription_id: str, record: SubscriptionRecord | None, now: float) -> None:
        if len(self._entries) >= self._max:
            self._entries.clear()  # crude but bounded; a refill costs one read per subscription
        self._entries[subscription_id] = (now + (self._ttl if record else self._miss_ttl), record)

    def forget(self, subscription_id: str) -> None:
        self._entries.pop(subscription_id, None)


@dataclass
class NotificationResult:
    links: list[LinkKey] = field(default_factory=list)
    accepted: int = 0
    dropped: int = 0


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
                   now: float) -> dict[str, SubscriptionRecord | None]:
    index = SubscriptionIndex(storage)
    out: dict[str, SubscriptionRecord | None] = {}
    missing: list[str] = []
    for sid in ids:
        hit, record = cache.get(sid, now)
        if hit:
            out[sid] = record
        else:
            missing.append(sid)
    if missing:
        fetched = await asyncio.gather(*(index.get(sid) for sid in missing))
        for sid, record in zip(missing, fetched, strict=True):
            cache.put(sid, record, now)
            out[sid] = record
    return out


async def _verified(storage: StoragePort, cache: SubscriptionCache, items: list[dict[str, Any]],
                    now: float, result: NotificationResult) -> list[tuple[dict[str, Any], SubscriptionRecord]]:
    ids = {str(i.get("subscriptionId", "")) for i in items if i.get("subscriptionId")}
    records = await _records(storage, cache, ids, now)
    verified: list[tuple[dict[str, Any], SubscriptionRecord]] = []
    for item in items:
        record = records.get(str(item.get("subscriptionId", "")))
        client_state = item.get("clientState")
        if record is None or not record.client_state_matches(client_state if isinstance(client_state, str) else None):
            # Unknown or forged: drop, but still answer 202 so Graph does not retry a lost cause.
            result.dropped += 1
            log.warning("dropped a notification: unknown subscription or clientState mismatch")
            continue
        result.accepted += 1
        verified.append((item, record))
    return verified


async def accept_change_notifications(storage: StoragePort, cache: SubscriptionCache, body: bytes, *,
                                      now: float | None = None) -> NotificationResult:
    now = time.time() if now is None else now
    result = NotificationResult()
    verified = await _verified(storage, cache, parse_notifications(body), now, result)
    links = list(dict.fromkeys(record.link for _, record in verified))
    queue = storage.queue(SYNC_QUEUE)
    # StorageError propagates: the trigger answers 5xx and Graph delivers again.
    await asyncio.gather(*(queue.send(SyncMessage(str(k), SyncReason.NOTIFICATION, observed_at=now).to_json())
                           for k in links))
    result.links = links
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
    return result
