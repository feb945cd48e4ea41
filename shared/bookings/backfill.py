"""Backfill: bring a resource's bookings that timum holds into the booking store.

Webhooks only carry *changes*. Bookings made before a calendar was linked (or before an ICS feed
was created, or while a link waited for its reconnect with webhooks lost to an outage) would
otherwise never reach Outlook or the feed. On link, reconnect and feed creation the service
reads the resource's bookings in the sync window from timum (``listBookings``, paged by the
adapter) and stores each through ``BookingRepository.upsert_if_newer`` — the same path as a webhook,
so versions decide: a backfill that read an older version than a webhook already stored
changes nothing, and a webhook newer than the backfill replaces what it stored.
"""

from __future__ import annotations

import logging

from shared.bookings.store import BookingRepository
from shared.context import Services
from shared.core.window import sync_window
from shared.domain import LinkKey
from shared.errors import NotFound, RemoteGone

log = logging.getLogger(__name__)


async def backfill_resource(services: Services, key: LinkKey) -> int:
    """Store the bookings timum lists for ``key``'s resource in the sync window; returns how many
    were newer than what the store held. A resource timum no longer knows stores nothing.

    Transient and throttling errors propagate: the queue worker retries the whole backfill,
    which is idempotent.
    """
    settings = services.settings
    window = sync_window(services.clock(), past_days=settings.sync_window_past_days,
                         future_days=settings.sync_window_future_days)
    try:
        bookings = await services.timum.list_bookings(key.provider_id, key.resource_id,
                                                      start=window.start, end=window.end)
    except (RemoteGone, NotFound):
        log.info("backfill of %s: the resource is gone in timum", key)
        return 0
    store = BookingRepository(services.storage)
    stored = 0
    for booking in bookings:
        if (booking.provider_id, booking.resource_id) != (key.provider_id, key.resource_id):
            # timum answered for another resource than asked: never let it write elsewhere.
            log.warning("backfill of %s: skipped a booking of another resource", key)
            continue
        stored += await store.upsert_if_newer(booking)
    log.info("backfill of %s: %d of %d bookings were new", key, stored, len(bookings))
    return stored


async def queue_backfill(services: Services, key: LinkKey) -> None:
    """Have the booking worker backfill ``key``'s resource (a new ICS feed must list its bookings)."""
    from shared.messages import BOOKING_QUEUE, Backfill

    await services.storage.queue(BOOKING_QUEUE).send(Backfill(key).to_json())
