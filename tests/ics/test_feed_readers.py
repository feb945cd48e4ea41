"""Every feed variant read by four independent clients: each sees every event, with our titles,
times, UIDs and sequences, and the calendar's name unescaped — hostile text included."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from shared.bookings.store import StoredBooking
from shared.domain import Booking, BookingStatus, Customer, CustomerPrivacy, ProviderSettings
from shared.ics.feed import calendar_title, event_uid, one_line, render_feed, sequence_of
from tests.ics.feed_readers import READERS, Reading, read_calcurse

BASE = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
WINDOW = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2027, 11, 1, tzinfo=UTC))
HOSTILE = [
    "Komma, Semikolon; Backslash \\ Ende",
    "Zeile 1\nZeile 2\r\nZeile 3\rZeile 4",
    "Word\x0bZeilenumbruch\x0cSeitenumbruch",
    "Steuer\x1bzeichen\x00 NUL\x7f DEL\x85 NEL\u2028LS\u2029PS",
    "Injektion\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:evil\r\nSUMMARY:gefälscht",
    "Emoji 😀🎉 und Umlaute äöüß " * 6,
    'Anführungszeichen "x" : Doppelpunkt\tTab',
]


def _booking(i: int, *, name: str, url: str = "", customer: str = "Jörg Müller", version: int = 1,
             sequence: int = 0) -> StoredBooking:
    start = BASE + timedelta(days=i, hours=i % 5)
    return StoredBooking(Booking(id=f"bk-{i}", provider_id="p", resource_id="r", version=version, start=start,
                                 end=start + timedelta(minutes=45), status=BookingStatus.CONFIRMED,
                                 service_name=name, customer=Customer(customer, "j@x.de"),
                                 url=url or f"https://timum.example/b/{i}",
                                 updated_at=datetime(2026, 11, 20, 12, 0, tzinfo=UTC)), sequence)


def _variants() -> dict[str, tuple[list[StoredBooking], str, ProviderSettings]]:
    plain = [_booking(i, name="Krankengymnastik", version=i + 1, sequence=i // 2) for i in range(5)]
    hostile = [_booking(i, name=n) for i, n in enumerate(HOSTILE)]
    urls = [_booking(0, name="URL", url="https://timum.example/b/1\r\nATTENDEE:mailto:evil@example.com"),
            _booking(1, name="URL", url="https://timum.example/ä ö?x=1,2;3"),
            _booking(2, name="URL", url="javascript:alert(1)")]
    contact = [_booking(i, name="Massage", customer="Müller, Jörg;\nDr.\x0b") for i in range(3)]
    return {
        "plain": (plain, "Dr. Anna Weber", ProviderSettings("p")),
        "hostile-titles": (hostile, "Raum 1, Süd; Zeile\nzwei\x0b\x1b", ProviderSettings("p")),
        "hostile-urls": (urls, "URLs", ProviderSettings("p")),
        "customer-names": (contact, "Praxis; Süd", ProviderSettings("p", customer_privacy=CustomerPrivacy.CONTACT)),
        "empty": ([], "Leer, aber gültig", ProviderSettings("p")),
    }


VARIANTS = _variants()


def _render(variant: str) -> bytes:
    items, name, settings = VARIANTS[variant]
    return render_feed(items, calendar_name=name, settings=settings, window_start=WINDOW[0], window_end=WINDOW[1])


def _expected(variant: str) -> list[tuple[str, str, datetime, datetime, int]]:
    items, _, settings = VARIANTS[variant]
    out = []
    for s in items:
        b = s.booking
        summary = b.service_name
        if settings.customer_privacy is CustomerPrivacy.CONTACT:
            summary = f"{summary} – {b.customer.name}"
        out.append((event_uid(b.id), one_line(summary), b.start, b.end, sequence_of(s)))
    return sorted(out, key=lambda e: (e[2], e[0]))


def _check(reading: Reading, variant: str, *, with_ids: bool = True) -> None:
    expected = _expected(variant)
    got = sorted(((e.uid, e.summary, e.start, e.end, e.sequence) for e in reading.events),
                 key=lambda e: (e[2], str(e[0])))
    if with_ids:
        assert got == expected
    else:
        assert [(g[1], g[2], g[3]) for g in got] == [(x[1], x[2], x[3]) for x in expected]


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_reader_sees_every_event_as_written(variant: str, reader: str) -> None:
    reading = READERS[reader](_render(variant))
    _check(reading, variant)
    if reader != "ical.js":
        # ical.js hands unknown (X-) properties back as written; the others unescape TEXT.
        assert reading.name == calendar_title(VARIANTS[variant][1])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_calcurse_imports_every_event_and_skips_none(variant: str) -> None:
    reading = read_calcurse(_render(variant), start=WINDOW[0], days=400)
    # calcurse keeps no UID or SEQUENCE; its strict import refuses line breaks in a title.
    _check(reading, variant, with_ids=False)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_control_character_reaches_the_output_raw(variant: str) -> None:
    body = _render(variant)
    text = body.decode("utf-8")
    assert text.endswith("\r\n")
    lines = text[:-2].split("\r\n")
    for line in lines:
        assert len(line.encode()) <= 75
        assert not any(c < " " and c != "\t" or "\x7f" <= c <= "\x9f" or c in "\u2028\u2029" for c in line), line
        assert "\r" not in line and "\n" not in line
    items = VARIANTS[variant][0]
    unfolded = text.replace("\r\n ", "")
    # Exactly one VEVENT per booking: no injected component or property line.
    assert unfolded.count("\r\nBEGIN:VEVENT\r\n") == len(items)
    assert not any(line.startswith(("UID:evil", "ATTENDEE", "SUMMARY:gef")) for line in unfolded.split("\r\n"))
    assert "javascript:" not in unfolded


def test_an_empty_feed_still_holds_a_component() -> None:
    text = _render("empty").decode()
    # RFC 5545 3.6: a calendar holds at least one component; strict readers refuse none.
    assert "BEGIN:VTIMEZONE\r\nTZID:UTC\r\n" in text and "BEGIN:VEVENT" not in text
    assert "BEGIN:VTIMEZONE" not in _render("plain").decode()


def test_sequence_never_falls_below_an_earlier_value() -> None:
    moved_twice = _booking(1, name="x", version=5, sequence=2)
    # The row came back (moved away and back): its count restarted, its version did not.
    recreated = dataclasses.replace(moved_twice, booking=dataclasses.replace(moved_twice.booking, version=6),
                                    sequence=0)
    assert sequence_of(recreated) >= sequence_of(moved_twice) >= 2
    huge = dataclasses.replace(moved_twice, booking=dataclasses.replace(moved_twice.booking, version=2**40))
    assert sequence_of(huge) == 2**31 - 1
