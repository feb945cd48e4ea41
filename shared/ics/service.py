"""Serve a feed: token → bookings → bytes, with per-process caches and HTTP validators.

A request reads one table row when nothing changed: the resource's booking revision. The token
look-up and the provider's settings are kept per process for ``LOOKUP_TTL`` seconds (see
``shared.ics.tokens``); the rendered bytes are kept per (resource, revision, day, settings,
calendar name), so a booking change invalidates them without any message passing. After a
change, the feed is brought up to date from a snapshot of rendered events (this process's, or
the stored one a fresh instance reads) by re-reading only the bookings the revision log names
(``shared.ics.snapshot``). The strong ETag is the SHA-256 of the bytes, so identical data gives
an identical ETag across instances; If-None-Match compares weakly. Last-Modified is when the
current body first appeared (``SnapshotRepository.body_modified``), so it moves whenever the body does.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime

from shared.bookings.store import BookingRepository, Revision
from shared.config import Settings
from shared.domain import LinkKey, ProviderSettings
from shared.ics.snapshot import FeedSnapshot, SnapshotRepository, build, shape_of
from shared.ics.tokens import LOOKUP_TTL, FeedTokenRepository, TokenLookups
from shared.repos.links import ProviderSettingsRepository
from shared.storage.base import StoragePort

# Beyond this many changed bookings, reading the whole partition (paged by 1,000) is about as
# fast as reading them one by one (a point read costs about ten rows of a page; ``bench/``).
MAX_PATCH = 64


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
    """What one process keeps: rendered feeds, event snapshots, token and settings look-ups."""

    def __init__(self, max_entries: int = 128, *, max_snapshots: int = 32, ttl: float = LOOKUP_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_entries
        self._max_snapshots = max_snapshots
        self._ttl = ttl
        self._clock = clock
        self._items: OrderedDict[tuple[object, ...], RenderedFeed] = OrderedDict()
        self._snapshots: OrderedDict[str, FeedSnapshot] = OrderedDict()
        self._settings: dict[str, tuple[float, ProviderSettings]] = {}
        self.tokens = TokenLookups(ttl, clock=clock)

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

    def snapshot(self, link: LinkKey) -> FeedSnapshot | None:
        return self._snapshots.get(str(link))

    def put_snapshot(self, link: LinkKey, snapshot: FeedSnapshot) -> None:
        self._snapshots[str(link)] = snapshot
        self._snapshots.move_to_end(str(link))
        while len(self._snapshots) > self._max_snapshots:
            self._snapshots.popitem(last=False)

    async def provider_settings(self, storage: StoragePort, provider_id: str) -> ProviderSettings:
        """The provider's settings, read at most once per ``ttl`` seconds: a change (customer
        names shown or not, locale) reaches the feed within that time."""
        hit = self._settings.get(provider_id)
        if hit is not None and hit[0] > self._clock():
            return hit[1]
        value = await ProviderSettingsRepository(storage).get(provider_id)
        self._settings[provider_id] = (self._clock() + self._ttl, value)
        return value


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag[:2] in ("W/", "w/") else tag


def _not_modified(feed: RenderedFeed, if_none_match: str | None, if_modified_since: str | None) -> bool:
    if if_none_match:
        # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2) and compares weakly
        # (13.1.2): W/"x" matches "x" — proxies and some clients weaken the tag.
        tags = {_opaque(t) for t in if_none_match.split(",")}
        return "*" in tags or _opaque(feed.etag) in tags
    if if_modified_since:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return feed.last_modified.replace(microsecond=0) <= since
    return False


async def current_snapshot(storage: StoragePort, cache: FeedCache, link: LinkKey, revision: Revision,
                           provider: ProviderSettings, *, day: date, window_start: datetime) -> FeedSnapshot:
    """The resource's events as of ``revision`` (read before any booking row, see the snapshot
    module): this process's snapshot or the stored one, patched from the revision log; a full
    read when neither is usable. A new snapshot is stored for the next fresh instance."""
    shape = shape_of(provider)

    def usable(s: FeedSnapshot | None) -> bool:
        return s is not None and s.shape == shape and s.built == day and s.revision <= revision.number

    table = SnapshotRepository(storage)
    snap = cache.snapshot(link)
    if not usable(snap):
        snap = await table.load(link)
        if not usable(snap):
            snap = None
    if snap is not None and snap.revision == revision.number:
        cache.put_snapshot(link, snap)
        return snap
    store = BookingRepository(storage)
    changed = revision.changed_since(snap.revision) if snap is not None else None
    if snap is not None and changed is not None and len(changed) <= MAX_PATCH:
        rows = [(booking_id, await store.get(link.provider_id, link.resource_id, booking_id))
                for booking_id in changed]
        snap = snap.patched(revision.number, rows, provider)
    else:
        stored = await store.list_for_resource(link.provider_id, link.resource_id)
        snap = build(revision.number, stored, provider, day=day, window_start=window_start)
    cache.put_snapshot(link, snap)
    await table.save(link, snap)
    return snap


async def serve_feed(storage: StoragePort, settings: Settings, cache: FeedCache, token: str, *,
                     now: datetime, if_none_match: str | None = None,
                     if_modified_since: str | None = None) -> FeedResponse:
    record = await cache.tokens.resolve(FeedTokenRepository(storage), token)
    if record is None:
        return FeedResponse(404, None)
    link = record.link
    # Read on every request: a booking change must show in the next one, whichever instance
    # stored it.
    revision = await BookingRepository(storage).revision_log(link.provider_id, link.resource_id)
    provider = await cache.provider_settings(storage, link.provider_id)
    day = now.astimezone(UTC).date()
    key = (str(link), revision.number, day, provider, record.calendar_name)
    feed = cache.get(key)
    if feed is None:
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        window_start = midnight - timedelta(days=settings.ics_window_past_days)
        window_end = midnight + timedelta(days=settings.ics_window_future_days + 1)
        snap = await current_snapshot(storage, cache, link, revision, provider, day=day, window_start=window_start)
        body = snap.render(record.calendar_name, window_start, window_end)
        etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        last_modified = await SnapshotRepository(storage).body_modified(link, etag, now)
        feed = RenderedFeed(body, etag, last_modified)
        cache.put(key, feed)
    if _not_modified(feed, if_none_match, if_modified_since):
        return FeedResponse(304, feed)
    return FeedResponse(200, feed)
