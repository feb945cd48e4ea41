"""An ICS-import link run with the fetcher injected (``Services.ics``), like every other remote:
no server, the same engine, and the fetch's failures meet the same health rule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.adapters.ics_memory import MemoryIcsFetcher
from shared.adapters.timum_memory import MemoryTimum
from shared.context import Services
from shared.domain import LinkHealth, LinkKey
from shared.errors import TransientError
from shared.ics import api
from shared.messages import SyncMessage, SyncReason
from shared.repos.links import LinkRepository
from shared.storage.memory import MemoryStorage
from shared.sync.worker import run_sync
from tests.support.ics_world import DATA
from tests.support.twins import twin_services

KEY = LinkKey("p", "r")
NOW = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
URL = "https://outlook.office365.com/owa/calendar/abc/def/calendar.ics"


def _world() -> tuple[Services, MemoryIcsFetcher, MemoryTimum]:
    fetcher = MemoryIcsFetcher()
    fetcher.publish(URL, DATA.read_bytes(), etag='"v1"')
    timum = MemoryTimum()
    timum.add_resource("p", "Behandlungsraum 1", resource_id="r")
    services = twin_services(storage=MemoryStorage(), timum=timum, clock=lambda: NOW)
    services.ics = fetcher
    return services, fetcher, timum


async def _run(services: Services) -> str:
    return (await run_sync(services, SyncMessage(str(KEY), SyncReason.POLL, full=True), worker_id="w")).status


async def test_a_published_calendar_syncs_through_the_injected_fetcher() -> None:
    services, fetcher, timum = _world()
    await api.set_ics_import(services, "p", "r", {"url": URL})
    assert await _run(services) == "ok"
    assert len(await timum.list_blocked_slots("p", "r")) == 5
    writes = timum.writes()
    assert await _run(services) == "ok"  # unchanged: a conditional fetch, nothing written
    assert timum.writes() == writes
    assert [etag for _, etag, _ in fetcher.requests] == ["", '"v1"']


async def test_an_unpublished_calendar_is_a_link_error_and_a_transient_one_is_retried() -> None:
    services, fetcher, _ = _world()
    await api.set_ics_import(services, "p", "r", {"url": URL})
    await _run(services)
    fetcher.fail_next(TransientError("host down"))
    with pytest.raises(TransientError):  # to the queue's retry, not the link's health
        await _run(services)
    assert (await LinkRepository(services.storage).require(KEY)).health is LinkHealth.OK
    fetcher.unpublish(URL)
    assert await _run(services) == "error"
    link = await LinkRepository(services.storage).require(KEY)
    assert link.health is LinkHealth.ERROR and link.last_error.startswith("ics_gone")
