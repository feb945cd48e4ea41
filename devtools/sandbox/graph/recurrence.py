"""Graph's patternedRecurrence: validation and expansion into occurrence dates.

Occurrences are computed on wall-clock dates in the series' time zone, as Exchange does, so a
weekly 09:00 meeting stays at 09:00 across daylight-saving switches.
"""

from __future__ import annotations

import calendar as _calendar
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import Any

DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
PATTERNS = {"daily", "weekly", "absoluteMonthly", "relativeMonthly", "absoluteYearly"}
RANGES = {"endDate", "noEnd", "numbered"}
INDEXES = ["first", "second", "third", "fourth", "last"]
#: hard stop for series without end, so a window far in the future cannot spin forever
_MAX_OCCURRENCES = 5000


class RecurrenceError(ValueError):
    """The recurrence is not one Exchange would store."""


def _normalise_pattern(pattern: dict[str, Any]) -> dict[str, Any]:
    ptype = pattern.get("type")
    if ptype not in PATTERNS:
        raise RecurrenceError(f"unsupported recurrence pattern type {ptype!r}")
    interval = pattern.get("interval", 1)
    if not isinstance(interval, int) or interval < 1 or interval > 99:
        raise RecurrenceError("interval must be between 1 and 99")
    days = [str(d).lower() for d in pattern.get("daysOfWeek") or []]
    if any(d not in DAYS for d in days):
        raise RecurrenceError("daysOfWeek holds an unknown day")
    if ptype in ("weekly", "relativeMonthly") and not days:
        raise RecurrenceError(f"{ptype} recurrence needs daysOfWeek")
    day_of_month = int(pattern.get("dayOfMonth") or 0)
    month = int(pattern.get("month") or 0)
    if ptype in ("absoluteMonthly", "absoluteYearly") and not 1 <= day_of_month <= 31:
        raise RecurrenceError("dayOfMonth must be between 1 and 31")
    if ptype == "absoluteYearly" and not 1 <= month <= 12:
        raise RecurrenceError("month must be between 1 and 12")
    index = str(pattern.get("index") or "first")
    if index not in INDEXES:
        raise RecurrenceError("index must be first, second, third, fourth or last")
    first_day = str(pattern.get("firstDayOfWeek") or "sunday").lower()
    if first_day not in DAYS:
        raise RecurrenceError("firstDayOfWeek is not a day")
    return {"type": ptype, "interval": interval, "month": month, "dayOfMonth": day_of_month,
            "daysOfWeek": days, "firstDayOfWeek": first_day, "index": index}


def _normalise_range(rng: dict[str, Any]) -> dict[str, Any]:
    rtype = rng.get("type")
    if rtype not in RANGES:
        raise RecurrenceError(f"unsupported recurrence range type {rtype!r}")
    try:
        start = date.fromisoformat(str(rng.get("startDate")))
    except ValueError as exc:
        raise RecurrenceError("range.startDate must be a date") from exc
    end = "0001-01-01"  # Graph's "no end date"
    if rtype == "endDate":
        try:
            end = date.fromisoformat(str(rng.get("endDate"))).isoformat()
        except ValueError as exc:
            raise RecurrenceError("range.endDate must be a date") from exc
        if end < start.isoformat():
            raise RecurrenceError("range.endDate is before range.startDate")
    count = int(rng.get("numberOfOccurrences") or 0)
    if rtype == "numbered" and count < 1:
        raise RecurrenceError("range.numberOfOccurrences must be positive")
    return {"type": rtype, "startDate": start.isoformat(), "endDate": end,
            "recurrenceTimeZone": str(rng.get("recurrenceTimeZone") or ""),
            "numberOfOccurrences": count if rtype == "numbered" else 0}


def normalise(raw: Any) -> dict[str, Any]:
    """Validate a recurrence from a request body and return it in Graph's full response shape."""
    if not isinstance(raw, dict):
        raise RecurrenceError("recurrence must be an object")
    pattern = raw.get("pattern") or {}
    rng = raw.get("range") or {}
    if not isinstance(pattern, dict) or not isinstance(rng, dict):
        raise RecurrenceError("recurrence needs pattern and range")
    return {"pattern": _normalise_pattern(pattern), "range": _normalise_range(rng)}


def _month_add(day: date, months: int) -> tuple[int, int]:
    total = day.year * 12 + day.month - 1 + months
    return total // 12, total % 12 + 1


def _nth_weekday(year: int, month: int, weekday: int, index: str) -> date | None:
    days = [d for d in range(1, _calendar.monthrange(year, month)[1] + 1)
            if date(year, month, d).weekday() == weekday]
    if index == "last":
        return date(year, month, days[-1])
    pos = INDEXES.index(index)
    return date(year, month, days[pos]) if pos < len(days) else None


def _daily(p: dict[str, Any], start: date) -> Iterator[date]:
    day = start
    while True:
        yield day
        day += timedelta(days=p["interval"])


def _weekly(p: dict[str, Any], start: date) -> Iterator[date]:
    wanted = sorted(DAYS.index(d) for d in p["daysOfWeek"])
    first = DAYS.index(p["firstDayOfWeek"])
    week_start = start - timedelta(days=(start.weekday() - first) % 7)
    while True:
        for offset in range(7):
            day = week_start + timedelta(days=offset)
            if day.weekday() in wanted and day >= start:
                yield day
        week_start += timedelta(weeks=p["interval"])


def _absolute_monthly(p: dict[str, Any], start: date) -> Iterator[date]:
    n = 0
    while True:
        y, m = _month_add(start, n)
        dom = min(p["dayOfMonth"], _calendar.monthrange(y, m)[1])
        day = date(y, m, dom)
        if day >= start:
            yield day
        n += p["interval"]


def _relative_monthly(p: dict[str, Any], start: date) -> Iterator[date]:
    n = 0
    wanted = sorted(DAYS.index(d) for d in p["daysOfWeek"])
    while True:
        y, m = _month_add(start, n)
        found = sorted(d for d in (_nth_weekday(y, m, w, p["index"]) for w in wanted) if d)
        for day in found:
            if day >= start:
                yield day
        n += p["interval"]


def _absolute_yearly(p: dict[str, Any], start: date) -> Iterator[date]:
    year = start.year
    while True:
        dom = min(p["dayOfMonth"], _calendar.monthrange(year, p["month"])[1])
        day = date(year, p["month"], dom)
        if day >= start:
            yield day
        year += p["interval"]


_PATTERN_DATES: dict[str, Callable[[dict[str, Any], date], Iterator[date]]] = {
    "daily": _daily, "weekly": _weekly, "absoluteMonthly": _absolute_monthly,
    "relativeMonthly": _relative_monthly, "absoluteYearly": _absolute_yearly,
}


def _candidates(rec: dict[str, Any]) -> Iterator[date]:
    """Every date the pattern produces from the range start, ascending, before range limits."""
    p = rec["pattern"]
    return _PATTERN_DATES[p["type"]](p, date.fromisoformat(rec["range"]["startDate"]))


def occurrence_dates(rec: dict[str, Any], until: date) -> Iterator[date]:
    """Occurrence dates of the series up to and including ``until`` (range limits applied)."""
    rng = rec["range"]
    end = date.fromisoformat(rng["endDate"]) if rng["type"] == "endDate" else None
    limit = rng["numberOfOccurrences"] if rng["type"] == "numbered" else None
    for n, day in enumerate(_candidates(rec)):
        if n >= _MAX_OCCURRENCES or day > until or (end and day > end) or (limit is not None and n >= limit):
            return
        yield day


def last_date(rec: dict[str, Any]) -> date | None:
    """The last occurrence date, or None for a series without end."""
    rng = rec["range"]
    if rng["type"] == "noEnd":
        return None
    horizon = date.fromisoformat(rng["endDate"]) if rng["type"] == "endDate" else date(9999, 12, 31)
    last = None
    for day in occurrence_dates(rec, horizon):
        last = day
    return last
