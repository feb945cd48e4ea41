"""Feeds kept per revision: a change re-reads only what the revision log names, a fresh instance
starts from the stored snapshot, and every path gives the bytes a full read and render gives."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.bookings.payload import booking_to_json
from shared.bookings.store import BOOKINGS, META_RK, BookingRepository, StoredBooking
from shared.config import Settings
from shared.domain import Booking, BookingStatus, Customer, CustomerPrivacy, LinkKey, ProviderSettings
from shared.ics import snapshot as snapshot_mod
from shared.ics.feed import render_feed
from shared.ics.service import FeedCache, serve_feed
from shared.ics.snapshot import SNAPSHOTS, FeedSnapshot, SnapshotRepository, build, decode, encode
from shared.ics.tokens import FEEDS, OWNERS, FeedTokenRepository, token_hash
from shared.repos.links import ProviderSettingsRepository
from shared.storage.base import Entity, QueuePort, StoragePort, TablePort, encode_key
from shared.storage.memory import MemoryStorage
from tests.support.settings import make_settings

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
KEY = LinkKey("p", "r")


class CountingTable:
    """Counts reads and snapshot writes; everything else goes to the wrapped table unchanged
    (by delegation, so the wrapper follows the port as it grows)."""

    def __init__(self, inner: TablePort, counts: dict[str, int]) -> None:
        self._inner, self._counts, self.name = inner, counts, inner.name

    def _count(self, op: str) -> None:
        self._counts[f"{self.name}.{op}"] = self._counts.get(f"{self.name}.{op}", 0) + 1

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)

    async def get(self, pk: str, rk: str) -> Entity | None:
        self._count("get")
        return await self._inner.get(pk, rk)

    async def upsert(self, entity: Mapping[str, Any]) -> Entity:
        self._count("upsert")
        return await self._inner.upsert(entity)

    async def query(self, pk: str | None = None, *, equals: Mapping[str, Any] | None = None,
                    limit: int | None = None) -> list[Entity]:
        self._count("query")
        return await self._inner.query(pk, equals=equals, limit=limit)


class CountingStorage(StoragePort):
    """Counts reads per table (``bookings.query`` …) of the storage it wraps."""

    def __init__(self, inner: StoragePort) -> None:
        self.inner = inner
        self.counts: dict[str, int] = {}

    def table(self, name: str) -> TablePort:
        return cast(TablePort, CountingTable(self.inner.table(name), self.counts))

    def queue(self, name: str) -> QueuePort:
        return self.inner.queue(name)

    async def ping(self) -> None:
        await self.inner.ping()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def booking(i: int, version: int = 1, *, hours: int = 0, status: BookingStatus = BookingStatus.CONFIRMED,
            days: int = 0) -> Booking:
    start = datetime(2026, 11, 24, 8, 0, tzinfo=UTC) + timedelta(days=i // 5 + days, hours=i % 5 + hours)
    return Booking(id=f"bk-{i}", provider_id="p", resource_id="r", version=version, start=start,
                   end=start + timedelta(minutes=45), status=status, service_name="Krankengymnastik",
                   customer=Customer("Jörg Müller", "j@x.de"), url=f"https://timum.example/b/{i}",
                   updated_at=datetime(2026, 11, 20, 12, 0, tzinfo=UTC) + timedelta(minutes=version))


async def expected(storage: StoragePort, cfg: Settings, now: datetime = NOW) -> bytes:
    """What a full read and render gives: the oracle for every other path."""
    day = now.date()
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    stored = await BookingRepository(storage).list_for_resource("p", "r")
    provider = await ProviderSettingsRepository(storage).get("p")
    return render_feed(stored, calendar_name="Behandlungsraum 1", settings=provider,
                       window_start=midnight - timedelta(days=cfg.ics_window_past_days),
                       window_end=midnight + timedelta(days=cfg.ics_window_future_days + 1))


async def setup(storage: StoragePort, count: int = 12) -> tuple[CountingStorage, str]:
    store = BookingRepository(storage)
    for i in range(count):
        await store.upsert_if_newer(booking(i))
    await store.upsert_if_newer(booking(99, days=-400))  # long past: never in the window
    token = await FeedTokenRepository(storage).issue(KEY, "Behandlungsraum 1")
    return CountingStorage(storage), token


async def body_of(storage: StoragePort, cache: FeedCache, token: str, now: datetime = NOW) -> bytes:
    result = await serve_feed(storage, make_settings(), cache, token, now=now)
    assert result.status == 200 and result.feed is not None
    return result.feed.body


async def test_a_change_rereads_only_the_changed_booking(storage: StoragePort) -> None:
    spy, token = await setup(storage)
    cfg, cache = make_settings(), FeedCache()
    assert await body_of(spy, cache, token) == await expected(storage, cfg)
    assert spy.counts.get("bookings.query") == 1  # the first request reads everything

    store = BookingRepository(storage)
    await store.upsert_if_newer(booking(3, 2, hours=2))                               # moved
    await store.upsert_if_newer(booking(4, 2, status=BookingStatus.CANCELLED))        # leaves the feed
    await store.upsert_if_newer(booking(20))                                          # new
    spy.counts.clear()
    body = await body_of(spy, cache, token)
    assert body == await expected(storage, cfg)
    assert b"bk-20@" in body and b"bk-4@" not in body
    assert "bookings.query" not in spy.counts
    assert spy.counts["bookings.get"] == 1 + 3  # the revision row, then the three changed bookings

    spy.counts.clear()
    assert await body_of(spy, cache, token) == body  # nothing changed: the revision row only
    assert spy.counts == {"bookings.get": 1}


async def test_a_fresh_instance_starts_from_the_stored_snapshot(storage: StoragePort) -> None:
    spy, token = await setup(storage)
    cfg = make_settings()
    await body_of(spy, FeedCache(), token)
    await BookingRepository(storage).upsert_if_newer(booking(5, 2, hours=1))
    spy.counts.clear()
    body = await body_of(spy, FeedCache(), token)  # another instance: nothing in its process
    assert body == await expected(storage, cfg)
    # Two reads of the snapshot table: the stored snapshot, and the stamp of the body served last.
    assert "bookings.query" not in spy.counts and spy.counts[f"{SNAPSHOTS}.get"] == 2

    # The snapshot stored by that request is current: the next fresh instance patches nothing.
    spy.counts.clear()
    assert await body_of(spy, FeedCache(), token) == body
    assert spy.counts.get("bookings.get") == 1 and f"{SNAPSHOTS}.upsert" not in spy.counts


async def test_a_revision_without_log_entry_means_a_full_read(storage: StoragePort) -> None:
    spy, token = await setup(storage)
    cache = FeedCache()
    await body_of(spy, cache, token)
    # A writer that keeps no log (an older deployment) stores a booking and raises the revision.
    table = storage.table(BOOKINGS)
    row = await table.get(encode_key("p|r"), "bk-2")
    assert row is not None
    moved = booking(2, 2, hours=3)
    await table.update({**row, "version": 2, "data": json.dumps(booking_to_json(moved))}, etag=row.etag)
    meta = await table.get(encode_key("p|r"), META_RK)
    assert meta is not None
    await table.update({**meta, "revision": int(meta["revision"]) + 1}, etag=meta.etag)
    spy.counts.clear()
    assert await body_of(spy, cache, token) == await expected(storage, make_settings())
    assert spy.counts["bookings.query"] == 1


async def test_too_many_changes_mean_a_full_read(storage: StoragePort, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.ics import service

    monkeypatch.setattr(service, "MAX_PATCH", 2)
    spy, token = await setup(storage)
    cache = FeedCache()
    await body_of(spy, cache, token)
    for i in range(3):
        await BookingRepository(storage).upsert_if_newer(booking(i, 2, hours=1))
    spy.counts.clear()
    assert await body_of(spy, cache, token) == await expected(storage, make_settings())
    assert spy.counts["bookings.query"] == 1


async def test_settings_and_day_changes_rebuild(storage: StoragePort) -> None:
    spy, token = await setup(storage)
    clock = Clock()
    cache = FeedCache(clock=clock)
    first = await body_of(spy, cache, token)
    await ProviderSettingsRepository(storage).save(ProviderSettings("p", customer_privacy=CustomerPrivacy.CONTACT))
    assert await body_of(spy, cache, token) == first  # settings are kept for the look-up TTL
    clock.now += 11
    shown = await body_of(spy, cache, token)
    assert "Jörg Müller".encode() in shown and shown == await expected(storage, make_settings())

    spy.counts.clear()
    later = NOW + timedelta(days=32)  # the window moved on: the first bookings leave it
    body = await body_of(spy, cache, token, later)
    assert body == await expected(storage, make_settings(), later)
    assert b"bk-0@" in shown and b"bk-0@" not in body
    assert spy.counts["bookings.query"] == 1  # a new day starts from a full read


async def test_unusable_stored_snapshots_are_rebuilt(storage: StoragePort, monkeypatch: pytest.MonkeyPatch) -> None:
    spy, token = await setup(storage)
    cfg = make_settings()
    await body_of(spy, FeedCache(), token)
    head = await storage.table(SNAPSHOTS).get(encode_key("p|r"), "head")
    assert head is not None
    await storage.table(SNAPSHOTS).upsert({**head, "p00": b"not zlib"})
    assert await body_of(spy, FeedCache(), token) == await expected(storage, cfg)

    monkeypatch.setattr(snapshot_mod, "MAX_PARTS", 0)  # too large to store: served all the same
    await storage.table(SNAPSHOTS).delete(encode_key("p|r"), "head")
    await BookingRepository(storage).upsert_if_newer(booking(1, 2, hours=1))
    assert await body_of(spy, FeedCache(), token) == await expected(storage, cfg)
    assert await SnapshotRepository(storage).load(KEY) is None


def test_snapshot_renders_what_render_feed_renders() -> None:
    stored = [StoredBooking(booking(i, status=BookingStatus.CANCELLED if i % 7 == 0 else BookingStatus.CONFIRMED),
                            i % 3) for i in range(40)]
    stored.append(StoredBooking(dataclasses.replace(booking(41), id="a-same-start", start=stored[5].booking.start,
                                                    end=stored[5].booking.end), 0))
    window = (datetime(2026, 11, 25, tzinfo=UTC), datetime(2026, 11, 29, tzinfo=UTC))
    provider = ProviderSettings("p", locale="en")
    snap = build(7, stored, provider, day=NOW.date(), window_start=window[0])
    oracle = render_feed(stored, calendar_name="Raum, 1", settings=provider, window_start=window[0],
                         window_end=window[1])
    assert snap.render("Raum, 1", *window) == oracle
    again = decode(encode(snap))
    assert isinstance(again, FeedSnapshot) and again.render("Raum, 1", *window) == oracle
    assert again.last_modified == snap.last_modified and again.revision == 7


async def test_revoked_elsewhere_stops_working_within_the_ttl_here_at_once(storage: StoragePort) -> None:
    _, token = await setup(storage)
    clock = Clock()
    cache = FeedCache(clock=clock)
    await body_of(storage, cache, token)
    # Another instance revokes: it deletes the rows; this process hears nothing of it.
    owner = await storage.table(OWNERS).get(encode_key("p|r"), "")
    assert owner is not None and owner["token_hash"] == token_hash(token)
    await storage.table(FEEDS).delete(owner["token_hash"], "")
    await storage.table(OWNERS).delete(encode_key("p|r"), "")
    assert (await serve_feed(storage, make_settings(), cache, token, now=NOW)).status == 200
    clock.now += 10.5
    assert (await serve_feed(storage, make_settings(), cache, token, now=NOW)).status == 404

    # Rotated in this process: the old token is refused at once, even with a fresh look-up cached.
    fresh = await FeedTokenRepository(storage).issue(KEY, "Behandlungsraum 1")
    await body_of(storage, cache, fresh)
    newest = await FeedTokenRepository(storage).issue(KEY, "Behandlungsraum 1")
    assert (await serve_feed(storage, make_settings(), cache, fresh, now=NOW)).status == 404
    await body_of(storage, cache, newest)
    await FeedTokenRepository(storage).revoke(KEY)
    assert (await serve_feed(storage, make_settings(), cache, newest, now=NOW)).status == 404


class RacingStorage(CountingStorage):
    """Lets a booking writer run between the feed's revision read and its booking reads — the
    interleaving the snapshot's correctness argument is about."""

    def __init__(self, inner: StoragePort) -> None:
        super().__init__(inner)
        self.pending: Booking | None = None

    def table(self, name: str) -> TablePort:
        inner = super().table(name)
        if name != BOOKINGS:
            return inner
        storage = self

        class Racing(CountingTable):
            async def get(self, pk: str, rk: str) -> Entity | None:
                await storage.race(rk)
                return await super().get(pk, rk)

            async def query(self, pk: str | None = None, *, equals: Mapping[str, Any] | None = None,
                            limit: int | None = None) -> list[Entity]:
                await storage.race("")
                return await super().query(pk, equals=equals, limit=limit)

        return cast(TablePort, Racing(self.inner.table(name), self.counts))

    async def race(self, rk: str) -> None:
        if self.pending is not None and rk != META_RK:
            booking, self.pending = self.pending, None
            await BookingRepository(self.inner).upsert_if_newer(booking)


_step = st.one_of(
    st.tuples(st.just("change"), st.integers(0, 14), st.integers(-30, 30), st.booleans()),
    st.tuples(st.just("serve"), st.integers(0, 2), st.just(0), st.just(False)),
)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(_step, min_size=1, max_size=25), max_patch=st.sampled_from([1, 3, 64]))
def test_every_path_serves_what_a_full_read_serves(steps: list[tuple[str, int, int, bool]], max_patch: int) -> None:
    """Random changes and requests from two long-lived instances and fresh ones. A request that a
    booking write overtakes may show that write early; the next one shows exactly the store."""
    from shared.ics import service

    async def run() -> None:
        memory = MemoryStorage()
        storage = RacingStorage(memory)
        store = BookingRepository(memory)
        versions = dict.fromkeys(range(10), 1)
        for i in versions:
            await store.upsert_if_newer(booking(i))
        token = await FeedTokenRepository(memory).issue(KEY, "Behandlungsraum 1")
        instances = [FeedCache(), FeedCache()]
        for kind, i, shift, racing in steps:
            if kind == "change":
                versions[i] = versions.get(i, 0) + 1
                cancelled = racing and shift % 3 == 0
                change = booking(i, versions[i], hours=shift,
                                 status=BookingStatus.CANCELLED if cancelled else BookingStatus.CONFIRMED)
                if racing and storage.pending is None:
                    storage.pending = change  # written during the next request's booking reads
                    other = (i + 1) % 15  # a change before it, so that the next request reads bookings
                    versions[other] = versions.get(other, 0) + 1
                    await store.upsert_if_newer(booking(other, versions[other], hours=-shift))
                else:
                    await store.upsert_if_newer(change)
                continue
            cache = instances[i] if i < 2 else FeedCache()
            armed = storage.pending is not None
            body = await body_of(storage, cache, token)
            if not armed or storage.pending is not None:
                assert body == await expected(memory, make_settings())
            else:
                assert await body_of(storage, cache, token) == await expected(memory, make_settings())
        if storage.pending is not None:
            await store.upsert_if_newer(storage.pending)
            storage.pending = None
        for cache in (*instances, FeedCache()):
            assert await body_of(storage, cache, token) == await expected(memory, make_settings())

    original = service.MAX_PATCH
    service.MAX_PATCH = max_patch
    try:
        asyncio.run(run())
    finally:
        service.MAX_PATCH = original
