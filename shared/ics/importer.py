"""Turn a published Outlook calendar (ICS bytes) into the Outlook events the planner understands.

Recurring series are expanded inside the window with ``recurring_ical_events`` (EXDATE and
RECURRENCE-ID exceptions honoured). Each occurrence gets a stable id (UID + original start),
so the same occurrence maps to the same blocked slot on every fetch. Busy semantics follow
Outlook's own properties: X-MICROSOFT-CDO-BUSYSTATUS first, then TRANSP; STATUS:CANCELLED
unblocks. Broken components are skipped and counted, never fatal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.domain import OutlookEvent
from shared.errors import BadRequest

_BUSY = {"FREE": "free", "TENTATIVE": "tentative", "BUSY": "busy", "OOF": "oof",
         "WORKINGELSEWHERE": "workingElsewhere"}


@dataclass(frozen=True)
class ImportResult:
    events: list[OutlookEvent]
    skipped: int
    calendar_name: str


def _zone(name: str, fallback: str) -> ZoneInfo:
    from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

    for candidate in (name, WINDOWS_TO_OLSON.get(name, ""), fallback):
        if not candidate:
            continue
        try:
            return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return ZoneInfo("UTC")


def _moment(value: Any, zone: ZoneInfo) -> tuple[datetime, bool]:
    """(aware datetime, is a date) — floating times are read in the calendar's zone."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=zone)), False
    if isinstance(value, date):
        return datetime.combine(value, time.min, tzinfo=zone), True
    raise ValueError("not a date or date-time")


def _show_as(component: Any) -> str:
    status = str(component.get("X-MICROSOFT-CDO-BUSYSTATUS", "")).upper()
    if status in _BUSY:
        return _BUSY[status]
    return "free" if str(component.get("TRANSP", "OPAQUE")).upper() == "TRANSPARENT" else "busy"


def parse_published(body: bytes, *, window_start: datetime, window_end: datetime,
                    default_zone: str = "Europe/Berlin") -> ImportResult:
    import recurring_ical_events
    from icalendar import Calendar

    head = body.lstrip()[:200].lower()
    if not head.startswith(b"begin:vcalendar"):
        # Outlook serves an HTML page instead of the calendar to non-browser clients.
        hint = " (an HTML page — is the link a published ICS link?)" if b"<html" in head or b"<!doctype" in head else ""
        raise BadRequest(f"the link does not return a calendar{hint}", field="url")
    try:
        cal = Calendar.from_ical(body)
    except ValueError as exc:
        raise BadRequest("the calendar could not be read", field="url") from exc
    zone = _zone(str(cal.get("X-WR-TIMEZONE", "")), default_zone)
    name = str(cal.get("X-WR-CALNAME", ""))

    skipped = 0
    # recurring_ical_events stamps RECURRENCE-ID on every occurrence, even of single events;
    # only UIDs that really recur get per-occurrence ids (a moved single event keeps its id).
    series = {str(c.get("UID")) for c in cal.walk("VEVENT")
              if "RRULE" in c or "RDATE" in c or "RECURRENCE-ID" in c}
    good = Calendar()
    for key, value in cal.property_items(recursive=False):
        if key not in ("BEGIN", "END"):
            good.add(key, value)
    for component in cal.subcomponents:
        if component.name == "VEVENT" and (getattr(component, "errors", None) or "DTSTART" not in component
                                           or "UID" not in component):
            skipped += 1
            continue
        good.add_component(component)

    events: list[OutlookEvent] = []
    try:
        occurrences = recurring_ical_events.of(good, skip_bad_series=True).between(window_start, window_end)
    except Exception as exc:  # noqa: BLE001 - the library raises many kinds on broken input
        raise BadRequest(f"the calendar's recurrences could not be expanded ({type(exc).__name__})",
                         field="url") from exc
    for occ in occurrences:
        try:
            start, all_day = _moment(occ.decoded("DTSTART"), zone)
            if "DTEND" in occ:
                end, _ = _moment(occ.decoded("DTEND"), zone)
            elif "DURATION" in occ:
                end = start + occ.decoded("DURATION")
            else:
                end = start + (timedelta(days=1) if all_day else timedelta(0))
            uid = str(occ["UID"])
            anchor = _moment(occ.decoded("RECURRENCE-ID"), zone)[0] if "RECURRENCE-ID" in occ else start
            recurring = uid in series
            occurrence_id = f"{uid}|{anchor.astimezone(UTC).isoformat()}" if recurring else uid
            if all_day:
                # All-day: midnight to midnight in the calendar's zone, which the planner expects.
                start = start.replace(tzinfo=zone)
                end = end.replace(tzinfo=zone)
            if end <= start:
                end = start + timedelta(minutes=1) if not all_day else start + timedelta(days=1)
            klass = str(occ.get("CLASS", "PUBLIC")).upper()
            events.append(OutlookEvent(
                id=occurrence_id, start=start, end=end, subject=str(occ.get("SUMMARY", "")), is_all_day=all_day,
                show_as=_show_as(occ),
                sensitivity="private" if klass in ("PRIVATE", "CONFIDENTIAL") else "normal",
                is_cancelled=str(occ.get("STATUS", "")).upper() == "CANCELLED",
                type="occurrence" if recurring else "singleInstance",
            ))
        except (KeyError, ValueError, TypeError, AttributeError):
            skipped += 1
    events.sort(key=lambda e: (e.start, e.id))
    return ImportResult(events, skipped, name)
