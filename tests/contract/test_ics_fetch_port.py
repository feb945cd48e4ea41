"""One contract for ``IcsFetchPort``: the real fetcher against a loopback server and the twin in
memory answer the same way, so ICS-import runs can be tested with the twin injected."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import pytest

from shared.adapters.ics_memory import MemoryIcsFetcher
from shared.errors import BadRequest, NotFound
from shared.ics.fetch import MAX_BYTES, HttpIcsFetcher, UnsafeAddress
from shared.ports import IcsFetchPort

CALENDAR = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nX-WR-CALNAME:Praxis\r\nEND:VCALENDAR\r\n"
STAMP = "Fri, 04 Dec 2026 08:00:00 GMT"


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[bytes, str, str]]] = {}

    def do_GET(self) -> None:  # http.server API
        found = self.routes.get(self.path)
        if found is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body, etag, modified = found
        fresh = (self.headers.get("If-None-Match") == etag if self.headers.get("If-None-Match")
                 else self.headers.get("If-Modified-Since") == modified)
        self.send_response(304 if fresh else 200)
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", modified)
        self.send_header("Content-Length", "0" if fresh else str(len(body)))
        self.end_headers()
        if not fresh:
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


@dataclass
class Remote:
    """A fetcher and a way to publish at a path of its host."""

    fetcher: IcsFetchPort
    base: str
    publish: object

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(params=["http", "memory"])
def remote(request: pytest.FixtureRequest) -> Iterator[Remote]:
    if request.param == "memory":
        twin = MemoryIcsFetcher()
        base = "http://127.0.0.1:9"

        def publish_twin(path: str, body: bytes, etag: str, modified: str) -> None:
            twin.publish(base + path, body, etag=etag, last_modified=modified)

        yield Remote(twin, base, publish_twin)
        return
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Handler.routes = {}

    def publish_http(path: str, body: bytes, etag: str, modified: str) -> None:
        _Handler.routes[path] = (body, etag, modified)

    try:
        yield Remote(HttpIcsFetcher(), f"http://127.0.0.1:{httpd.server_address[1]}", publish_http)
    finally:
        httpd.shutdown()


def _publish(remote: Remote, path: str, body: bytes = CALENDAR, etag: str = '"v1"', modified: str = STAMP) -> str:
    remote.publish(path, body, etag, modified)  # type: ignore[operator]
    return remote.url(path)


async def test_a_published_calendar_comes_with_its_validators(remote: Remote) -> None:
    url = _publish(remote, "/cal.ics")
    got = await remote.fetcher.fetch(url, allow_loopback=True)
    assert (got.status, got.body, got.etag, got.last_modified) == (200, CALENDAR, '"v1"', STAMP)


@pytest.mark.parametrize("by", ["etag", "last_modified"])
async def test_an_unchanged_calendar_is_304_without_a_body(remote: Remote, by: str) -> None:
    url = _publish(remote, "/cal.ics")
    validators = {"etag": '"v1"'} if by == "etag" else {"last_modified": STAMP}
    got = await remote.fetcher.fetch(url, allow_loopback=True, **validators)
    assert (got.status, got.body) == (304, b"")


async def test_a_changed_calendar_is_read_again(remote: Remote) -> None:
    url = _publish(remote, "/cal.ics", etag='"v2"')
    got = await remote.fetcher.fetch(url, etag='"v1"', allow_loopback=True)
    assert (got.status, got.etag) == (200, '"v2"')


async def test_an_unpublished_calendar_is_not_found(remote: Remote) -> None:
    with pytest.raises(NotFound):
        await remote.fetcher.fetch(remote.url("/never.ics"), allow_loopback=True)


async def test_a_loopback_address_is_refused_unless_allowed(remote: Remote) -> None:
    url = _publish(remote, "/cal.ics").replace("http://", "https://", 1)
    with pytest.raises(UnsafeAddress):
        await remote.fetcher.fetch(url, allow_loopback=False)
    with pytest.raises(BadRequest):  # plain http only for the loopback of a development setup
        await remote.fetcher.fetch(remote.url("/cal.ics"), allow_loopback=False)


async def test_a_calendar_over_the_size_limit_is_refused(remote: Remote) -> None:
    url = _publish(remote, "/huge.ics", body=CALENDAR + b"X" * MAX_BYTES)
    with pytest.raises(BadRequest):
        await remote.fetcher.fetch(url, allow_loopback=True)
