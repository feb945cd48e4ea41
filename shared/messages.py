"""Queue names and message shapes between the triggers.

Queue names stay ≤ 56 characters so the host's ``-poison`` suffix still fits.
Messages are small JSON objects; they name *what* to look at, never carry tokens, and are
safe to replay: every consumer is idempotent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from shared.domain import Booking, LinkKey
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


@dataclass(frozen=True)
class OrgLinkMessage:
    """link-admin: link the rows an organisation's administrator chose on the mapping page.

    It names the provider and the tenant only: the rows themselves (``shared.org.store``'s job
    rows) say what is left to do, so a replay or a second message resumes and never repeats.
    Told apart from ``AdminMessage`` by its one key, ``org_link``."""

    provider: str
    tenant: str

    @property
    def key(self) -> LinkKey:
        # Not one link's message: logs name the provider and the tenant ("org:" never starts a
        # resource id, so no link's status can be mistaken for it).
        return LinkKey(self.provider, f"org:{self.tenant}")

    def to_json(self) -> dict[str, Any]:
        return {"org_link": {"provider": self.provider, "tenant": self.tenant}}


def parse_admin_message(data: dict[str, Any]) -> AdminMessage | OrgLinkMessage:
    """The message of a ``link-admin`` body; ``BadRequest`` when it is neither kind."""
    if "org_link" not in data:
        return AdminMessage.parse(data)
    from shared.ids import check_id

    raw = data["org_link"]
    try:
        message = OrgLinkMessage(provider=str(raw["provider"]), tenant=str(raw["tenant"]))
    except (KeyError, TypeError) as exc:
        raise BadRequest("malformed organisation link message") from exc
    check_id(message.provider, "provider")
    check_id(message.tenant, "tenant")
    return message


# --- booking-changes: four kinds of message, one queue ----------------------------------------
# The wire format is what earlier versions wrote (messages in flight survive a deployment): each
# kind is told apart by its one distinguishing key.


def _link_key(raw: object, what: str) -> LinkKey:
    try:
        return LinkKey.parse(str(raw))
    except ValueError as exc:
        raise BadRequest(f"malformed link key in a {what} message") from exc


@dataclass(frozen=True)
class BookingChange:
    """A booking as timum's webhook delivered it (``shared.bookings.webhook``)."""

    booking: Booking
    delivery: str = ""
    type: str = ""
    #: when the webhook accepted it (epoch seconds) — for lag metrics only
    received_at: float = 0.0

    @property
    def key(self) -> LinkKey:
        return LinkKey(self.booking.provider_id, self.booking.resource_id)

    def to_json(self) -> dict[str, Any]:
        from shared.bookings.payload import booking_to_json

        return {"delivery": self.delivery, "type": self.type, "booking": booking_to_json(self.booking),
                "received_at": self.received_at}


@dataclass(frozen=True)
class ReplayLink:
    """Write every stored booking of a link again (after linking or a reconnect)."""

    key: LinkKey

    def to_json(self) -> dict[str, Any]:
        return {"replay_link": str(self.key)}


@dataclass(frozen=True)
class RestoreEvent:
    """Restore a booking's Outlook event edited there, after the booking's lease was held."""

    key: LinkKey
    booking_id: str
    event_id: str

    def to_json(self) -> dict[str, Any]:
        return {"restore_event": {"link": str(self.key), "booking": self.booking_id, "event": self.event_id}}


@dataclass(frozen=True)
class Backfill:
    """Bring a resource's stored bookings up to date from timum (a new ICS feed)."""

    key: LinkKey

    def to_json(self) -> dict[str, Any]:
        return {"backfill": str(self.key)}


BookingMessage = BookingChange | ReplayLink | RestoreEvent | Backfill


def parse_booking_message(data: dict[str, Any]) -> BookingMessage:
    """The message of a ``booking-changes`` body; ``BadRequest`` when it is none of the four."""
    if "replay_link" in data:
        return ReplayLink(_link_key(data["replay_link"], "replay"))
    if "restore_event" in data:
        raw = data["restore_event"]
        try:
            return RestoreEvent(_link_key(raw["link"], "restore"), str(raw["booking"]), str(raw["event"]))
        except (KeyError, TypeError) as exc:
            raise BadRequest("malformed restore message") from exc
    if "backfill" in data:
        return Backfill(_link_key(data["backfill"], "backfill"))
    from shared.bookings.payload import booking_from_json

    try:
        booking = booking_from_json(data["booking"])
        received = data.get("received_at")
        return BookingChange(booking, delivery=str(data.get("delivery", "")), type=str(data.get("type", "")),
                             received_at=float(received) if isinstance(received, int | float) else 0.0)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadRequest(f"malformed booking message: {type(exc).__name__}") from exc
