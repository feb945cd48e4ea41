"""Attack: a tiny published calendar whose rule expands without bound (#13 item 4).

A 172-byte calendar with ``RRULE:FREQ=MINUTELY`` once expanded to 500,000+ occurrences (~80 s of
CPU, ~1.3 GB) and would have become one timum write each. Now: sub-hourly rules are refused for
blocking (the series is skipped and named), dense or long series and crowded calendars end as a
link error naming the cap with nothing written, and parsing runs off the event loop under a
time budget.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime

import pytest

from shared.adapters.timum_memory import MemoryTimum
from shared.domain import LinkHealth
from shared.errors import BadRequest
from shared.ics import api, importer, source
from shared.ics.importer import parse_published
from shared.repos.links import LinkRepository
from shared.storage import StoragePort
from tests.support.ics_world import KEY, Published, run_import, services

WINDOW = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2027, 11, 1, tzinfo=UTC))
BOMBS = {
    "minutely": b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:b\r\nDTSTART:20200101T000000Z\r\n"
                b"DTEND:20200101T000100Z\r\nRRULE:FREQ=MINUTELY\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    "secondly": b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:b\r\nDTSTART:20200101T000000Z\r\n"
                b"DURATION:PT1S\r\nRRULE:FREQ=SECONDLY\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    # Minutely through BY-parts of a daily rule.
    "byminute": b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:b\r\nDTSTART:20200101T000000Z\r\n"
                b"DURATION:PT1M\r\nRRULE:FREQ=DAILY;BYHOUR=" + ",".join(map(str, range(24))).encode()
                + b";BYMINUTE=" + ",".join(map(str, range(60))).encode() + b"\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    # Hourly since 1900: millions of rule steps before the window is even reached.
    "hourly-since-1900": b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:b\r\nDTSTART:19000101T000000Z\r\n"
                         b"DURATION:PT30M\r\nRRULE:FREQ=HOURLY\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(BOMBS))
def test_a_rule_bomb_is_refused_without_expanding_it(name: str) -> None:
    result = parse_published(BOMBS[name], window_start=WINDOW[0], window_end=WINDOW[1])
    assert result.events == []
    assert [s.id for s in result.skipped] == ["b"]
    assert result.skipped[0].reason in ("recurs more often than hourly", "recurrence too long to expand")


@pytest.mark.timeout(60)
async def test_through_the_engine_a_bomb_writes_nothing(storage: StoragePort, published: str) -> None:
    svc = services(storage)
    Published.body = BOMBS["minutely"]
    await api.set_ics_import(svc, "p", "r", {"url": published})
    assert await run_import(svc) == "ok"
    timum = svc.timum
    assert isinstance(timum, MemoryTimum)
    assert await timum.list_blocked_slots("p", "r") == [] and timum.writes() == 0
    link = await LinkRepository(storage).require(KEY)
    assert link.ics_skipped == 1 and "hourly" in link.skipped_sample and link.health is LinkHealth.OK


@pytest.mark.timeout(60)
def test_a_legal_but_huge_series_is_a_cap_error() -> None:
    hourly = (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:h\r\nDTSTART:20261101T000000Z\r\n"
              b"DURATION:PT30M\r\nRRULE:FREQ=HOURLY\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    with pytest.raises(BadRequest) as caught:
        parse_published(hourly, window_start=WINDOW[0], window_end=WINDOW[1])
    assert caught.value.code == "ics_series_too_long"


def test_the_time_budget_ends_a_parse() -> None:
    ticks = iter(range(1_000_000))
    body = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\n" + b"".join(
        f"BEGIN:VEVENT\r\nUID:e{i}\r\nDTSTART:20261201T0{i % 10}0000Z\r\nDURATION:PT1H\r\nEND:VEVENT\r\n".encode()
        for i in range(50)) + b"END:VCALENDAR\r\n"
    with pytest.raises(BadRequest) as caught:
        # A clock that advances a second per look: the 5-second budget is spent after a few events.
        parse_published(body, window_start=WINDOW[0], window_end=WINDOW[1], limits=importer.IcsLimits(time_budget=5),
                        clock=lambda: float(next(ticks)))
    assert caught.value.code == "ics_parse_timeout"


async def test_parsing_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []
    real = importer.parse_published

    def spy(*args: object, **kwargs: object) -> importer.ImportResult:
        seen.append(threading.get_ident())
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(source, "parse_published", spy)
    await source.parse_off_loop(BOMBS["minutely"], window_start=WINDOW[0], window_end=WINDOW[1],
                                default_zone="Europe/Berlin")
    assert seen and seen[0] != loop_thread


@pytest.mark.timeout(30)
async def test_a_parse_stuck_in_a_library_still_ends_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def stuck(*args: object, **kwargs: object) -> None:
        time.sleep(3)

    monkeypatch.setattr(source, "parse_published", stuck)
    monkeypatch.setattr(source, "BUDGET_GRACE", 0.1)
    ticker = asyncio.create_task(asyncio.sleep(0.05))
    with pytest.raises(BadRequest) as caught:
        await source.parse_off_loop(b"", window_start=WINDOW[0], window_end=WINDOW[1], default_zone="UTC",
                                    limits=importer.IcsLimits(time_budget=0.2))
    assert caught.value.code == "ics_parse_timeout"
    assert ticker.done()  # the loop kept running meanwhile
