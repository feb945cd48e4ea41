"""A published Outlook calendar as a source of delta pages, so ICS imports run through the same
engine as Graph links: same lease, same pure planner, same idempotent blocked-slot writes and
the same reconciliation (every import is a fresh round: the feed is a full snapshot).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.config import Settings
from shared.crypto import Cipher
from shared.domain import DeltaPage, Link
from shared.errors import BadRequest
from shared.ics.fetch import FetchResult, fetch_ics
from shared.ics.importer import parse_published

#: The page's delta link: ICS has no delta state, but the engine commits one per completed round.
ICS_ROUND = "ics:snapshot"


@dataclass
class IcsSnapshotSource:
    """Fetches once per run (conditional GET), then answers ``delta`` with one page of all events."""

    link: Link
    settings: Settings
    fetched: FetchResult | None = None
    skipped: int = 0
    calendar_name: str = ""

    @property
    def not_modified(self) -> bool:
        return self.fetched is not None and self.fetched.status == 304

    async def fetch(self, *, conditional: bool) -> FetchResult:
        if not self.link.ics_url_encrypted:
            raise BadRequest("the link has no ICS address", code="ics_missing")
        url = Cipher(self.settings.token_encryption_keys).decrypt_str(self.link.ics_url_encrypted,
                                                                     aad=str(self.link.key))
        self.fetched = await fetch_ics(url, etag=self.link.ics_etag if conditional else "",
                                       last_modified=self.link.ics_last_modified if conditional else "",
                                       allow_loopback=self.settings.ics_import_allow_loopback)
        return self.fetched

    async def delta(self, mailbox_id: str, calendar_id: str, *, start: datetime, end: datetime,
                    link: str = "", page_size: int = 100) -> DeltaPage:
        if self.fetched is None or self.fetched.status != 200:
            await self.fetch(conditional=False)
        assert self.fetched is not None
        result = parse_published(self.fetched.body, window_start=start, window_end=end,
                                 default_zone=self.link.time_zone if self.link.time_zone != "UTC" else "Europe/Berlin")
        self.skipped = result.skipped
        self.calendar_name = result.calendar_name
        return DeltaPage(events=result.events, removed=[], delta_link=ICS_ROUND)

    async def close(self) -> None:
        """Nothing held between requests (each fetch uses its own client)."""
