"""What a service function needs, passed in rather than reached for.

Triggers build one ``Services`` per process (``shared.wiring.get_services``); tests build
one from the in-memory twins. Services never read the environment or construct clients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from shared.config import Settings
from shared.domain import Link
from shared.ports import GraphCalendarPort, IcsFetchPort, TimumPort
from shared.storage.base import StoragePort


class GraphProvider(Protocol):
    """Hands out a Graph port authorised for one link (delegated account or app-only tenant).

    Raises ``NeedsReconnect`` when the link's account has no usable refresh token.
    """

    async def for_link(self, link: Link) -> GraphCalendarPort: ...


def utcnow() -> datetime:
    return datetime.now(UTC)


def _http_ics_fetcher() -> IcsFetchPort:
    # Imported on first use: the webhook triggers never load httpcore's guarded backend.
    from shared.ics.fetch import HttpIcsFetcher

    return HttpIcsFetcher()


@dataclass
class Services:
    settings: Settings
    storage: StoragePort
    timum: TimumPort
    graph: GraphProvider
    clock: Callable[[], datetime] = field(default=utcnow)
    #: tenant id → the organisation directory port (``shared.org.directory``); None → Graph app-only
    org_directory: Callable[[str], Any] | None = None
    #: published calendars of ICS-import links (a twin in tests, like every other remote)
    ics: IcsFetchPort = field(default_factory=_http_ics_fetcher)
