"""``POST /api/timum/bookings``: verify timum's signature, validate, enqueue, answer fast.

Nothing is enqueued for a rejected request. A valid booking for a resource we do not know
(or that has no link) is still accepted: the worker records it (the ICS feed may need it)
and timum must not retry it forever.
"""

from __future__ import annotations

import time

from shared.bookings.payload import BookingEvent, parse_booking_event
from shared.config import Settings
from shared.messages import BOOKING_QUEUE, BookingChange
from shared.signing import verify_webhook
from shared.storage.base import StoragePort


async def accept_booking_webhook(storage: StoragePort, settings: Settings, body: bytes, signature: str | None, *,
                                 now: float | None = None) -> BookingEvent:
    now = time.time() if now is None else now
    # Signature first: an unauthenticated caller learns nothing about our validation rules.
    verify_webhook(body, signature, settings.timum_webhook_secrets, now=now)
    event = parse_booking_event(body)
    await storage.queue(BOOKING_QUEUE).send(
        BookingChange(event.booking, delivery=event.delivery_id, type=event.type, received_at=now).to_json())
    return event
