"""Timer triggers: NCRONTAB (six fields, seconds first) and TimeSpan schedules.

Occurrences are computed in UTC unless ``WEBSITE_TIME_ZONE`` names an IANA zone, as on Linux
plans. Invocations of one timer never overlap: the next occurrence is computed after the current
one finished, skipping any that were missed (the real host does the same). ``past_due`` is true
when an invocation starts later than its occurrence by more than the schedule's interval — the
loop was blocked, or the previous invocation ran long. ``run_on_startup`` fires once at start.
A retry policy on the function (fixed delay or exponential back-off) is honoured, as Azure does
for timer triggers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from azure.functions.timer import TimerRequest
from croniter import croniter

from devtools.devhost.config import TIMESPAN_PATTERN, ConfigError, parse_timespan
from devtools.devhost.invoke import FunctionRunner, RunResult, Spawner
from devtools.devhost.metadata import FunctionSpec, RetrySpec

log = logging.getLogger("devtools.devhost")

_NEVER = "0001-01-01T00:00:00"


class Schedule(Protocol):
    def next_after(self, moment: datetime) -> datetime: ...


@dataclass(frozen=True)
class CronSchedule:
    expression: str  # six fields: second minute hour day month day-of-week
    zone: tzinfo

    def next_after(self, moment: datetime) -> datetime:
        local = moment.astimezone(self.zone)
        nxt: datetime = croniter(self.expression, local, second_at_beginning=True).get_next(datetime)
        return nxt.astimezone(UTC)


@dataclass(frozen=True)
class IntervalSchedule:
    interval: timedelta

    def next_after(self, moment: datetime) -> datetime:
        return moment + self.interval


def time_zone(env_value: str | None) -> tzinfo:
    if not env_value:
        return UTC
    try:
        return ZoneInfo(env_value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"WEBSITE_TIME_ZONE {env_value!r} is not an IANA time zone name") from None


def parse_schedule(text: str, zone: tzinfo = UTC) -> Schedule:
    """``"0 */5 * * * *"`` (NCRONTAB; a five-field expression gets second 0) or ``"00:05:00"``."""
    text = text.strip()
    if TIMESPAN_PATTERN.match(text):
        interval = parse_timespan(text)
        if interval <= timedelta(0):
            raise ConfigError(f"timer schedule {text!r}: the interval must be positive")
        return IntervalSchedule(interval)
    fields = text.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ConfigError(f"timer schedule {text!r}: expected six NCRONTAB fields (second minute hour day month "
                          f"day-of-week) or a TimeSpan like 00:05:00")
    expression = " ".join(fields)
    if not croniter.is_valid(expression, second_at_beginning=True):
        raise ConfigError(f"timer schedule {text!r} is not a valid NCRONTAB expression")
    return CronSchedule(expression, zone)


def retry_delay(retry: RetrySpec, attempt: int) -> float:
    """Seconds to wait before retry number ``attempt + 1``."""
    if retry.strategy == "fixed_delay":
        return parse_timespan(retry.delay_interval or "00:00:00").total_seconds()
    low = parse_timespan(retry.minimum_interval or "00:00:00").total_seconds()
    high = parse_timespan(retry.maximum_interval or "00:00:00").total_seconds()
    return float(min(high, low * (2 ** attempt))) if high > 0 else float(low * (2 ** attempt))


class TimerLoop:
    def __init__(self, *, spec: FunctionSpec, schedule: Schedule, runner: FunctionRunner, spawn: Spawner,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.spec = spec
        self.schedule = schedule
        self._runner = runner
        self._spawn = spawn
        self._now = now
        self._stopping = asyncio.Event()
        self._last: datetime | None = None

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        run_on_startup = getattr(self.spec.trigger, "run_on_startup", False)
        if run_on_startup:
            await self._fire(past_due=False, next_due=self.schedule.next_after(self._now()))
        next_due = self.schedule.next_after(self._now())
        while not self._stopping.is_set():
            wait = (next_due - self._now()).total_seconds()
            if wait > 0 and await self._sleep(wait):
                break
            fired_at = self._now()
            following = self.schedule.next_after(next_due)
            past_due = fired_at - next_due > following - next_due
            await self._fire(past_due=past_due, next_due=following)
            self._last = next_due
            next_due = self.schedule.next_after(self._now())

    async def _sleep(self, seconds: float) -> bool:
        """Sleep; True if the host is stopping."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    async def _fire(self, *, past_due: bool, next_due: datetime) -> None:
        retry = self.spec.retry
        attempt = 0
        while True:
            status = {"Last": self._last.isoformat() if self._last else _NEVER, "Next": next_due.isoformat(),
                      "LastUpdated": self._now().isoformat()}
            request = TimerRequest(past_due=past_due, schedule_status=status, schedule={"AdjustForDST": True})
            task = self._spawn(self._runner.run(self.spec, request, past_due=past_due, retry_count=attempt))
            # Shielded: stopping the loop must not cancel an invocation that is already running.
            result: RunResult = await asyncio.shield(task)
            if result.ok or retry is None or self._stopping.is_set():
                return
            if retry.max_retry_count != -1 and attempt >= retry.max_retry_count:  # -1: retry forever
                return
            delay = retry_delay(retry, attempt)
            attempt += 1
            log.info("Timer %s failed; retry %d of %d in %.1f s", self.spec.name, attempt, retry.max_retry_count,
                     delay)
            if await self._sleep(delay):
                return
