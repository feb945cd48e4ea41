"""Render a resource's bookings as an iCalendar subscription feed. Pure: same data, same bytes.

What clients really do shaped every line (see docs/ARCHITECTURE.md, "ICS feed"):
times in UTC (Outlook mishandles icalendar's RDATE-style VTIMEZONE), METHOD:PUBLISH, no
calendar-level UID (some clients merge all events into one), stable UIDs, SEQUENCE rising
when times change, DTSTAMP/LAST-MODIFIED taken from the booking, cancelled bookings left
out (Google drops STATUS:CANCELLED, Apple shows it), no attendees, no alarms, no customer
data unless the provider chose to share contact details.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from urllib.parse import quote

from icalendar import vText

from shared.bookings.store import StoredBooking
from shared.domain import BookingStatus, CustomerPrivacy, ProviderSettings

PRODID = "-//timum//Outlook Sync//DE"
UID_DOMAIN = "ics.timum-outlook-sync"
_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
_LABEL = {"de": "Termin", "en": "Appointment"}


def event_uid(booking_id: str) -> str:
    return f"{booking_id}@{UID_DOMAIN}"


#: Characters that mean a line break in the text they come from: CR, vertical tab and form feed
#: (Word's line and page breaks), NEL, U+2028/U+2029. They become an escaped ``\n``.
_BREAKS = dict.fromkeys(map(ord, "\r\x0b\x0c\x85\u2028\u2029"), "\n")


def clean_text(value: str) -> str:
    """Text a strict reader accepts: line breaks as ``\n``, other control characters (NUL, ESC,
    DEL, C1), lone surrogates and non-characters removed; a TAB stays (RFC 5545 TSAFE-CHAR)."""
    if value.isprintable():
        return value  # the common case: nothing to clean (isprintable is False for every character dropped)
    value = value.replace("\r\n", "\n").translate(_BREAKS)
    return "".join(c for c in value
                   if c in "\t\n" or not (c < " " or "\x7f" <= c <= "\x9f" or "\ud800" <= c <= "\udfff"
                                          or c in "\ufffe\uffff"))


def _text(value: str) -> str:
    # icalendar's encoder escapes backslash, comma, semicolon and newlines as RFC 5545 demands;
    # clean_text first, so no control character ever reaches the output raw.
    return bytes(vText(clean_text(value)).to_ical()).decode()


def one_line(value: str) -> str:
    """A title on one line: readers such as calcurse drop an event whose SUMMARY has a line break."""
    return " ".join(clean_text(value).split())


def calendar_title(name: str) -> str:
    """The calendar's name on one line, at most 200 characters (escaped by ``_text`` when written)."""
    return one_line(name)[:200]


_URL_SAFE = "!#$%&'()*+,/:;=?@[]~-._"


def clean_url(url: str) -> str:
    """The booking's link as a URI value: http(s) only, anything but printable ASCII
    percent-encoded (no CR/LF or control character can end the line), or "" when unusable."""
    url = clean_text(url).replace("\n", "").strip()
    if not url.lower().startswith(("http://", "https://")):
        return ""
    quoted = quote(url, safe=_URL_SAFE, errors="replace")
    return quoted if len(quoted) <= 2000 else ""


def _utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def fold(line: str) -> str:
    """Fold a content line at 75 octets without splitting a UTF-8 sequence (RFC 5545 3.1)."""
    raw = line.encode()
    if len(raw) <= 75:
        return line + "\r\n"
    parts: list[str] = []
    limit = 75
    while raw:
        cut = min(limit, len(raw))
        while cut < len(raw) and (raw[cut] & 0xC0) == 0x80:
            cut -= 1  # back off to the start of a multi-byte character
        parts.append(raw[:cut].decode())
        raw = raw[cut:]
        limit = 74  # continuation lines start with one space
    return "\r\n ".join(parts) + "\r\n"


def render_header(calendar_name: str) -> str:
    """Everything before the first VEVENT."""
    return "".join([
        "BEGIN:VCALENDAR\r\n",
        "VERSION:2.0\r\n",
        f"PRODID:{PRODID}\r\n",
        "CALSCALE:GREGORIAN\r\n",
        "METHOD:PUBLISH\r\n",
        # Escaped like any TEXT value: a raw ";" or "," would split the value for readers that
        # type X-WR-CALNAME as text (Apple, Thunderbird), a raw line break would end the line.
        fold(f"X-WR-CALNAME:{_text(calendar_title(calendar_name))}"),
        "X-WR-TIMEZONE:UTC\r\n",
        # Clients ignore these in practice (Outlook ~4 h, Google 8–24 h) but they are the only hint we can give.
        "REFRESH-INTERVAL;VALUE=DURATION:PT1H\r\n",
        "X-PUBLISHED-TTL:PT1H\r\n",
    ])


FOOTER = "END:VCALENDAR\r\n"
#: RFC 5545 wants at least one component in a calendar; strict readers refuse an empty one.
#: A fixed UTC zone is the harmless component an empty feed carries (no RDATE: Outlook-safe).
EMPTY_BODY = ("BEGIN:VTIMEZONE\r\nTZID:UTC\r\nBEGIN:STANDARD\r\nDTSTART:19700101T000000\r\n"
              "TZOFFSETFROM:+0000\r\nTZOFFSETTO:+0000\r\nTZNAME:UTC\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n")
#: SEQUENCE is a 32-bit signed INTEGER (RFC 5545 3.3.8).
_MAX_SEQUENCE = 2**31 - 1


def sequence_of(stored: StoredBooking) -> int:
    """SEQUENCE for a booking's event: never lower than any value the UID had before.

    The stored count of time changes restarts at 0 when a booking's row is written anew (moved
    to another resource and back, deleted and restored). timum's booking version starts at 1 and
    rises with every change and never restarts; the count rises at most once per version, so
    ``version - 1`` is at least every count ever written and only ever grows.
    """
    return min(_MAX_SEQUENCE, max(stored.sequence, stored.booking.version - 1, 0))


def body_of(events: list[str]) -> list[str]:
    return events or [EMPTY_BODY]


def in_feed(stored: StoredBooking) -> bool:
    """Whether a booking has an event at all (the window is applied separately)."""
    return stored.booking.status is BookingStatus.CONFIRMED


def render_event(stored: StoredBooking, settings: ProviderSettings) -> str:
    """One VEVENT. Depends on the booking and on ``settings.customer_privacy`` and ``locale`` only
    (``shared.ics.snapshot`` keeps rendered events keyed by exactly these)."""
    b = stored.booking
    stamp = _utc(b.updated_at or _EPOCH)
    summary = b.service_name or _LABEL.get(settings.locale, _LABEL["de"])
    if settings.customer_privacy is CustomerPrivacy.CONTACT and b.customer.name:
        summary = f"{summary} – {b.customer.name}"
    out = [
        "BEGIN:VEVENT\r\n",
        fold(f"UID:{_text(event_uid(b.id))}"),
        f"DTSTAMP:{stamp}\r\n",
        f"LAST-MODIFIED:{stamp}\r\n",
        f"DTSTART:{_utc(b.start)}\r\n",
        f"DTEND:{_utc(b.end)}\r\n",
        f"SEQUENCE:{sequence_of(stored)}\r\n",
        fold(f"SUMMARY:{_text(one_line(summary))}"),
        "STATUS:CONFIRMED\r\n",
        "TRANSP:OPAQUE\r\n",
        "X-MICROSOFT-CDO-BUSYSTATUS:BUSY\r\n",
        "CLASS:PRIVATE\r\n",
    ]
    url = clean_url(b.url) if b.url else ""
    if url:
        out.append(fold(f"URL:{url}"))
    out.append("END:VEVENT\r\n")
    return "".join(out)


def render_feed(bookings: Iterable[StoredBooking], *, calendar_name: str, settings: ProviderSettings,
                window_start: datetime, window_end: datetime) -> bytes:
    """The feed as bytes. Lines are produced directly (icalendar's object model is too slow
    for 5,000 bookings; ``bench/`` measures it); values go through icalendar's encoders, and the tests
    parse every feed back with icalendar and with Mozilla's ical.js."""
    chosen = [s for s in bookings
              if in_feed(s) and s.booking.end > window_start and s.booking.start < window_end]
    chosen.sort(key=lambda s: (s.booking.start, s.booking.id))
    events = [render_event(s, settings) for s in chosen]
    return "".join([render_header(calendar_name), *body_of(events), FOOTER]).encode()
