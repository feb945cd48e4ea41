"""Attack: a calendar server that answers, then sends one byte every few hundred milliseconds
(#13 item 4). httpx's timeouts are per read, so such a server once held a fetch for as long as it
liked (35 s seen). Now the whole fetch has one deadline and ends as a link error naming it."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from shared.domain import LinkHealth
from shared.errors import BadRequest
from shared.ics import api, fetch
from shared.repos.links import LinkRepository
from shared.storage import StoragePort
from tests.support.ics_world import KEY, run_import, services


@pytest.fixture
def trickling() -> Iterator[str]:
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/calendar\r\nContent-Length: 100000\r\n\r\n"
                         b"BEGIN:VCALENDAR\r\n")
            while not stop.wait(0.2):
                try:
                    conn.sendall(b"X")
                except OSError:
                    return

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/calendar.ics"
    finally:
        stop.set()
        server.close()


@pytest.mark.timeout(60)
async def test_a_trickling_server_cannot_hold_a_fetch(trickling: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "DEADLINE", 1.5, raising=False)
    with pytest.raises(BadRequest) as caught:
        await fetch.fetch_ics(trickling, allow_loopback=True)
    assert caught.value.code == "ics_fetch_deadline"


@pytest.mark.timeout(60)
async def test_through_the_engine_the_link_names_the_deadline(storage: StoragePort, trickling: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "DEADLINE", 1.5, raising=False)
    svc = services(storage)
    await api.set_ics_import(svc, "p", "r", {"url": trickling})
    assert await run_import(svc) == "error"
    link = await LinkRepository(storage).require(KEY)
    assert link.health is LinkHealth.ERROR and link.last_error.startswith("ics_fetch_deadline")
    assert await svc.timum.list_blocked_slots("p", "r") == []
