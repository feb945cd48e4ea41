"""What the ICS import tests build (fixture ``published`` in ``tests/ics/conftest.py``): a published
Outlook calendar served over loopback HTTP with ETags, and services over the twins that may
fetch from loopback, with one ICS link ``KEY`` run through the sync worker."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from shared.adapters.timum_memory import MemoryTimum
from shared.context import Services
from shared.domain import LinkKey
from shared.messages import SyncMessage, SyncReason
from shared.storage import StoragePort
from shared.sync.worker import run_sync
from tests.support.settings import make_settings
from tests.support.twins import twin_services

#: a calendar as Outlook publishes it
DATA = Path(__file__).resolve().parent.parent / "ics" / "data" / "outlook_published.ics"
KEY = LinkKey("p", "r")
NOW = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


class Published(http.server.BaseHTTPRequestHandler):
    """The published calendar: a test sets ``body``, ``status`` and ``encoding`` on the class and
    reads ``hits``; a request with the current ETag gets 304."""

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


@contextmanager
def serve_published() -> Iterator[str]:
    """``DATA`` served on a free loopback port (state reset): the calendar's URL."""
    Published.body, Published.status, Published.hits, Published.encoding = DATA.read_bytes(), 200, 0, ""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Published)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/owa/calendar/x/calendar.ics"
    finally:
        httpd.shutdown()


def services(storage: StoragePort) -> Services:
    """Services over the twins, allowed to fetch from loopback, with timum resource ``KEY``."""
    cfg = make_settings(TIMUM_WEBHOOK_SECRETS="w", ICS_IMPORT_ALLOW_LOOPBACK="true",
                        TIMUM_STATUS_WEBHOOK_URL="http://t/status")
    timum = MemoryTimum()
    timum.add_resource("p", "Behandlungsraum 1", resource_id="r")
    return twin_services(settings=cfg, storage=storage, timum=timum, clock=lambda: NOW)


async def run_import(svc: Services) -> str:
    """One full sync round of ``KEY`` as the poll timer queues it: the outcome's status."""
    return (await run_sync(svc, SyncMessage(str(KEY), SyncReason.POLL, full=True), worker_id="w")).status
