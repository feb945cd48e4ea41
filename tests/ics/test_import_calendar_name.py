"""An ICS-import link is named after the published calendar (X-WR-CALNAME), not its host, once the
first fetch has read it — so timum shows "Kalender", not "127.0.0.1"."""

from __future__ import annotations

from shared.ics import api
from shared.repos.links import LinkRepository
from shared.storage import StoragePort
from tests.support.ics_world import KEY, Published, run_import, services


async def test_the_link_takes_the_calendars_own_name(storage: StoragePort, published: str) -> None:
    svc = services(storage)
    link = await api.set_ics_import(svc, "p", "r", {"url": published})
    assert link.calendar_name == "127.0.0.1"          # until the calendar was read, its host
    assert await run_import(svc) == "ok"
    stored = await LinkRepository(storage).require(KEY)
    assert stored.calendar_name == "Kalender" and stored.ics_host == "127.0.0.1"


async def test_control_characters_are_dropped(storage: StoragePort, published: str) -> None:
    svc = services(storage)
    Published.body = Published.body.replace(b"X-WR-CALNAME:Kalender", b"X-WR-CALNAME:Praxis \x07\t Weber ")
    await api.set_ics_import(svc, "p", "r", {"url": published})
    await run_import(svc)
    assert (await LinkRepository(storage).require(KEY)).calendar_name == "Praxis Weber"


async def test_without_a_name_the_host_stays(storage: StoragePort, published: str) -> None:
    svc = services(storage)
    Published.body = Published.body.replace(b"X-WR-CALNAME:Kalender\r\n", b"")
    await api.set_ics_import(svc, "p", "r", {"url": published})
    assert await run_import(svc) == "ok"
    assert (await LinkRepository(storage).require(KEY)).calendar_name == "127.0.0.1"
