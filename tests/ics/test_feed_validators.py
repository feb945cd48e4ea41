"""Feed validators: Last-Modified moves whenever the body does (whatever changed it), weak
If-None-Match comparison, and one Last-Modified for one body across instances."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from shared.domain import CustomerPrivacy, ProviderSettings
from shared.ics.service import FeedCache, serve_feed
from shared.repos.links import ProviderSettingsRepository
from shared.storage import StoragePort
from tests.ics.test_feed import _feed_setup, stored
from tests.support.settings import make_settings

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


async def test_a_privacy_change_moves_last_modified(storage: StoragePort) -> None:
    token, _ = await _feed_setup(storage)
    cfg = make_settings()
    first = await serve_feed(storage, cfg, FeedCache(), token, now=T0)
    assert first.feed is not None
    since = format_datetime(first.feed.last_modified, usegmt=True)
    # The provider now shares customer names: no booking changed, the body did.
    await ProviderSettingsRepository(storage).save(ProviderSettings("p", customer_privacy=CustomerPrivacy.CONTACT))
    later = T0 + timedelta(minutes=20)
    again = await serve_feed(storage, cfg, FeedCache(), token, now=later, if_modified_since=since)
    assert again.status == 200 and again.feed is not None and again.feed.body != first.feed.body
    assert again.feed.last_modified > first.feed.last_modified


async def test_a_booking_moving_away_moves_last_modified(storage: StoragePort) -> None:
    token, store = await _feed_setup(storage)
    cfg = make_settings()
    first = await serve_feed(storage, cfg, FeedCache(), token, now=T0)
    assert first.feed is not None
    moved = stored(1).booking
    # Moved to another resource with the same change stamp: nothing newer remains in this feed.
    await store.upsert_if_newer(replace(moved, resource_id="r2", version=2))
    since = format_datetime(first.feed.last_modified, usegmt=True)
    again = await serve_feed(storage, cfg, FeedCache(), token, now=T0 + timedelta(hours=1), if_modified_since=since)
    assert again.status == 200 and again.feed is not None and b"bk-1@" not in again.feed.body
    assert again.feed.last_modified > first.feed.last_modified


async def test_last_modified_is_stable_while_the_body_is(storage: StoragePort) -> None:
    token, _ = await _feed_setup(storage)
    cfg = make_settings()
    first = await serve_feed(storage, cfg, FeedCache(), token, now=T0)
    # Another instance, a day later (a new window day, same events): same body, same validators.
    other = await serve_feed(storage, cfg, FeedCache(), token, now=T0 + timedelta(days=1))
    assert first.feed is not None and other.feed is not None
    assert other.feed.body == first.feed.body and other.feed.etag == first.feed.etag
    assert other.feed.last_modified == first.feed.last_modified
    since = format_datetime(first.feed.last_modified, usegmt=True)
    assert (await serve_feed(storage, cfg, FeedCache(), token, now=T0, if_modified_since=since)).status == 304


async def test_if_none_match_compares_weakly(storage: StoragePort) -> None:
    token, _ = await _feed_setup(storage)
    cfg, cache = make_settings(), FeedCache()
    first = await serve_feed(storage, cfg, cache, token, now=T0)
    assert first.feed is not None
    etag = first.feed.etag
    for header in (f"W/{etag}", f'"other", W/{etag}', etag, "*"):
        assert (await serve_feed(storage, cfg, cache, token, now=T0, if_none_match=header)).status == 304, header
    assert (await serve_feed(storage, cfg, cache, token, now=T0, if_none_match='W/"other"')).status == 200
    # If-None-Match wins over a matching If-Modified-Since (RFC 9110 13.2.2).
    since = format_datetime(first.feed.last_modified, usegmt=True)
    assert (await serve_feed(storage, cfg, cache, token, now=T0, if_none_match='"other"',
                             if_modified_since=since)).status == 200
