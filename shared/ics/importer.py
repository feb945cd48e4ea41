"""Turn a published calendar (ICS bytes) into the Outlook events the planner understands.

Read event by event (``shared.ics.reader``): a component that cannot be read is skipped,
counted and named (``ImportResult.skipped``), the rest of the calendar syncs.

Time zones: a VTIMEZONE in the file wins. Its TZID is renamed to a name derived from its
content before icalendar sees it, because icalendar keeps custom zones in a process-wide cache
keyed by TZID — without the rename one file's "W. Europe Standard Time" definition would
decide another file's times. TZIDs without a VTIMEZONE are resolved by
``shared.adapters.timezones.resolve_zone`` (IANA, Windows and Outlook display names, vendor
prefixes); an event whose zone cannot be resolved is skipped and reported, never guessed.
Floating times are read in X-WR-TIMEZONE, else in the resource's zone; a series written in UTC
is expanded in X-WR-TIMEZONE (``_series_in_calendar_zone``).

Same rules as the Graph path: busy status from X-MICROSOFT-CDO-BUSYSTATUS first, then TRANSP,
mapped onto Graph's showAs vocabulary, so the planner's ``blocks_time`` decides for both paths;
STATUS:CANCELLED and events without duration block nothing (the planner drops them).

Bounded work: events per calendar, occurrences per series and in total, the steps a rule may
take before it reaches the window, and a time budget. Rules recurring more often than hourly
are refused for blocking. Over a cap the whole import fails with ``IcsLimitExceeded`` (a link
error naming the cause), so nothing partial is written.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from shared.adapters.timezones import resolve_zone
from shared.domain import OutlookEvent, SkippedItem
from shared.ics.reader import (
    TIME_PROPERTIES,
    Block,
    IcsLimitExceeded,
    NotACalendar,
    check_is_calendar,
    decode,
    replace_tzid,
    split,
    split_line,
    tzids_of,
    unfold,
)

_BUSY = {"FREE": "free", "TENTATIVE": "tentative", "BUSY": "busy", "OOF": "oof",
         "WORKINGELSEWHERE": "workingElsewhere"}
_SUB_HOURLY = frozenset({"SECONDLY", "MINUTELY"})
_PERIOD = {"YEARLY": timedelta(days=365), "MONTHLY": timedelta(days=28), "WEEKLY": timedelta(days=7),
           "DAILY": timedelta(days=1), "HOURLY": timedelta(hours=1)}
_EXPANDING = ("BYMONTH", "BYWEEKNO", "BYYEARDAY", "BYMONTHDAY", "BYDAY", "BYHOUR", "BYMINUTE", "BYSECOND")
#: The time properties whose unreadable value makes an event unusable.
_ESSENTIAL = TIME_PROPERTIES | {"DURATION", "RRULE"}
_TZ_PREFIX = "timum-tz-"
#: Distinct VTIMEZONEs read per file (real calendars carry a handful).
_MAX_ZONES = 50


@dataclass(frozen=True)
class IcsLimits:
    max_events: int = 20_000                # VEVENTs in the file
    max_occurrences_per_series: int = 1_000  # occurrences of one UID inside the window
    max_occurrences: int = 20_000           # occurrences inside the window (each may be a timum write)
    max_rule_steps: int = 500_000           # rule iterations from DTSTART to the window's end
    time_budget: float = 20.0               # seconds of parsing and expanding
    max_decoded_bytes: int = 16 * 1024 * 1024


DEFAULT_LIMITS = IcsLimits()


@dataclass(frozen=True)
class ImportResult:
    events: list[OutlookEvent]
    skipped: list[SkippedItem]
    calendar_name: str


class _Budget:
    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._deadline = clock() + seconds
        self._seconds = seconds

    def check(self) -> None:
        if self._clock() > self._deadline:
            raise IcsLimitExceeded(f"reading the calendar took longer than {self._seconds:g} s",
                                   field="url", code="ics_parse_timeout")


def _moment(value: Any, zone: ZoneInfo) -> tuple[datetime, bool]:
    """(aware datetime, is a date) — floating times are read in the calendar's zone."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=zone)), False
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=zone), True
    raise ValueError("not a date or date-time")


def show_as(component: Any) -> str:
    """Graph's showAs for an ICS event: X-MICROSOFT-CDO-BUSYSTATUS first, then TRANSP."""
    status = str(component.get("X-MICROSOFT-CDO-BUSYSTATUS", "")).strip().upper()
    if status in _BUSY:
        return _BUSY[status]
    return "free" if str(component.get("TRANSP", "OPAQUE")).strip().upper() == "TRANSPARENT" else "busy"


def _offset(moment: datetime, zone: tzinfo) -> timedelta | None:
    return moment.astimezone(zone).utcoffset()


def _transition(zone: tzinfo, low: datetime, high: datetime) -> datetime:
    """The first minute after ``low`` (up to ``high``) whose offset differs from ``low``'s."""
    before = _offset(low, zone)
    while high - low > timedelta(minutes=1):
        middle = low + (high - low) / 2
        if _offset(middle, zone) == before:
            low = middle
        else:
            high = middle
    return high


def _same_clock(custom: tzinfo, zone: tzinfo, start: datetime, end: datetime) -> bool:
    """Whether two zones give the same offset at every instant from ``start`` to ``end``: weekly
    samples, and each change located to the minute in both."""
    step = timedelta(days=7)
    moment, previous = start, None
    while moment <= end + step:
        a, b = _offset(moment, custom), _offset(moment, zone)
        if a != b:
            return False
        if previous is not None and a != previous:
            low = moment - step
            if _transition(custom, low, moment) != _transition(zone, low, moment):
                return False
        previous, moment = a, moment + step
    return True


def _register_zones(blocks: list[Block], skipped: list[SkippedItem], *, window: tuple[datetime, datetime],
                    budget: _Budget) -> dict[str, str]:
    """Validate the file's VTIMEZONEs; TZID → the name events must use.

    The definition wins. Where it gives the same clock as the IANA zone its TZID or
    X-LIC-LOCATION names, over the whole window, that zone is used: equal by construction, and
    fast — dateutil evaluates a VTIMEZONE's 1601-based rules from 1601 on every conversion
    (seconds for a calendar). Otherwise its content-derived name.
    """
    from icalendar import Calendar, Timezone

    renamed: dict[str, str] = {}
    good: list[str] = []
    start, end = window[0] - timedelta(days=31), window[1] + timedelta(days=1)
    for block in blocks:
        if block.name != "VTIMEZONE":
            continue
        budget.check()
        ids = block.own_properties("TZID")
        if len(ids) != 1:
            skipped.append(SkippedItem("", f"time zone definition with {len(ids)} TZIDs"))
            continue
        tzid = split_line(ids[0])[2].strip()
        if tzid in renamed:
            continue  # a repeated definition: the first one counts
        if len(renamed) >= _MAX_ZONES:
            skipped.append(SkippedItem(tzid[:80], "too many time zone definitions"))
            continue
        body = "\r\n".join(line for line in block.lines if line is not ids[0])
        name = _TZ_PREFIX + hashlib.sha256(body.encode()).hexdigest()[:24]
        text = block.text().replace(ids[0], f"TZID:{name}", 1)
        try:
            component = Timezone.from_ical(text)
            assert isinstance(component, Timezone)
            custom = component.to_tz(lookup_tzid=False)
            locations = [split_line(line)[2] for line in block.own_properties("X-LIC-LOCATION")]
            candidates = dict.fromkeys(z for z in (resolve_zone(tzid), *map(resolve_zone, locations)) if z)
            equal = next((z for z in candidates if _same_clock(custom, ZoneInfo(z), start, end)), None)
        except Exception:  # icalendar raises many kinds on broken definitions
            skipped.append(SkippedItem(tzid[:80], f"time zone definition {tzid[:60]!r} unreadable"))
            continue
        if equal is not None:
            renamed[tzid] = equal
            continue
        renamed[tzid] = name
        good.append(text)
    if good:
        # Parsing them in a calendar registers each under its content-derived name.
        Calendar.from_ical("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n" + "".join(good) + "END:VCALENDAR\r\n")
    return renamed


def _zones_of(block: Block, renamed: dict[str, str]) -> tuple[dict[str, str], str]:
    """TZID mapping for the block's time properties, or ("", the unknown TZID)."""
    mapping: dict[str, str] = {}
    for line, name in zip(block.lines, block.names, strict=True):
        if name not in TIME_PROPERTIES:
            continue
        for tzid in tzids_of(line):
            if tzid in mapping:
                continue
            target = renamed.get(tzid) or resolve_zone(tzid)
            if target is None:
                return {}, tzid
            mapping[tzid] = target
    return mapping, ""


def _rule_problem(component: Any, window_end: datetime, limits: IcsLimits) -> str:
    """Why a series is refused before expanding it ("" if it may be expanded)."""
    rules = component.get("RRULE")
    if rules is None:
        return ""
    start = component.decoded("DTSTART")
    if not isinstance(start, datetime):
        start = datetime(start.year, start.month, start.day, tzinfo=UTC)
    elif start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    for rule in rules if isinstance(rules, list) else [rules]:
        freq = str((rule.get("FREQ") or [""])[0]).upper()
        if freq in _SUB_HOURLY or len(rule.get("BYMINUTE", [])) > 1 or len(rule.get("BYSECOND", [])) > 1:
            return "recurs more often than hourly"
        period = _PERIOD.get(freq)
        if period is None:
            return f"unknown recurrence frequency {freq[:20]!r}"
        interval = max(1, int((rule.get("INTERVAL") or [1])[0]))
        span = (window_end - start) / (period * interval)
        steps = max(span, 0.0) + 1
        count = rule.get("COUNT")
        if count:
            steps = min(steps, float(count[0]))
        for key in _EXPANDING:
            steps *= max(1, len(rule.get(key, [])))
        if steps > limits.max_rule_steps:
            return "recurrence too long to expand"
    return ""


def _occurrence_event(occ: Any, zone: ZoneInfo, series: set[str]) -> OutlookEvent:
    start, all_day = _moment(occ.decoded("DTSTART"), zone)
    if "DTEND" in occ:
        end, _ = _moment(occ.decoded("DTEND"), zone)
    elif "DURATION" in occ:
        end = start + occ.decoded("DURATION")
    else:
        # RFC 5545 3.6.1: a date lasts one day; a date-time without end or duration has no
        # length and blocks nothing (the planner drops events with end ≤ start, as for Graph).
        end = start + timedelta(days=1) if all_day else start
    if not all_day:
        # Instants in UTC: a zone built from the file's VTIMEZONE must not travel beyond the import.
        start, end = start.astimezone(UTC), end.astimezone(UTC)
    uid = str(occ["UID"])
    recurring = uid in series
    occurrence_id = uid
    if recurring:
        anchor = _moment(occ.decoded("RECURRENCE-ID"), zone)[0] if "RECURRENCE-ID" in occ else start
        occurrence_id = f"{uid}|{anchor.astimezone(UTC).isoformat()}"
    klass = str(occ.get("CLASS", "PUBLIC")).strip().upper()
    return OutlookEvent(
        id=occurrence_id, start=start, end=end, subject=str(occ.get("SUMMARY", "")), is_all_day=all_day,
        show_as=show_as(occ), sensitivity="private" if klass in ("PRIVATE", "CONFIDENTIAL") else "normal",
        is_cancelled=str(occ.get("STATUS", "")).strip().upper() == "CANCELLED",
        type="occurrence" if recurring else "singleInstance",
    )


def _read_event(block: Block, renamed: dict[str, str]) -> tuple[Any, str, str]:
    """(component, uid, "") or (None, id, reason) for one VEVENT block."""
    from icalendar import Event

    uids = block.own_properties("UID")
    uid = split_line(uids[0])[2].strip() if uids else ""
    if not uid:
        # RFC 5545 requires a UID; some generators omit it. Content-derived, so stable across fetches.
        uid = "nouid-" + hashlib.sha256(block.text().encode()).hexdigest()[:24]
    label = uid[:80]
    starts = block.own_properties("DTSTART")
    if len(starts) != 1:
        return None, label, "no start" if not starts else "DTSTART given twice"
    if len(block.own_properties("DTEND")) > 1:
        return None, label, "DTEND given twice"
    mapping, unknown = _zones_of(block, renamed)
    if unknown:
        return None, label, f"unknown time zone {unknown[:60]!r}"
    lines = [replace_tzid(line, mapping) if mapping and name in TIME_PROPERTIES else line
             for line, name in zip(block.lines, block.names, strict=True)]
    if not uids:
        lines.insert(1, f"UID:{uid}")
    try:
        component = Event.from_ical("\r\n".join(lines) + "\r\n")
    except Exception as exc:  # any parser failure costs this event only
        return None, label, f"unreadable ({type(exc).__name__})"
    bad = [name for name, _ in getattr(component, "errors", []) if str(name).upper() in _ESSENTIAL]
    if bad:
        return None, label, f"unreadable {bad[0]} value"
    try:
        component.decoded("DTSTART")
    except Exception:
        return None, label, "unreadable DTSTART value"
    return component, uid, ""


#: The values X-WR-TIMEZONE reinterprets in a series written in UTC.
_X_WR_SHIFTED = ("DTSTART", "DTEND", "RECURRENCE-ID", "EXDATE", "RDATE")


def _is_utc(value: Any) -> bool:
    """A UTC date-time, or a PERIOD with one (``x_wr_timezone`` tells UTC by the zone's name too)."""
    if isinstance(value, tuple):  # a PERIOD: (start, end or duration)
        return any(_is_utc(part) for part in value)
    return isinstance(value, datetime) and value.tzinfo is not None and (value.tzname() or "").upper() == "UTC"


def _to_zone(value: Any, zone: ZoneInfo) -> Any:
    if isinstance(value, tuple):
        return tuple(_to_zone(part, zone) for part in value)
    return value.astimezone(zone) if _is_utc(value) else value


def _series_in_calendar_zone(component: Any, zone: ZoneInfo) -> None:
    """Read a series written in UTC in the calendar's X-WR-TIMEZONE, as the producers mean it.

    Google Calendar (and others) export some series as ``DTSTART:…Z`` + RRULE next to
    ``X-WR-TIMEZONE:Europe/Berlin``. Strictly, such a series repeats at one UTC time, so it would
    slide an hour at every DST change; the producer and its users see it at one wall-clock time in
    the calendar's zone. So, as the ``x_wr_timezone`` package does before expanding: each UTC
    DTSTART, DTEND, RECURRENCE-ID, EXDATE and RDATE value becomes the same instant in that zone,
    and the rule then steps in local time. Exceptions (EXDATE) and overrides (RECURRENCE-ID)
    are written by the same producer the same way, so they keep matching their occurrences.
    No instant moves: a single event means what it meant."""
    from icalendar.prop import vDDDLists

    for name in _X_WR_SHIFTED:
        if name not in component:
            continue
        found = component[name]
        # EXDATE and RDATE may come on several lines, each a list of values.
        lines = [[v.dt for v in line.dts] if isinstance(line, vDDDLists) else [line.dt]
                 for line in (found if isinstance(found, list) else [found])]
        if not any(_is_utc(value) for line in lines for value in line):
            continue  # nothing in UTC: the property stays exactly as parsed
        del component[name]
        for line in lines:
            shifted = [_to_zone(value, zone) for value in line]
            component.add(name, shifted if name in ("EXDATE", "RDATE") else shifted[0])


def _series_problem(parts: list[Any], window_end: datetime, limits: IcsLimits) -> str:
    """Why a series (its master and overrides) is refused for blocking, or ""."""
    for component in parts:
        try:
            problem = _rule_problem(component, window_end, limits)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
            problem = "unreadable recurrence rule"
        if problem:
            return problem
    return ""


def parse_published(body: bytes, *, window_start: datetime, window_end: datetime,
                    default_zone: str = "Europe/Berlin", limits: IcsLimits = DEFAULT_LIMITS,
                    clock: Callable[[], float] = time.monotonic) -> ImportResult:
    """Blocking and CPU-bound: call it off the event loop (``shared.ics.source`` does)."""
    import recurring_ical_events
    from icalendar import Calendar

    budget = _Budget(limits.time_budget, clock)
    text = decode(body, max_bytes=limits.max_decoded_bytes)
    check_is_calendar(text)
    parsed = split(unfold(text))
    events_in_file = sum(1 for b in parsed.blocks if b.name == "VEVENT")
    if events_in_file > limits.max_events:
        raise IcsLimitExceeded(f"the calendar has {events_in_file} events, more than {limits.max_events}",
                               field="url", code="ics_too_many_events")
    if not parsed.blocks and not any(n == "VERSION" for n, _ in parsed.properties):
        raise NotACalendar("the calendar could not be read", field="url")
    props = dict(reversed(parsed.properties))  # the first value of each calendar property
    name = props.get("X-WR-CALNAME", "").strip()
    calendar_zone = resolve_zone(props.get("X-WR-TIMEZONE", ""))
    zone_name = calendar_zone or resolve_zone(default_zone) or "UTC"
    zone = ZoneInfo(zone_name)

    skipped: list[SkippedItem] = [SkippedItem("", f"{n} cut off") for n in parsed.broken if n == "VEVENT"]
    renamed = _register_zones(parsed.blocks, skipped, window=(window_start, window_end), budget=budget)
    groups: dict[str, list[Any]] = {}
    for block in parsed.blocks:
        if block.name != "VEVENT":
            continue
        budget.check()
        component, uid, reason = _read_event(block, renamed)
        if component is None:
            skipped.append(SkippedItem(uid, reason))
        else:
            groups.setdefault(uid, []).append(component)

    # recurring_ical_events stamps RECURRENCE-ID on every occurrence, even of single events;
    # only UIDs that really recur get per-occurrence ids (a moved single event keeps its id).
    series = {uid for uid, parts in groups.items()
              if any("RRULE" in c or "RDATE" in c or "RECURRENCE-ID" in c for c in parts)}
    events: list[OutlookEvent] = []
    for uid, parts in groups.items():
        budget.check()
        problem = _series_problem(parts, window_end, limits)
        if problem:
            skipped.append(SkippedItem(uid[:80], problem))
            continue
        calendar = Calendar()
        for component in parts:
            calendar.add_component(component)
        try:
            if calendar_zone is not None and uid in series:
                for component in parts:
                    _series_in_calendar_zone(component, zone)
            occurrences = recurring_ical_events.of(calendar).between(window_start, window_end)
            if len(occurrences) > limits.max_occurrences_per_series:
                raise IcsLimitExceeded(
                    f"a series has {len(occurrences)} occurrences in the sync window, more than "
                    f"{limits.max_occurrences_per_series}", field="url", code="ics_series_too_long")
            converted = [_occurrence_event(occ, zone, series) for occ in occurrences]
        except IcsLimitExceeded:
            raise
        except Exception as exc:  # one series' failure costs that series only
            skipped.append(SkippedItem(uid[:80], f"recurrence could not be expanded ({type(exc).__name__})"))
            continue
        events.extend(converted)
        if len(events) > limits.max_occurrences:
            raise IcsLimitExceeded(f"the calendar has more than {limits.max_occurrences} events in the sync "
                                   "window", field="url", code="ics_too_many_occurrences")
    events.sort(key=lambda e: (e.start, e.id))
    return ImportResult(events, skipped, name)
