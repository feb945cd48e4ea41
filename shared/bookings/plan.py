"""Pure decision: what to do in Outlook for the newest known state of one booking.

Inputs are what we last agreed on (the booking-map row) and what timum says now; no I/O,
no clock. Versions make out-of-order and replayed webhooks harmless: anything not newer
than what we applied is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.domain import Booking, BookingStatus, CancelPolicy, EventDraft, booking_transaction_id


@dataclass(frozen=True)
class MapState:
    """The booking-map row as the planner needs it."""

    event_id: str       # empty when no Outlook event exists (never created, deleted, cancelled)
    version: int
    content_hash: str


@dataclass(frozen=True)
class CreateEvent:
    draft: EventDraft
    transaction_id: str


@dataclass(frozen=True)
class UpdateEvent:
    event_id: str
    draft: EventDraft


@dataclass(frozen=True)
class DeleteEvent:
    event_id: str


@dataclass(frozen=True)
class Nothing:
    reason: str


BookingAction = CreateEvent | UpdateEvent | DeleteEvent | Nothing


def recreate_transaction_id(booking: Booking) -> str:
    """A fresh transaction id for re-creating an event the user deleted in Outlook.

    The first event of a booking uses ``booking_transaction_id(booking.id, resource)`` so a crashed and
    retried create collapses into one event; a re-creation must not collapse into the deleted one.
    """
    return booking_transaction_id(f"{booking.id}@v{booking.version}", booking.resource_id)


def plan_booking(booking: Booking, row: MapState | None, draft: EventDraft, draft_hash: str,
                 cancel_policy: CancelPolicy, cancel_draft: EventDraft | None = None) -> BookingAction:
    if row is not None and booking.version <= row.version:
        # Replayed or out-of-order webhook: we already applied this version or a newer one.
        return Nothing("stale")

    if booking.status is BookingStatus.CANCELLED:
        if row is None or not row.event_id:
            return Nothing("cancelled without event")
        if cancel_policy is CancelPolicy.MARK and cancel_draft is not None:
            # Keep the event but mark it, shown as free so it no longer blocks the calendar.
            return UpdateEvent(row.event_id, cancel_draft)
        return DeleteEvent(row.event_id)

    if row is None:
        return CreateEvent(draft, booking_transaction_id(booking.id, booking.resource_id))
    if not row.event_id:
        # Confirmed again after a cancellation (or the event was deleted and forgotten).
        return CreateEvent(draft, recreate_transaction_id(booking))
    if row.content_hash == draft_hash:
        return Nothing("unchanged")
    return UpdateEvent(row.event_id, draft)
