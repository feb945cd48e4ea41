"""The run of an ICS-import link: fetch the published calendar (conditional GET, through
``Services.ics``) and, when it changed or the window slid, one fresh round over its snapshot —
the same round as Graph's (``shared.sync.rounds``): planner, idempotent writes, reconciliation."""

from __future__ import annotations

from shared.connect.status import Remote
from shared.context import Services
from shared.core.window import sync_window, window_changed
from shared.domain import Link, LinkHealth
from shared.errors import (
    BadRequest,
    NotFound,
    RemoteGone,
    TransientError,
)
from shared.repos.links import LinkRepository
from shared.sync.rounds import LinkStopped, SyncOutcome, record_health, stop_for, sync_link, with_retry_after


async def run_ics_once(services: Services, link: Link, *, outcome: SyncOutcome) -> bool:
    """An ICS-import link: fetch the published calendar (conditional GET) and, when it changed or
    the window slid, run a fresh round over the snapshot — same planner, writes, reconciliation."""
    from shared.ics.source import ICS_ROUND, IcsSnapshotSource

    settings = services.settings
    window = sync_window(services.clock(), past_days=settings.sync_window_past_days,
                         future_days=settings.sync_window_future_days)
    source = IcsSnapshotSource(link, settings, services.ics)
    try:
        try:
            settled = link.delta_link == ICS_ROUND and not window_changed(link.window_start, link.window_end, window)
            await source.fetch(conditional=settled)
            if not source.not_modified:
                link = await sync_link(services, source, link, full=True, outcome=outcome)
        except (RemoteGone, NotFound, BadRequest) as exc:
            # Unpublished, an unsafe address, not a calendar, too large: the provider must fix the link.
            stop = stop_for(exc, Remote.ICS)
            assert stop is not None
            raise stop from exc
    except LinkStopped as stop:
        await record_health(services, link, stop.health, stop.reason, outcome)
        outcome.status = "error"
        return False
    except TransientError as exc:
        if exc.retry_after is None:
            raise with_retry_after(exc) from exc
        raise
    link = await _save_ics_state(services, link, source)
    if link.health is not LinkHealth.OK:
        await record_health(services, link, LinkHealth.OK, "", outcome)
    outcome.status = "ok"
    return True


async def _save_ics_state(services: Services, link: Link, source: object) -> Link:
    """Remember the validators and the skipped count of this fetch (ETag-checked)."""
    from shared.ics.source import IcsSnapshotSource

    assert isinstance(source, IcsSnapshotSource) and source.fetched is not None
    fetched = source.fetched
    now = services.clock()

    def remember(current: Link) -> bool:
        if fetched.status == 200:
            current.ics_etag, current.ics_last_modified = fetched.etag, fetched.last_modified
            current.ics_skipped = source.skipped
            # The calendar's own name (X-WR-CALNAME) replaces the host shown until the first fetch.
            name = " ".join("".join(c for c in source.calendar_name if c.isprintable()).split())[:200]
            if name:
                current.calendar_name = name
            current.skipped_items, current.skipped_sample = source.skipped, source.skipped_sample
        current.last_sync_at = now
        return True

    saved = await LinkRepository(services.storage).modify(link.key, remember, current=link)
    return link if saved is None else saved  # unlinked meanwhile: the teardown cleans up
