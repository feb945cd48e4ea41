"""ICS imports through the engine: skipped events reach the link status, a cap or a parser failure
ends as a clear link error with nothing written, slots carry source ``ics``."""

from __future__ import annotations

import gzip
from datetime import timedelta

import pytest

from shared.adapters.timum_memory import MemoryTimum
from shared.connect.status import reason_text
from shared.domain import BlockedSlot, LinkHealth, slot_external_id
from shared.ics import api, source
from shared.repos.links import LinkRepository
from shared.storage import StoragePort
from tests.support.ics_world import KEY, NOW, Published, run_import, services

BROKEN = b"""BEGIN:VEVENT\r
UID:BROKEN-DOUBLE\r
DTSTART:20261202T100000Z\r
DTSTART:20261203T100000Z\r
DTEND:20261202T110000Z\r
END:VEVENT\r
"""


def _series(count: int, freq: str = "HOURLY") -> bytes:
    return (f"BEGIN:VEVENT\r\nUID:SERIES-{freq}\r\nDTSTART:20261201T000000Z\r\nDTEND:20261201T003000Z\r\n"
            f"RRULE:FREQ={freq};COUNT={count}\r\nEND:VEVENT\r\n").encode()


def _with(extra: bytes) -> bytes:
    body = Published.body
    cut = body.rindex(b"END:VCALENDAR")
    return body[:cut] + extra + body[cut:]


async def test_skipped_events_are_counted_and_named_on_the_link(storage: StoragePort, published: str) -> None:
    svc = services(storage)
    Published.body = _with(BROKEN)
    await api.set_ics_import(svc, "p", "r", {"url": published})
    assert await run_import(svc) == "ok"
    link = await LinkRepository(storage).require(KEY)
    assert link.health is LinkHealth.OK
    assert link.ics_skipped == link.skipped_items == 2
    assert "BROKEN-0001" in link.skipped_sample and "DTSTART" in link.skipped_sample


async def test_slots_carry_source_ics_and_old_outlook_slots_are_reconciled(storage: StoragePort,
                                                                           published: str) -> None:
    svc = services(storage)
    timum = svc.timum
    assert isinstance(timum, MemoryTimum)
    # A slot this link wrote before imports had their own source, for an event since deleted.
    legacy = BlockedSlot(slot_external_id(KEY, "GONE-EVENT"), NOW + timedelta(days=2), NOW + timedelta(days=2, hours=1),
                         title="", source="outlook")
    await timum.put_blocked_slot("p", "r", legacy)
    await api.set_ics_import(svc, "p", "r", {"url": published})
    assert await run_import(svc) == "ok"
    slots = await timum.list_blocked_slots("p", "r")
    assert len(slots) == 5 and {s.source for s in slots} == {"ics"}


@pytest.mark.parametrize(("extra", "code", "german", "english"), [
    # One hourly series of 5,000 occurrences in the window.
    (_series(5000), "ics_series_too_long", "Serie", "series"),
    # Forty series of 600 each: every series is allowed, together they are too many.
    (b"".join(_series(600).replace(b"SERIES-", f"S{i}-".encode()) for i in range(40)),
     "ics_too_many_occurrences", "zu viele Termine", "too many events"),
    # More VEVENTs than a calendar may hold (refused before any is parsed).
    (b"".join(f"BEGIN:VEVENT\r\nUID:E{i}\r\nDTSTART:20261201T000000Z\r\nEND:VEVENT\r\n".encode()
              for i in range(20_001)), "ics_too_many_events", "zu viele Termine", "too many events"),
])
async def test_over_a_cap_the_link_says_why_and_nothing_is_written(storage: StoragePort, published: str,
                                                                   extra: bytes, code: str, german: str,
                                                                   english: str) -> None:
    svc = services(storage)
    timum = svc.timum
    assert isinstance(timum, MemoryTimum)
    await api.set_ics_import(svc, "p", "r", {"url": published})
    assert await run_import(svc) == "ok"
    before, writes = sorted((s.external_id, s.start) for s in await timum.list_blocked_slots("p", "r")), timum.writes()
    Published.body = _with(extra)
    assert await run_import(svc) == "error"
    link = await LinkRepository(storage).require(KEY)
    assert link.health is LinkHealth.ERROR and link.last_error.startswith(code)
    # Nothing partial: the slots of the last good import stay, and no write was made.
    assert sorted((s.external_id, s.start) for s in await timum.list_blocked_slots("p", "r")) == before
    assert timum.writes() == writes
    assert german in reason_text("de", link.health, link.last_error)
    assert english in reason_text("en", link.health, link.last_error)


async def test_a_parser_failure_is_a_link_error_not_a_poison_message(storage: StoragePort, published: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RecursionError("deep inside a library")

    svc = services(storage)
    monkeypatch.setattr(source, "parse_published", explode)
    await api.set_ics_import(svc, "p", "r", {"url": published})
    assert await run_import(svc) == "error"        # returned, not raised: the queue message completes
    link = await LinkRepository(storage).require(KEY)
    assert link.health is LinkHealth.ERROR and link.last_error.startswith("ics_unreadable")


async def test_gzip_sent_although_identity_was_asked_and_a_byte_order_mark(storage: StoragePort,
                                                                         published: str) -> None:
    svc = services(storage)
    Published.body, Published.encoding = gzip.compress(b"\xef\xbb\xbf" + Published.body), "gzip"
    await api.set_ics_import(svc, "p", "r", {"url": published})
    assert await run_import(svc) == "ok"
    assert len(await svc.timum.list_blocked_slots("p", "r")) == 5


async def test_unlinking_an_ics_link_removes_its_ics_slots(storage: StoragePort, published: str) -> None:
    from shared.services.subscriptions import teardown

    svc = services(storage)
    timum = svc.timum
    assert isinstance(timum, MemoryTimum)
    await api.set_ics_import(svc, "p", "r", {"url": published})
    assert await run_import(svc) == "ok"
    # A slot of this link that lost its status row (a crash between the PUT and the row).
    orphan = BlockedSlot(slot_external_id(KEY, "ORPHAN"), NOW + timedelta(days=3), NOW + timedelta(days=3, hours=1),
                         title="", source="ics")
    await timum.put_blocked_slot("p", "r", orphan)
    repo = LinkRepository(storage)
    link = await repo.require(KEY)
    await repo.delete(link.key)
    await repo.release_calendar(link)
    await teardown(svc, KEY)
    assert await timum.list_blocked_slots("p", "r") == []
