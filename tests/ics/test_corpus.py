"""The corpus (``tests/ics/corpus``, see its SOURCES.md): every file's blocked slots, in UTC,
equal an independent oracle's.

The oracle is ``recurring_ical_events`` over the file as icalendar parses it whole, with these
explicit rules and nothing of the import's code:

1. Bytes: gunzip when the file starts with the gzip magic; drop a UTF-8 byte-order mark; UTF-8,
   else Windows-1252.
2. Components the import must skip (``SKIPPED``, each named by a marker in its text) are cut
   out, as is a component the file ends inside of.
3. Zones: a VTIMEZONE in the file wins — its TZID is renamed to a name unique to the file and
   test, so icalendar's process-wide zone cache cannot carry one file's definition into another.
   TZIDs without a VTIMEZONE that are not IANA names are mapped by ``ZONES`` (Microsoft's Windows
   and display names per CLDR, vendor-prefixed ids by their IANA tail). Floating times and dates
   are read in X-WR-TIMEZONE (mapped the same way), else in Europe/Berlin (the resource's zone).
   UTC values of a calendar with X-WR-TIMEZONE are converted into that zone before expanding, by
   the ``x_wr_timezone`` package itself (``to_standard``, which ``recurring_ical_events.of``
   also applies): a series written in UTC keeps its wall-clock time across DST changes, as Google
   Calendar means it. The oracle is fed the converted calendar; ``test_import_x_wr_timezone.py``
   checks the corpus file for it against hand-computed times too, so a change of that package
   cannot pass unnoticed.
4. Blocking (the Graph path's rules): STATUS:CANCELLED blocks nothing; X-MICROSOFT-CDO-BUSYSTATUS
   first — FREE and WORKINGELSEWHERE never block, TENTATIVE blocks (the provider default), BUSY
   and OOF block —, then TRANSP:TRANSPARENT blocks nothing; an event without positive length
   blocks nothing (a date without DTEND lasts one day, RFC 5545 3.6.1).
5. A slot is (UTC start, UTC end, all-day) of each blocking occurrence overlapping the window.
"""

from __future__ import annotations

import gzip
import re
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import recurring_ical_events
import x_wr_timezone
from icalendar import Calendar

from shared.core.outlook_plan import PlanContext, UpsertBlock, plan_page
from shared.core.window import SyncWindow
from shared.domain import DeltaPage, LinkKey, ProviderSettings
from shared.ics.importer import parse_published

CORPUS = Path(__file__).parent / "corpus"
FILES = sorted(p.name for p in CORPUS.iterdir() if p.name.endswith((".ics", ".ics.gz")))
WINDOW = SyncWindow(datetime(2026, 10, 1, tzinfo=UTC), datetime(2027, 4, 30, tzinfo=UTC))
DEFAULT_ZONE = "Europe/Berlin"

#: Rule 3: zone names without a VTIMEZONE in their file.
ZONES: dict[str, dict[str, str]] = {
    "outlook365-owa-display-names.ics": {
        "(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna": "Europe/Berlin",
        "(UTC-05:00) Eastern Time (US & Canada)": "America/New_York",
        "(UTC+10:00) Canberra, Melbourne, Sydney": "Australia/Sydney",
        "(UTC+00:00) Dublin, Edinburgh, Lisbon, London": "Europe/London",
    },
    "exchange2007-gmt-windows-calendar-zone.ics": {
        "(GMT+01.00) Amsterdam / Berlin / Bern / Rome / Stockholm / Vienna": "Europe/Berlin",
        "W. Europe Standard Time": "Europe/Berlin",
        "Pacific Standard Time": "America/Los_Angeles",
    },
    "sabredav-nextcloud-mixed-zones.ics": {"W. Europe Standard Time": "Europe/Berlin"},
    "thunderbird-lightning-lf.ics": {
        "/mozilla.org/20070129_1/Europe/Paris": "Europe/Paris",
        "/softwarestudio.org/Tzfile/America/New_York": "America/New_York",
    },
}
#: Rule 2: what the import must skip, by a marker in the component's text.
SKIPPED: dict[str, list[str]] = {
    "truncated-and-broken-events.ics": [
        "TZID:Europe/Paris",            # a VTIMEZONE with two TZIDs
        "UID:double-dtstart", "UID:year-10000", "UID:unknown-zone", "UID:minutely-bomb",
        "UID:truncated",                # the file ends inside this one
    ],
    "wordpress-plugin-cp1252.ics": ["20261117T110000AMZ"],
}

_COMPONENT = re.compile(r"^BEGIN:(VEVENT|VTIMEZONE)\r?\n.*?^END:\1\r?\n", re.MULTILINE | re.DOTALL)
_TZID_PARAM = re.compile(r';TZID=("[^"]*"|[^;:\r\n]*(?:\(UTC[+-]\d\d:\d\d\)[^;:\r\n]*)?)')


def _text(raw: bytes) -> str:
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("cp1252")
    return re.sub(r"\r\n|\r|\n", "\n", text)


def _oracle_calendar(name: str) -> tuple[Calendar, ZoneInfo]:
    text = _text((CORPUS / name).read_bytes())
    text = re.sub(r"\n[ \t]", "", text)  # unfold
    head = text[:text.index("\nBEGIN:") + 1]
    kept = [m.group(0) for m in _COMPONENT.finditer(text)
            if not any(marker in m.group(0) for marker in SKIPPED.get(name, []))]
    body = "".join(kept)
    # Rule 3: the file's own zones under names unique to this file.
    tag = re.sub(r"\W", "", name)
    for index, tzid in enumerate(re.findall(r"^BEGIN:VTIMEZONE\nTZID:(.*)$", body, re.MULTILINE)):
        unique = f"oracle-{tag}-{index}"
        body = body.replace(f"TZID:{tzid}\n", f"TZID:{unique}\n")
        body = body.replace(f'TZID="{tzid}"', f"TZID={unique}").replace(f"TZID={tzid}:", f"TZID={unique}:")
    for original, iana in ZONES.get(name, {}).items():
        body = body.replace(f'TZID="{original}"', f"TZID={iana}").replace(f"TZID={original}:", f"TZID={iana}:")
        head = head.replace(f"X-WR-TIMEZONE:{original}\n", f"X-WR-TIMEZONE:{iana}\n")
    calendar = x_wr_timezone.to_standard(Calendar.from_ical(head + body + "END:VCALENDAR\n"))
    wr = str(calendar.get("X-WR-TIMEZONE", "")).strip()
    zone = ZoneInfo(wr or DEFAULT_ZONE)
    return calendar, zone


def _blocks(occ: Any) -> bool:
    if str(occ.get("STATUS", "")).upper() == "CANCELLED":
        return False
    cdo = str(occ.get("X-MICROSOFT-CDO-BUSYSTATUS", "")).upper()
    if cdo in ("FREE", "WORKINGELSEWHERE"):
        return False
    if cdo in ("TENTATIVE", "BUSY", "OOF"):
        return True
    return str(occ.get("TRANSP", "OPAQUE")).upper() != "TRANSPARENT"


def _instant(value: date | datetime, zone: ZoneInfo) -> datetime:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=zone)).astimezone(UTC)
    return datetime(value.year, value.month, value.day, tzinfo=zone).astimezone(UTC)


def oracle_slots(name: str) -> Counter[tuple[datetime, datetime, bool]]:
    calendar, zone = _oracle_calendar(name)
    slots: Counter[tuple[datetime, datetime, bool]] = Counter()
    for occ in recurring_ical_events.of(calendar).between(WINDOW.start, WINDOW.end):
        if not _blocks(occ):
            continue
        start_value = occ.decoded("DTSTART")
        all_day = not isinstance(start_value, datetime)
        start = _instant(start_value, zone)
        if "DTEND" in occ:
            end = _instant(occ.decoded("DTEND"), zone)
        elif "DURATION" in occ:
            end = start + occ.decoded("DURATION")
        else:
            end = _instant(start_value + timedelta(days=1), zone) if all_day else start
        if end > start and end > WINDOW.start and start < WINDOW.end:
            slots[(start, end, all_day)] += 1
    return slots


def import_slots(name: str) -> tuple[Counter[tuple[datetime, datetime, bool]], list[str]]:
    result = parse_published((CORPUS / name).read_bytes(), window_start=WINDOW.start, window_end=WINDOW.end,
                             default_zone=DEFAULT_ZONE)
    ctx = PlanContext(LinkKey("p", "r"), WINDOW, ProviderSettings("p"), source="ics")
    actions = plan_page(ctx, DeltaPage(events=result.events, removed=[]), {})
    slots = Counter((a.slot.start.astimezone(UTC), a.slot.end.astimezone(UTC), a.slot.all_day)
                    for a in actions if isinstance(a, UpsertBlock))
    assert all(a.slot.source == "ics" for a in actions if isinstance(a, UpsertBlock))
    return slots, [s.reason for s in result.skipped]


def test_the_corpus_is_there() -> None:
    print(f"\nICS corpus: {len(FILES)} files")  # the figure the issue asks for
    assert len(FILES) >= 14
    sources = (CORPUS / "SOURCES.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in sources for name in FILES), "every file is described in SOURCES.md"


@pytest.mark.parametrize("name", FILES)
def test_import_matches_the_oracle(name: str) -> None:
    expected = oracle_slots(name)
    got, skipped = import_slots(name)
    assert expected, "every corpus file has something that blocks"
    assert got == expected
    assert len(skipped) == len(SKIPPED.get(name, [])), skipped


def test_zones_are_not_guessed() -> None:
    """Spot checks the oracle's mapping could hide: hours that were wrong before."""
    got, _ = import_slots("outlook365-owa-display-names.ics")
    starts = {s for s, _, _ in got}
    # 10:00 New York on 28 Oct 2026 is 14:00 UTC (EDT), on 4 Nov 15:00 UTC (EST after 1 Nov).
    assert datetime(2026, 10, 28, 14, 0, tzinfo=UTC) in starts
    assert datetime(2026, 11, 4, 15, 0, tzinfo=UTC) in starts
    # 08:30 Sydney on 5 Nov 2026 (AEDT, +11) is 21:30 UTC the day before.
    assert datetime(2026, 11, 4, 21, 30, tzinfo=UTC) in starts
    # The in-file VTIMEZONE wins over the name: "Customized Time Zone" is +05:30 there.
    got, _ = import_slots("exchange2010-localized-vtimezone.ics")
    assert datetime(2026, 11, 12, 9, 30, tzinfo=UTC) in {s for s, _, _ in got}


def test_skipped_events_are_named_with_a_reason() -> None:
    _, reasons = import_slots("truncated-and-broken-events.ics")
    assert "DTSTART given twice" in reasons and "recurs more often than hourly" in reasons
    assert any(r.startswith("unknown time zone 'Mars/Olympus_Mons'") for r in reasons)
    assert "VEVENT cut off" in reasons and "time zone definition with 2 TZIDs" in reasons
