"""Queue names and message shapes between the triggers.

Queue names stay ≤ 56 characters so the host's ``-poison`` suffix still fits.
Messages are small JSON objects; they name *what* to look at, never carry tokens, and are
safe to replay: every consumer is idempotent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from shared.domain import LinkKey
from shared.errors import BadRequest

#: Outlook → timum: one message per affected link; the delta worker coalesces bursts.
SYNC_QUEUE = "link-sync"
#: link set-up (subscription + initial sync) and teardown requests from the connect flow / links API
LINK_ADMIN_QUEUE = "link-admin"
#: timum → Outlook: booking changes accepted by the booking webhook
BOOKING_QUEUE = "booking-changes"

ALL_QUEUES = (SYNC_QUEUE, LINK_ADMIN_QUEUE, BOOKING_QUEUE)


class SyncReason(StrEnum):
    NOTIFICATION = "notification"   # Graph said something changed
    POLL = "poll"                   # polling-mode timer
    SETUP = "setup"                 # first sync after linking
    RESYNC = "resync"               # full resync requested (API, lifecycle 'missed', 410)
    WINDOW = "window"               # daily window slide


class AdminAction(StrEnum):
    SETUP = "setup"                 # create subscription (or fall back to polling) + initial sync
    RESUBSCRIBE = "resubscribe"     # subscription removed / renewal failed: recreate, then resync
    REAUTHORIZE = "reauthorize"     # lifecycle reauthorizationRequired
    TEARDOWN = "teardown"           # delete subscription and our traces (after unlink)
    ADOPT_APP_ONLY = "adopt_app_only"   # the tenant's admin connected the organisation: move to app-only push


@dataclass(frozen=True)
class SyncMessage:
    link: str
    reason: SyncReason = SyncReason.NOTIFICATION
    full: bool = False
    #: when the triggering change was observed (epoch seconds) — for lag metrics only
    observed_at: float = 0.0

    @property
    def key(self) -> LinkKey:
        return LinkKey.parse(self.link)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> SyncMessage:
        try:
            msg = cls(link=str(data["link"]), reason=SyncReason(data.get("reason", "notification")),
                      full=bool(data.get("full", False)), observed_at=float(data.get("observed_at", 0.0)))
            LinkKey.parse(msg.link)
        except (KeyError, ValueError, TypeError) as exc:
            raise BadRequest(f"malformed sync message: {exc}") from exc
        return msg


@dataclass(frozen=True)
class AdminMessage:
    link: str
    action: AdminAction
    #: for TEARDOWN: the subscription to delete and whether to remove our Outlook events too
    subscription_id: str = ""
    delete_outlook_events: bool = False

    @property
    def key(self) -> LinkKey:
        return LinkKey.parse(self.link)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> AdminMessage:
        try:
            msg = cls(link=str(data["link"]), action=AdminAction(data["action"]),
                      subscription_id=str(data.get("subscription_id", "")),
                      delete_outlook_events=bool(data.get("delete_outlook_events", False)))
            LinkKey.parse(msg.link)
        except (KeyError, ValueError, TypeError) as exc:
            raise BadRequest(f"malformed admin message: {exc}") from exc
        return msg
