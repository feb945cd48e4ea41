"""The sync round both link modes share: a delta source's pages → blocked slots in timum.

A run of a link (``shared.sync.worker``) asks its remote for a ``DeltaSource`` — Graph's
``calendarView/delta`` (``shared.outlook.run``) or a published calendar's snapshot
(``shared.ics.run``) — and hands it to ``sync_link``, one round:

1. Choose an incremental round (stored delta link) or a fresh one (first sync, ``full``
   requested, no delta link, or the daily window slide).
2. Follow the pages. Each page is planned by the pure core (``shared.core.outlook_plan``), the
   actions go to timum with bounded concurrency, then the status rows are written (one batch
   per page). In an incremental round, new slots get a *pending* status row before their PUT,
   tagged with the round's start, so a crash anywhere before the commit leaves a trace the
   replayed round settles instead of an orphan; a fresh round needs none (its replay is fresh
   and reconciles, see ``new_row_round``).
3. At the end of the round: a fresh round reconciles (slots of events no longer present, and
   orphans timum lists); then pending rows are settled. Only then is the new delta link
   committed. Next links live only in memory: a crash replays from the last committed delta
   link, and every action is idempotent (PUT by external id). Before a fresh round the stored
   delta link is cleared, so a fresh round that dies is followed by another fresh round —
   what makes the pending-row rule sound.

Unreadable items (``DeltaPage.skipped``: Graph items the adapter cannot map, ICS events it cannot
read) never stop a round: they keep whatever slot they had, and the round's commit records how
many there were and one reason on the link (``skipped_items`` / ``skipped_sample``).

Errors: a failure the link cannot recover from by itself becomes ``LinkStopped`` with the health
``health_for`` decides (``stop_for``), recorded by ``record_health`` (one link-status webhook per
change) and ending the run without a retry. Throttling and transient failures propagate (with
``retry_after``) so the queue trigger re-queues with a delay — nothing sleeps here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

from shared.bookings.outlook_edits import BookingEventGuard
from shared.connect.status import Remote, health_for
from shared.context import Services
from shared.core.outlook_plan import (
    Action,
    ConfirmEvent,
    DeleteBlock,
    ForgetEvent,
    PlanContext,
    StatusRow,
    UpsertBlock,
    apply_to_status,
    new_row_round,
    pending_row,
    plan_page,
    reconcile,
    round_tag,
    settle_pending,
)
from shared.core.window import SyncWindow, sync_window, window_changed
from shared.domain import DeltaPage, Link, LinkHealth, LinkKey, LinkMode
from shared.errors import (
    SyncError,
    Throttled,
    TransientError,
)
from shared.repos.links import LinkRepository, ProviderSettingsRepository
from shared.repos.sync_state import BookingMapRepository, EventMapRepository

log = logging.getLogger(__name__)


T = TypeVar("T")




#: When a transient failure named no delay, the queue trigger waits this long.
DEFAULT_RETRY_AFTER_SECONDS = 30.0


@dataclass(frozen=True)
class HealthChange:
    old: LinkHealth
    new: LinkHealth
    reason: str = ""


@dataclass
class SyncOutcome:
    """What one ``run_sync`` invocation did — for logs, metrics and tests."""

    link: str
    #: ok | coalesced (lease held, marked dirty) | requeued (full request met a held lease) |
    #: no_link | ics | needs_reconnect | error
    status: str = "ok"
    runs: int = 0
    full_rounds: int = 0
    pages: int = 0
    upserts: int = 0
    deletes: int = 0
    forgotten: int = 0
    graph_requests: int = 0
    #: the stored delta state had expired (410) and a fresh round replaced it
    resynced: bool = False
    #: unreadable items the rounds left out (the link's status counts those of its last round)
    skipped: int = 0
    health_change: HealthChange | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def coalesced_runs(self) -> int:
        """Reruns this invocation made for messages that arrived while it held the lease."""
        return max(0, self.runs - 1)


class LinkStopped(Exception):
    """The link cannot sync until someone acts (reconnect, relink): record health, no retry."""

    def __init__(self, health: LinkHealth, reason: str) -> None:
        super().__init__(reason)
        self.health = health
        self.reason = reason


def stop_for(exc: BaseException, remote: Remote) -> LinkStopped | None:
    """How a failure on ``remote`` ends the run (``health_for``), or None when it is retried or
    handled elsewhere."""
    verdict = health_for(exc, remote)
    return None if verdict is None else LinkStopped(verdict.health, verdict.reason)


def with_retry_after(exc: TransientError) -> TransientError:
    cls = Throttled if isinstance(exc, Throttled) else TransientError
    return cls(exc.message, retry_after=DEFAULT_RETRY_AFTER_SECONDS, code=exc.code)


async def record_health(services: Services, link: Link, health: LinkHealth, reason: str,
                         outcome: SyncOutcome) -> None:
    from shared.connect.status import set_health

    before = link.health
    saved = await set_health(services, link, health, reason)
    if saved.health is not before:
        outcome.health_change = HealthChange(before, saved.health, reason)
    if reason:
        outcome.reasons.append(reason)


class DeltaSource(Protocol):
    """What a round reads pages from: a Graph port, or a published calendar (``IcsSnapshotSource``)."""

    async def delta(self, mailbox_id: str, calendar_id: str, *, start: datetime, end: datetime,
                    link: str = "", page_size: int = 100) -> DeltaPage: ...


async def sync_link(services: Services, graph: DeltaSource, link: Link, *, full: bool,
                     outcome: SyncOutcome) -> Link:
    """One delta round and its commit; returns the saved link."""
    settings = services.settings
    window = sync_window(services.clock(), past_days=settings.sync_window_past_days,
                         future_days=settings.sync_window_future_days)
    key = link.key
    fresh = full or not link.delta_link or window_changed(link.window_start, link.window_end, window)
    if fresh and link.delta_link:
        # Until this fresh round commits, every round must be fresh: a crash must not let a
        # later run continue from the old link past rows this round left pending.
        link = await _save_state(services, link, "", None)
    tag = round_tag("" if fresh else link.delta_link)
    provider = await ProviderSettingsRepository(services.storage).get(link.provider_id)
    own = await BookingMapRepository(services.storage).event_ids(key)
    ctx = PlanContext(key, window, provider, own, tag, source="ics" if link.mode is LinkMode.ICS else "outlook")
    eventmap = EventMapRepository(services.storage)
    status: dict[str, StatusRow] = await eventmap.load(key) if fresh else {}
    seen: set[str] = set()
    skipped = _Skipped(fresh=fresh)
    if fresh:
        outcome.full_rounds += 1
    guard = BookingEventGuard(services, link, provider, own)

    async def fetch(page_link: str) -> DeltaPage:
        outcome.graph_requests += 1
        try:
            return await graph.delta(link.mailbox_id, link.calendar_id, start=window.start, end=window.end,
                                     link=page_link, page_size=max(1, settings.delta_page_size))
        except SyncError as exc:
            stop = stop_for(exc, Remote.GRAPH)
            if stop is not None:
                raise stop from exc
            raise

    # Pipelined: while one page's slots go to timum, the next page is already being fetched and
    # the previous page's status rows are still being stored. Neither changes what is committed
    # or when: every write has landed before the round's end, and the delta link goes last.
    writes = _Writes()
    upcoming: asyncio.Task[DeltaPage] | None = asyncio.create_task(fetch("" if fresh else link.delta_link))
    try:
        while upcoming is not None:
            page = await upcoming
            upcoming = None
            outcome.pages += 1
            if page.next_link:
                upcoming = asyncio.create_task(fetch(page.next_link))
            elif not page.delta_link:
                raise TransientError("Graph ended a delta round without a delta link", code="graph_unexpected")
            ids = [e.id for e in page.events] + list(page.removed)
            seen.update(ids)
            # An unreadable item keeps the slot it had (it is "seen", so reconciliation leaves
            # it): a block too many is safer than a double booking. It is counted, not planned.
            seen.update(skipped.add(page))
            if not fresh:
                # Rows the previous page is still writing must be read as written.
                await writes.settle()
                status.update(await eventmap.get_many(key, [i for i in ids if i not in status]))
            await _apply(services, ctx, link, plan_page(ctx, page, status), status, outcome, writes)
            await _guard_booking_events(guard, page)
        await writes.settle()
    except BaseException:
        if upcoming is not None:
            upcoming.cancel()
            with contextlib.suppress(BaseException):
                await upcoming
        # What timum already took is recorded before the failure propagates (a retry redoes less).
        with contextlib.suppress(Exception):
            await writes.settle()
        raise
    if fresh:
        # An ICS link lists every source: its slots from before imports had the source "ics" are its too.
        slots = await _timum(services.timum.list_blocked_slots(link.provider_id, link.timum_resource_id,
                                                               source=None if ctx.source == "ics" else "outlook"))
        await _apply(services, ctx, link, reconcile(ctx, seen, status, slots), status, outcome)
    pending = await eventmap.pending(key)
    status.update(pending)
    await _apply(services, ctx, link, settle_pending(ctx, seen, pending), status, outcome)
    outcome.skipped += skipped.count
    return await _save_state(services, link, page.delta_link, window, skipped)


class _Skipped:
    """The unreadable items of one round: how many, and one reason to show."""

    def __init__(self, *, fresh: bool) -> None:
        self.fresh = fresh
        self.count = 0
        self.sample = ""

    def add(self, page: DeltaPage) -> list[str]:
        """Count the page's skipped items; return their ids."""
        if page.skipped:
            self.count += len(page.skipped)
            if not self.sample:
                self.sample = page.skipped[0].reason[:200]
        return [item.id for item in page.skipped if item.id]


async def _guard_booking_events(guard: BookingEventGuard, page: DeltaPage) -> None:
    """Booking events edited or deleted in Outlook (``shared.bookings.outlook_edits``). Their
    restore or report never fails the round: the blocked slots are what this round is for."""
    try:
        await guard.check(page)
    except TransientError:
        raise  # the round is retried, and with it the check
    except SyncError as exc:
        log.warning("could not restore or report an edited booking event: %s", exc.code)


class _Writes:
    """The status-row write of the previous page, left running while the next page goes to timum."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def start(self, write: Awaitable[None]) -> None:
        assert self._task is None, "settle the previous write first"

        async def run() -> None:
            await write

        self._task = asyncio.create_task(run())

    async def settle(self) -> None:
        """Wait for the write in flight; raise its failure."""
        task, self._task = self._task, None
        if task is not None:
            await task


async def _timum(call: Awaitable[T]) -> T:
    try:
        return await call
    except SyncError as exc:
        stop = stop_for(exc, Remote.TIMUM)
        if stop is not None:
            raise stop from exc
        raise


async def _apply(services: Services, ctx: PlanContext, link: Link, actions: Sequence[Action],
                 status: dict[str, StatusRow], outcome: SyncOutcome, writes: _Writes | None = None) -> None:
    """Perform ``actions`` in timum, then record the status rows of those that succeeded.

    ``status`` holds the stored row of every event ``actions`` name (a fresh round loaded the
    link's rows; an incremental one read the page's, and the pending rows), so an event without
    one there has no row: its row is added, not replaced (``add_many``).
    ``status`` is updated in place to what storage holds once the writes landed. The first
    failure is raised after the successes were recorded, so a retry redoes only what failed.
    With ``writes``, the status rows are left writing there (the caller settles it before it
    reads or commits) and the previous write there lands before any row of these actions.
    """
    if not actions:
        return
    key = link.key
    eventmap = EventMapRepository(services.storage)
    tag = new_row_round(ctx)
    await _record_intents(eventmap, key, actions, status, tag, writes)

    from shared.services.slot_writes import perform_slot_actions

    failures = await perform_slot_actions(services.timum, link.provider_id, link.timum_resource_id, actions)
    done = [a for a, failure in zip(actions, failures, strict=True) if failure is None]
    updated = apply_to_status(status, done, tag)
    rows = [updated[a.event_id] for a in done if isinstance(a, UpsertBlock | ConfirmEvent) and a.event_id in updated]
    gone = [a.event_id for a in done if isinstance(a, DeleteBlock | ForgetEvent) and a.event_id]
    replaced = [row for row in rows if row.event_id in status]
    added = [row for row in rows if row.event_id not in status]

    async def record() -> None:
        await eventmap.put_many(key, replaced)
        await eventmap.add_many(key, added)
        await eventmap.delete_many(key, gone)

    first = next((f for f in failures if f is not None), None)
    if writes is not None:
        await writes.settle()  # rows land in page order
    if writes is not None and first is None:
        writes.start(record())
    else:
        await record()
    status.clear()
    status.update(updated)
    _count(done, outcome)
    if first is not None:
        stop = stop_for(first, Remote.TIMUM)
        if stop is not None:
            raise stop from first
        raise first


def _count(done: Sequence[Action], outcome: SyncOutcome) -> None:
    outcome.upserts += sum(isinstance(a, UpsertBlock) for a in done)
    outcome.deletes += sum(isinstance(a, DeleteBlock) for a in done)
    outcome.forgotten += sum(isinstance(a, ForgetEvent) for a in done)


async def _record_intents(eventmap: EventMapRepository, key: LinkKey, actions: Sequence[Action],
                          status: dict[str, StatusRow], tag: str, writes: _Writes | None) -> None:
    """Intent first: from the PUT on, a new slot may exist; its pending row remembers that.
    (A fresh round, ``tag`` empty, needs none: its replay reconciles — see ``new_row_round``.)"""
    new_slots = [a for a in actions if isinstance(a, UpsertBlock) and a.event_id not in status]
    if not new_slots or not tag:
        return
    if writes is not None:
        await writes.settle()
    intents = [pending_row(a, tag) for a in new_slots]
    await eventmap.add_many(key, intents)
    status.update({row.event_id: row for row in intents})


async def _save_state(services: Services, link: Link, delta_link: str, window: SyncWindow | None,
                      skipped: _Skipped | None = None) -> Link:
    """Store the delta state, ETag-checked. With a window: a completed round (and the run's success),
    with what it skipped; without: the delta link is cleared before a fresh round."""
    now = services.clock()

    def store(current: Link) -> bool:
        if (current.mailbox_id, current.calendar_id) != (link.mailbox_id, link.calendar_id):
            # Relinked to another calendar meanwhile: this delta state belongs to the old one.
            return False
        current.delta_link = delta_link
        if window is not None:
            current.window_start, current.window_end = window.start, window.end
            current.last_sync_at = now
            # A completed round proves the link works: earlier errors no longer apply.
            current.last_error, current.last_error_at = "", None
            if skipped is not None and skipped.fresh:
                current.skipped_items, current.skipped_sample = skipped.count, skipped.sample
            elif skipped is not None and skipped.count:
                # An incremental round hears only of changed items: the ones skipped before are
                # still out (until the next fresh round, at the latest the next day, counts anew).
                current.skipped_items += skipped.count
                current.skipped_sample = skipped.sample
        return True

    saved = await LinkRepository(services.storage).modify(link.key, store, current=link)
    return link if saved is None else saved  # unlinked meanwhile: the teardown cleans up
