"""Windows ↔ IANA time zone names.

Graph reports a mailbox's zone as a Windows name ("W. Europe Standard Time"); the service talks
IANA everywhere. The table follows CLDR's ``windowsZones`` mapping: the territory "001" entry
gives the IANA zone for a Windows name; the per-territory entries say which Windows name an
IANA zone belongs to. Canonical current IANA names are used ("Europe/Kyiv", "Asia/Kolkata"),
and the older CLDR spellings are accepted as input.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

#: Windows name → IANA zone (CLDR territory "001").
WINDOWS_TO_IANA: dict[str, str] = {
    # --- UTC and fixed offsets
    "UTC": "UTC",
    "Dateline Standard Time": "Etc/GMT+12",
    "UTC-11": "Etc/GMT+11",
    "UTC-09": "Etc/GMT+9",
    "UTC-08": "Etc/GMT+8",
    "UTC-02": "Etc/GMT+2",
    "UTC+12": "Etc/GMT-12",
    "UTC+13": "Etc/GMT-13",
    # --- Americas
    "Aleutian Standard Time": "America/Adak",
    "Hawaiian Standard Time": "Pacific/Honolulu",
    "Alaskan Standard Time": "America/Anchorage",
    "Pacific Standard Time (Mexico)": "America/Tijuana",
    "Pacific Standard Time": "America/Los_Angeles",
    "US Mountain Standard Time": "America/Phoenix",
    "Mountain Standard Time (Mexico)": "America/Mazatlan",
    "Mountain Standard Time": "America/Denver",
    "Yukon Standard Time": "America/Whitehorse",
    "Central America Standard Time": "America/Guatemala",
    "Central Standard Time": "America/Chicago",
    "Central Standard Time (Mexico)": "America/Mexico_City",
    "Canada Central Standard Time": "America/Regina",
    "SA Pacific Standard Time": "America/Bogota",
    "Eastern Standard Time (Mexico)": "America/Cancun",
    "Eastern Standard Time": "America/New_York",
    "Haiti Standard Time": "America/Port-au-Prince",
    "Cuba Standard Time": "America/Havana",
    "US Eastern Standard Time": "America/Indiana/Indianapolis",
    "Turks And Caicos Standard Time": "America/Grand_Turk",
    "Paraguay Standard Time": "America/Asuncion",
    "Atlantic Standard Time": "America/Halifax",
    "Venezuela Standard Time": "America/Caracas",
    "Central Brazilian Standard Time": "America/Cuiaba",
    "SA Western Standard Time": "America/La_Paz",
    "Pacific SA Standard Time": "America/Santiago",
    "Newfoundland Standard Time": "America/St_Johns",
    "Tocantins Standard Time": "America/Araguaina",
    "E. South America Standard Time": "America/Sao_Paulo",
    "SA Eastern Standard Time": "America/Cayenne",
    "Argentina Standard Time": "America/Argentina/Buenos_Aires",
    "Greenland Standard Time": "America/Nuuk",
    "Montevideo Standard Time": "America/Montevideo",
    "Magallanes Standard Time": "America/Punta_Arenas",
    "Saint Pierre Standard Time": "America/Miquelon",
    "Bahia Standard Time": "America/Bahia",
    "Easter Island Standard Time": "Pacific/Easter",
    # --- Atlantic, Europe, Africa
    "Azores Standard Time": "Atlantic/Azores",
    "Cape Verde Standard Time": "Atlantic/Cape_Verde",
    "GMT Standard Time": "Europe/London",
    "Greenwich Standard Time": "Atlantic/Reykjavik",
    "Sao Tome Standard Time": "Africa/Sao_Tome",
    "Morocco Standard Time": "Africa/Casablanca",
    "W. Europe Standard Time": "Europe/Berlin",
    "Central Europe Standard Time": "Europe/Budapest",
    "Romance Standard Time": "Europe/Paris",
    "Central European Standard Time": "Europe/Warsaw",
    "W. Central Africa Standard Time": "Africa/Lagos",
    "GTB Standard Time": "Europe/Bucharest",
    "Egypt Standard Time": "Africa/Cairo",
    "E. Europe Standard Time": "Europe/Chisinau",
    "South Africa Standard Time": "Africa/Johannesburg",
    "FLE Standard Time": "Europe/Kyiv",
    "South Sudan Standard Time": "Africa/Juba",
    "Kaliningrad Standard Time": "Europe/Kaliningrad",
    "Sudan Standard Time": "Africa/Khartoum",
    "Libya Standard Time": "Africa/Tripoli",
    "Namibia Standard Time": "Africa/Windhoek",
    "Turkey Standard Time": "Europe/Istanbul",
    "Belarus Standard Time": "Europe/Minsk",
    "Russian Standard Time": "Europe/Moscow",
    "E. Africa Standard Time": "Africa/Nairobi",
    "Volgograd Standard Time": "Europe/Volgograd",
    "Astrakhan Standard Time": "Europe/Astrakhan",
    "Russia Time Zone 3": "Europe/Samara",
    "Saratov Standard Time": "Europe/Saratov",
    "Mauritius Standard Time": "Indian/Mauritius",
    # --- Asia
    "Jordan Standard Time": "Asia/Amman",
    "Middle East Standard Time": "Asia/Beirut",
    "Syria Standard Time": "Asia/Damascus",
    "West Bank Standard Time": "Asia/Hebron",
    "Israel Standard Time": "Asia/Jerusalem",
    "Arabic Standard Time": "Asia/Baghdad",
    "Arab Standard Time": "Asia/Riyadh",
    "Iran Standard Time": "Asia/Tehran",
    "Arabian Standard Time": "Asia/Dubai",
    "Azerbaijan Standard Time": "Asia/Baku",
    "Georgian Standard Time": "Asia/Tbilisi",
    "Caucasus Standard Time": "Asia/Yerevan",
    "Afghanistan Standard Time": "Asia/Kabul",
    "West Asia Standard Time": "Asia/Tashkent",
    "Qyzylorda Standard Time": "Asia/Qyzylorda",
    "Ekaterinburg Standard Time": "Asia/Yekaterinburg",
    "Pakistan Standard Time": "Asia/Karachi",
    "India Standard Time": "Asia/Kolkata",
    "Sri Lanka Standard Time": "Asia/Colombo",
    "Nepal Standard Time": "Asia/Kathmandu",
    "Central Asia Standard Time": "Asia/Bishkek",
    "Bangladesh Standard Time": "Asia/Dhaka",
    "Omsk Standard Time": "Asia/Omsk",
    "Myanmar Standard Time": "Asia/Yangon",
    "SE Asia Standard Time": "Asia/Bangkok",
    "Altai Standard Time": "Asia/Barnaul",
    "W. Mongolia Standard Time": "Asia/Hovd",
    "North Asia Standard Time": "Asia/Krasnoyarsk",
    "N. Central Asia Standard Time": "Asia/Novosibirsk",
    "Tomsk Standard Time": "Asia/Tomsk",
    "China Standard Time": "Asia/Shanghai",
    "North Asia East Standard Time": "Asia/Irkutsk",
    "Singapore Standard Time": "Asia/Singapore",
    "Taipei Standard Time": "Asia/Taipei",
    "Ulaanbaatar Standard Time": "Asia/Ulaanbaatar",
    "Transbaikal Standard Time": "Asia/Chita",
    "Tokyo Standard Time": "Asia/Tokyo",
    "North Korea Standard Time": "Asia/Pyongyang",
    "Korea Standard Time": "Asia/Seoul",
    "Yakutsk Standard Time": "Asia/Yakutsk",
    "Vladivostok Standard Time": "Asia/Vladivostok",
    "Russia Time Zone 10": "Asia/Srednekolymsk",
    "Magadan Standard Time": "Asia/Magadan",
    "Sakhalin Standard Time": "Asia/Sakhalin",
    "Russia Time Zone 11": "Asia/Kamchatka",
    # --- Australia and Pacific
    "W. Australia Standard Time": "Australia/Perth",
    "Aus Central W. Standard Time": "Australia/Eucla",
    "Cen. Australia Standard Time": "Australia/Adelaide",
    "AUS Central Standard Time": "Australia/Darwin",
    "E. Australia Standard Time": "Australia/Brisbane",
    "AUS Eastern Standard Time": "Australia/Sydney",
    "Tasmania Standard Time": "Australia/Hobart",
    "Lord Howe Standard Time": "Australia/Lord_Howe",
    "West Pacific Standard Time": "Pacific/Port_Moresby",
    "Bougainville Standard Time": "Pacific/Bougainville",
    "Norfolk Standard Time": "Pacific/Norfolk",
    "Central Pacific Standard Time": "Pacific/Guadalcanal",
    "New Zealand Standard Time": "Pacific/Auckland",
    "Fiji Standard Time": "Pacific/Fiji",
    "Chatham Islands Standard Time": "Pacific/Chatham",
    "Tonga Standard Time": "Pacific/Tongatapu",
    "Samoa Standard Time": "Pacific/Apia",
    "Line Islands Standard Time": "Pacific/Kiritimati",
    "Marquesas Standard Time": "Pacific/Marquesas",
}

#: IANA zones that are not a territory-"001" zone but belong to a Windows zone (CLDR
#: per-territory entries), for the markets we serve. Lets a booking in Europe/Vienna be
#: written as "W. Europe Standard Time".
_TERRITORY_ZONES: dict[str, tuple[str, ...]] = {
    "W. Europe Standard Time": (
        "Europe/Vienna", "Europe/Zurich", "Europe/Amsterdam", "Europe/Rome", "Europe/Stockholm", "Europe/Oslo",
        "Europe/Luxembourg", "Europe/Monaco", "Europe/Vaduz", "Europe/San_Marino", "Europe/Vatican",
        "Europe/Malta", "Europe/Andorra", "Europe/Gibraltar", "Europe/Busingen", "Arctic/Longyearbyen",
    ),
    "Romance Standard Time": ("Europe/Brussels", "Europe/Copenhagen", "Europe/Madrid", "Africa/Ceuta"),
    "Central Europe Standard Time": (
        "Europe/Prague", "Europe/Bratislava", "Europe/Ljubljana", "Europe/Belgrade", "Europe/Podgorica",
        "Europe/Tirane",
    ),
    "Central European Standard Time": ("Europe/Sarajevo", "Europe/Skopje", "Europe/Zagreb"),
    "GMT Standard Time": (
        "Europe/Dublin", "Europe/Lisbon", "Atlantic/Canary", "Atlantic/Faroe", "Atlantic/Madeira",
        "Europe/Guernsey", "Europe/Isle_of_Man", "Europe/Jersey",
    ),
    "FLE Standard Time": (
        "Europe/Helsinki", "Europe/Mariehamn", "Europe/Riga", "Europe/Sofia", "Europe/Tallinn", "Europe/Vilnius",
    ),
    "GTB Standard Time": ("Europe/Athens", "Asia/Nicosia", "Asia/Famagusta"),
    "Russian Standard Time": ("Europe/Simferopol", "Europe/Kirov"),
    "Greenwich Standard Time": ("Africa/Abidjan", "Africa/Accra", "Africa/Dakar", "Africa/Bamako"),
    "W. Central Africa Standard Time": ("Africa/Algiers", "Africa/Tunis", "Africa/Kinshasa", "Africa/Douala"),
    "E. Africa Standard Time": ("Africa/Addis_Ababa", "Africa/Dar_es_Salaam", "Africa/Kampala"),
    "South Africa Standard Time": ("Africa/Maputo", "Africa/Harare", "Africa/Lusaka"),
    "Eastern Standard Time": (
        "America/Toronto", "America/Detroit", "America/Nassau", "America/Kentucky/Louisville",
        "America/Indiana/Petersburg", "America/Indiana/Vincennes",
    ),
    "Central Standard Time": ("America/Winnipeg", "America/Matamoros", "America/Indiana/Knox"),
    "Mountain Standard Time": ("America/Edmonton", "America/Boise", "America/Ciudad_Juarez"),
    "Pacific Standard Time": ("America/Vancouver",),
    "US Mountain Standard Time": ("America/Hermosillo", "America/Creston"),
    "SA Pacific Standard Time": ("America/Lima", "America/Panama", "America/Jamaica", "America/Guayaquil"),
    "SA Western Standard Time": ("America/Puerto_Rico", "America/Santo_Domingo", "America/Manaus"),
    "Central America Standard Time": (
        "America/Costa_Rica", "America/El_Salvador", "America/Tegucigalpa", "America/Managua",
    ),
    "Atlantic Standard Time": ("Atlantic/Bermuda", "America/Glace_Bay", "America/Moncton"),
    "Argentina Standard Time": ("America/Argentina/Cordoba", "America/Argentina/Mendoza"),
    "China Standard Time": ("Asia/Hong_Kong", "Asia/Macau"),
    "Singapore Standard Time": ("Asia/Kuala_Lumpur", "Asia/Manila", "Asia/Makassar", "Asia/Brunei"),
    "SE Asia Standard Time": ("Asia/Jakarta", "Asia/Ho_Chi_Minh", "Asia/Phnom_Penh", "Asia/Vientiane"),
    "Arabian Standard Time": ("Asia/Muscat",),
    "Arab Standard Time": ("Asia/Qatar", "Asia/Kuwait", "Asia/Bahrain", "Asia/Aden"),
    "AUS Eastern Standard Time": ("Australia/Melbourne",),
    "E. Australia Standard Time": ("Australia/Lindeman",),
}

#: Older spellings (CLDR still uses some of them) of zones the tables above name canonically.
_IANA_ALIASES: dict[str, str] = {
    "Etc/UTC": "UTC",
    "Etc/GMT": "UTC",
    "GMT": "UTC",
    "Europe/Kiev": "Europe/Kyiv",
    "America/Godthab": "America/Nuuk",
    "America/Buenos_Aires": "America/Argentina/Buenos_Aires",
    "America/Indianapolis": "America/Indiana/Indianapolis",
    "Asia/Calcutta": "Asia/Kolkata",
    "Asia/Katmandu": "Asia/Kathmandu",
    "Asia/Rangoon": "Asia/Yangon",
    "Asia/Saigon": "Asia/Ho_Chi_Minh",
    "Atlantic/Faeroe": "Atlantic/Faroe",
}

#: Values Graph has been seen to report instead of a Windows name.
_GRAPH_SPECIALS: dict[str, str] = {
    "tzone://Microsoft/Utc": "UTC",
    "Coordinated Universal Time": "UTC",
}


def _build_reverse() -> dict[str, str]:
    reverse = {iana: windows for windows, iana in WINDOWS_TO_IANA.items()}
    for windows, zones in _TERRITORY_ZONES.items():
        for zone in zones:
            reverse.setdefault(zone, windows)
    for alias, canonical in _IANA_ALIASES.items():
        if canonical in reverse:
            reverse.setdefault(alias, reverse[canonical])
    return reverse


#: IANA zone → Windows name (primary and per-territory zones, plus old spellings).
IANA_TO_WINDOWS: dict[str, str] = _build_reverse()

_WINDOWS_BY_LOWER = {name.lower(): iana for name, iana in WINDOWS_TO_IANA.items()}


@lru_cache(maxsize=512)
def _is_iana(name: str) -> bool:
    if not name or name.startswith("/") or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def windows_to_iana(name: str) -> str | None:
    """IANA zone of a Windows zone name (case-insensitive), or None if unknown."""
    if name in _GRAPH_SPECIALS:
        return _GRAPH_SPECIALS[name]
    return _WINDOWS_BY_LOWER.get(name.strip().lower())


def iana_to_windows(name: str) -> str | None:
    """Windows zone name of an IANA zone, or None if the table does not know it."""
    return IANA_TO_WINDOWS.get(name.strip())


def to_iana(name: str) -> str | None:
    """Normalise what Graph reports (a Windows name, usually; sometimes already IANA) to IANA.

    The same resolver as for ICS imports (``resolve_zone``): Graph has been seen to report
    display names too. None when the name cannot be known.
    """
    return resolve_zone(name)


def _known(name: str) -> str | None:
    """A Windows name of this module's table, an IANA zone or one of its old spellings."""
    name = name.strip()
    windows = windows_to_iana(name)
    if windows is not None:
        return windows
    if name in _IANA_ALIASES:
        return _IANA_ALIASES[name]
    return name if _is_iana(name) else None


def to_graph_zone(iana: str) -> str:
    """The name to send in a ``dateTimeTimeZone``: the Windows name where we know it (every
    Graph method accepts those), otherwise the IANA name (Graph accepts many, not all)."""
    return iana_to_windows(iana) or iana


# --- One resolver for every zone name a calendar producer writes (Graph and ICS imports) ----------
#
# Outlook writes TZIDs as Windows names ("W. Europe Standard Time") and, in OWA and some desktop
# exports, as the Windows *display* name ("(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm,
# Vienna"). libical-based clients (Thunderbird, Evolution) write "globally unique" TZIDs such as
# "/mozilla.org/20050126_1/Europe/Berlin". ``resolve_zone`` maps all of them to an IANA zone, or
# None: an unknown zone is reported by the caller, never guessed.

#: Display names whose text names no city that tzdata knows: Windows display text → Windows name.
_DISPLAY_TEXT: dict[str, str] = {
    "coordinated universal time": "UTC",
    "utc": "UTC",
    "international date line west": "Dateline Standard Time",
    "coordinated universal time-11": "UTC-11",
    "coordinated universal time-09": "UTC-09",
    "coordinated universal time-08": "UTC-08",
    "coordinated universal time-02": "UTC-02",
    "coordinated universal time+12": "UTC+12",
    "coordinated universal time+13": "UTC+13",
    "mid-atlantic": "UTC-02",
    "hawaii": "Hawaiian Standard Time",
    "aleutian islands": "Aleutian Standard Time",
    "alaska": "Alaskan Standard Time",
    "pacific time (us & canada)": "Pacific Standard Time",
    "pacific time (us and canada)": "Pacific Standard Time",
    "baja california": "Pacific Standard Time (Mexico)",
    "arizona": "US Mountain Standard Time",
    "mountain time (us & canada)": "Mountain Standard Time",
    "mountain time (us and canada)": "Mountain Standard Time",
    "yukon": "Yukon Standard Time",
    "central america": "Central America Standard Time",
    "central time (us & canada)": "Central Standard Time",
    "central time (us and canada)": "Central Standard Time",
    "saskatchewan": "Canada Central Standard Time",
    "eastern time (us & canada)": "Eastern Standard Time",
    "eastern time (us and canada)": "Eastern Standard Time",
    "indiana (east)": "US Eastern Standard Time",
    "turks and caicos": "Turks And Caicos Standard Time",
    "atlantic time (canada)": "Atlantic Standard Time",
    "newfoundland": "Newfoundland Standard Time",
    "brasilia": "E. South America Standard Time",
    "greenland": "Greenland Standard Time",
    "cayenne, fortaleza": "SA Eastern Standard Time",
    "salvador": "Bahia Standard Time",
    "azores": "Azores Standard Time",
    "cabo verde is.": "Cape Verde Standard Time",
    "cape verde is.": "Cape Verde Standard Time",
    "dublin, edinburgh, lisbon, london": "GMT Standard Time",
    "west central africa": "W. Central Africa Standard Time",
    "harare, pretoria": "South Africa Standard Time",
    "chennai, kolkata, mumbai, new delhi": "India Standard Time",
    "sri jayawardenepura": "Sri Lanka Standard Time",
    "beijing, chongqing, hong kong, urumqi": "China Standard Time",
    "canberra, melbourne, sydney": "AUS Eastern Standard Time",
    "guam, port moresby": "West Pacific Standard Time",
    "solomon is., new caledonia": "Central Pacific Standard Time",
    "chatham islands": "Chatham Islands Standard Time",
    "samoa": "Samoa Standard Time",
    "kiritimati island": "Line Islands Standard Time",
    "marquesas islands": "Marquesas Standard Time",
    "easter island": "Easter Island Standard Time",
}

_DISPLAY = re.compile(r"^\((?:UTC|GMT)(?:([+-])(\d{1,2})[:.]?(\d{2}))?\)\s*(.*)$", re.IGNORECASE)
_REFERENCE_DAYS = (datetime(2026, 1, 15, 12, tzinfo=UTC), datetime(2026, 7, 15, 12, tzinfo=UTC))


@lru_cache(maxsize=1)
def _cities() -> dict[str, str]:
    """tzdata's zones by their city ("new york" → America/New_York), canonical areas first."""
    areas = ("Europe/", "America/", "Asia/", "Africa/", "Australia/", "Pacific/", "Atlantic/", "Indian/",
             "Antarctica/", "Arctic/")
    out: dict[str, str] = {}
    for zone in sorted(available_timezones(), key=lambda z: (not z.startswith(areas), z)):
        if not zone.startswith(areas):
            continue
        city = zone.rsplit("/", 1)[-1].replace("_", " ").lower()
        out.setdefault(city, _IANA_ALIASES.get(zone, zone))
    return out


def _standard_offsets(zone: str) -> set[timedelta]:
    tz = ZoneInfo(zone)
    out: set[timedelta] = set()
    local = [day.astimezone(tz) for day in _REFERENCE_DAYS]
    for moment in local:
        offset, dst = moment.utcoffset(), moment.dst()
        if offset is not None:
            out.add(offset - (dst or timedelta(0)))
    offsets = [m.utcoffset() for m in local]
    out.add(min(o for o in offsets if o is not None))
    return out


def _from_display_name(name: str) -> str | None:
    """IANA zone of a Windows display name: its text when that names no city, else the first
    city tzdata knows whose standard offset is the one the name states."""
    match = _DISPLAY.match(name.strip())
    if match is None:
        return None
    sign, hours, minutes, text = match.groups()
    offset = timedelta(0)
    if hours is not None:
        offset = timedelta(hours=int(hours), minutes=int(minutes)) * (-1 if sign == "-" else 1)
    text = " ".join(text.split()).lower()
    windows = _DISPLAY_TEXT.get(text)
    if windows is not None:
        return windows_to_iana(windows)
    # "Yangon (Rangoon)", "Astana, Dhaka": every name and every bracketed alternative.
    candidates = [c.strip(" .") for c in re.split(r",|\(|\)|/| and ", text) if c.strip(" .")]
    cities = _cities()
    for candidate in candidates:
        zone = cities.get(candidate)
        if zone is not None and offset in _standard_offsets(zone):
            # The Windows zone's primary IANA zone where CLDR names one (Amsterdam → Berlin's).
            windows = iana_to_windows(zone)
            return (windows_to_iana(windows) if windows else None) or zone
    return None


def _from_global_id(name: str) -> str | None:
    """"/mozilla.org/20050126_1/Europe/Berlin" and similar vendor-prefixed ids (RFC 5545 3.2.19)."""
    parts = [p for p in name.strip("/").split("/") if p]
    for size in (3, 2, 1):
        if len(parts) > size:
            tail = "/".join(parts[-size:])
            found = _IANA_ALIASES.get(tail) or (tail if _is_iana(tail) and "/" in tail else None)
            if found:
                return found
    return None


@lru_cache(maxsize=1024)
def resolve_zone(name: str) -> str | None:
    """IANA zone for any zone name a calendar producer writes, or None when it cannot be known.

    IANA names (and old spellings), Windows names (this module's CLDR table, then the one
    icalendar ships), Windows display names, and vendor-prefixed global ids.
    """
    from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

    name = name.strip().strip('"').strip()
    if not name or len(name) > 200:
        return None
    found = _known(name)
    if found is not None:
        return found
    olson = str(WINDOWS_TO_OLSON.get(name) or "")
    if olson and _is_iana(olson):
        return _IANA_ALIASES.get(olson, olson)
    if name.startswith("("):
        return _from_display_name(name)
    return _from_global_id(name) if "/" in name else None
