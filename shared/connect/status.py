"""Link health and the link-status webhook to timum: one webhook per change, even under retries.

``set_health`` is the only way workers change ``Link.health``. It works like a tiny outbox:

1. record the intended notification in ``linkstatus`` (PK link key) as *pending*,
2. save the link with its new health (ETag-checked; a concurrent writer makes us re-read),
3. POST the webhook, then mark the outbox row *sent*.

A crash or a failed POST after step 2 leaves the row pending, so the caller's retry — which
finds the health already changed — still sends it, and a retry after step 3 sends nothing.
The delivery id derives from the link version the change was made on, so two workers racing
on the same change send the same id and timum drops the duplicate (``Timum-Delivery``).

Every change of a link's state reaches timum this way: health changes (``set_health``), a new
link, relink or reconnect (``announce``) and the end of a link (``announce_unlinked``, status
``unlinked``). The links API and these webhooks are the only source of what timum shows.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from shared.context import Services
from shared.domain import Link, LinkHealth, LinkKey, is_block_only, stable_id, timum_resource
from shared.errors import (
    AuthError,
    BadRequest,
    Conflict,
    NotFound,
    RemoteGone,
    StorageError,
    SyncError,
    SyncStateExpired,
    TransientError,
)
from shared.i18n import has, message
from shared.repos.links import LinkRepository, ProviderSettingsRepository
from shared.safety.freshness import synced_through
from shared.storage.base import encode_key

log = logging.getLogger(__name__)

LINK_STATUS = "linkstatus"
EVENT_TYPE = "link.status_changed"


def reason_code(reason: str) -> str:
    return reason.split(":", 1)[0].strip() or "error"


def reason_text(locale: str, health: LinkHealth, reason: str) -> str:
    """The provider-facing reason, in the provider's language; never the raw technical detail."""
    if health is LinkHealth.OK:
        return ""
    code = reason_code(reason)
    if has(f"status.{code}"):
        return message(locale, f"status.{code}")
    if health is LinkHealth.NEEDS_RECONNECT:
        return message(locale, "status.needs_reconnect")
    return message(locale, "status.error", code=code)


async def set_health(services: Services, link: Link, health: LinkHealth, reason: str = "") -> Link:
    """Give ``link`` the health ``health``; on a change, tell timum once. Returns the saved link.

    ``reason`` is an error code from the exception tree (``exc.code``), optionally followed by
    ``": detail"``; it is stored as the link's last error and turned into a localised text
    for timum. It must not contain tokens or links (it ends up in timum's UI).
    """
    outbox = services.storage.table(LINK_STATUS)
    pk = encode_key(str(link.key))
    healed: list[bool] = []

    async def change(current: Link) -> bool:
        healed.clear()  # a retry on a re-read link decides anew
        if current.health is health:
            return False
        healed.append(health is LinkHealth.OK)
        # The outbox row first, named after the version the change is made on (see above).
        delivery_id = stable_id(str(current.key), health.value, current.etag or "-", prefix="ls-", length=32)
        now = services.clock()
        await outbox.upsert({"PartitionKey": pk, "RowKey": "", "delivery_id": delivery_id, "health": health.value,
                             "reason": reason[:500], "occurred_at": now, "sent": False})
        current.health = health
        if health is not LinkHealth.OK:
            current.last_error = reason[:500]
            current.last_error_at = now
        return True

    saved = await LinkRepository(services.storage).modify(link.key, change, current=link)
    if saved is None:
        await outbox.delete(pk, "")
        return link  # unlinked meanwhile: nobody to tell
    if healed and healed[0]:
        # Booking writes refused while the link was broken (a reconnect pending, the calendar
        # forbidden or gone for a while) are stored but were never written; whatever healed the
        # link, they catch up now. Before the webhook, which may fail; the replay is idempotent.
        from shared.connect.flow import queue_booking_replay

        await queue_booking_replay(services, saved.key)
    await _deliver(services, saved, pk)
    return saved


async def announce(services: Services, link: Link) -> None:
    """Tell timum the link's current status although it did not change (a new link, a relink
    to another calendar, a reconnect): one delivery per saved version of the link."""
    pk = encode_key(str(link.key))
    delivery_id = stable_id(str(link.key), link.health.value, link.etag or "-", "announce", prefix="ls-", length=32)
    await services.storage.table(LINK_STATUS).upsert({
        "PartitionKey": pk, "RowKey": "", "delivery_id": delivery_id, "health": link.health.value,
        "reason": "" if link.health is LinkHealth.OK else link.last_error[:500], "occurred_at": services.clock(),
        "sent": False})
    await _deliver(services, link, pk)


async def _deliver(services: Services, link: Link, pk: str) -> None:
    outbox = services.storage.table(LINK_STATUS)
    row = await outbox.get(pk, "")
    if row is None or row.get("sent") or row.get("health") != link.health.value:
        return
    locale = (await ProviderSettingsRepository(services.storage).get(link.provider_id)).locale
    occurred = row["occurred_at"]
    payload = {
        "id": row["delivery_id"],
        "type": EVENT_TYPE,
        "occurredAt": occurred.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": {
            "providerId": link.provider_id,
            "resourceId": link.resource_id,
            "status": link.health.value,
            "mode": link.mode.value,
            "reason": reason_text(locale, link.health, str(row.get("reason") or "")),
            "calendarName": link.calendar_name,
        },
    }
    through = synced_through(link, services.clock(), round_running=False)
    if through is not None:  # absent until the link's first completed sync
        payload["data"]["syncedThrough"] = _iso(through)
    payload["data"].update(_calendar_fields(link))
    await services.timum.send_link_status(payload)
    # Conflict: a newer change was recorded meanwhile; it has its own delivery.
    with contextlib.suppress(Conflict, NotFound):
        await outbox.update({**row, "sent": True}, etag=row.etag)


#: The ``status`` timum receives when a link ended (not a ``LinkHealth``: there is no link left).
UNLINKED = "unlinked"


async def announce_unlinked(services: Services, link: Link) -> bool:
    """Tell timum that ``link`` ended, so it stops showing it as connected. Returns True when
    timum took it.

    Recorded in the outbox first: if the POST fails, the teardown worker that every unlink
    queues sends it again (``resend_unlinked``) with the same delivery id, which timum
    deduplicates. A new link of the resource overwrites the row with its own status.
    """
    pk = encode_key(str(link.key))
    delivery_id = stable_id(str(link.key), UNLINKED, link.etag or "-", link.calendar_id, prefix="ls-", length=32)
    await services.storage.table(LINK_STATUS).upsert({
        "PartitionKey": pk, "RowKey": "", "delivery_id": delivery_id, "health": UNLINKED, "reason": "",
        "occurred_at": services.clock(), "sent": False, "mode": link.mode.value,
        "calendar_name": link.calendar_name})
    try:
        return await resend_unlinked(services, link.key)
    except SyncError as exc:
        log.warning("unlink webhook not delivered now (%s); the teardown worker retries", exc.code)
        return False


async def resend_unlinked(services: Services, key: LinkKey) -> bool:
    """Deliver a pending ``unlinked`` status of ``key`` (raises the tree's errors so a worker
    retries); True if one was sent. The row goes once timum took it."""
    outbox = services.storage.table(LINK_STATUS)
    pk = encode_key(str(key))
    row = await outbox.get(pk, "")
    if row is None or row.get("sent") or row.get("health") != UNLINKED:
        return False
    occurred = row["occurred_at"]
    await services.timum.send_link_status({
        "id": row["delivery_id"],
        "type": EVENT_TYPE,
        "occurredAt": occurred.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": {"providerId": key.provider_id, "resourceId": timum_resource(key.resource_id), "status": UNLINKED,
                 "mode": str(row.get("mode") or "delegated"), "reason": "",
                 "calendarName": str(row.get("calendar_name") or ""),
                 # A block-only calendar ended, not the resource's own link (as ``_calendar_fields``).
                 **({"calendarRole": "block_only", "linkId": key.resource_id} if is_block_only(key) else {})},
    })
    # Only this row: a new link's status written meanwhile has another ETag and stays.
    with contextlib.suppress(Conflict, NotFound):
        await outbox.delete(pk, "", etag=row.etag)
    return True


async def forget(services: Services, link: Link) -> None:
    """Drop the outbox row of an unlinked link — unless its ``unlinked`` status still waits for
    delivery (the teardown worker sends it and drops the row then) — and its notices."""
    await forget_notices(services, link)
    pk = encode_key(str(link.key))
    row = await services.storage.table(LINK_STATUS).get(pk, "")
    if row is not None and row.get("health") == UNLINKED and not row.get("sent"):
        return
    await services.storage.table(LINK_STATUS).delete(pk, "")


# --- notices: stale / fresh, conflict / resolved, reconnect reminders -------------------------------
#
# The same webhook (``link.status_changed``, ``data.status`` the link's current health) with a
# ``data.kind`` saying what happened besides a health change. Each notice has a key chosen by its
# caller (e.g. "stale|3", "reminder|<episode>|7"); a notice is sent at most once per key, also under
# retries and from several instances: its row is inserted (a second insert conflicts) before the
# POST and marked sent after it, and a row still unsent is sent again by the next caller.

LINK_NOTICES = "linknotices"
NOTICE_KINDS = frozenset({"stale", "fresh", "conflict", "resolved", "reminder"})


def _calendar_fields(link: Link) -> dict[str, str]:
    """A block-only calendar speaks for its resource: timum gets the resource's id, the calendar's
    role and the link id it manages the calendar by (links API)."""
    if not link.block_only:
        return {}
    return {"resourceId": link.timum_resource_id, "calendarRole": "block_only", "linkId": link.resource_id}


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def notice(services: Services, link: Link, kind: str, key: str, data: dict[str, Any]) -> bool:
    """Tell timum ``kind`` about ``link`` once for ``key``; True if this call delivered it."""
    if kind not in NOTICE_KINDS:
        raise ValueError(f"unknown notice kind {kind}")
    table = services.storage.table(LINK_NOTICES)
    pk, rk = encode_key(str(link.key)), encode_key(f"{kind}|{key}")
    row = await table.get(pk, rk)
    if row is None:
        now = services.clock()
        fresh = {"PartitionKey": pk, "RowKey": rk, "kind": kind, "occurred_at": now, "sent": False,
                 "delivery_id": stable_id(str(link.key), kind, key, prefix="ln-", length=32),
                 "data": json.dumps(data, separators=(",", ":"), default=str)}
        try:
            row = await table.insert(fresh)
        except Conflict:
            row = await table.get(pk, rk)
            if row is None:
                return False
    if row.get("sent"):
        return False
    locale = (await ProviderSettingsRepository(services.storage).get(link.provider_id)).locale
    payload = {
        "id": row["delivery_id"],
        "type": EVENT_TYPE,
        "occurredAt": _iso(row["occurred_at"]),
        "data": {
            "providerId": link.provider_id,
            "resourceId": link.resource_id,
            "status": link.health.value,
            "mode": link.mode.value,
            "reason": reason_text(locale, link.health, link.last_error),
            "calendarName": link.calendar_name,
            "kind": kind,
            **json.loads(str(row.get("data") or "{}")),
            **_calendar_fields(link),
        },
    }
    through = synced_through(link, services.clock(), round_running=False)
    if through is not None:  # absent until the link's first completed sync, as in status changes
        payload["data"]["syncedThrough"] = _iso(through)
    await services.timum.send_link_status(payload)
    with contextlib.suppress(Conflict, NotFound):
        await table.update({**row, "sent": True}, etag=row.etag)
    return True


async def notice_state(services: Services, link: Link, name: str) -> dict[str, Any] | None:
    """A small per-link state row of the notices (e.g. "freshness"), with its ETag under ``etag``."""
    row = await services.storage.table(LINK_NOTICES).get(encode_key(str(link.key)), encode_key(f"~{name}"))
    return None if row is None else {**row, "etag": row.etag}


async def save_notice_state(services: Services, link: Link, name: str, values: dict[str, Any],
                            etag: str | None) -> None:
    """Write the state row; ``Conflict`` if another writer changed it since ``etag`` was read."""
    table = services.storage.table(LINK_NOTICES)
    entity = {**values, "PartitionKey": encode_key(str(link.key)), "RowKey": encode_key(f"~{name}")}
    entity.pop("etag", None)
    if etag:
        await table.update(entity, etag=etag)
    else:
        await table.insert(entity)


async def forget_notices(services: Services, link: Link) -> None:
    """Drop an unlinked link's notices and their state (a relink starts afresh)."""
    table = services.storage.table(LINK_NOTICES)
    pk = encode_key(str(link.key))
    rows = await table.query(pk)
    await table.delete_many(pk, [row.rk for row in rows])


class Remote(StrEnum):
    """Which side of a link a failure came from: the same error class means different things."""

    GRAPH = "graph"    # the link's Outlook calendar, through the link's own Microsoft access
    ICS = "ics"        # the link's published calendar
    TIMUM = "timum"    # the link's timum resource, through the service's own API key


@dataclass(frozen=True)
class Verdict:
    """The health a failure leaves a link in, and the reason stored with it (``code: detail``)."""

    health: LinkHealth
    reason: str


#: Reason code of a link whose calendar (or resource) is gone, per side.
_GONE = {Remote.GRAPH: "calendar_gone", Remote.ICS: "ics_gone", Remote.TIMUM: "resource_gone"}


def health_for(exc: BaseException, remote: Remote) -> Verdict | None:
    """The one rule from a failure to link health, for every worker (sync, booking writer,
    subscription set-up and renewal). None: not the link's fault — retried, or the caller's own
    case (a delta state to rebuild).

    Any Graph ``AuthError`` — a refused refresh (``NeedsReconnect``), withdrawn consent, a 401
    that survived a fresh token, a 403 on a calendar no longer shared or writable — means
    ``needs_reconnect``: only a person can fix it, and a reconnect is the way back that replays
    the link's bookings and resyncs it in full (docs/ARCHITECTURE.md, "Link health").
    timum's ``AuthError`` is our API key, not the link's: retried.
    """
    if not isinstance(exc, SyncError) or isinstance(exc, TransientError | StorageError | SyncStateExpired):
        return None
    detail = f"{exc.code}: {exc.message}"[:500]
    if isinstance(exc, AuthError):
        return None if remote is Remote.TIMUM else Verdict(LinkHealth.NEEDS_RECONNECT, detail)
    if isinstance(exc, RemoteGone | NotFound):
        return Verdict(LinkHealth.ERROR, f"{_GONE[remote]}: {exc.message}"[:500])
    if isinstance(exc, BadRequest) or (remote is Remote.TIMUM and isinstance(exc, Conflict)):
        # An unsafe or unreadable calendar, a resource timum archived or a slot it refuses:
        # retrying cannot help.
        return Verdict(LinkHealth.ERROR, detail)
    return None
