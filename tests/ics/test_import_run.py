"""ICS import through the delta engine: published calendar → blocked slots, conditional fetches,
reconciliation when events disappear, and link health when the calendar is unpublished."""

from __future__ import annotations

from shared.adapters.timum_memory import MemoryTimum
from shared.domain import LinkHealth
from shared.ics import api
from shared.repos.links import LinkRepository
from shared.storage import StoragePort
from tests.support.ics_world import KEY, NOW, Published, run_import, services


async def test_published_calendar_becomes_blocked_slots(storage: StoragePort, published: str) -> None:
    svc = services(storage)
    await api.set_ics_import(svc, "p", "r", {"url": published})
    assert await run_import(svc) == "ok"
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
    assert await run_import(svc) == "ok"            # 304: nothing written
    assert timum.writes() == writes and Published.hits == 2


async def test_removed_event_is_reconciled_away(storage: StoragePort, published: str) -> None:
    svc = services(storage)
    await api.set_ics_import(svc, "p", "r", {"url": published})
    await run_import(svc)
    start = Published.body.index(b"BEGIN:VEVENT\r\nUID:PRIVATE-0001")
    end = Published.body.index(b"END:VEVENT\r\n", start) + len(b"END:VEVENT\r\n")
    Published.body = Published.body[:start] + Published.body[end:]
    await run_import(svc)
    assert len(await svc.timum.list_blocked_slots("p", "r")) == 4


async def test_unpublished_calendar_marks_the_link_and_tells_timum_once(storage: StoragePort, published: str) -> None:
    svc = services(storage)
    await api.set_ics_import(svc, "p", "r", {"url": published})
    await run_import(svc)
    Published.status = 404
    assert await run_import(svc) == "error"
    assert await run_import(svc) == "error"
    link = await LinkRepository(storage).require(KEY)
    assert link.health is LinkHealth.ERROR and link.last_error.startswith("ics_gone")
    timum = svc.timum
    assert isinstance(timum, MemoryTimum)
    assert [w["data"]["status"] for w in timum.status_webhooks] == ["error"]
