"""ICS import through the delta engine: published calendar → blocked slots, conditional fetches,
reconciliation when events disappear, and link health when the calendar is unpublished."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from shared.adapters.timum_memory import MemoryTimum
from shared.context import Services
from shared.domain import LinkHealth, LinkKey
from shared.ics import api
from shared.messages import SyncMessage, SyncReason
from shared.repos.links import LinkRepository
from shared.storage import StoragePort
from shared.sync.worker import run_sync
from tests.ics.test_import_parse_fetch import DATA
from tests.support.settings import make_settings
from tests.support.twins import twin_services

KEY = LinkKey("p", "r")
NOW = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


class Published(http.server.BaseHTTPRequestHandler):
    body = b""
    status = 200
    hits = 0
    encoding = ""  # a Content-Encoding the server declares (whatever the client asked for)

    def do_GET(self) -> None:  # http.server API
        type(self).hits += 1
        etag = f'"{hash(self.body)}"'
        if self.status == 200 and self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(self.status)
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(self.body)))
        if self.encoding:
            self.send_header("Content-Encoding", self.encoding)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def published() -> Iterator[str]:
    Published.body, Published.status, Published.hits, Published.encoding = DATA.read_bytes(), 200, 0, ""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Published)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/owa/calendar/x/calendar.ics"
    finally:
        httpd.shutdown()


def services(storage: StoragePort) -> Services:
    cfg = make_settings(TIMUM_WEBHOOK_SECRETS="w", ICS_IMPORT_ALLOW_LOOPBACK="true",
                        TIMUM_STATUS_WEBHOOK_URL="http://t/status")
    timum = MemoryTimum()
    timum.add_resource("p", "Behandlungsraum 1", resource_id="r")
    return twin_services(settings=cfg, storage=storage, timum=timum, clock=lambda: NOW)


async def _run(svc: Services) -> str:
    return (await run_sync(svc, SyncMessage(str(KEY), SyncReason.POLL, full=True), worker_id="w")).status


async def test_published_calendar_becomes_blocked_slots(storage: StoragePort, published: str) -> None:
    svc = services(storage)
    await api.set_ics_import(svc, "p", "r", {"url": published})
    assert await _run(svc) == "ok"
    timum = svc.timum
    assert isinstance(timum, MemoryTimum)
    slots = sorted(await timum.list_blocked_slots("p", "r"), key=lambda s: s.start)
    # Two weekly meetings in the window (one excluded, one moved → its own slot), the all-day
    # training (out of office), the private tentative appointment; not the free lunch, not the
    # cancelled delivery, not the broken event.
    assert len(slots) == 5
    assert [s.all_day for s in slots].count(True) == 1
    assert all("Arzttermin" not in s.title for s in slots)  # private: never its subject
    link = await LinkRepository(storage).require(KEY)
    assert link.ics_skipped == 1 and link.ics_etag and link.health is LinkHealth.OK and link.last_sync_at == NOW

    writes = timum.writes()
    assert await _run(svc) == "ok"            # 304: nothing written
    assert timum.writes() == writes and Published.hits == 2


async def test_removed_event_is_reconciled_away(storage: StoragePort, published: str) -> None:
    svc = services(storage)
    await api.set_ics_import(svc, "p", "r", {"url": published})
    await _run(svc)
    start = Published.body.index(b"BEGIN:VEVENT\r\nUID:PRIVATE-0001")
    end = Published.body.index(b"END:VEVENT\r\n", start) + len(b"END:VEVENT\r\n")
    Published.body = Published.body[:start] + Published.body[end:]
    await _run(svc)
    assert len(await svc.timum.list_blocked_slots("p", "r")) == 4


async def test_unpublished_calendar_marks_the_link_and_tells_timum_once(storage: StoragePort, published: str) -> None:
    svc = services(storage)
    await api.set_ics_import(svc, "p", "r", {"url": published})
    await _run(svc)
    Published.status = 404
    assert await _run(svc) == "error"
    assert await _run(svc) == "error"
    link = await LinkRepository(storage).require(KEY)
    assert link.health is LinkHealth.ERROR and link.last_error.startswith("ics_gone")
    timum = svc.timum
    assert isinstance(timum, MemoryTimum)
    assert [w["data"]["status"] for w in timum.status_webhooks] == ["error"]
