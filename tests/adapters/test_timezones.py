"""Windows ↔ IANA table: every entry is a real zone, and zones mapped together keep the same clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from shared.adapters import timezones

#: Dates on both sides of the northern and southern DST switches.
PROBES = [datetime(2025, month, 15, 12, tzinfo=UTC) for month in (1, 4, 7, 10)]


def offsets(zone: str) -> list[timedelta | None]:
    tz = ZoneInfo(zone)
    return [probe.astimezone(tz).utcoffset() for probe in PROBES]


def test_every_iana_name_in_the_tables_exists() -> None:
    for iana in [*timezones.WINDOWS_TO_IANA.values(), *timezones.IANA_TO_WINDOWS]:
        ZoneInfo(iana)


def test_windows_names_round_trip_through_their_primary_zone() -> None:
    for windows, iana in timezones.WINDOWS_TO_IANA.items():
        assert timezones.windows_to_iana(windows) == iana
        assert timezones.iana_to_windows(iana) == windows, windows


def test_zones_filed_under_one_windows_name_keep_its_clock() -> None:
    for iana, windows in timezones.IANA_TO_WINDOWS.items():
        primary = timezones.WINDOWS_TO_IANA[windows]
        assert offsets(iana) == offsets(primary), f"{iana} does not keep {windows}'s time"


@pytest.mark.parametrize(("windows", "iana"), [
    ("W. Europe Standard Time", "Europe/Berlin"),
    ("Romance Standard Time", "Europe/Paris"),
    ("Central Europe Standard Time", "Europe/Budapest"),
    ("Central European Standard Time", "Europe/Warsaw"),
    ("GMT Standard Time", "Europe/London"),
    ("FLE Standard Time", "Europe/Kyiv"),
    ("GTB Standard Time", "Europe/Bucharest"),
    ("Turkey Standard Time", "Europe/Istanbul"),
    ("Russian Standard Time", "Europe/Moscow"),
    ("Eastern Standard Time", "America/New_York"),
    ("Central Standard Time", "America/Chicago"),
    ("Mountain Standard Time", "America/Denver"),
    ("US Mountain Standard Time", "America/Phoenix"),
    ("Pacific Standard Time", "America/Los_Angeles"),
    ("Alaskan Standard Time", "America/Anchorage"),
    ("Hawaiian Standard Time", "Pacific/Honolulu"),
    ("Atlantic Standard Time", "America/Halifax"),
    ("Newfoundland Standard Time", "America/St_Johns"),
    ("Central Standard Time (Mexico)", "America/Mexico_City"),
    ("SA Pacific Standard Time", "America/Bogota"),
    ("E. South America Standard Time", "America/Sao_Paulo"),
    ("Argentina Standard Time", "America/Argentina/Buenos_Aires"),
    ("Pacific SA Standard Time", "America/Santiago"),
    ("China Standard Time", "Asia/Shanghai"),
    ("Tokyo Standard Time", "Asia/Tokyo"),
    ("Korea Standard Time", "Asia/Seoul"),
    ("India Standard Time", "Asia/Kolkata"),
    ("Singapore Standard Time", "Asia/Singapore"),
    ("SE Asia Standard Time", "Asia/Bangkok"),
    ("Arabian Standard Time", "Asia/Dubai"),
    ("Arab Standard Time", "Asia/Riyadh"),
    ("Israel Standard Time", "Asia/Jerusalem"),
    ("Iran Standard Time", "Asia/Tehran"),
    ("Pakistan Standard Time", "Asia/Karachi"),
    ("Nepal Standard Time", "Asia/Kathmandu"),
    ("Taipei Standard Time", "Asia/Taipei"),
    ("AUS Eastern Standard Time", "Australia/Sydney"),
    ("New Zealand Standard Time", "Pacific/Auckland"),
    ("UTC", "UTC"),
])
def test_common_zones(windows: str, iana: str) -> None:
    assert timezones.windows_to_iana(windows) == iana
    assert timezones.to_iana(windows) == iana


@pytest.mark.parametrize(("iana", "windows"), [
    ("Europe/Vienna", "W. Europe Standard Time"),
    ("Europe/Zurich", "W. Europe Standard Time"),
    ("Europe/Amsterdam", "W. Europe Standard Time"),
    ("Europe/Madrid", "Romance Standard Time"),
    ("Europe/Prague", "Central Europe Standard Time"),
    ("Europe/Lisbon", "GMT Standard Time"),
    ("Europe/Kiev", "FLE Standard Time"),
    ("Asia/Calcutta", "India Standard Time"),
    ("America/Toronto", "Eastern Standard Time"),
    ("Asia/Hong_Kong", "China Standard Time"),
])
def test_territory_zones_and_old_spellings_map_to_windows(iana: str, windows: str) -> None:
    assert timezones.iana_to_windows(iana) == windows
    assert timezones.to_graph_zone(iana) == windows


def test_lookups_are_forgiving_and_unknowns_are_none() -> None:
    assert timezones.windows_to_iana("w. europe standard time") == "Europe/Berlin"
    assert timezones.to_iana("  Europe/Vienna ") == "Europe/Vienna"
    assert timezones.to_iana("Asia/Calcutta") == "Asia/Kolkata"
    assert timezones.to_iana("tzone://Microsoft/Utc") == "UTC"
    assert timezones.to_iana("Klingon Standard Time") is None
    assert timezones.to_iana("../../etc/passwd") is None
    assert timezones.to_iana("") is None
    assert timezones.iana_to_windows("Antarctica/Troll") is None
    assert timezones.to_graph_zone("Antarctica/Troll") == "Antarctica/Troll"
