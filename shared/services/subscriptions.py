"""Graph subscriptions of the links, their upkeep, link set-up and teardown.

* ``ensure_subscription`` — a live subscription on the link's calendar; on the whole mailbox
  (``/users/{id}/events``) when Graph refuses the calendar's resource (400); polling when Graph
  refuses the access (403: delegated access to a shared calendar, tenant policy). The clientState is random,
  given to Graph once and stored only hashed (``SubscriptionRepository``).
* ``renew_expiring`` — the timer: extend subscriptions that expire soon; a subscription Graph no
  longer knows is recreated and the link resynced (notifications may have been lost).
* ``handle_lifecycle`` — ``reauthorizationRequired`` / ``subscriptionRemoved`` / ``missed``.
* ``handle_admin_message`` — the link-admin queue: SETUP, RESUBSCRIBE, REAUTHORIZE, TEARDOWN.
* ``teardown`` — after an unlink: delete the subscription, our blocked slots, optionally our
  Outlook events, and the sync state.

Everything here is idempotent: admin messages may be delivered twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.adapters.graph_constants import RESOURCE_CALENDAR, RESOURCE_MAILBOX
from shared.connect.status import Remote, Verdict, health_for
from shared.context import Services
from shared.domain import Link, LinkHealth, LinkKey, LinkMode, SubscriptionInfo, SyncMode, slot_prefix, timum_resource
from shared.errors import (
    AuthError,
    BadRequest,
    ConsentRequired,
    NeedsReconnect,
    NotFound,
    RemoteGone,
    SyncError,
    TransientError,
)
from shared.messages import SYNC_QUEUE, AdminAction, AdminMessage, SyncMessage, SyncReason
from shared.outlook.run import graph_session
from shared.ports import GraphCalendarPort
from shared.repos.links import LeaseRepository, LinkRepository, SubscriptionRecord, SubscriptionRepository
from shared.repos.sync_state import BookingMapRepository, BookingMapRow, EventMapRepository, for_each
from shared.storage.base import encode_key
from shared.sync.rounds import HealthChange

log = logging.getLogger(__name__)

#: Graph's limit for event subscriptions (the stricter of the two documented figures).
MAX_LIFETIME_MINUTES = 4230
#: A subscription expiring later than this is left alone by ``ensure_subscription``.
KEEP_MARGIN = timedelta(hours=1)
#: Subscriptions renewed in parallel by the timer.
RENEW_CONCURRENCY = 4
#: Worker id under which a teardown holds the link's lease.
TEARDOWN_OWNER = "teardown"
#: How long a teardown that met a running sync waits before its retry.
LEASE_RETRY_SECONDS = 30.0


class LinkGone(Exception):
    """The link was deleted while we worked on it."""


def _lifetime(services: Services) -> timedelta:
    return timedelta(minutes=min(services.settings.subscription_lifetime_minutes, MAX_LIFETIME_MINUTES))


async def _save(services: Services, link: Link, change: Callable[[Link], bool]) -> Link:
    """Apply ``change`` and save with the link's ETag; on a conflict re-read and apply again.

    ``change`` returns False when the re-read link no longer wants it (e.g. another
    subscription took over meanwhile); the link is then returned as stored.
    """
    saved = await LinkRepository(services.storage).modify(link.key, change, current=link)
    if saved is None:
        raise LinkGone(str(link.key))
    return saved


async def _drop(graph: GraphCalendarPort | None, index: SubscriptionRepository, subscription_id: str) -> None:
    """Forget a subscription we no longer use; Graph lets it expire if it cannot be deleted now."""
    if not subscription_id:
        return
    await index.delete(subscription_id)
    if graph is None:
        return
    try:
        await graph.delete_subscription(subscription_id)
    except SyncError as exc:
        # Notifications of an unknown subscription are dropped by the webhook; it expires in ≤ 3 days.
        log.warning("could not delete old subscription: %s", exc.code)


@contextlib.asynccontextmanager
async def _session(services: Services, link: Link, graph: GraphCalendarPort | None) -> AsyncIterator[GraphCalendarPort]:
    """The caller's port if it has one, else a new one closed afterwards."""
    if graph is not None:
        yield graph
        return
    async with graph_session(services, link) as opened:
        yield opened


async def ensure_subscription(services: Services, link: Link, *, force: bool = False,
                              graph: GraphCalendarPort | None = None) -> Link:
    """Give ``link`` a live subscription, or switch it to polling if Graph refuses one.

    ``force`` replaces an existing subscription (it was removed, or its renewal failed).
    Raises ``NeedsReconnect``/``ConsentRequired`` (token problems), ``RemoteGone`` (calendar
    gone) and transient errors; ``LinkGone`` if the link was deleted meanwhile.
    """
    if link.mode is LinkMode.ICS:
        return link
    now = services.clock()
    if (not force and link.sync_mode is SyncMode.PUSH and link.subscription_id
            and link.subscription_expires_at is not None and link.subscription_expires_at > now + KEEP_MARGIN):
        return link
    async with _session(services, link, graph) as port:
        return await _subscribe(services, port, link, now)


async def _subscribe(services: Services, graph: GraphCalendarPort, link: Link, now: datetime) -> Link:
    from shared.outlook.mailbox_ids import ensure_object_id

    index = SubscriptionRepository(services.storage)
    # Subscriptions addressed by anything but the object id may fail with 503 "Mailbox info is stale".
    link = await ensure_object_id(services, link, graph)
    client_state = secrets.token_urlsafe(32)

    async def create(mailbox_wide: bool) -> SubscriptionInfo:
        return await graph.create_subscription(
            link.mailbox_id, link.calendar_id,
            notification_url=services.settings.url("graph/notifications"),
            lifecycle_url=services.settings.url("graph/lifecycle"),
            client_state=client_state, expires_at=now + _lifetime(services), mailbox_wide=mailbox_wide)

    resource = RESOURCE_CALENDAR
    try:
        try:
            info = await create(False)
        except BadRequest as exc:
            # Graph documents only /users/{id}/events; where it refuses the per-calendar resource,
            # the mailbox-wide one feeds the same per-calendar delta round (a change in another
            # calendar then costs one empty round). A 403 is not retried this way: it refuses
            # the access itself (a shared calendar under delegated access), and a mailbox-wide
            # subscription of the signed-in user would watch the wrong calendars.
            log.info("per-calendar subscription refused (%s); link %s subscribes to its mailbox", exc.code,
                     link.key)
            info = await create(True)
            resource = RESOURCE_MAILBOX
    except AuthError as exc:
        if isinstance(exc, NeedsReconnect | ConsentRequired) or exc.code == "graph_unauthorized":
            # A 401 here survived a fresh token (the adapter retries once): the sign-in is bad,
            # which polling would only hide.
            raise
        # Delegated access to a shared calendar, or the tenant allows no subscriptions: delta on
        # a timer still syncs, only later. The link's status shows sync_mode = polling.
        log.info("subscription refused (%s); link %s polls", exc.code, link.key)
        old = link.subscription_id

        def to_polling(current: Link) -> bool:
            current.sync_mode = SyncMode.POLLING
            current.subscription_id, current.subscription_expires_at = "", None
            current.subscription_resource = ""
            return True

        saved = await _save(services, link, to_polling)
        await _drop(graph, index, old)
        return saved
    # Index before link: a notification that arrives at once must already find its link.
    await index.put(info.id, link.key, client_state, now=now)
    old = link.subscription_id

    def to_push(current: Link) -> bool:
        if current.subscription_id != old:
            # Another worker (a second SETUP of a reconnect, a duplicate lifecycle message) gave the
            # link a subscription while we created ours: theirs stays, ours is the loser.
            return False
        current.sync_mode = SyncMode.PUSH
        current.subscription_id, current.subscription_expires_at = info.id, info.expires_at
        current.subscription_resource = resource
        return True

    try:
        saved = await _save(services, link, to_push)
    except LinkGone:
        await _drop(graph, index, info.id)
        raise
    if saved.subscription_id != info.id:
        # At most one live subscription per link: the one the link row names.
        log.info("link %s got another subscription meanwhile; deleting ours", link.key)
        await _drop(graph, index, info.id)
        return saved
    if old and old != info.id:
        await _drop(graph, index, old)
    return saved


#: An indexed subscription younger than this may still be on its way into its link row.
ORPHAN_GRACE = timedelta(hours=1)


@dataclass
class RenewReport:
    renewed: int = 0
    recreated: int = 0
    deferred: int = 0      # transient failures: the next timer run tries again
    failed: int = 0
    orphans: int = 0       # subscriptions no link uses, deleted
    health_changes: list[tuple[LinkKey, HealthChange]] = field(default_factory=list)


async def renew_expiring(services: Services, within: timedelta = timedelta(hours=24)) -> RenewReport:
    """Renew every push subscription that expires within ``within`` (or is missing)."""
    now = services.clock()
    report = RenewReport()
    due = [link for link in await LinkRepository(services.storage).list_all()
           if link.mode is not LinkMode.ICS and link.sync_mode is SyncMode.PUSH
           and link.health is not LinkHealth.NEEDS_RECONNECT
           and (not link.subscription_id or link.subscription_expires_at is None
                or link.subscription_expires_at <= now + within)]

    async def renew(link: Link) -> None:
        try:
            await _renew_one(services, link, report)
        except LinkGone:
            pass
        except SyncError as exc:
            verdict = health_for(exc, Remote.GRAPH)
            if verdict is None:
                # Transient, storage, a lost race: the next timer run tries again.
                report.deferred += 1
                log.warning("renewal of link %s deferred: %s", link.key, exc.code)
                return
            if verdict.health is not LinkHealth.NEEDS_RECONNECT:
                report.failed += 1
            change = await _set_health(services, link, verdict)
            if change is not None:
                report.health_changes.append((link.key, change))

    gate = asyncio.Semaphore(RENEW_CONCURRENCY)

    async def one(link: Link) -> None:
        async with gate:
            await renew(link)

    # Each renewal handles its own failures, so one bad link never stops the others.
    await asyncio.gather(*(one(link) for link in due))
    report.orphans = await delete_orphans(services)
    return report


async def delete_orphans(services: Services) -> int:
    """Delete subscriptions that no link row names (a lost race or a crash between creating one
    and saving the link): in Graph through the link's access when the resource is still linked
    to the same calendar, and always from the index, so their notifications are refused.

    Pending teardowns own the subscriptions of unlinked links (their index rows are gone already)."""
    now = services.clock()
    index = SubscriptionRepository(services.storage)
    links = LinkRepository(services.storage)
    removed = 0
    for record, created in await index.list_all():
        if created is not None and created > now - ORPHAN_GRACE:
            continue
        link = await links.get(record.link)
        if link is not None and link.subscription_id == record.subscription_id:
            continue
        graph: GraphCalendarPort | None = None
        if link is not None and link.mode is not LinkMode.ICS:
            try:
                graph = await services.graph.for_link(link)
            except SyncError as exc:
                log.warning("orphan subscription of %s: no Graph access (%s)", record.link, exc.code)
        try:
            await _drop(graph, index, record.subscription_id)
        finally:
            if graph is not None:
                await graph.close()
        removed += 1
    if removed:
        log.info("deleted %d orphaned subscriptions", removed)
    return removed


async def _renew_one(services: Services, link: Link, report: RenewReport) -> None:
    async with graph_session(services, link) as graph:
        await _renew_with(services, graph, link, report)


async def _renew_with(services: Services, graph: GraphCalendarPort, link: Link, report: RenewReport) -> None:
    if link.subscription_id:
        try:
            info = await graph.renew_subscription(link.subscription_id, services.clock() + _lifetime(services))
        except (RemoteGone, NotFound, BadRequest, AuthError) as exc:
            if isinstance(exc, NeedsReconnect | ConsentRequired):
                raise
            log.info("renewal of link %s failed (%s); recreating", link.key, exc.code)
        else:
            sub_id = link.subscription_id

            def extend(current: Link) -> bool:
                if current.subscription_id != sub_id:
                    return False  # replaced meanwhile; the new one has its own expiry
                current.subscription_expires_at = info.expires_at
                return True

            await _save(services, link, extend)
            report.renewed += 1
            return
    await resubscribe(services, link, graph=graph)
    report.recreated += 1


async def resubscribe(services: Services, link: Link, *, graph: GraphCalendarPort | None = None) -> Link:
    """Replace the subscription and resync fully: notifications may have been lost meanwhile."""
    saved = await ensure_subscription(services, link, force=True, graph=graph)
    await _enqueue_sync(services, saved.key, SyncReason.RESYNC, full=True)
    return saved


async def reauthorize(services: Services, link: Link, subscription_id: str) -> Link:
    """Answer ``reauthorizationRequired``: reauthorize, else renew, else recreate and resync."""
    if subscription_id and subscription_id != link.subscription_id:
        return link  # a stale subscription's lifecycle event; the current one is fine
    if not link.subscription_id:
        return await resubscribe(services, link)
    async with graph_session(services, link) as graph:
        return await _reauthorize_with(services, graph, link)


async def _reauthorize_with(services: Services, graph: GraphCalendarPort, link: Link) -> Link:
    try:
        await graph.reauthorize_subscription(link.subscription_id)
        return link
    except (RemoteGone, NotFound, BadRequest) as exc:
        log.info("reauthorize failed (%s); renewing", exc.code)
    try:
        info = await graph.renew_subscription(link.subscription_id, services.clock() + _lifetime(services))
    except (RemoteGone, NotFound, BadRequest) as exc:
        log.info("renewal failed (%s); recreating", exc.code)
        return await resubscribe(services, link, graph=graph)
    sub_id = link.subscription_id

    def extend(current: Link) -> bool:
        if current.subscription_id != sub_id:
            return False
        current.subscription_expires_at = info.expires_at
        return True

    return await _save(services, link, extend)


async def handle_lifecycle(services: Services, event: Mapping[str, Any] | str,
                           record: SubscriptionRecord) -> str:
    """Act on one lifecycle notification of a verified subscription; returns what was done.

    ``reauthorizationRequired`` → reauthorize (or renew, or recreate); ``subscriptionRemoved`` →
    new subscription and full resync; ``missed`` → a delta round (it catches up on its own).
    """
    name = event if isinstance(event, str) else str(event.get("lifecycleEvent", ""))
    link = await LinkRepository(services.storage).get(record.link)
    if link is None or link.mode is LinkMode.ICS:
        return "ignored"
    if name == "missed":
        await _enqueue_sync(services, link.key, SyncReason.RESYNC, full=False)
        return "resync"
    if record.subscription_id != link.subscription_id:
        return "ignored"  # about a subscription the link no longer uses
    if name == "reauthorizationRequired":
        await reauthorize(services, link, record.subscription_id)
        return "reauthorized"
    if name == "subscriptionRemoved":
        await resubscribe(services, link)
        return "resubscribed"
    return "ignored"


async def _enqueue_sync(services: Services, key: LinkKey, reason: SyncReason, *, full: bool) -> None:
    message = SyncMessage(str(key), reason, full=full, observed_at=services.clock().timestamp())
    await services.storage.queue(SYNC_QUEUE).send(message.to_json())


async def _set_health(services: Services, link: Link, verdict: Verdict) -> HealthChange | None:
    from shared.connect.status import set_health

    before = link.health
    saved = await set_health(services, link, verdict.health, verdict.reason)
    return None if saved.health is before else HealthChange(before, saved.health, verdict.reason)


@dataclass
class AdminOutcome:
    action: str
    result: str
    health_change: HealthChange | None = None


async def handle_admin_message(services: Services, message: AdminMessage) -> AdminOutcome:
    """The link-admin queue. Transient errors propagate (the trigger retries); a token or
    calendar problem becomes the link's health (one link-status webhook), not a retry."""
    key = message.key
    if message.action is AdminAction.ADOPT_APP_ONLY:
        from shared.org.adopt import adopt

        return AdminOutcome(message.action.value, await adopt(services, key))
    if message.action is AdminAction.TEARDOWN:
        result = await teardown(services, key, subscription_id=message.subscription_id,
                                delete_outlook_events=message.delete_outlook_events)
        return AdminOutcome(message.action.value, result)
    link = await LinkRepository(services.storage).get(key)
    if link is None:
        return AdminOutcome(message.action.value, "no_link")
    if link.mode is LinkMode.ICS:
        return AdminOutcome(message.action.value, "ics")
    try:
        if message.action is AdminAction.SETUP:
            polling = link.sync_mode is SyncMode.POLLING
            if polling:
                # Delegated access to a shared calendar: Graph will refuse the subscription, so the
                # first sync must not wait for that answer (nor for the polling timer).
                await _enqueue_sync(services, key, SyncReason.SETUP, full=True)
            saved = await ensure_subscription(services, link)
            if not polling:
                await _enqueue_sync(services, key, SyncReason.SETUP, full=True)
            result = saved.sync_mode.value
        elif message.action is AdminAction.RESUBSCRIBE:
            if message.subscription_id and link.subscription_id and message.subscription_id != link.subscription_id:
                return AdminOutcome(message.action.value, "stale")
            # Graph removed it: the link must not keep naming it, or a set-up after a reconnect
            # (the usual way out when the removal came with lost access) would think it live.
            link = await _forget_subscription(services, link, link.subscription_id)
            saved = await resubscribe(services, link)
            result = saved.sync_mode.value
        else:
            await reauthorize(services, link, message.subscription_id)
            result = "reauthorized"
    except LinkGone:
        return AdminOutcome(message.action.value, "no_link")
    except (AuthError, RemoteGone, NotFound) as exc:
        verdict = health_for(exc, Remote.GRAPH)
        assert verdict is not None
        change = await _set_health(services, link, verdict)
        return AdminOutcome(message.action.value, verdict.health.value, change)
    return AdminOutcome(message.action.value, result)


async def _forget_subscription(services: Services, link: Link, subscription_id: str) -> Link:
    """Clear a subscription Graph no longer has from the link (only if the link still names it)."""
    if not subscription_id:
        return link
    await SubscriptionRepository(services.storage).delete(subscription_id)

    def clear(current: Link) -> bool:
        if current.subscription_id != subscription_id:
            return False
        current.subscription_id, current.subscription_expires_at = "", None
        return True

    return await _save(services, link, clear)


async def teardown(services: Services, key: LinkKey, *, subscription_id: str = "",
                   delete_outlook_events: bool = False) -> str:
    """Remove what a link left behind after it was unlinked; returns a short summary.

    The link row is already gone (or, after a relink, replaced). With no current link: delete
    the subscription, the blocked slots we created, our Outlook events if asked, and the
    sync state. After a relink only the old subscription goes — the new link's first full
    round reconciles the old calendar's slots away, and its booking map is the new link's.
    Graph steps use the snapshot the unlink kept (``TeardownRepository``); without one, or without
    a usable token, they are skipped (the subscription expires by itself within 3 days).
    """
    from shared.connect.teardown import TeardownRepository

    snapshot = await TeardownRepository(services.storage).get(key, subscription_id)
    graph: GraphCalendarPort | None = None
    if snapshot is not None and snapshot.mode is not LinkMode.ICS:
        try:
            graph = await services.graph.for_link(snapshot)
        except (AuthError, RemoteGone, NotFound) as exc:
            log.warning("teardown of %s without Graph access: %s", key, exc.code)
    try:
        return await _teardown_with(services, graph, snapshot, key, subscription_id, delete_outlook_events)
    finally:
        if graph is not None:
            await graph.close()


async def _teardown_with(services: Services, graph: GraphCalendarPort | None, snapshot: Link | None, key: LinkKey,
                         subscription_id: str, delete_outlook_events: bool) -> str:
    from shared.connect.teardown import finish

    current = await LinkRepository(services.storage).get(key)
    index = SubscriptionRepository(services.storage)
    sub_id = subscription_id or (snapshot.subscription_id if snapshot is not None else "")
    if current is not None and sub_id and sub_id == current.subscription_id:
        sub_id = ""  # never delete the subscription the current link uses
    await _drop(graph, index, sub_id)
    if current is not None:
        await finish(services, key, subscription_id)
        return "relinked"
    from shared.connect.status import resend_unlinked

    # The unlink's own attempt may have failed; a failure here retries the teardown message.
    await resend_unlinked(services, key)
    leases = LeaseRepository(services.storage)
    if not await leases.acquire(key, TEARDOWN_OWNER, now=services.clock()):
        # A sync run is still writing for this link; clean up after it.
        raise TransientError("a sync run holds the link; teardown retries", code="lease_held",
                             retry_after=LEASE_RETRY_SECONDS)
    try:
        removed = await _remove_slots(services, key)
        bookings = BookingMapRepository(services.storage)
        deleted_events = 0
        if delete_outlook_events and graph is not None and snapshot is not None:
            deleted_events = await _delete_our_events(graph, snapshot.mailbox_id, await bookings.list(key))
        await EventMapRepository(services.storage).clear(key)
        await bookings.clear(key)
        await _clear_restores(services, key)
    finally:
        await leases.let_go(key, TEARDOWN_OWNER, now=services.clock())
    await finish(services, key, subscription_id)
    return f"removed {removed} slots, {deleted_events} events"


async def _clear_restores(services: Services, key: LinkKey) -> None:
    from shared.bookings.outlook_edits import RESTORES

    table = services.storage.table(RESTORES)
    pk = encode_key(str(key))
    rows = await table.query(pk)
    if rows:
        await table.delete_many(pk, [row.rk for row in rows])


async def _delete_our_events(graph: GraphCalendarPort, mailbox_id: str, rows: list[BookingMapRow]) -> int:
    event_ids = [row.event_id for row in rows if row.event_id]

    async def delete(event_id: str) -> None:
        await graph.delete_event(mailbox_id, event_id)

    try:
        await for_each(delete, event_ids)
    except AuthError as exc:
        # The token went away meanwhile: the events stay in Outlook; slots and state still go.
        log.warning("could not delete our Outlook events: %s", exc.code)
        return 0
    return len(event_ids)


async def _remove_slots(services: Services, key: LinkKey) -> int:
    """Delete the slots our status rows name, and any of ours timum still lists that has not
    ended (history stays)."""
    rows = await EventMapRepository(services.storage).load(key)
    targets = {row.external_id for row in rows.values()}
    resource = timum_resource(key.resource_id)  # a block-only link's slots are its resource's
    try:
        # Every source: an ICS link's slots carry "ics" (older ones "outlook"); the id prefix tells ours.
        listed = await services.timum.list_blocked_slots(key.provider_id, resource)
    except (RemoteGone, NotFound):
        return 0  # the resource is gone in timum, and its slots with it
    now = services.clock()
    targets.update(s.external_id for s in listed if s.external_id.startswith(slot_prefix(key)) and s.end > now)

    async def delete(external_id: str) -> None:
        try:
            await services.timum.delete_blocked_slot(key.provider_id, resource, external_id)
        except (RemoteGone, NotFound):
            return

    await for_each(delete, sorted(targets))
    return len(targets)
