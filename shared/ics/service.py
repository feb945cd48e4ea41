"""Serve a feed: token → bookings → bytes, with a per-process cache and HTTP validators.

The cache key includes the resource's booking revision, so a booking change invalidates it
without any message passing; the strong ETag is the SHA-256 of the bytes, so identical data
gives an identical ETag across instances.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime

from shared.bookings.store import BookingStore
from shared.config import Settings
from shared.ics.feed import render_feed
from shared.ics.tokens import FeedTokens
from shared.repos.links import ProviderSettingsRepository
from shared.storage.base import StoragePort


@dataclass(frozen=True)
class RenderedFeed:
    body: bytes
    etag: str
    last_modified: datetime


@dataclass(frozen=True)
class FeedResponse:
    status: int                # 200, 304 or 404
    feed: RenderedFeed | None

    def headers(self) -> dict[str, str]:
        if self.feed is None:
            return {"Cache-Control": "no-store"}
        return {"ETag": self.feed.etag, "Last-Modified": format_datetime(self.feed.last_modified, usegmt=True),
                "Cache-Control": "private, max-age=900", "X-Content-Type-Options": "nosniff"}


class FeedCache:
    def __init__(self, max_entries: int = 128) -> None:
        self._max = max_entries
        self._items: OrderedDict[tuple[object, ...], RenderedFeed] = OrderedDict()

    def get(self, key: tuple[object, ...]) -> RenderedFeed | None:
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
        return hit

    def put(self, key: tuple[object, ...], feed: RenderedFeed) -> None:
        self._items[key] = feed
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)


def _not_modified(feed: RenderedFeed, if_none_match: str | None, if_modified_since: str | None) -> bool:
    if if_none_match:
        # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
        tags = {t.strip() for t in if_none_match.split(",")}
        return "*" in tags or feed.etag in tags
    if if_modified_since:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return feed.last_modified.replace(microsecond=0) <= since
    return False


async def serve_feed(storage: StoragePort, settings: Settings, cache: FeedCache, token: str, *,
                     now: datetime, if_none_match: str | None = None,
                     if_modified_since: str | None = None) -> FeedResponse:
    record = await FeedTokens(storage).resolve(token)
    if record is None:
        return FeedResponse(404, None)
    link = record.link
    store = BookingStore(storage)
    revision = await store.revision(link.provider_id, link.resource_id)
    provider = await ProviderSettingsRepository(storage).get(link.provider_id)
    day = now.astimezone(UTC).date()
    key = (str(link), revision, day, provider, record.calendar_name)
    feed = cache.get(key)
    if feed is None:
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        stored = await store.list_for_resource(link.provider_id, link.resource_id)
        body = render_feed(stored, calendar_name=record.calendar_name, settings=provider,
                           window_start=midnight - timedelta(days=settings.ics_window_past_days),
                           window_end=midnight + timedelta(days=settings.ics_window_future_days + 1))
        stamps = [s.booking.updated_at for s in stored if s.booking.updated_at]
        last_modified = max(stamps, default=midnight).astimezone(UTC).replace(microsecond=0)
        feed = RenderedFeed(body, f'"{hashlib.sha256(body).hexdigest()[:32]}"', last_modified)
        cache.put(key, feed)
    if _not_modified(feed, if_none_match, if_modified_since):
        return FeedResponse(304, feed)
    return FeedResponse(200, feed)
