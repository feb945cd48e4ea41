"""Which links are due for a timer-driven delta run."""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.context import Services
from shared.domain import Link, LinkHealth, LinkMode, SyncMode
from shared.messages import ALL_QUEUES, SYNC_QUEUE, SyncMessage, SyncReason
from shared.repos.links import LinkRepository


def due_reason(link: Link, now: datetime, polling_interval: timedelta,
               ics_interval: timedelta = timedelta(minutes=15)) -> SyncReason | None:
    """POLL when a polling link's interval elapsed; WINDOW when a push link's window is a day old.

    Links needing reconnect are skipped: without a token every run would fail (no hot loop).
    """
    if link.health is LinkHealth.NEEDS_RECONNECT:
        return None
    last = link.last_sync_at
    if link.mode is LinkMode.ICS:
        # Published calendars are fetched on their own interval (conditional GET: cheap when unchanged).
        due = last is None or now - last >= ics_interval
        return SyncReason.POLL if due else None
    if link.sync_mode is SyncMode.POLLING and (last is None or now - last >= polling_interval):
        return SyncReason.POLL
    if link.window_start is not None and now - link.window_start >= timedelta(days=2):
        # The window starts "yesterday"; two days after its start it has slid by a day.
        return SyncReason.WINDOW
    return None


async def enqueue_due_syncs(services: Services) -> int:
    """Enqueue the links that are due; also report the gauges operators alert on."""
    from shared.observability.metrics import metrics

    now = services.clock()
    interval = timedelta(minutes=services.settings.polling_interval_minutes)
    ics_interval = timedelta(minutes=services.settings.ics_import_interval_minutes)
    queue = services.storage.queue(SYNC_QUEUE)
    sent = 0
    reconnect = 0
    for link in await LinkRepository(services.storage).list_all():
        reconnect += link.health is LinkHealth.NEEDS_RECONNECT
        reason = due_reason(link, now, interval, ics_interval)
        if reason is not None:
            await queue.send(SyncMessage(str(link.key), reason, observed_at=now.timestamp()).to_json())
            sent += 1
    metrics.record("links_needing_reconnect", reconnect)
    for name in ALL_QUEUES:
        for full in (name, f"{name}-poison"):
            metrics.record("queue_depth", await services.storage.queue(full).peek_count(), queue=full)
    return sent
