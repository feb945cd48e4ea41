"""Outlook → timum: the delta engine that turns calendar changes into blocked slots.

One run per link at a time (``LeaseRepository``): a message that finds the lease held marks it
dirty and returns, and the holder runs once more before letting go, so a burst of
notifications costs a few delta rounds, not one each. Within a run:

1. Load the link; choose an incremental round (stored delta link) or a fresh one (first sync,
   ``full`` requested, no delta link, or the daily window slide).
2. Follow the pages. Each page is planned by the pure core (``shared.core.outlook_plan``), the
   actions go to timum in batches (``shared.services.slot_writes``), then the status rows are written (one batch
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

Errors: ``SyncStateExpired`` → a fresh round with reconciliation in the same run. Throttling
and transient failures propagate (with ``retry_after``) so the queue trigger re-queues with a
delay — nothing sleeps here. A refused token, a deleted calendar or a deleted timum resource
change the link's health through ``set_health`` (which sends exactly one link-status webhook
per change) and end the run without a retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

from shared.bookings.outlook_edits import BookingEventGuard
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
    AuthError,
    BadRequest,
    Conflict,
    LeaseHeld,
    NotFound,
    RemoteGone,
    SyncError,
    SyncStateExpired,
    Throttled,
    TransientError,
)
from shared.messages import SYNC_QUEUE, SyncMessage
from shared.ports import GraphCalendarPort
from shared.repos.links import LeaseRepository, LinkRepository, ProviderSettingsRepository
from shared.repos.sync_state import BookingMapRepository, EventMapRepository

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Delay before a full-sync request that met a held lease is tried again.
FULL_REQUEUE_DELAY_SECONDS = 30.0
#: When a transient failure named no delay, the queue trigger waits this long.
DEFAULT_RETRY_AFTER_SECONDS = 30.0
#: Reruns in one invocation when notifications keep arriving; the rest waits for the next message.
MAX_RUNS_PER_INVOCATION = 5
#: A fresh round that keeps getting 410 means Graph is broken for this calendar; back off.
MAX_ROUNDS_PER_RUN = 2
_LINK_SAVE_ATTEMPTS = 5


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


class _Stop(Exception):
    """The link cannot sync until someone acts (reconnect, relink): record health, no retry."""

    def __init__(self, health: LinkHealth, reason: str) -> None:
        super().__init__(reason)
        self.health = health
        self.reason = reason


def _reason(exc: SyncError, code: str | None = None) -> str:
    return f"{code or exc.code}: {exc.message}"[:500]


def _graph_stop(exc: SyncError) -> _Stop | None:
    """How a Graph failure ends the run, or None when it is retried / handled elsewhere."""
    if isinstance(exc, SyncStateExpired | TransientError):
        return None
    if isinstance(exc, AuthError):
        # Revoked refresh token, withdrawn admin consent, calendar no longer shared with us:
        # only the user (or the tenant's admin) can fix it.
        return _Stop(LinkHealth.NEEDS_RECONNECT, _reason(exc))
    if isinstance(exc, RemoteGone | NotFound):
        return _Stop(LinkHealth.ERROR, _reason(exc, "calendar_gone"))
    if isinstance(exc, BadRequest):
        return _Stop(LinkHealth.ERROR, _reason(exc))
    return None


def _timum_stop(exc: BaseException) -> _Stop | None:
    """How a timum failure ends the run. timum's AuthError is our API key, not the link's: retried."""
    if not isinstance(exc, SyncError) or isinstance(exc, TransientError | LeaseHeld | AuthError):
        return None
    if isinstance(exc, RemoteGone | NotFound):
        return _Stop(LinkHealth.ERROR, _reason(exc, "resource_gone"))
    if isinstance(exc, Conflict | BadRequest):
        # e.g. the resource was archived, or timum refused a slot: retrying cannot help.
        return _Stop(LinkHealth.ERROR, _reason(exc))
    return None


def _with_retry_after(exc: TransientError) -> TransientError:
    cls = Throttled if isinstance(exc, Throttled) else TransientError
    return cls(exc.message, retry_after=DEFAULT_RETRY_AFTER_SECONDS, code=exc.code)


@contextlib.asynccontextmanager
async def graph_session(services: Services, link: Link) -> AsyncIterator[GraphCalendarPort]:
    """A Graph port for ``link``, closed afterwards: real ports hold an HTTP client (and app-only
    credentials a session) that would otherwise leak for the life of the worker."""
    graph = await services.graph.for_link(link)
    try:
        yield graph
    finally:
        await graph.close()


async def run_sync(services: Services, message: SyncMessage, *, worker_id: str) -> SyncOutcome:
    """Bring the link's blocked slots in line with its Outlook calendar. Idempotent; safe to replay."""
    key = message.key
    outcome = SyncOutcome(link=str(key))
    leases = LeaseRepository(services.storage)
    if not await leases.acquire(key, worker_id, now=services.clock()):
        if message.full:
            # The holder reruns incrementally when it sees the dirty mark; a full request would be
            # lost there, so it goes back to the queue to run after the holder.
            await services.storage.queue(SYNC_QUEUE).send(message.to_json(), delay_seconds=FULL_REQUEUE_DELAY_SECONDS)
            outcome.status = "requeued"
        else:
            outcome.status = "coalesced"
        return outcome
    full = message.full
    spacing = services.settings.sync_round_spacing_ms / 1000
    loop = asyncio.get_running_loop()
    try:
        while True:
            outcome.runs += 1
            round_began = loop.time()
            go_on = await _run_once(services, key, full=full, outcome=outcome)
            if not go_on or outcome.runs >= MAX_RUNS_PER_INVOCATION:
                if go_on and await leases.release(key, worker_id, now=services.clock()):
                    # Still dirty after the cap: hand the rest to a fresh message.
                    await services.storage.queue(SYNC_QUEUE).send(SyncMessage(str(key), message.reason).to_json())
                await _let_go(services, leases, key, worker_id)
                break
            if spacing > 0 and await leases.is_dirty(key, worker_id):
                # Changes keep coming (a burst: a series edited, events dragged, an import): wait
                # out the spacing before the rerun, still holding the lease, so the notifications
                # of the next seconds share one round instead of costing one each. A lone change
                # never waits: without a dirty mark the lease goes at once.
                await asyncio.sleep(max(0.0, spacing - (loop.time() - round_began)))
            if not await leases.release(key, worker_id, now=services.clock()):
                break
            full = False  # a rerun only needs what changed meanwhile
    except BaseException:
        # Do not make the retry wait for the lease to expire. A process that dies here leaves
        # the lease to its TTL, which is the same outcome, later.
        with contextlib.suppress(Exception):
            await _let_go(services, leases, key, worker_id)
        raise
    return outcome


async def _let_go(services: Services, leases: LeaseRepository, key: LinkKey, worker_id: str) -> None:
    # release() keeps the lease once if it was dirty; the second call lets go.
    for _ in range(3):
        if not await leases.release(key, worker_id, now=services.clock()):
            return


async def _run_once(services: Services, key: LinkKey, *, full: bool, outcome: SyncOutcome) -> bool:
    """One run; True if it completed normally (a dirty lease may ask for another)."""
    link = await LinkRepository(services.storage).get(key)
    if link is None:
        outcome.status = "no_link"
        return False
    if link.mode is LinkMode.ICS:
        return await _run_ics_once(services, link, outcome=outcome)
    if link.health is LinkHealth.NEEDS_RECONNECT and not full:
        # Without a usable token every run would fail the same way; the reconnect flow sets the
        # health back to OK and asks for a full sync.
        outcome.status = "needs_reconnect"
        return False
    try:
        try:
            graph = await services.graph.for_link(link)
        except SyncError as exc:
            stop = _graph_stop(exc)
            if stop is not None:
                raise stop from exc
            raise
        try:
            from shared.services.mailbox_ids import ensure_object_id

            link = await ensure_object_id(services, link, graph)  # app-only links made with an address
            link = await _rounds(services, graph, link, full=full, outcome=outcome)
        finally:
            await graph.close()  # see graph_session
    except _Stop as stop:
        await _record_health(services, link, stop.health, stop.reason, outcome)
        outcome.status = "needs_reconnect" if stop.health is LinkHealth.NEEDS_RECONNECT else "error"
        return False
    except TransientError as exc:
        if exc.retry_after is None:
            raise _with_retry_after(exc) from exc
        raise
    if link.health is not LinkHealth.OK:
        await _record_health(services, link, LinkHealth.OK, "", outcome)
    return True


async def _run_ics_once(services: Services, link: Link, *, outcome: SyncOutcome) -> bool:
    """An ICS-import link: fetch the published calendar (conditional GET) and, when it changed or
    the window slid, run a fresh round over the snapshot — same planner, writes, reconciliation."""
    from shared.ics.source import ICS_ROUND, IcsSnapshotSource

    settings = services.settings
    window = sync_window(services.clock(), past_days=settings.sync_window_past_days,
                         future_days=settings.sync_window_future_days)
    source = IcsSnapshotSource(link, settings)
    try:
        try:
            settled = link.delta_link == ICS_ROUND and not window_changed(link.window_start, link.window_end, window)
            await source.fetch(conditional=settled)
            if not source.not_modified:
                link = await _sync_link(services, source, link, full=True, outcome=outcome)
        except (RemoteGone, NotFound) as exc:
            raise _Stop(LinkHealth.ERROR, _reason(exc, "ics_gone")) from exc
        except BadRequest as exc:
            # Unsafe address, not a calendar, too large: the provider must fix the link.
            raise _Stop(LinkHealth.ERROR, _reason(exc)) from exc
    except _Stop as stop:
        await _record_health(services, link, stop.health, stop.reason, outcome)
        outcome.status = "error"
        return False
    except TransientError as exc:
        if exc.retry_after is None:
            raise _with_retry_after(exc) from exc
        raise
    link = await _save_ics_state(services, link, source)
    if link.health is not LinkHealth.OK:
        await _record_health(services, link, LinkHealth.OK, "", outcome)
    outcome.status = "ok"
    return True


async def _save_ics_state(services: Services, link: Link, source: object) -> Link:
    """Remember the validators and the skipped count of this fetch (ETag-checked)."""
    from shared.ics.source import IcsSnapshotSource

    assert isinstance(source, IcsSnapshotSource) and source.fetched is not None
    repo = LinkRepository(services.storage)
    current: Link | None = link
    for _ in range(_LINK_SAVE_ATTEMPTS):
        if current is None:
            return link
        if source.fetched.status == 200:
            current.ics_etag, current.ics_last_modified = source.fetched.etag, source.fetched.last_modified
            current.ics_skipped = source.skipped
            # The calendar's own name (X-WR-CALNAME) replaces the host shown until the first fetch.
            name = " ".join("".join(c for c in source.calendar_name if c.isprintable()).split())[:200]
            if name:
                current.calendar_name = name
            current.skipped_items, current.skipped_sample = source.skipped, source.skipped_sample
        current.last_sync_at = services.clock()
        try:
            return await repo.save(current)
        except Conflict:
            current = await repo.get(link.key)
    raise Conflict("the link kept changing while its ICS state was being saved")


async def _rounds(services: Services, graph: GraphCalendarPort, link: Link, *, full: bool,
                  outcome: SyncOutcome) -> Link:
    for _ in range(MAX_ROUNDS_PER_RUN):
        try:
            return await _sync_link(services, graph, link, full=full, outcome=outcome)
        except SyncStateExpired:
            # Graph forgot our delta state (410): start over; reconciliation removes what we
            # cannot hear about any more.
            log.warning("delta state expired for link %s; full resync", link.key)
            outcome.resynced = True
            full = True
    raise TransientError("Graph expired the delta state of a fresh round", code="sync_state_loop",
                         retry_after=DEFAULT_RETRY_AFTER_SECONDS)


async def _record_health(services: Services, link: Link, health: LinkHealth, reason: str,
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


async def _sync_link(services: Services, graph: DeltaSource, link: Link, *, full: bool,
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
            stop = _graph_stop(exc)
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
        stop = _timum_stop(exc)
        if stop is not None:
            raise stop from exc
        raise


async def _apply(services: Services, ctx: PlanContext, link: Link, actions: Sequence[Action],
                 status: dict[str, StatusRow], outcome: SyncOutcome, writes: _Writes | None = None) -> None:
    """Perform ``actions`` in timum, then record the status rows of those that succeeded.

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
    new_slots = [a for a in actions if isinstance(a, UpsertBlock) and a.event_id not in status]
    if new_slots and tag:
        # Intent first: from the PUT on, the slot may exist; the pending row remembers that.
        # (A fresh round needs none: its replay reconciles — see ``new_row_round``.)
        if writes is not None:
            await writes.settle()
        intents = [pending_row(a, tag) for a in new_slots]
        await eventmap.put_many(key, intents)
        status.update({row.event_id: row for row in intents})

    from shared.services.slot_writes import perform_slot_actions

    failures = await perform_slot_actions(services.timum, link.provider_id, link.timum_resource_id, actions)
    done = [a for a, failure in zip(actions, failures, strict=True) if failure is None]
    updated = apply_to_status(status, done, tag)
    rows = [updated[a.event_id] for a in done if isinstance(a, UpsertBlock | ConfirmEvent) and a.event_id in updated]
    gone = [a.event_id for a in done if isinstance(a, DeleteBlock | ForgetEvent) and a.event_id]

    async def record() -> None:
        await eventmap.put_many(key, rows)
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
    for action in done:
        if isinstance(action, UpsertBlock):
            outcome.upserts += 1
        elif isinstance(action, DeleteBlock):
            outcome.deletes += 1
        elif isinstance(action, ForgetEvent):
            outcome.forgotten += 1
    if first is not None:
        stop = _timum_stop(first)
        if stop is not None:
            raise stop from first
        raise first


async def _save_state(services: Services, link: Link, delta_link: str, window: SyncWindow | None,
                      skipped: _Skipped | None = None) -> Link:
    """Store the delta state, ETag-checked. With a window: a completed round (and the run's success),
    with what it skipped; without: the delta link is cleared before a fresh round."""
    repo = LinkRepository(services.storage)
    now = services.clock()
    current = link
    for _ in range(_LINK_SAVE_ATTEMPTS):
        if (current.mailbox_id, current.calendar_id) != (link.mailbox_id, link.calendar_id):
            # Relinked to another calendar meanwhile: this delta state belongs to the old one.
            return current
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
        try:
            return await repo.save(current)
        except Conflict:
            fresh = await repo.get(link.key)
        except NotFound:
            fresh = None
        if fresh is None:
            return link  # unlinked meanwhile; the teardown cleans up
        current = fresh
    raise Conflict("the link kept changing while its delta state was being saved")
