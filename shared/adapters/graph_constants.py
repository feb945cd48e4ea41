"""Constants of our footprint in Microsoft Graph, shared by the real adapter, its in-memory twin
and the sandbox stand-in.

Cheap to import: no SDK here. ``check_draft`` is the one rule both adapters refuse drafts by.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.errors import BadRequest

if TYPE_CHECKING:
    from shared.domain import EventDraft

#: Graph's ``showAs`` values (freeBusyStatus).
SHOW_AS = frozenset({"free", "tentative", "busy", "oof", "workingElsewhere", "unknown"})

#: Namespace GUID of our named extended properties. Fixed forever: events created by earlier
#: versions must stay findable after an id map is lost.
BOOKING_PROPERTY_GUID = "9d3f6b2e-4c1a-4e7b-8f05-2a6c1d7e9b43"

#: Extended property that tags every event we create with the timum booking id.
BOOKING_PROPERTY_ID = f"String {{{BOOKING_PROPERTY_GUID}}} Name timumBookingId"

#: The default Graph scope; the app's granted permissions decide what it covers.
GRAPH_SCOPE = "https://graph.microsoft.com/.default"

#: Change types of our event subscriptions.
SUBSCRIPTION_CHANGE_TYPES = "created,updated,deleted"

#: ``AuthError.code`` when Graph refuses a subscription (no permission, or a delegated token on a
#: shared calendar): the caller falls back to polling delta.
SUBSCRIPTION_FORBIDDEN = "subscription_forbidden"


def subscription_resource(mailbox_id: str, calendar_id: str) -> str:
    """Resource path of a per-calendar event subscription (works, though not documented)."""
    return f"/users/{mailbox_id}/calendars/{calendar_id}/events"


def mailbox_subscription_resource(mailbox_id: str) -> str:
    """Resource path of a mailbox-wide event subscription: every event of every calendar of the
    mailbox (the documented resource; the fallback when Graph refuses the per-calendar one)."""
    return f"/users/{mailbox_id}/events"


#: ``Link.subscription_resource`` values (the links API's ``subscriptionResource``).
RESOURCE_CALENDAR = "calendar"
RESOURCE_MAILBOX = "mailbox"


def is_object_id(mailbox: str) -> bool:
    """Whether ``mailbox`` is a directory object id (a GUID) rather than an address or a name."""
    import uuid

    try:
        uuid.UUID(mailbox)
    except ValueError:
        return False
    return True


def check_draft(draft: EventDraft) -> ZoneInfo:
    """Refuse a draft Graph would refuse, before anything is sent; the draft's zone. One rule for
    the real adapter and its twin, so the twin refuses what Graph refuses."""
    try:
        zone = ZoneInfo(draft.time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise BadRequest(f"unknown time zone {draft.time_zone!r}", field="time_zone") from exc
    if draft.start.tzinfo is None or draft.end.tzinfo is None:
        raise BadRequest("event start and end must be timezone-aware", field="start")
    if draft.end <= draft.start:
        raise BadRequest("event end must be after its start", field="end")
    if draft.show_as not in SHOW_AS:
        raise BadRequest(f"unknown showAs {draft.show_as!r}", field="show_as")
    return zone
