"""Time zone names as Exchange speaks them.

Graph accepts and returns Windows zone names ("W. Europe Standard Time") as well as IANA names
in ``start/end.timeZone`` and ``Prefer: outlook.timezone``; published ICS feeds carry Windows
TZIDs. The table is CLDR's windowsZones (territory 001): every Windows name, generated from the
CLDR data the icalendar package ships, not written by hand.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON as _CLDR_WINDOWS_ZONES

#: Every Windows zone name Exchange accepts → its IANA zone: CLDR's windowsZones (territory 001),
#: as the icalendar package ships it (regenerated there from CLDR), plus Graph's own UTC spellings.
WINDOWS_TO_IANA: dict[str, str] = {
    **_CLDR_WINDOWS_ZONES,
    "UTC": "UTC",
    "Coordinated Universal Time": "UTC",
}

#: IANA zones that CLDR maps onto a Windows zone without being its primary city
_IANA_ALIASES: dict[str, str] = {
    "Europe/Vienna": "W. Europe Standard Time",
    "Europe/Zurich": "W. Europe Standard Time",
    "Europe/Amsterdam": "W. Europe Standard Time",
    "Europe/Rome": "W. Europe Standard Time",
    "Europe/Stockholm": "W. Europe Standard Time",
    "Europe/Oslo": "W. Europe Standard Time",
    "Europe/Luxembourg": "W. Europe Standard Time",
    "Europe/Brussels": "Romance Standard Time",
    "Europe/Madrid": "Romance Standard Time",
    "Europe/Copenhagen": "Romance Standard Time",
    "Europe/Prague": "Central Europe Standard Time",
    "Europe/Dublin": "GMT Standard Time",
    "Europe/Lisbon": "GMT Standard Time",
    "Europe/Kyiv": "FLE Standard Time",
    "Europe/Helsinki": "FLE Standard Time",
    "Asia/Kolkata": "India Standard Time",
    "Etc/UTC": "UTC",
}

IANA_TO_WINDOWS: dict[str, str] = {**{v: k for k, v in WINDOWS_TO_IANA.items() if k != "Coordinated Universal Time"},
                                   **_IANA_ALIASES}


class UnknownTimeZone(ValueError):
    """A zone name Exchange would refuse."""


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The zone behind a Windows or IANA name (Windows names are matched case-insensitively)."""
    if not name:
        raise UnknownTimeZone(name)
    iana = WINDOWS_TO_IANA.get(name)
    if iana is None:
        low = name.lower()
        iana = next((v for k, v in WINDOWS_TO_IANA.items() if k.lower() == low), name)
    try:
        return ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UnknownTimeZone(name) from exc


def windows_name(name: str) -> str:
    """The Windows name for a zone given either way (used as TZID in published ICS)."""
    if name in WINDOWS_TO_IANA:
        return name
    return IANA_TO_WINDOWS.get(name, name)


def to_local(moment: datetime, zone_name: str) -> datetime:
    """An aware instant as naive wall-clock time in the zone."""
    return moment.astimezone(zone(zone_name)).replace(tzinfo=None)


def from_local(wall: datetime, zone_name: str) -> datetime:
    """Naive wall-clock time in the zone as an aware UTC instant (gaps resolve forward, as Exchange does)."""
    aware = wall.replace(tzinfo=zone(zone_name))
    # A wall time inside a spring-forward gap does not round-trip; take the later offset.
    if aware.astimezone(UTC).astimezone(aware.tzinfo).replace(tzinfo=None) != wall:
        aware = wall.replace(tzinfo=zone(zone_name), fold=1)
    return aware.astimezone(UTC)


def yearly_rules(zone_name: str, year: int) -> list[dict[str, object]]:
    """The zone's standard/daylight switches in ``year`` as VTIMEZONE-style yearly rules.

    Each rule: ``kind`` ('STANDARD'/'DAYLIGHT'), ``month``, ``byday`` (e.g. '-1SU'), ``time``
    (local wall time before the switch), ``offset_from``/``offset_to`` (timedelta). A zone without
    DST yields one STANDARD rule with ``month`` 0.
    """
    tz = zone(zone_name)
    start = datetime(year, 1, 1, tzinfo=UTC)
    rules: list[dict[str, object]] = []
    prev = start.astimezone(tz).utcoffset()
    moment = start
    # Hourly stepping finds each transition; a year has at most two for the zones we map.
    while moment.year == year:
        nxt = moment + timedelta(hours=1)
        off = nxt.astimezone(tz).utcoffset()
        if off != prev and prev is not None and off is not None:
            wall_before = (nxt.astimezone(UTC) + prev).replace(tzinfo=None)
            wall_before = wall_before.replace(minute=0, second=0)
            day = wall_before.day
            month_days = ((date(year + (wall_before.month // 12), wall_before.month % 12 + 1, 1))
                          - timedelta(days=1)).day
            ordinal = -1 if day + 7 > month_days else (day - 1) // 7 + 1
            weekday = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"][wall_before.weekday()]
            dst = nxt.astimezone(tz).dst()
            rules.append({"kind": "DAYLIGHT" if dst else "STANDARD", "month": wall_before.month,
                          "byday": f"{ordinal}{weekday}", "time": wall_before.time(),
                          "offset_from": prev, "offset_to": off})
            prev = off
        moment = nxt
    if not rules:
        off = start.astimezone(tz).utcoffset() or timedelta(0)
        rules.append({"kind": "STANDARD", "month": 0, "byday": "", "time": datetime.min.time(),
                      "offset_from": off, "offset_to": off})
    return rules
