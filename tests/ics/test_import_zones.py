"""Time zones of imported calendars: the file's VTIMEZONE wins, one file's definitions never
leak into another (icalendar caches custom zones process-wide), names are resolved, not guessed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.adapters.timezones import resolve_zone, to_iana
from shared.ics.importer import parse_published

WINDOW = (datetime(2026, 10, 1, tzinfo=UTC), datetime(2027, 4, 30, tzinfo=UTC))


def _calendar(tzid: str, *, offset: str | None) -> bytes:
    zone = "" if offset is None else (
        f"BEGIN:VTIMEZONE\r\nTZID:{tzid}\r\nBEGIN:STANDARD\r\nDTSTART:16010101T000000\r\n"
        f"TZOFFSETFROM:{offset}\r\nTZOFFSETTO:{offset}\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n")
    return (f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\n{zone}BEGIN:VEVENT\r\nUID:x\r\n"
            f'DTSTART;TZID="{tzid}":20261105T100000\r\nDTEND;TZID="{tzid}":20261105T110000\r\n'
            "END:VEVENT\r\nEND:VCALENDAR\r\n").encode()


def _start(body: bytes) -> datetime:
    result = parse_published(body, window_start=WINDOW[0], window_end=WINDOW[1])
    assert len(result.events) == 1, result.skipped
    return result.events[0].start.astimezone(UTC)


def test_the_files_definition_wins_and_does_not_leak() -> None:
    # A file that defines "W. Europe Standard Time" as +05:00 gets +05:00 ...
    assert _start(_calendar("W. Europe Standard Time", offset="+0500")) == datetime(2026, 11, 5, 5, 0, tzinfo=UTC)
    # ... and the next file without a definition still gets Berlin (+01:00 in November).
    assert _start(_calendar("W. Europe Standard Time", offset=None)) == datetime(2026, 11, 5, 9, 0, tzinfo=UTC)
    # The same for a custom name: defined in one file, unknown (and skipped) in the next.
    assert _start(_calendar("Custom Zone", offset="+0300")) == datetime(2026, 11, 5, 7, 0, tzinfo=UTC)
    result = parse_published(_calendar("Custom Zone", offset=None), window_start=WINDOW[0], window_end=WINDOW[1])
    assert result.events == [] and [s.reason for s in result.skipped] == ["unknown time zone 'Custom Zone'"]


def test_an_iana_named_definition_that_differs_still_wins() -> None:
    assert _start(_calendar("Europe/Berlin", offset="+0300")) == datetime(2026, 11, 5, 7, 0, tzinfo=UTC)


@pytest.mark.parametrize(("name", "iana"), [
    ("W. Europe Standard Time", "Europe/Berlin"),
    ("(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna", "Europe/Berlin"),
    ("(UTC+01:00) Amsterdam, Berlin, Bern, Rom, Stockholm, Wien", "Europe/Berlin"),
    ("(GMT+01.00) Amsterdam / Berlin / Bern / Rome / Stockholm / Vienna", "Europe/Berlin"),
    ("(UTC-05:00) Eastern Time (US & Canada)", "America/New_York"),
    ("(UTC-08:00) Pacific Time (US & Canada)", "America/Los_Angeles"),
    ("(UTC+00:00) Dublin, Edinburgh, Lisbon, London", "Europe/London"),
    ("(UTC) Dublin, Edinburgh, Lisbon, London", "Europe/London"),
    ("(UTC+10:00) Canberra, Melbourne, Sydney", "Australia/Sydney"),
    ("(UTC+05:30) Chennai, Kolkata, Mumbai, New Delhi", "Asia/Kolkata"),
    ("(UTC+02:00) Helsinki, Kyiv, Riga, Sofia, Tallinn, Vilnius", "Europe/Kyiv"),
    ("(UTC-07:00) Chihuahua, La Paz, Mazatlan", "America/Mazatlan"),
    ("(UTC) Coordinated Universal Time", "UTC"),
    ("/mozilla.org/20070129_1/Europe/Paris", "Europe/Paris"),
    ("/softwarestudio.org/Tzfile/America/New_York", "America/New_York"),
    ("Europe/Kiev", "Europe/Kyiv"),
    ('"Europe/Berlin"', "Europe/Berlin"),
])
def test_names_producers_write_are_resolved(name: str, iana: str) -> None:
    assert resolve_zone(name) == iana


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "(UTC+01:00) Nowhere", "(UTC+03:00) Berlin",
                                  "Customized Time Zone", "tzone://Microsoft/Custom", "", "x" * 500])
def test_unknown_names_are_not_guessed(name: str) -> None:
    assert resolve_zone(name) is None


def test_graph_uses_the_same_resolver() -> None:
    assert to_iana("(UTC+01:00) Brussels, Copenhagen, Madrid, Paris") == "Europe/Paris"
    assert to_iana("W. Europe Standard Time") == "Europe/Berlin"
