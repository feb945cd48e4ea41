"""Attack: CR/LF and control characters in booking fields, to forge lines in the ICS feed
(#13 item 6). A booking's url, service name or customer name arrives from timum; a raw line break
once ended the URL line and started an attacker's property (an ATTENDEE, a second VEVENT), and a
vertical tab or NUL made strict readers drop the feed. Now every text value is cleaned and
escaped, the URL is written as a clean URI, and strict parsers read exactly one event per
booking."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from icalendar import Calendar

from shared.bookings.store import BookingRepository
from shared.domain import Booking, BookingStatus, Customer, CustomerPrivacy, LinkKey, ProviderSettings
from shared.ics.service import FeedCache, serve_feed
from shared.ics.tokens import FeedTokenRepository
from shared.repos.links import ProviderSettingsRepository
from shared.storage import StoragePort
from tests.ics.feed_readers import READERS, read_calcurse
from tests.support.settings import make_settings

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
INJECT = "\r\nATTENDEE:mailto:attacker@example.com\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:forged\r\nSUMMARY:forged"
FIELDS: dict[str, dict[str, object]] = {
    "url": {"url": "https://timum.example/b/1" + INJECT},
    "service_name": {"service_name": "Massage" + INJECT},
    "customer": {"customer": Customer("Eve" + INJECT, "e@example.com")},
    "controls": {"service_name": "Word\x0bbreak\x0cpage\x00nul\x1besc\u2028ls\x85nel\x7fdel"},
    "lf-only": {"service_name": "Massage\nUID:forged\nSUMMARY:forged"},
}


async def _feed(storage: StoragePort, **fields: object) -> bytes:
    link = LinkKey("p", "r")
    token = await FeedTokenRepository(storage).issue(link, "Praxis" + INJECT)
    await ProviderSettingsRepository(storage).save(ProviderSettings("p", customer_privacy=CustomerPrivacy.CONTACT))
    store = BookingRepository(storage)
    for i in range(2):
        values: dict[str, object] = {
            "id": f"bk-{i}", "provider_id": "p", "resource_id": "r", "version": 1,
            "start": START + timedelta(days=i), "end": START + timedelta(days=i, hours=1),
            "status": BookingStatus.CONFIRMED, "service_name": "Termin", "customer": Customer("Ann", "a@x.de"),
            "url": f"https://timum.example/b/{i}", "updated_at": START - timedelta(days=3)}
        values.update(fields)
        await store.upsert_if_newer(Booking(**values))  # type: ignore[arg-type]
    result = await serve_feed(storage, make_settings(), FeedCache(), token, now=START)
    assert result.status == 200 and result.feed is not None
    return result.feed.body


@pytest.mark.parametrize("field", sorted(FIELDS))
async def test_booking_fields_cannot_forge_feed_lines(storage: StoragePort, field: str) -> None:
    body = await _feed(storage, **FIELDS[field])
    text = body.decode()
    lines = text.split("\r\n")
    assert lines[-1] == "" and all("\r" not in line and "\n" not in line for line in lines)
    content = text.replace("\r\n", "")
    assert not any(c < " " and c != "\t" or "\x7f" <= c <= "\x9f" or c in "\u2028\u2029" for c in content)
    unfolded = text.replace("\r\n ", "").split("\r\n")
    assert not any(line.startswith(("ATTENDEE", "UID:forged", "SUMMARY:forged")) for line in unfolded)
    assert sum(line == "BEGIN:VEVENT" for line in unfolded) == 2
    cal = Calendar.from_ical(body)
    assert sorted(str(e["UID"]) for e in cal.walk("VEVENT")) == ["bk-0@ics.timum-outlook-sync",
                                                                 "bk-1@ics.timum-outlook-sync"]
    assert all(not e.errors for e in cal.walk("VEVENT"))
    for name, read in READERS.items():
        assert len(read(body).events) == 2, name
    assert len(read_calcurse(body, start=START - timedelta(days=1), days=5).events) == 2
