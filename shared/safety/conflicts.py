"""The live conflict check timum calls right before it confirms a booking.

``POST /api/providers/{provider}/resources/{resource}/conflicts`` with ``{"start", "end"}``.

It reads the resource's linked Outlook calendar — and its block-only calendars, side by side —
live (``calendarView``) for that interval, applies the same blocking rules as the sync
(``blocks_time``) and leaves out our own booking events. The live read
has a hard budget (``LIVE_BUDGET_SECONDS`` of ``BUDGET_SECONDS``): past it, or when Graph or the
sign-in fails, the answer comes from the synced state (the status rows the last rounds wrote
that overlap the interval, filtered in the store) with ``checkedLive: false`` and the link's
freshness, so timum can decide — a remote failure never becomes a 5xx. ICS-import links have
nothing to read live: they answer from the last import and say how old it is.

In a fresh process the live read first waits, within its budget, for its code to load in a
thread (``shared.safety.preload``): imported on the event loop, it would block the loop and with
it the budget.

The decisions (what the request means, which events conflict, the answer's shape) are pure
functions; ``check_conflicts`` does the I/O around them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.context import Services
from shared.core.outlook_plan import StatusRow, blocks_time, is_own_event, show_as_status, slot_title
from shared.domain import Link, LinkKey, LinkMode, OutlookEvent, ProviderSettings, TitlePrivacy, is_block_only
from shared.errors import BadRequest, NotFound
from shared.repos.links import LEASES, LinkRepository, ProviderSettingsRepository
from shared.repos.sync_state import EventMapRepository
from shared.safety.freshness import age, synced_through
from shared.storage.base import encode_key

log = logging.getLogger(__name__)

#: The whole answer's budget; the live read gets what is left after a reserve for the fallback
#: (one filtered read of the status rows overlapping the interval; see bench/results.md).
BUDGET_SECONDS = 1.5
FALLBACK_RESERVE_SECONDS = 0.5
LIVE_BUDGET_SECONDS = BUDGET_SECONDS - FALLBACK_RESERVE_SECONDS
#: Longest interval one check may ask about: a booking, not a calendar export.
MAX_INTERVAL = timedelta(days=31)
#: Conflicts listed at most (the answer stays small; ``free`` is decided on all of them).
MAX_CONFLICTS = 100

#: Waits until the live read's code is loaded in this process (``shared.safety.preload.ready``).
Ready = Callable[[], Awaitable[object]]

#: Fire-and-forget live reads that outlived their budget: kept referenced until they end.
_ABANDONED: set[asyncio.Task[Any]] = set()


@dataclass(frozen=True)
class Busy:
    """One time that keeps the interval from being free."""

    start: datetime
    end: datetime
    show_as: str | None          # None when only the synced state is known (it keeps no status)
    all_day: bool = False
    title: str = ""


@dataclass(frozen=True)
class Answer:
    free: bool
    conflicts: tuple[Busy, ...]
    checked_live: bool
    synced_through: datetime | None
    age: timedelta | None
    #: why the answer is not live: "" | ics | needs_reconnect | timeout | graph_failed
    fallback_reason: str = ""
    calendars: tuple[CalendarAnswer, ...] = ()


# --- pure decisions ----------------------------------------------------------------------------

def _instant(value: Any, name: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise BadRequest(f"{name} must be an ISO 8601 date-time string", field=name)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError as exc:
        raise BadRequest(f"{name} is not an ISO 8601 date-time", field=name) from exc
    if parsed.tzinfo is None:
        raise BadRequest(f"{name} needs a UTC offset (e.g. 2027-03-01T09:00:00+01:00)", field=name)
    return parsed.astimezone(UTC)


def parse_interval(data: Any) -> tuple[datetime, datetime]:
    """``{"start", "end"}`` as UTC instants; refuses unknown fields, a reversed or empty interval
    and one longer than ``MAX_INTERVAL``."""
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object with start and end")
    unknown = sorted(set(data) - {"start", "end"})
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]}", field=unknown[0])
    start, end = _instant(data.get("start"), "start"), _instant(data.get("end"), "end")
    if end <= start:
        raise BadRequest("end must be after start", field="end")
    if end - start > MAX_INTERVAL:
        raise BadRequest(f"the interval may span at most {MAX_INTERVAL.days} days", field="end")
    return start, end


def live_conflicts(events: Iterable[OutlookEvent], settings: ProviderSettings, start: datetime,
                   end: datetime, own_event_ids: frozenset[str] = frozenset()) -> list[Busy]:
    """What in a live calendarView blocks [start, end): the sync's rules, exactly."""
    found: list[Busy] = []
    for event in events:
        if event.type == "seriesMaster" or is_own_event(event, own_event_ids) or event.is_cancelled:
            continue  # the same cases the planner never turns into blocked slots
        if not blocks_time(event, settings) or event.end <= event.start:
            continue
        if not (event.start < end and event.end > start):
            continue
        title = "" if settings.title_privacy is TitlePrivacy.NONE else slot_title(event, settings.title_privacy)
        found.append(Busy(event.start, event.end, show_as_status(event.show_as), event.is_all_day, title))
    return sorted(found, key=lambda b: (b.start, b.end))


def synced_conflicts(rows: Iterable[StatusRow], start: datetime, end: datetime) -> list[Busy]:
    """What the synced state says blocks [start, end): every status row holds a blocked slot
    (pending rows too — their slot may exist, and the safe side is to report it)."""
    found = [Busy(row.slot_start, row.slot_end, None) for row in rows
             if row.slot_start < end and row.slot_end > start]
    return sorted(found, key=lambda b: (b.start, b.end))


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def answer_json(answer: Answer) -> dict[str, Any]:
    conflicts: list[dict[str, Any]] = []
    for busy in answer.conflicts[:MAX_CONFLICTS]:
        item: dict[str, Any] = {"start": _iso(busy.start), "end": _iso(busy.end), "showAs": busy.show_as,
                                "allDay": busy.all_day}
        if busy.title:
            item["title"] = busy.title
        conflicts.append(item)
    return {"free": answer.free, "conflicts": conflicts, "checkedLive": answer.checked_live,
            "syncedThrough": _iso(answer.synced_through),
            "ageSeconds": None if answer.age is None else int(answer.age.total_seconds()),
            "fallbackReason": answer.fallback_reason or None,
            "calendars": [{"linkId": a.link.resource_id, "calendarName": a.link.calendar_name,
                           "calendarRole": "block_only" if a.link.block_only else "bookings",
                           "checkedLive": a.checked_live, "syncedThrough": _iso(a.synced_through),
                           "fallbackReason": a.fallback_reason or None, "conflicts": len(a.busy)}
                          for a in answer.calendars]}


# --- the check -----------------------------------------------------------------------------

async def _round_running(services: Services, key: LinkKey, now: datetime) -> bool:
    row = await services.storage.table(LEASES).get(encode_key(str(key)), "")
    if row is None or not row.get("owner"):
        return False
    expires = row.get("expires_at")
    return isinstance(expires, datetime) and expires > now


async def _live(services: Services, link: Link, start: datetime, end: datetime,
                ready: Ready | None) -> list[OutlookEvent]:
    if ready is not None:
        # Within the budget: the Graph client's code may still be loading in a fresh process.
        await ready()
    graph = await services.graph.for_link(link)
    try:
        return await graph.read_calendar_view(link.mailbox_id, link.calendar_id, start=start, end=end)
    finally:
        await graph.close()


def _abandon(task: asyncio.Task[Any]) -> None:
    # The read outlived its budget: it must not hold up the answer, but it is still finishing
    # its HTTP exchange (and closing its client), so it stays referenced until it ends.
    task.cancel()
    _ABANDONED.add(task)
    task.add_done_callback(_ABANDONED.discard)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


@dataclass(frozen=True)
class CalendarAnswer:
    link: Link
    busy: tuple[Busy, ...]
    checked_live: bool
    synced_through: datetime | None
    fallback_reason: str = ""


async def _check_calendar(services: Services, link: Link, settings: ProviderSettings, start: datetime,
                          end: datetime, now: datetime, live_budget: float, ready: Ready | None) -> CalendarAnswer:
    """One linked calendar of the resource: live if Graph answers within the budget, else synced."""
    if link.mode is LinkMode.ICS:
        reason = "ics"
    elif link.needs_reconnect:
        reason = "needs_reconnect"
    elif live_budget <= 0:
        reason = "timeout"  # the request spent the live share before the read could start
    else:
        running = asyncio.ensure_future(_round_running(services, link.key, now))
        live = asyncio.ensure_future(_live(services, link, start, end, ready))
        done, _ = await asyncio.wait({live}, timeout=live_budget)
        if not done:
            _abandon(live)
            reason = "timeout"
        elif (exc := live.exception()) is not None:
            reason = "graph_failed"
            log.info("live conflict check fell back to the synced state: %s",
                     getattr(exc, "code", type(exc).__name__))
        else:
            busy = live_conflicts(live.result(), settings, start, end)
            return CalendarAnswer(link, tuple(busy), True,
                                  synced_through(link, now, round_running=await running))
        running.cancel()
        running.add_done_callback(lambda t: t.cancelled() or t.exception())  # not needed any more
    # Only the rows that can overlap: the read must fit the budget's reserve at any map size.
    rows = await EventMapRepository(services.storage).overlapping(link.key, start, end)
    # Graph did not answer: what we know is what the last completed round saw, even for a push
    # link (its notifications may be failing just the same).
    return CalendarAnswer(link, tuple(synced_conflicts(rows, start, end)), False,
                          synced_through(link, now, round_running=True), reason)


def combine(answers: Sequence[CalendarAnswer], now: datetime) -> Answer:
    """The resource's answer from its calendars': busy if any is, live only if all are, known up
    to the least fresh one."""
    busy = sorted((b for a in answers for b in a.busy), key=lambda b: (b.start, b.end))
    throughs = [a.synced_through for a in answers]
    through = None if any(t is None for t in throughs) else min(t for t in throughs if t is not None)
    reason = next((a.fallback_reason for a in answers if a.fallback_reason), "")
    return Answer(not busy, tuple(busy), all(a.checked_live for a in answers), through, age(through, now), reason,
                  tuple(answers))


async def check_conflicts(services: Services, provider_id: str, resource_id: str, data: Any, *,
                          live_budget: float = LIVE_BUDGET_SECONDS, ready: Ready | None = None,
                          received: float | None = None) -> dict[str, Any]:
    """Answer a conflict check over the resource's linked calendar and its block-only calendars.
    ``BadRequest`` for a bad body, ``NotFound`` for a resource without any linked calendar; never
    an error for Graph's or the sign-in's failures. ``ready``: awaited before each live read, within
    its budget (the trigger passes ``preload.ready``; the twins need nothing loaded). ``received``:
    the event loop's time when the request arrived (default: now); the live budget counts from it."""
    from shared.ids import check_id

    loop = asyncio.get_running_loop()
    received = loop.time() if received is None else received
    key = LinkKey(check_id(provider_id, "provider"), check_id(resource_id, "resource"))
    if is_block_only(key):
        raise BadRequest("ask for the resource, not for one of its calendars", field="resource")
    start, end = parse_interval(data)
    repo = LinkRepository(services.storage)
    main, blocks, settings = await asyncio.gather(repo.get(key), repo.list_block_only(key.provider_id,
                                                                                      key.resource_id),
                                                  ProviderSettingsRepository(services.storage).get(key.provider_id))
    links = ([main] if main is not None else []) + sorted(blocks, key=lambda lk: lk.resource_id)
    if not links:
        raise NotFound(f"no linked calendar for resource {key.resource_id}")
    now = services.clock()
    # What the request has spent so far (a fresh process builds its storage clients first) is
    # taken from the live read's share: the budget holds for the whole answer.
    remaining = max(0.0, live_budget - (loop.time() - received))
    # Side by side: the budget holds for the whole answer, not per calendar.
    answers = await asyncio.gather(*(_check_calendar(services, link, settings, start, end, now, remaining, ready)
                                     for link in links))
    return answer_json(combine(answers, now))
