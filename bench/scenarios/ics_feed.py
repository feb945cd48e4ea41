"""Scenario 6: the ICS subscription feed of a resource with 5,000 bookings.

Through the HTTP endpoint of the local host (``GET /api/ics/{token}``): *cold* is the first
request after a booking changed (the resource's revision rose, so the rendered feed of the old
revision no longer answers), *cached* a repeat with nothing changed. In this process, through
the service function: a *fresh instance* after a change (empty process cache: the stored
snapshot plus the changed booking), the *full read* when no snapshot is usable (first request
of a day, other settings, more than 64 changes since the snapshot), the cache hit, and the
parts: the table read of every booking and the renderer.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import httpx

from bench.report import Figure, Target, percentile
from bench.scenarios import Context, Output
from devtools.stack_world import bench_stack, gather_bounded

if TYPE_CHECKING:
    from devtools.stack import Stack
    from shared.domain import Booking

COLD_TARGET_MS = 300.0
CACHED_TARGET_MS = 20.0
PROVIDER, RESOURCE = "praxis", "raum-1"


def _booking(i: int, version: int = 1, minutes: int = 0) -> Booking:
    from shared.domain import Booking, BookingStatus, Customer

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today + timedelta(days=1 + i // 14, hours=7, minutes=40 * (i % 14) + minutes)
    return Booking(id=f"bk{i:05d}", provider_id=PROVIDER, resource_id=RESOURCE, version=version, start=start,
                   end=start + timedelta(minutes=30), status=BookingStatus.CONFIRMED,
                   service_name="Krankengymnastik 30 min", time_zone="Europe/Berlin",
                   customer=Customer("Jürgen Schäfer", "js@example.de", "+49 30 1234567"), notes="",
                   url=f"https://www.timum.de/bookings/bk{i:05d}", updated_at=today - timedelta(days=1))


async def seed(stack: Stack, count: int) -> str:
    """``count`` bookings in the booking store and a feed token for the resource."""
    from shared.bookings.store import BookingRepository
    from shared.domain import LinkKey
    from shared.ics.tokens import FeedTokenRepository

    class SeedingStore(BookingRepository):
        async def _bump(self, pk: str, booking_id: str, version: int) -> None:
            """Seeding writes thousands of rows at once; the revision rises once at the end instead."""

    seeding = SeedingStore(stack.storage)
    await gather_bounded([functools.partial(seeding.upsert_if_newer, _booking(i)) for i in range(1, count)])
    await BookingRepository(stack.storage).upsert_if_newer(_booking(0))  # this one raises the revision
    return await FeedTokenRepository(stack.storage).issue(LinkKey(PROVIDER, RESOURCE), "Behandlungsraum 1")


async def change_one(stack: Stack, version: int) -> bytes:
    """Move booking 0 by a minute per version; returns the DTSTART line the feed must then show."""
    from shared.bookings.store import BookingRepository

    moved = _booking(0, version, minutes=version % 30)
    await BookingRepository(stack.storage).upsert_if_newer(moved)
    return f"DTSTART:{moved.start:%Y%m%dT%H%M%SZ}".encode()


@dataclass
class InProcess:
    render_ms: list[float] = field(default_factory=list)
    hit_ms: list[float] = field(default_factory=list)
    read_ms: list[float] = field(default_factory=list)
    fresh_ms: list[float] = field(default_factory=list)
    full_ms: list[float] = field(default_factory=list)
    snapshot_kib: float = 0.0


async def function_times(stack: Stack, token: str, reps: int, version: int) -> tuple[InProcess, int]:
    """Service and render timings in this process; returns them and the last booking version."""
    from shared.bookings.store import BookingRepository
    from shared.domain import LinkKey
    from shared.ics.feed import render_feed
    from shared.ics.service import FeedCache, serve_feed
    from shared.ics.snapshot import HEAD, SNAPSHOTS
    from shared.repos.links import ProviderSettingsRepository
    from shared.storage.base import encode_key

    out = InProcess()
    store = BookingRepository(stack.storage)
    stored = []
    for _ in range(max(1, reps // 4)):
        t = time.perf_counter()
        stored = await store.list_for_resource(PROVIDER, RESOURCE)
        out.read_ms.append((time.perf_counter() - t) * 1000)
    settings = await ProviderSettingsRepository(stack.storage).get(PROVIDER)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for _ in range(reps):
        t = time.perf_counter()
        render_feed(stored, calendar_name="Behandlungsraum 1", settings=settings,
                    window_start=today - timedelta(days=stack.settings.ics_window_past_days),
                    window_end=today + timedelta(days=stack.settings.ics_window_future_days + 1))
        out.render_ms.append((time.perf_counter() - t) * 1000)

    snapshots = stack.storage.table(SNAPSHOTS)
    pk = encode_key(str(LinkKey(PROVIDER, RESOURCE)))
    for _ in range(max(1, reps // 4)):
        # No usable snapshot anywhere: what the first request of a day pays.
        await snapshots.delete(pk, HEAD)
        t = time.perf_counter()
        result = await serve_feed(stack.storage, stack.settings, FeedCache(), token, now=datetime.now(UTC))
        out.full_ms.append((time.perf_counter() - t) * 1000)
        assert result.status == 200
    for _ in range(max(1, reps // 2)):
        # Another instance stored a change; this one has nothing in its process yet.
        version += 1
        moved_to = await change_one(stack, version)
        t = time.perf_counter()
        result = await serve_feed(stack.storage, stack.settings, FeedCache(), token, now=datetime.now(UTC))
        out.fresh_ms.append((time.perf_counter() - t) * 1000)
        assert result.status == 200 and result.feed is not None and moved_to in result.feed.body
    head = await snapshots.get(pk, HEAD)
    if head is not None:
        out.snapshot_kib = sum(len(v) for v in head.values() if isinstance(v, bytes)) / 1024

    cache = FeedCache()
    await serve_feed(stack.storage, stack.settings, cache, token, now=datetime.now(UTC))
    for _ in range(reps):
        t = time.perf_counter()
        result = await serve_feed(stack.storage, stack.settings, cache, token, now=datetime.now(UTC))
        out.hit_ms.append((time.perf_counter() - t) * 1000)
        assert result.status == 200
    return out, version


def run_scenario(ctx: Context) -> Output:
    count = 500 if ctx.quick else 5000
    cold_reps, hot_reps = (3, 10) if ctx.quick else (5, 20)
    http_cold = Figure("6", f"HTTP feed after a booking change, {count:,} bookings", "ms",
                       target=Target("<=", COLD_TARGET_MS))
    http_hot = Figure("6", f"HTTP cached feed, {count:,} bookings", "ms", target=Target("<=", CACHED_TARGET_MS))
    http_304 = Figure("6", "HTTP conditional request (304)", "ms")
    fresh = Figure("6", "fresh instance after a change (stored snapshot)", "ms", target=Target("<=", COLD_TARGET_MS))
    full = Figure("6", f"no usable snapshot: full read and render, {count:,} bookings", "ms")
    hit = Figure("6", "serve_feed from its cache (1 table read)", "ms", target=Target("<=", CACHED_TARGET_MS))
    render = Figure("6", f"render_feed alone, {count:,} bookings", "ms")
    read = Figure("6", f"reading {count:,} bookings from the table", "ms")
    size = 0
    snapshot_kib = 0.0
    stack = bench_stack()
    try:
        begun = time.monotonic()
        token = stack.run(seed(stack, count), timeout=900)
        ctx.log(f"{count} bookings seeded in {time.monotonic() - begun:.0f} s")
        url = stack.api_url(f"ics/{token}")
        version = 1
        with httpx.Client(timeout=60.0) as client:
            assert client.get(url).status_code == 200  # imports the feed code and makes the first snapshot
            for run in range(ctx.runs):
                colds, hots, conds = [], [], []
                for _ in range(cold_reps):
                    version += 1
                    moved_to = stack.run(change_one(stack, version))
                    t = time.perf_counter()
                    response = client.get(url)
                    colds.append((time.perf_counter() - t) * 1000)
                    assert response.status_code == 200, response.status_code
                    assert moved_to in response.content  # the change shows in the very next request
                    size = len(response.content)
                etag = response.headers["ETag"]
                for _ in range(hot_reps):
                    t = time.perf_counter()
                    response = client.get(url)
                    hots.append((time.perf_counter() - t) * 1000)
                    assert response.status_code == 200
                    t = time.perf_counter()
                    response = client.get(url, headers={"If-None-Match": etag})
                    conds.append((time.perf_counter() - t) * 1000)
                    assert response.status_code == 304
                http_cold.samples.append(percentile(colds, 50))
                http_hot.samples.append(percentile(hots, 50))
                http_304.samples.append(percentile(conds, 50))
                measured, version = stack.run(function_times(stack, token, hot_reps, version), timeout=600)
                render.samples.append(percentile(measured.render_ms, 50))
                hit.samples.append(percentile(measured.hit_ms, 50))
                read.samples.append(percentile(measured.read_ms, 50))
                fresh.samples.append(percentile(measured.fresh_ms, 50))
                full.samples.append(percentile(measured.full_ms, 50))
                snapshot_kib = measured.snapshot_kib
                ctx.log(f"run {run + 1}: HTTP after a change {http_cold.samples[-1]:.0f} ms, cached "
                        f"{http_hot.samples[-1]:.1f} ms; fresh instance {fresh.samples[-1]:.0f} ms, full read "
                        f"{full.samples[-1]:.0f} ms")
    finally:
        stack.stop()
    http_cold.method = (f"median of {cold_reps} GETs per run, each right after one booking changed: the revision "
                        "row (token and settings come from the process cache, at most 10 s old), the changed "
                        "booking re-read and re-rendered into the process's snapshot, the feed assembled and "
                        f"hashed ({size / 1024:.0f} KiB), the snapshot stored ({snapshot_kib:.0f} KiB compressed)")
    http_hot.method = (f"median of {hot_reps} repeated GETs per run, nothing changed: one table read (the revision), "
                       "the rendered bytes from the process cache")
    http_304.method = "If-None-Match with the current ETag"
    fresh.method = ("serve_feed with an empty process cache right after a change: token, revision and settings "
                    "reads, the stored snapshot (one row), the changed booking, assembling, storing the new snapshot")
    full.method = ("serve_feed with an empty process cache and no stored snapshot: every booking read and "
                   "rendered. Paid by the first request of a resource per UTC day (the daily full read that "
                   "drops past bookings), after a settings change, or more than 64 changes behind")
    hit.method = "the service function with a warm cache: only the revision row is read"
    render.method = "the pure renderer over the stored bookings, in this process (only the full read runs it)"
    read.method = "one partition query of the bookings table (Azurite), in this process (only the full read runs it)"
    http_cold.miss_reason = fresh.miss_reason = (
        f"A change costs the revision row, the changed bookings, assembling and hashing the {size / 1024:.0f} KiB "
        f"feed and compressing and storing the snapshot ({snapshot_kib:.0f} KiB); the fresh instance also reads "
        "and decompresses the stored snapshot. Storing the snapshot every few revisions instead of every one "
        "would cut the largest share.")
    http_hot.miss_reason = hit.miss_reason = (
        "One table read (the revision) precedes every answer, which a booking change on any instance requires; "
        "the rest is the host's HTTP path.")
    notes = ["Seeding writes the bookings straight into the booking store (the revision is raised once at the "
             "end); the feed code, the HTTP path and the caches are the real ones.",
             "Staleness: a booking change shows in the next request on every instance (the revision row is read "
             "each time); a token revoked or rotated on another instance keeps working there for at most 10 s, "
             "in the revoking process not at all; a settings change reaches the feed within 10 s."]
    return Output([http_cold, http_hot, http_304, fresh, full, hit, render, read], notes)
