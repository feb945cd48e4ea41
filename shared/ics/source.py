"""A published Outlook calendar as a source of delta pages, so ICS imports run through the same
engine as Graph links: same lease, same pure planner, same idempotent blocked-slot writes and
the same reconciliation (every import is a fresh round: the feed is a full snapshot).

Parsing is CPU-bound and runs in a worker thread, never on the event loop, under the import's
time budget (checked cooperatively inside the parse, and again here with a little grace, so a
parse stuck inside a library still ends the run). Whatever the parser raises ends as a link
error (``BadRequest``), never as an exception that would retry the queue message to poison.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime

from shared.config import Settings
from shared.crypto import Cipher
from shared.domain import DeltaPage, Link, SkippedItem
from shared.errors import BadRequest, SyncError
from shared.ics.fetch import FetchResult
from shared.ics.importer import DEFAULT_LIMITS, IcsLimits, ImportResult, parse_published
from shared.ics.reader import IcsLimitExceeded
from shared.ports import IcsFetchPort

log = logging.getLogger(__name__)

#: The page's delta link: ICS has no delta state, but the engine commits one per completed round.
ICS_ROUND = "ics:snapshot"
#: Extra seconds the thread may take beyond the cooperative budget before the run gives up on it.
BUDGET_GRACE = 5.0


async def parse_off_loop(body: bytes, *, window_start: datetime, window_end: datetime, default_zone: str,
                         limits: IcsLimits = DEFAULT_LIMITS) -> ImportResult:
    task = asyncio.to_thread(parse_published, body, window_start=window_start, window_end=window_end,
                             default_zone=default_zone, limits=limits)
    try:
        return await asyncio.wait_for(task, limits.time_budget + BUDGET_GRACE)
    except TimeoutError as exc:
        raise IcsLimitExceeded(f"reading the calendar took longer than {limits.time_budget:g} s",
                               field="url", code="ics_parse_timeout") from exc
    except SyncError:
        raise
    except Exception as exc:  # a parser bug must end as a link error, not a poison message
        log.warning("ICS parse failed: %s", type(exc).__name__)
        raise BadRequest(f"the calendar could not be read ({type(exc).__name__})", field="url",
                         code="ics_unreadable") from exc


@dataclass
class IcsSnapshotSource:
    """Fetches once per run (conditional GET), then answers ``delta`` with one page of all events."""

    link: Link
    settings: Settings
    fetcher: IcsFetchPort
    fetched: FetchResult | None = None
    skipped_items: list[SkippedItem] = field(default_factory=list)
    calendar_name: str = ""
    limits: IcsLimits = DEFAULT_LIMITS

    @property
    def skipped(self) -> int:
        return len(self.skipped_items)

    @property
    def skipped_sample(self) -> str:
        """One skipped item named with its reason, for the link status."""
        if not self.skipped_items:
            return ""
        first = self.skipped_items[0]
        return (f"{first.id}: {first.reason}" if first.id else first.reason)[:200]

    @property
    def not_modified(self) -> bool:
        return self.fetched is not None and self.fetched.status == 304

    async def fetch(self, *, conditional: bool) -> FetchResult:
        if not self.link.ics_url_encrypted:
            raise BadRequest("the link has no ICS address", code="ics_missing")
        url = Cipher(self.settings.token_encryption_keys).decrypt_str(self.link.ics_url_encrypted,
                                                                     aad=str(self.link.key))
        self.fetched = await self.fetcher.fetch(url, etag=self.link.ics_etag if conditional else "",
                                                last_modified=self.link.ics_last_modified if conditional else "",
                                                allow_loopback=self.settings.ics_import_allow_loopback)
        return self.fetched

    async def delta(self, mailbox_id: str, calendar_id: str, *, start: datetime, end: datetime,
                    link: str = "", page_size: int = 100) -> DeltaPage:
        if self.fetched is None or self.fetched.status != 200:
            await self.fetch(conditional=False)
        assert self.fetched is not None
        zone = self.link.time_zone if self.link.time_zone not in ("", "UTC") else "Europe/Berlin"
        result = await parse_off_loop(self.fetched.body, window_start=start, window_end=end, default_zone=zone,
                                      limits=self.limits)
        self.skipped_items = list(result.skipped)
        self.calendar_name = result.calendar_name
        return DeltaPage(events=result.events, removed=[], delta_link=ICS_ROUND, skipped=list(result.skipped))

    async def close(self) -> None:
        """Nothing held between requests (each fetch uses its own client)."""
