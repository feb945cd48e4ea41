"""In-memory twin of ``IcsFetchPort``: calendars published at URLs, with validators.

Same contract as ``HttpIcsFetcher`` (``tests/contract/test_ics_fetch_port.py``): addresses are
checked by the same ``check_url`` first, a matching ETag or Last-Modified answers 304 with no
body, an unpublished calendar is ``NotFound``, one over the size limit ``BadRequest`` (whether
the body is a calendar is the importer's question). ``fail_next`` injects one failure (e.g.
``TransientError``).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import BadRequest, NotFound, SyncError
from shared.ics.fetch import MAX_BYTES, FetchResult, check_url
from shared.ports import IcsFetchPort


@dataclass
class _Published:
    body: bytes
    etag: str
    last_modified: str


class MemoryIcsFetcher(IcsFetchPort):
    def __init__(self) -> None:
        self._calendars: dict[str, _Published] = {}
        self._failures: list[SyncError] = []
        #: every fetch as (url, etag, last_modified), for tests that count requests
        self.requests: list[tuple[str, str, str]] = []

    def publish(self, url: str, body: bytes, *, etag: str = "", last_modified: str = "") -> None:
        self._calendars[url] = _Published(body, etag, last_modified)

    def unpublish(self, url: str) -> None:
        self._calendars.pop(url, None)

    def fail_next(self, error: SyncError) -> None:
        self._failures.append(error)

    async def fetch(self, url: str, *, etag: str = "", last_modified: str = "",
                    allow_loopback: bool = False) -> FetchResult:
        check_url(url, allow_loopback=allow_loopback)
        self.requests.append((url, etag, last_modified))
        if self._failures:
            raise self._failures.pop(0)
        published = self._calendars.get(url)
        if published is None:
            raise NotFound("the published calendar no longer exists (unpublished in Outlook?)")
        if len(published.body) > MAX_BYTES:
            raise BadRequest("the published calendar is too large", field="url")
        if ((etag and etag == published.etag)
                or (not etag and last_modified and last_modified == published.last_modified)):
            return FetchResult(304, b"", etag, last_modified)
        return FetchResult(200, published.body, published.etag, published.last_modified)
