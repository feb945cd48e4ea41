"""Ports to the two remote systems. Each has a real adapter and an in-memory twin that pass
the same contract suite (``tests/contract/``).

* ``GraphCalendarPort`` — one mailbox-access context (a delegated account or an app-only
  tenant). Real: ``shared/adapters/graph_sdk.py`` (msgraph-sdk); twin: ``graph_memory.py``.
* ``TimumPort`` — timum's API as ``docs/timum-api.yaml`` defines it. Real:
  ``shared/adapters/timum_http.py`` (httpx); twin: ``timum_memory.py``.

Adapters raise only ``shared.errors`` classes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.domain import BlockedSlot, Booking, CalendarInfo, DeltaPage, EventDraft, OutlookEvent, SubscriptionInfo
from shared.errors import SyncError

if TYPE_CHECKING:
    from shared.ics.fetch import FetchResult


class GraphCalendarPort(ABC):
    @abstractmethod
    async def me(self) -> dict[str, str]:
        """The signed-in user: ``id``, ``displayName``, ``mail``, ``userPrincipalName``."""

    @abstractmethod
    async def list_calendars(self, mailbox_id: str) -> list[CalendarInfo]:
        """Calendars of the mailbox, including calendars shared with it (``is_shared``)."""

    @abstractmethod
    async def mailbox_time_zone(self, mailbox_id: str) -> str:
        """IANA time zone of the mailbox (Windows names from Graph are converted)."""

    @abstractmethod
    async def delta(self, mailbox_id: str, calendar_id: str, *, start: datetime, end: datetime,
                    link: str = "", page_size: int = 100) -> DeltaPage:
        """One page of ``calendarView/delta``: a fresh round (no link) or a stored next/delta link.

        Raises ``SyncStateExpired`` on 410 / syncStateNotFound.
        """

    @abstractmethod
    async def read_calendar_view(self, mailbox_id: str, calendar_id: str, *, start: datetime,
                                 end: datetime) -> list[OutlookEvent]:
        """The calendar's items overlapping [start, end) as Graph's ``calendarView`` lists them now:
        single events, occurrences and exceptions (no series masters), each with our booking id
        where it has one. For the live conflict check: a plain read, no delta state.

        Raises ``RemoteGone`` when the calendar is gone, ``BadRequest`` for a bad interval.
        """

    @abstractmethod
    async def create_subscription(self, mailbox_id: str, calendar_id: str, *, notification_url: str,
                                  lifecycle_url: str, client_state: str, expires_at: datetime,
                                  mailbox_wide: bool = False) -> SubscriptionInfo:
        """Subscribe to the calendar's events, or with ``mailbox_wide`` to every event of the mailbox
        (``/users/{id}/events``, the documented resource) when Graph refuses the calendar."""

    @abstractmethod
    async def user_object_id(self, mailbox: str) -> str:
        """The directory object id of a mailbox given by address (or id): how Microsoft recommends
        addressing ``/users/{x}`` (other identifiers can make subscriptions fail, 503 "Mailbox info
        is stale"). ``NotFound`` when there is no such user."""

    @abstractmethod
    async def renew_subscription(self, subscription_id: str, expires_at: datetime) -> SubscriptionInfo: ...

    @abstractmethod
    async def reauthorize_subscription(self, subscription_id: str) -> None: ...

    @abstractmethod
    async def delete_subscription(self, subscription_id: str) -> None:
        """Delete; a subscription that is already gone is not an error."""

    @abstractmethod
    async def create_event(self, mailbox_id: str, calendar_id: str, draft: EventDraft, *,
                           transaction_id: str) -> str:
        """Create and return the immutable event id; the same transaction id yields the same event."""

    @abstractmethod
    async def update_event(self, mailbox_id: str, event_id: str, draft: EventDraft) -> None:
        """Raises ``NotFound`` if the user deleted the event."""

    @abstractmethod
    async def delete_event(self, mailbox_id: str, event_id: str) -> None:
        """Delete; an event that is already gone is not an error."""

    @abstractmethod
    async def find_event_by_booking(self, mailbox_id: str, calendar_id: str, booking_id: str) -> str | None:
        """Our event for a booking, found by its extended property (after a lost id map)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release network resources."""


#: resources the chooser compares calendar names with; a provider with more is not a practice
MAX_LISTED_RESOURCES = 500
#: writes one request of timum's ``writeBlockedSlots`` may carry
MAX_SLOT_BATCH = 100
#: one write of ``TimumPort.write_blocked_slots``: upsert this slot, or delete the slot with this external id
SlotWrite = BlockedSlot | str


class TimumPort(ABC):
    @abstractmethod
    async def create_resource(self, provider_id: str, name: str) -> str:
        """Create a bookable resource; return its id."""

    @abstractmethod
    async def get_resource(self, provider_id: str, resource_id: str) -> dict[str, Any] | None:
        """``{"id", "name", "timeZone"}`` or None."""

    @abstractmethod
    async def list_resources(self, provider_id: str) -> list[dict[str, Any]]:
        """The provider's resources that are not archived, ``{"id", "name"}`` each (at most
        ``MAX_LISTED_RESOURCES``); an empty list where timum offers no listing."""

    @abstractmethod
    async def put_blocked_slot(self, provider_id: str, resource_id: str, slot: BlockedSlot) -> None:
        """Idempotent upsert by ``slot.external_id``."""

    @abstractmethod
    async def delete_blocked_slot(self, provider_id: str, resource_id: str, external_id: str) -> None:
        """Delete; a slot that is already gone is not an error."""

    async def write_blocked_slots(self, provider_id: str, resource_id: str,
                                  writes: Sequence[SlotWrite]) -> list[SyncError | None]:
        """Upsert (a ``BlockedSlot``) or delete (an external id) many slots, each idempotent as the
        single calls are. One result per write, in order: None when it is done (deleting a slot that
        is already gone included), else the ``SyncError`` of that write — a failure of a whole
        exchange (throttling, timum down, a deleted resource) is the result of each of its writes.
        Anything else (a cancelled task) propagates; writes before it may have been applied.

        This default makes the single calls; adapters send batches (``MAX_SLOT_BATCH`` a request).
        """
        from shared.adapters.slot_batch import write_one_by_one

        return await write_one_by_one(self, provider_id, resource_id, writes)

    @abstractmethod
    async def list_blocked_slots(self, provider_id: str, resource_id: str,
                                 source: str | None = None) -> list[BlockedSlot]: ...

    @abstractmethod
    async def list_bookings(self, provider_id: str, resource_id: str, *, start: datetime,
                            end: datetime) -> list[Booking]:
        """Bookings overlapping ``[start, end)``, confirmed and cancelled, every page read."""

    @abstractmethod
    async def send_link_status(self, payload: Mapping[str, Any]) -> None:
        """POST a signed link-status webhook to timum."""

    @abstractmethod
    async def send_booking_conflict(self, payload: Mapping[str, Any]) -> None:
        """POST a signed ``booking.outlook_conflict`` event to timum's link-status webhook: the
        Outlook event of a booking was edited or deleted there (provider setting ``report``)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release network resources."""


class IcsFetchPort(ABC):
    """Reads a calendar published from Outlook (an ICS link). Real: ``shared/ics/fetch.py``
    (``HttpIcsFetcher``: every hop's address checked, size and time bounded); twin:
    ``shared/adapters/ics_memory.py``. Contract: ``tests/contract/test_ics_fetch_port.py``."""

    @abstractmethod
    async def fetch(self, url: str, *, etag: str = "", last_modified: str = "",
                    allow_loopback: bool = False) -> FetchResult:
        """A conditional GET: status 304 (empty body) when ``etag`` / ``last_modified`` still
        match. ``UnsafeAddress`` (a ``BadRequest``) for an address that is not allowed,
        ``NotFound`` when the calendar is no longer published, ``BadRequest`` when it is no
        calendar or too large, ``TransientError`` when the host cannot be reached now."""
