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

from icalendar import vText

from shared.bookings.store import StoredBooking
from shared.domain import BookingStatus, CustomerPrivacy, ProviderSettings

PRODID = "-//timum//Outlook Sync//DE"
UID_DOMAIN = "ics.timum-outlook-sync"
_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
_LABEL = {"de": "Termin", "en": "Appointment"}


def event_uid(booking_id: str) -> str:
    return f"{booking_id}@{UID_DOMAIN}"


def _text(value: str) -> str:
    # icalendar's encoder escapes backslash, comma, semicolon and newlines as RFC 5545 demands.
    return bytes(vText(value).to_ical()).decode()


def calendar_title(name: str) -> str:
    """One line of printable text: parsers treat X-WR-CALNAME as an unknown property, raw."""
    return " ".join("".join(c for c in name if c.isprintable() or c.isspace()).split())[:200]


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
        # Written raw: icalendar and ical.js both return X- properties unescaped-as-is, so
        # escaping a comma would show up as "\\," in the client; calendar_title() removes line breaks.
        fold(f"X-WR-CALNAME:{calendar_title(calendar_name)}"),
        "X-WR-TIMEZONE:UTC\r\n",
        # Clients ignore these in practice (Outlook ~4 h, Google 8–24 h) but they are the only hint we can give.
        "REFRESH-INTERVAL;VALUE=DURATION:PT1H\r\n",
        "X-PUBLISHED-TTL:PT1H\r\n",
    ])


FOOTER = "END:VCALENDAR\r\n"


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
        f"SEQUENCE:{stored.sequence}\r\n",
        fold(f"SUMMARY:{_text(summary)}"),
        "STATUS:CONFIRMED\r\n",
        "TRANSP:OPAQUE\r\n",
        "X-MICROSOFT-CDO-BUSYSTATUS:BUSY\r\n",
        "CLASS:PRIVATE\r\n",
    ]
    if b.url:
        out.append(fold(f"URL:{b.url}"))
    out.append("END:VEVENT\r\n")
    return "".join(out)


def render_feed(bookings: Iterable[StoredBooking], *, calendar_name: str, settings: ProviderSettings,
                window_start: datetime, window_end: datetime) -> bytes:
    """The feed as bytes. Lines are produced directly (icalendar's object model costs ~0.6 ms an
    event, too slow for 5,000 bookings); values go through icalendar's encoders, and the tests
    parse every feed back with icalendar and with Mozilla's ical.js."""
    chosen = [s for s in bookings
              if in_feed(s) and s.booking.end > window_start and s.booking.start < window_end]
    chosen.sort(key=lambda s: (s.booking.start, s.booking.id))
    return "".join([render_header(calendar_name), *(render_event(s, settings) for s in chosen), FOOTER]).encode()
