"""The ICS feed: content rules from real clients' behaviour, parsed by icalendar and by Mozilla's ical.js."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from icalendar import Calendar

from shared.bookings.store import BookingRepository, StoredBooking
from shared.domain import Booking, BookingStatus, Customer, CustomerPrivacy, LinkKey, ProviderSettings
from shared.ics.feed import calendar_title, event_uid, fold, one_line, render_feed
from shared.ics.service import FeedCache, serve_feed
from shared.ics.tokens import FeedTokenRepository
from shared.storage import StoragePort
from tests.support.settings import make_settings

ROOT = Path(__file__).resolve().parents[2]
BASE = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
WINDOW = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2027, 11, 1, tzinfo=UTC))


def stored(i: int, *, name: str = "Krankengymnastik", status: BookingStatus = BookingStatus.CONFIRMED,
           sequence: int = 0, offset: timedelta = timedelta(0)) -> StoredBooking:
    start = BASE + timedelta(days=i) + offset
    return StoredBooking(Booking(id=f"bk-{i}", provider_id="p", resource_id="r", version=1, start=start,
                                 end=start + timedelta(minutes=45), status=status, service_name=name,
                                 customer=Customer("Jörg Müller", "j@x.de"), url=f"https://timum.example/b/{i}",
                                 updated_at=datetime(2026, 11, 20, 12, 0, tzinfo=UTC)), sequence)


def feed(items: list[StoredBooking], **kw: object) -> bytes:
    return render_feed(items, calendar_name=str(kw.get("name", "Dr. Anna Weber")),
                       settings=kw.get("settings", ProviderSettings("p")),  # type: ignore[arg-type]
                       window_start=WINDOW[0], window_end=WINDOW[1])


def ical_js(body: bytes) -> dict[str, object]:
    proc = subprocess.run(["node", str(ROOT / "devtools/icaljs/parse.cjs")], input=body, capture_output=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_calendar_properties_follow_client_behaviour() -> None:
    body = feed([stored(1)])
    text = body.decode()
    assert text.startswith("BEGIN:VCALENDAR\r\n") and text.endswith("END:VCALENDAR\r\n")
    assert "METHOD:PUBLISH\r\n" in text
    assert "REFRESH-INTERVAL;VALUE=DURATION:PT1H\r\n" in text and "X-PUBLISHED-TTL:PT1H\r\n" in text
    assert "X-WR-CALNAME:Dr. Anna Weber\r\n" in text
    head = text.split("BEGIN:VEVENT")[0]
    assert "\r\nUID:" not in head  # no calendar-level UID
    assert "VTIMEZONE" not in text and "TZID" not in text  # UTC only
    assert "DTSTART:20261202T080000Z" in text
    assert "ATTENDEE" not in text and "VALARM" not in text and "Jörg" not in text


def test_same_data_same_bytes_and_order_independent() -> None:
    items = [stored(i) for i in range(20)]
    assert feed(items) == feed(list(reversed(items)))


def test_cancelled_and_out_of_window_left_out() -> None:
    items = [stored(1), stored(2, status=BookingStatus.CANCELLED), stored(500), stored(-60)]
    cal = Calendar.from_ical(feed(items))
    assert [str(e["UID"]) for e in cal.walk("VEVENT")] == [event_uid("bk-1")]


def test_contact_privacy_adds_customer_name() -> None:
    body = feed([stored(1)], settings=ProviderSettings("p", customer_privacy=CustomerPrivacy.CONTACT))
    assert "Krankengymnastik – Jörg Müller" in body.decode()


def test_parsed_by_icalendar_and_ical_js_with_the_same_events() -> None:
    items = [stored(i, sequence=i % 3) for i in range(30)]
    body = feed(items)
    cal = Calendar.from_ical(body)
    assert not any(getattr(c, "errors", None) for c in cal.walk())
    ours = [(str(e["UID"]), e.decoded("DTSTART"), int(e["SEQUENCE"])) for e in cal.walk("VEVENT")]
    assert ours == [(event_uid(s.booking.id), s.booking.start, s.sequence) for s in items]
    parsed = ical_js(body)
    assert parsed["method"] == "PUBLISH" and parsed["name"] == "Dr. Anna Weber" and parsed["uid"] is None
    events = parsed["events"]
    assert isinstance(events, list) and len(events) == 30
    first = events[0]
    assert first["start"] == "2026-12-01T08:00:00.000Z" and first["end"] == "2026-12-01T08:45:00.000Z"
    assert first["summary"] == "Krankengymnastik" and first["status"] == "CONFIRMED"


def test_folding_never_splits_utf8_and_stays_within_75_octets() -> None:
    line = "SUMMARY:" + "ü😀ä" * 60
    folded = fold(line)
    for part in folded.split("\r\n"):
        assert len(part.encode()) <= 75
    assert folded.replace("\r\n ", "").rstrip("\r\n") == line


def unescape_text(value: str) -> str:
    """RFC 5545 3.3.11 TEXT unescaping."""
    return re.sub(r"\\([\\;,nN])", lambda m: "\n" if m.group(1) in "nN" else m.group(1), value)


hostile = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x00")
                  | st.sampled_from([",", ";", "\\", "\n", ":", '"', "😀", "ß"]), min_size=1, max_size=300)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(hostile.filter(lambda s: s.strip() == s and s != ""), min_size=1, max_size=8))
def test_hostile_names_survive_icalendar_roundtrip(names: list[str]) -> None:
    items = [stored(i, name=n) for i, n in enumerate(names)]
    cal = Calendar.from_ical(feed(items, name=names[0]))
    assert [str(e["SUMMARY"]) for e in cal.walk("VEVENT")] == [one_line(n) for n in names]
    # An X- property's default type is TEXT (RFC 5545 3.8.8.2): written escaped; icalendar and
    # ical.js hand unknown properties back as written, so the test unescapes.
    assert unescape_text(str(cal["X-WR-CALNAME"])) == calendar_title(names[0])


def test_hostile_names_survive_ical_js() -> None:
    names = ["Komma, Semikolon; Backslash \\ Ende", "Zeile 1\nZeile 2", "Emoji 😀🎉 und Umlaute äöüß",
             "Sehr langer Name " * 20, 'Anführungszeichen "x" : Doppelpunkt']
    parsed = ical_js(feed([stored(i, name=n) for i, n in enumerate(names)], name="Raum 1, Süd; Zeile\nzwei"))
    assert unescape_text(str(parsed["name"])) == "Raum 1, Süd; Zeile zwei"
    events = parsed["events"]
    assert isinstance(events, list)
    assert [e["summary"] for e in events] == [one_line(n) for n in names]


async def _feed_setup(storage: StoragePort) -> tuple[str, BookingRepository]:
    tokens = FeedTokenRepository(storage)
    token = await tokens.issue(LinkKey("p", "r"), "Behandlungsraum 1")
    store = BookingRepository(storage)
    for i in range(3):
        await store.upsert_if_newer(stored(i).booking)
    return token, store


async def test_serve_feed_validators_and_invalidation(storage: StoragePort) -> None:
    token, store = await _feed_setup(storage)
    cfg, cache, now = make_settings(), FeedCache(), datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    first = await serve_feed(storage, cfg, cache, token, now=now)
    assert first.status == 200 and first.feed is not None
    headers = first.headers()
    assert headers["ETag"].startswith('"') and "Last-Modified" in headers
    again = await serve_feed(storage, cfg, cache, token, now=now, if_none_match=headers["ETag"])
    assert again.status == 304
    since = await serve_feed(storage, cfg, cache, token, now=now,
                             if_modified_since=format_datetime(first.feed.last_modified, usegmt=True))
    assert since.status == 304
    moved = stored(1, offset=timedelta(hours=2)).booking
    await store.upsert_if_newer(Booking(**{**moved.__dict__, "version": 2}))
    changed = await serve_feed(storage, cfg, cache, token, now=now, if_none_match=headers["ETag"])
    assert changed.status == 200 and changed.feed is not None and changed.feed.etag != headers["ETag"]
    cal = Calendar.from_ical(changed.feed.body)
    seqs = {str(e["UID"]): int(e["SEQUENCE"]) for e in cal.walk("VEVENT")}
    assert seqs[event_uid("bk-1")] == 1 and seqs[event_uid("bk-0")] == 0


@pytest.mark.parametrize("bad", ["", "short", "x" * 43 + "/", "../../etc/passwd"])
async def test_unknown_tokens_are_404(storage: StoragePort, bad: str) -> None:
    await _feed_setup(storage)
    result = await serve_feed(storage, make_settings(), FeedCache(), bad, now=BASE)
    assert result.status == 404 and result.feed is None


async def test_rotated_and_revoked_tokens_are_404(storage: StoragePort) -> None:
    token, _ = await _feed_setup(storage)
    tokens = FeedTokenRepository(storage)
    new = await tokens.issue(LinkKey("p", "r"), "Behandlungsraum 1")
    cfg = make_settings()
    assert (await serve_feed(storage, cfg, FeedCache(), token, now=BASE)).status == 404
    assert (await serve_feed(storage, cfg, FeedCache(), new, now=BASE)).status == 200
    assert await tokens.revoke(LinkKey("p", "r"))
    assert (await serve_feed(storage, cfg, FeedCache(), new, now=BASE)).status == 404
    assert len(new) >= 43  # 256 bits, base64url
