"""Once an administrator connected the organisation, the tenant's delegated links move to app-only push.

Delegated links made before — including links to shared calendars that had to poll, because
delegated permissions cannot subscribe to them — move by themselves: ``queue_tenant`` puts one
``ADOPT_APP_ONLY`` message per delegated link on the link-admin queue, and ``adopt`` moves one.

Only the link's mode, credentials and subscription change; its key, delta state, status rows
and booking map stay, so nothing is lost or written twice. The calendar is looked up app-only in
the mailbox that owns it (its id proven there, never guessed by name); the claim moves to that
mailbox's spelling before the link is saved, then the old claim goes. A message that runs twice
finds the link already app-only and only makes sure it has a subscription.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from shared.context import Services
from shared.domain import Link, LinkKey, LinkMode, SyncMode
from shared.errors import AuthError, Conflict, SyncError, TransientError
from shared.messages import LINK_ADMIN_QUEUE, SYNC_QUEUE, AdminAction, AdminMessage, SyncMessage, SyncReason
from shared.repos.links import LINKS, LinkRepository

log = logging.getLogger(__name__)


async def queue_tenant(services: Services, tenant_id: str) -> int:
    rows = await services.storage.table(LINKS).query(equals={"tenant_id": tenant_id})
    queue = services.storage.queue(LINK_ADMIN_QUEUE)
    sent = 0
    for row in rows:
        if str(row.get("mode") or "") != LinkMode.DELEGATED.value:
            continue
        key = LinkKey(str(row["provider_id"]), str(row["resource_id"]))
        await queue.send(AdminMessage(link=str(key), action=AdminAction.ADOPT_APP_ONLY).to_json())
        sent += 1
    return sent


async def _target(services: Services, link: Link) -> tuple[str, str] | None:
    """(mailbox, time zone) where app-only access reaches the link's calendar by its id."""
    probe = replace(link, mode=LinkMode.APP_ONLY, account_id="", etag="")
    port = await services.graph.for_link(probe)
    try:
        candidates = [link.mailbox_id]
        owner = link.calendar_owner
        if owner and "@" in owner and owner.lower() != link.mailbox_id.lower():
            candidates.insert(0, owner)
        for mailbox in candidates:
            try:
                owned = [c for c in await port.list_calendars(mailbox) if not c.is_shared]
            except (AuthError, SyncError) as exc:
                if isinstance(exc, TransientError):
                    raise
                continue
            if any(c.id == link.calendar_id for c in owned):
                try:
                    zone = await port.mailbox_time_zone(mailbox)
                except SyncError:
                    zone = link.time_zone
                return mailbox, zone
        return None
    finally:
        await port.close()


async def adopt(services: Services, key: LinkKey) -> str:
    from shared.org.store import OrgRepository
    from shared.services.subscriptions import ensure_subscription

    repo = LinkRepository(services.storage)
    link = await repo.get(key)
    if link is None:
        return "no_link"
    if link.mode is LinkMode.APP_ONLY:
        if link.sync_mode is SyncMode.PUSH and not link.subscription_id:
            await ensure_subscription(services, link)
        return "already"
    if link.mode is not LinkMode.DELEGATED:
        return "not_graph"
    if not any(c.connected for c in await OrgRepository(services.storage).for_tenant(link.tenant_id)):
        return "not_connected"
    try:
        target = await _target(services, link)
    except AuthError as exc:
        log.info("link %s stays delegated: app-only access refused (%s)", key, exc.code)
        return "refused"
    if target is None:
        log.info("link %s stays delegated: its calendar is not reachable app-only by its id", key)
        return "not_found"
    mailbox, zone = target
    moved = replace(link, mode=LinkMode.APP_ONLY, account_id="", mailbox_id=mailbox, time_zone=zone,
                    sync_mode=SyncMode.PUSH)
    await repo.claim_calendar(moved)
    try:
        saved = await repo.save(moved)
    except Conflict as exc:
        raise TransientError("the link changed while moving to app-only; retried", code="link_changed") from exc
    if mailbox.lower() != link.mailbox_id.lower():
        await repo.release_calendar(link)
    try:
        # Replaces the delegated subscription (or the polling) with an app-only one.
        saved = await ensure_subscription(services, saved, force=True)
    except AuthError as exc:
        log.warning("link %s moved to app-only but has no subscription yet: %s", key, exc.code)
    # Changes made while the modes switched are caught by one delta round from the kept state.
    await services.storage.queue(SYNC_QUEUE).send(
        SyncMessage(str(key), SyncReason.RESYNC, observed_at=services.clock().timestamp()).to_json())
    log.info("link %s moved to app-only push", key)
    return "moved"
