"""ICS import: parsing a published Outlook calendar, and the SSRF-guarded fetcher."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from shared.errors import BadRequest, NotFound
from shared.ics.fetch import UnsafeAddress, address_allowed, check_url, fetch_ics
from shared.ics.importer import parse_published
from tests.support.ics_world import DATA

BERLIN = ZoneInfo("Europe/Berlin")
WINDOW = (datetime(2026, 11, 30, tzinfo=UTC), datetime(2027, 1, 31, tzinfo=UTC))


def test_published_outlook_calendar_is_understood() -> None:
    result = parse_published(DATA.read_bytes(), window_start=WINDOW[0], window_end=WINDOW[1])
    # the event with a broken DTSTART is skipped and named
    assert result.calendar_name == "Kalender" and [s.id for s in result.skipped] == ["BROKEN-0001"]
    by_subject: dict[str, list[object]] = {}
    for e in result.events:
        by_subject.setdefault(e.subject, []).append(e)
    meetings = by_subject["Teammeeting"]
    # Weekly on Tuesdays until 22 Dec, 8 Dec excluded (EXDATE), 15 Dec moved (exception).
    assert [m.start for m in meetings] == [datetime(2026, 12, 1, 9, tzinfo=BERLIN),  # type: ignore[attr-defined]
                                           datetime(2026, 12, 22, 9, tzinfo=BERLIN)]
    [moved] = by_subject["Teammeeting (verschoben)"]
    assert moved.start == datetime(2026, 12, 15, 14, tzinfo=BERLIN)  # type: ignore[attr-defined]
    assert len({e.id for e in result.events}) == len(result.events)
    [allday] = by_subject["Fortbildung Manuelle Therapie"]
    assert allday.is_all_day and allday.show_as == "oof"  # type: ignore[attr-defined]
    assert allday.start == datetime(2026, 12, 3, tzinfo=BERLIN)  # type: ignore[attr-defined]
    assert allday.end == datetime(2026, 12, 5, tzinfo=BERLIN)  # type: ignore[attr-defined]
    assert by_subject["Mittagspause"][0].show_as == "free"  # type: ignore[attr-defined]
    assert by_subject["Abgesagt: Lieferung"][0].is_cancelled  # type: ignore[attr-defined]
    private = by_subject["Arzttermin"][0]
    assert private.sensitivity == "private" and private.show_as == "tentative"  # type: ignore[attr-defined]


def test_ids_are_stable_across_fetches_and_single_events_keep_their_uid() -> None:
    a = parse_published(DATA.read_bytes(), window_start=WINDOW[0], window_end=WINDOW[1])
    b = parse_published(DATA.read_bytes(), window_start=WINDOW[0], window_end=WINDOW[1])
    assert [e.id for e in a.events] == [e.id for e in b.events]
    assert "FREE-LUNCH-0001" in {e.id for e in a.events}


@pytest.mark.parametrize("body", [b"<!DOCTYPE html><html><body>Outlook</body></html>", b"", b"hello",
                                  b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\n"])
def test_not_a_calendar_is_a_clear_error(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_published(body, window_start=WINDOW[0], window_end=WINDOW[1])


@pytest.mark.parametrize(("address", "loopback", "allowed"), [
    ("8.8.8.8", False, True), ("127.0.0.1", False, False), ("127.0.0.1", True, True), ("10.1.2.3", True, False),
    ("172.16.0.1", False, False), ("192.168.1.1", False, False), ("169.254.169.254", True, False),
    ("100.64.0.1", False, False), ("::1", False, False), ("fe80::1", False, False), ("fd00:ec2::254", True, False),
    ("::ffff:10.0.0.1", False, False), ("0.0.0.0", False, False), ("2001:4860:4860::8888", False, True)])
def test_address_policy(address: str, loopback: bool, allowed: bool) -> None:
    import ipaddress

    assert address_allowed(ipaddress.ip_address(address), allow_loopback=loopback) is allowed


@pytest.mark.parametrize("url", ["http://example.org/cal.ics", "ftp://example.org/x", "https://user:pw@example.org/",
                                 "https://127.0.0.1/x.ics", "https://10.0.0.1/x.ics", "https://[::1]/x.ics",
                                 "https://169.254.169.254/latest/meta-data", "file:///etc/passwd", "https:///nohost"])
def test_urls_refused_in_production(url: str) -> None:
    with pytest.raises(BadRequest):
        check_url(url, allow_loopback=False)


def test_webcal_becomes_https() -> None:
    assert check_url("webcal://outlook.office365.com/owa/calendar/x/calendar.ics", allow_loopback=False) == \
        "https://outlook.office365.com/owa/calendar/x/calendar.ics"


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
    seen_agents: list[str] = []

    def do_GET(self) -> None:  # http.server API
        self.seen_agents.append(self.headers.get("User-Agent", ""))
        status, headers, body = self.routes.get(self.path, (404, {}, b""))
        if self.headers.get("If-None-Match") and self.headers.get("If-None-Match") == headers.get("ETag"):
            status, body = 304, b""
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    _Handler.routes = {
        "/cal.ics": (200, {"ETag": '"v1"', "Content-Type": "text/calendar"}, DATA.read_bytes()),
        "/to-private": (302, {"Location": "http://10.0.0.7/cal.ics"}, b""),
        "/to-metadata": (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b""),
        "/to-cal": (301, {"Location": "/cal.ics"}, b""),
        "/loop": (302, {"Location": "/loop"}, b""),
        "/huge": (200, {}, b"BEGIN:VCALENDAR\r\n" + b"X" * (300 * 1024)),
        "/gone": (410, {}, b""),
    }
    try:
        yield base
    finally:
        httpd.shutdown()


async def test_fetch_in_development_with_conditional_get(server: str) -> None:
    first = await fetch_ics(f"{server}/to-cal", allow_loopback=True)
    assert first.status == 200 and first.body.startswith(b"BEGIN:VCALENDAR") and first.etag == '"v1"'
    again = await fetch_ics(f"{server}/cal.ics", etag=first.etag, allow_loopback=True)
    assert again.status == 304 and again.body == b""
    assert all("Mozilla/5.0" in ua for ua in _Handler.seen_agents)


@pytest.mark.parametrize("path", ["/to-private", "/to-metadata"])
async def test_redirects_to_private_addresses_are_refused(server: str, path: str) -> None:
    with pytest.raises(BadRequest):
        await fetch_ics(f"{server}{path}", allow_loopback=True)


async def test_hostname_resolving_to_loopback_is_refused_at_connect_time(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    with pytest.raises(UnsafeAddress):
        await fetch_ics(f"https://localhost:{port}/cal.ics", allow_loopback=False)


async def test_size_cap_redirect_loop_and_gone(server: str) -> None:
    with pytest.raises(BadRequest, match="too large"):
        await fetch_ics(f"{server}/huge", allow_loopback=True, max_bytes=100 * 1024)
    with pytest.raises(BadRequest, match="redirects"):
        await fetch_ics(f"{server}/loop", allow_loopback=True)
    with pytest.raises(NotFound):
        await fetch_ics(f"{server}/gone", allow_loopback=True)


def test_window_limits_expansion() -> None:
    narrow = parse_published(DATA.read_bytes(), window_start=datetime(2026, 12, 14, tzinfo=UTC),
                             window_end=datetime(2026, 12, 14, tzinfo=UTC) + timedelta(days=2))
    assert [e.subject for e in narrow.events] == ["Teammeeting (verschoben)"]
