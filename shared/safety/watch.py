"""The link watch: a timer's sweep over all links that tells timum when a link falls behind
(``stale``) and catches up (``fresh``), reminds it of links that keep needing a reconnect, and
reports Outlook events that overlap confirmed bookings (``shared.safety.overlaps``).

Decisions are pure (``next_freshness``, ``due_reminder``); ``sweep`` does the I/O. Every webhook
goes through ``shared.connect.status.notice``: one per key, also under retries and when two
instances sweep at once.

* **stale / fresh**: a per-link state row (``~freshness``: state and a generation number) is
  switched with its ETag; the notice key is the generation, so each switch is told exactly once.
  A crash between the switch and the POST is repaired by the next sweep (the notice of the
  current generation is still unsent).
* **reminders**: while a link needs a reconnect, on each of the provider's reminder days (counted
  from the change to ``needs_reconnect``) one reminder; the key is the episode (the status
  outbox's delivery id of that change) and the day, so a reconnect and a new failure start over.
  After a gap (the timer did not run for days) only the latest due day is sent, not a burst.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.connect import status
from shared.context import Services
from shared.domain import Link, LinkHealth, ProviderSettings, stable_id
from shared.errors import Conflict
from shared.repos.links import LinkRepository, ProviderSettingsRepository
from shared.safety import overlaps
from shared.safety.freshness import link_is_stale
from shared.safety.rules import reminder_days
from shared.storage.base import encode_key

log = logging.getLogger(__name__)

FRESH = "fresh"
STALE = "stale"
#: links looked at side by side (each costs a few point reads)
CONCURRENCY = 8


@dataclass(frozen=True)
class Freshness:
    state: str = FRESH
    generation: int = 0


@dataclass
class SweepOutcome:
    links: int = 0
    stale: int = 0
    fresh: int = 0
    reminders: int = 0
    conflicts: int = 0
    resolved: int = 0
    failed: list[str] = field(default_factory=list)


def next_freshness(current: Freshness, stale: bool) -> Freshness | None:
    """The state to switch to, or None when the link already is where it should be."""
    want = STALE if stale else FRESH
    return None if current.state == want else Freshness(want, current.generation + 1)


def due_reminder(since: datetime, now: datetime, days: Sequence[int]) -> int | None:
    """The latest reminder day that is due ``now`` for an episode that began at ``since``."""
    due = [day for day in days if now >= since + timedelta(days=day)]
    return max(due) if due else None


async def check_freshness(services: Services, link: Link, settings: ProviderSettings, now: datetime) -> str:
    """Switch and announce the link's freshness if it changed; returns the notice sent ("" if none)."""
    stale = link_is_stale(link, now, timedelta(minutes=settings.stale_after_minutes))
    data: dict[str, Any] = {"staleAfterMinutes": settings.stale_after_minutes}
    for _ in range(4):
        row = await status.notice_state(services, link, "freshness")
        current = Freshness(str(row["state"]), int(row["generation"])) if row else Freshness()
        target = next_freshness(current, stale)
        if target is None:
            if current.generation:
                # The switch was saved but its POST may have failed: send it now (once).
                sent = await status.notice(services, link, current.state, str(current.generation), data)
                return current.state if sent else ""
            return ""
        try:
            await status.save_notice_state(services, link, "freshness",
                                           {"state": target.state, "generation": target.generation,
                                            "changed_at": now}, row["etag"] if row else None)
        except Conflict:
            continue  # another sweep switched it meanwhile: look again
        sent = await status.notice(services, link, target.state, str(target.generation), data)
        return target.state if sent else ""
    return ""


async def check_reminder(services: Services, link: Link, settings: ProviderSettings, now: datetime) -> bool:
    """Send the due reconnect reminder of a link that needs a reconnect; True if one went out."""
    if link.health is not LinkHealth.NEEDS_RECONNECT:
        return False
    row = await services.storage.table(status.LINK_STATUS).get(encode_key(str(link.key)), "")
    if row is not None and row.get("health") == LinkHealth.NEEDS_RECONNECT.value:
        episode, since = str(row["delivery_id"]), row["occurred_at"]
    elif link.last_error_at is not None:
        since = link.last_error_at
        episode = stable_id(str(link.key), since.isoformat(), length=16)
    else:
        return False
    day = due_reminder(since, now, reminder_days(settings))
    if day is None:
        return False
    data: dict[str, Any] = {"reminderDay": day}
    if link.reconnect_url:
        data["reconnectUrl"] = link.reconnect_url
    return await status.notice(services, link, "reminder", f"{episode}|{day}", data)


async def sweep(services: Services) -> SweepOutcome:
    """Look at every link once (the timer's job)."""
    now = services.clock()
    outcome = SweepOutcome()
    links = await LinkRepository(services.storage).list_all()
    settings_repo = ProviderSettingsRepository(services.storage)
    providers: dict[str, ProviderSettings] = {}
    for provider_id in sorted({link.provider_id for link in links}):
        providers[provider_id] = await settings_repo.get(provider_id)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(link: Link) -> None:
        async with gate:
            settings = providers[link.provider_id]
            try:
                switched = await check_freshness(services, link, settings, now)
                if switched == STALE:
                    outcome.stale += 1
                elif switched == FRESH:
                    outcome.fresh += 1
                if await check_reminder(services, link, settings, now):
                    outcome.reminders += 1
                opened, closed = await overlaps.check_conflicts(services, link, now)
                outcome.conflicts += opened
                outcome.resolved += closed
            except Exception as exc:  # one link must not stop the sweep; the next one retries
                log.warning("link watch failed for %s: %s", link.key, getattr(exc, "code", type(exc).__name__))
                outcome.failed.append(str(link.key))

    outcome.links = len(links)
    await asyncio.gather(*(one(link) for link in links))
    return outcome
