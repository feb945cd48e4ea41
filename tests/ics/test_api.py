"""Provider-scoped ICS management: feed URLs (create, rotate, revoke) and ICS-import links."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from shared.adapters.graph_memory import MemoryGraph, MemoryGraphProvider
from shared.adapters.timum_memory import MemoryTimum
from shared.context import Services
from shared.crypto import Cipher
from shared.domain import Link, LinkKey, LinkMode
from shared.errors import BadRequest, Conflict
from shared.ics import api
from shared.ics.tokens import FeedTokenRepository
from shared.messages import SYNC_QUEUE
from shared.repos.links import LinkRepository
from shared.storage.memory import MemoryStorage
from tests.support.settings import make_settings


def services() -> Services:
    timum = MemoryTimum()
    timum.add_resource("p", "Behandlungsraum 1", resource_id="r")
    return Services(settings=make_settings(), storage=MemoryStorage(), timum=timum,
                    graph=MemoryGraphProvider(MemoryGraph()), clock=lambda: datetime(2026, 11, 23, tzinfo=UTC))


async def test_feed_url_is_returned_once_and_rotates() -> None:
    svc = services()
    first = await api.issue_feed(svc, "p", "r", None)
    assert first["calendarName"] == "Behandlungsraum 1"
    assert first["url"].startswith("http://127.0.0.1:7071/api/ics/")
    assert first["webcalUrl"].startswith("webcal://127.0.0.1:7071/api/ics/")
    token = first["url"].rsplit("/", 1)[1]
    tokens = FeedTokenRepository(svc.storage)
    assert await tokens.resolve(token) is not None
    second = await api.issue_feed(svc, "p", "r", {"calendarName": "Raum 1 (timum)"})
    assert await tokens.resolve(token) is None
    assert await tokens.resolve(second["url"].rsplit("/", 1)[1]) is not None
    # Only the hash is stored: the token never appears in storage.
    dump = json.dumps([dict(r) for t in svc.storage.tables.values() for r in t.rows.values()], default=str)  # type: ignore[attr-defined]
    assert token not in dump and second["url"].rsplit("/", 1)[1] not in dump
    assert await api.revoke_feed(svc, "p", "r") is True
    assert await api.revoke_feed(svc, "p", "r") is False


@pytest.mark.parametrize("body", [[], {"calendarName": 5}, {"calendarName": "x" * 201}])
async def test_feed_body_is_validated(body: object) -> None:
    with pytest.raises(BadRequest):
        await api.issue_feed(services(), "p", "r", body)


async def test_ics_import_link_stores_the_url_encrypted() -> None:
    svc = services()
    url = "https://outlook.office365.com/owa/calendar/abc@praxis.example/s3cr3tPart/calendar.ics"
    link = await api.set_ics_import(svc, "p", "r", {"url": url})
    assert link.mode is LinkMode.ICS and link.ics_host == "outlook.office365.com"
    stored = await LinkRepository(svc.storage).require(LinkKey("p", "r"))
    assert "s3cr3tPart" not in stored.ics_url_encrypted
    cipher = Cipher(svc.settings.token_encryption_keys)
    assert cipher.decrypt_str(stored.ics_url_encrypted, aad="p|r") == url
    queued = svc.storage.queue(SYNC_QUEUE).drain()  # type: ignore[attr-defined]
    assert [json.loads(m)["link"] for m in queued] == ["p|r"]


@pytest.mark.parametrize("body", [{}, {"url": 3}, {"url": "http://example.org/c.ics"},
                                  {"url": "https://10.0.0.1/c.ics"}, {"url": "https://169.254.169.254/x"}, "x"])
async def test_ics_import_refuses_bad_and_unsafe_urls_and_stores_nothing(body: object) -> None:
    svc = services()
    with pytest.raises(BadRequest):
        await api.set_ics_import(svc, "p", "r", body)
    assert await LinkRepository(svc.storage).get(LinkKey("p", "r")) is None


async def test_ics_import_refused_for_a_graph_linked_resource() -> None:
    svc = services()
    await LinkRepository(svc.storage).save(Link("p", "r", LinkMode.DELEGATED, "t", "m", "c", "Kalender", "m"))
    with pytest.raises(Conflict):
        await api.set_ics_import(svc, "p", "r", {"url": "https://outlook.office365.com/owa/calendar/x/calendar.ics"})
