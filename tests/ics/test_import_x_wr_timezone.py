"""X-WR-TIMEZONE for series written in UTC (Google Calendar exports and others): a series keeps
its wall-clock time in the calendar's zone across DST changes; its EXDATEs and RECURRENCE-IDs,
written in UTC the same way, keep matching; nothing else moves.

Expected times are computed by hand here (Europe/Berlin: CEST +02:00 until 25 Oct 2026 03:00,
CET +01:00 until 28 Mar 2027 02:00, CEST again after), independent of the corpus test's oracle.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.domain import OutlookEvent
from shared.ics.importer import parse_published

CORPUS = Path(__file__).parent / "corpus"
WINDOW = (datetime(2026, 10, 1, tzinfo=UTC), datetime(2027, 4, 30, tzinfo=UTC))


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def _import(body: bytes, *, default_zone: str = "Europe/Berlin") -> list[OutlookEvent]:
    result = parse_published(body, window_start=WINDOW[0], window_end=WINDOW[1], default_zone=default_zone)
    assert result.skipped == []
    return result.events


def _by_subject(events: list[OutlookEvent], subject: str) -> list[tuple[datetime, datetime]]:
    return [(e.start.astimezone(UTC), e.end.astimezone(UTC)) for e in events if e.subject == subject]


def _calendar(events: str, *, x_wr_timezone: str | None) -> bytes:
    head = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Google Inc//Google Calendar 70.9054//EN\r\n"
    if x_wr_timezone is not None:
        head += f"X-WR-TIMEZONE:{x_wr_timezone}\r\n"
    return (head + events.replace("\n", "\r\n") + "END:VCALENDAR\r\n").encode()


def test_the_google_export_keeps_its_series_at_their_wall_clock_times() -> None:
    events = _import((CORPUS / "google-utc-series-x-wr-timezone.ics").read_bytes())
    team = _by_subject(events, "Teamrunde")
    starts = [start for start, _ in team]
    # Mondays 09:00 Berlin: 07:00 UTC in CEST, 08:00 UTC in CET, 07:00 UTC again from 29 March.
    assert _utc(2026, 10, 5, 7) in starts and _utc(2026, 10, 19, 7) in starts
    assert _utc(2026, 10, 26, 8) in starts and _utc(2026, 10, 26, 7) not in starts
    assert _utc(2027, 3, 22, 8) in starts and _utc(2027, 3, 29, 7) in starts and _utc(2027, 4, 26, 7) in starts
    assert all(end - start == timedelta(hours=1) for start, end in team)
    # EXDATE 12 Oct (07:00Z, CEST) and 2 Nov (08:00Z, CET) both hit their occurrence.
    assert not [s for s in starts if s.date() in (_utc(2026, 10, 12).date(), _utc(2026, 11, 2).date())]
    # 9 Nov is moved to 14:00 Berlin by a RECURRENCE-ID written as 08:00Z: only the moved one is there.
    assert not [s for s in starts if s.date() == _utc(2026, 11, 9).date()]
    assert _by_subject(events, "Teamrunde (verschoben)") == [(_utc(2026, 11, 9, 13), _utc(2026, 11, 9, 14))]
    # 30 Mondays from 5 Oct 2026 to 26 Apr 2027, less two exceptions and the moved one.
    assert len(team) == 30 - 3
    # Tue/Thu 17:30–18:15 Berlin, six times from 20 October.
    assert [s for s, _ in _by_subject(events, "Supervision")] == [
        _utc(2026, 10, 20, 15, 30), _utc(2026, 10, 22, 15, 30), _utc(2026, 10, 27, 16, 30),
        _utc(2026, 10, 29, 16, 30), _utc(2026, 11, 3, 16, 30), _utc(2026, 11, 5, 16, 30)]
    # A single event in UTC is an instant: untouched.
    assert _by_subject(events, "Zahnarzt") == [(_utc(2026, 11, 26, 14, 30), _utc(2026, 11, 26, 15, 30))]


def test_without_x_wr_timezone_a_utc_series_stays_at_its_utc_time() -> None:
    # RFC 5545 as written: the resource's zone (the default) reads floating times only.
    body = _calendar("""BEGIN:VEVENT
UID:utc-series
DTSTART:20261019T070000Z
DTEND:20261019T080000Z
RRULE:FREQ=WEEKLY;COUNT=3
SUMMARY:Frühdienst
END:VEVENT
""", x_wr_timezone=None)
    assert [s for s, _ in _by_subject(_import(body), "Frühdienst")] == [
        _utc(2026, 10, 19, 7), _utc(2026, 10, 26, 7), _utc(2026, 11, 2, 7)]


def test_value_lists_periods_and_windows_names_are_read_in_the_calendars_zone() -> None:
    # New York (EDT −4 until 1 Nov 2026, EST −5 after), named the way Outlook-made exports do.
    body = _calendar("""BEGIN:VEVENT
UID:ny-series
DTSTART:20261026T130000Z
DTEND:20261026T140000Z
RRULE:FREQ=DAILY;COUNT=12
EXDATE:20261103T140000Z,20261104T140000Z
RDATE;VALUE=PERIOD:20261110T150000Z/PT2H
SUMMARY:Sprechstunde
END:VEVENT
""", x_wr_timezone="Eastern Standard Time")
    starts = [s for s, _ in _by_subject(_import(body), "Sprechstunde")]
    # Daily at 09:00 New York: 13:00 UTC through 31 Oct, 14:00 UTC from 2 Nov (1 Nov is 14:00 too).
    assert starts[:6] == [_utc(2026, 10, d, 13) for d in range(26, 32)]
    assert _utc(2026, 11, 1, 14) in starts and _utc(2026, 11, 2, 14) in starts
    # One EXDATE line with two values in UTC, both matching the shifted occurrences.
    assert not [s for s in starts if s.day in (3, 4) and s.month == 11]
    # The RDATE period's UTC start is an instant: 10:00 New York on 10 Nov.
    assert _utc(2026, 11, 10, 15) in starts
    assert len(starts) == 12 - 2 + 1


def test_a_series_with_its_own_zone_and_a_single_utc_event_do_not_move() -> None:
    body = _calendar("""BEGIN:VEVENT
UID:zoned
DTSTART;TZID=America/New_York:20261019T090000
DTEND;TZID=America/New_York:20261019T100000
RRULE:FREQ=WEEKLY;COUNT=2
SUMMARY:Zoned
END:VEVENT
BEGIN:VEVENT
UID:single
DTSTART:20261102T073000Z
DTEND:20261102T080000Z
SUMMARY:Single
END:VEVENT
""", x_wr_timezone="Europe/Berlin")
    events = _import(body)
    assert [s for s, _ in _by_subject(events, "Zoned")] == [_utc(2026, 10, 19, 13), _utc(2026, 10, 26, 13)]
    assert _by_subject(events, "Single") == [(_utc(2026, 11, 2, 7, 30), _utc(2026, 11, 2, 8))]
    [single] = [e for e in events if e.subject == "Single"]
    assert single.id == "single" and single.type == "singleInstance"


def test_occurrence_ids_stay_the_instants_the_producer_wrote() -> None:
    """The id of an occurrence is its original start in UTC: an override's RECURRENCE-ID written
    in UTC names the same occurrence as the master's expansion (no duplicate, no orphan)."""
    events = _import((CORPUS / "google-utc-series-x-wr-timezone.ics").read_bytes())
    uid = "3v1c8o2b7k4d9mq5t6e0rj2teamrunde@google.com"
    ids = {e.id for e in events if e.id.startswith(uid)}
    assert f"{uid}|2026-11-09T08:00:00+00:00" in ids      # the moved occurrence, by its RECURRENCE-ID
    assert f"{uid}|2026-11-16T08:00:00+00:00" in ids      # a plain one after the change
    assert len(ids) == len([e for e in events if e.id.startswith(uid)])
