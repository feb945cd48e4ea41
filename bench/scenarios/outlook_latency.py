"""Scenario 1: Outlook change → blocked slot written in timum, with 1, 100 and 1,000 linked calendars.

One stack; links are added in steps (1, then up to 100, then up to 1,000) through
``devtools.stack_world.bulk_links``, each with a live subscription and a first full sync by the real
worker. A run changes one calendar after another (a new busy event in a calendar drawn at
random, waiting for its slot before the next change) and takes, per change, the time from the
start of the sandbox Graph's notification POST to the sandbox timum's write of the slot. The
sandbox holds each notification ``coalesce_delay`` (0.2 s) before sending, as Graph batches;
that delay is outside the measured span, as Graph's own delivery delay would be.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

from bench.report import Figure, Target, percentile
from bench.scenarios import Context, Output
from bench.timeline import Breakdown, breakdown, explain
from devtools.stack_world import BenchLink, bench_stack, bulk_links, event_times, wait_quiet

if TYPE_CHECKING:
    from devtools.stack import Stack

P50_TARGET = 5.0
P95_TARGET = 10.0
#: documented: Outlook refreshes subscribed ICS calendars about every 4 h
OUTLOOK_ICS_REFRESH = 4 * 3600.0
POLL_INTERVAL = 300.0


def delivery_start(stack: Stack, subscription_id: str, after: float) -> float | None:
    """When the sandbox began the first notification POST for the subscription after ``after``."""
    starts = [d.at.timestamp() - d.duration_ms / 1000 for d in stack.graph.list_deliveries()
              if d.kind == "change" and subscription_id in d.subscription_ids]
    later = [s for s in starts if s >= after - 0.05]
    return min(later) if later else None


def measure_changes(stack: Stack, links: list[BenchLink], samples: int, rng: random.Random,
                    day_base: int) -> tuple[list[float], list[float], list[Breakdown]]:
    """Per change: notification POST → slot write, Outlook change → slot write (s), and the split."""
    from shared.domain import slot_external_id

    post_to_write: list[float] = []
    change_to_write: list[float] = []
    parts: list[Breakdown] = []
    for n in range(samples):
        target = rng.choice(links)
        start, end = event_times(day_base + n // 20, n)
        changed_at = time.time()
        ids = stack.graph.create_event(target.user.id, f"Termin {n}", start, end, calendar_id=target.calendar_id,
                                       show_as="busy")
        slot_key = (target.provider, target.resource, slot_external_id(target.key, ids.immutable_id))
        stack.wait_timum(lambda st, k=slot_key: k in st.slots, timeout=60, what="blocked slot")  # type: ignore[misc]
        written = stack.timum.slots[slot_key].updated_at.timestamp()
        change_to_write.append(written - changed_at)
        posted = delivery_start(stack, target.subscription_id, changed_at)
        if posted is None:
            continue
        post_to_write.append(written - posted)
        split = breakdown(stack.host.records(), webhook="graph_notifications", worker="sync_worker",
                          posted=posted, written=written)
        if split is not None:
            parts.append(split)
    return post_to_write, change_to_write, parts


def run_scenario(ctx: Context) -> Output:
    sizes = (1, 20) if ctx.quick else (1, 100, 1000)
    samples = 5 if ctx.quick else 15
    figures: list[Figure] = []
    notes = [
        f"Per run {samples} changes, one after another, each in a calendar drawn at random among the linked "
        "ones. The targets are ours (the issue names only the baselines): p50 ≤ 5 s and p95 ≤ 10 s, far inside "
        "the 150 s average of 5-minute polling. Links beyond the first are created through the repositories "
        "and the sandbox's state (subscription included) and then fully synced by the real worker.",
    ]
    rng = random.Random(1)
    stack = bench_stack()
    try:
        links: list[BenchLink] = []
        day_base = 1
        for size in sizes:
            begun = time.monotonic()
            more = size - len(links)
            links += bulk_links(stack, more, prefix=f"n{size}-", log=ctx.log)
            wait_quiet(stack, timeout=300)
            ctx.log(f"{size} links ready ({more} added in {time.monotonic() - begun:.0f} s)")
            p50 = Figure("1", f"p50 notification → slot, {size} link(s)", "s", target=Target("<=", P50_TARGET))
            p95 = Figure("1", f"p95 notification → slot, {size} link(s)", "s", target=Target("<=", P95_TARGET))
            e2e = Figure("1", f"p50 Outlook change → slot, {size} link(s)", "s",
                         method="from the change in the sandbox Outlook; includes the sandbox's 0.2 s batching")
            parts: list[Breakdown] = []
            for run in range(ctx.runs):
                post, change, split = measure_changes(stack, links, samples, rng, day_base)
                day_base += samples // 20 + 1
                parts += split
                p50.samples.append(percentile(post, 50))
                p95.samples.append(percentile(post, 95))
                e2e.samples.append(percentile(change, 50))
                ctx.log(f"{size} links, run {run + 1}: p50 {p50.samples[-1]:.2f} s, p95 {p95.samples[-1]:.2f} s")
            reason = explain(parts, worker_what="delta run to the slot write")
            for fig in (p50, p95):
                fig.method = ("start of the sandbox Graph's notification POST → the sandbox timum's write of the "
                              "slot (its updatedAt)")
                fig.miss_reason = reason
            figures += [p50, p95, e2e]
    finally:
        stack.stop()
    figures += [
        Figure("1", "mean change → slot, Outlook ICS subscription", "s", [OUTLOOK_ICS_REFRESH / 2], kind="baseline",
               source="documented ~4 h refresh",
               method="Outlook refreshes subscribed ICS calendars about every 4 h (documented, not measured): a "
                      "change waits 2 h on average, up to 4 h"),
        Figure("1", "mean change → slot, 5-minute polling", "s", [POLL_INTERVAL / 2], kind="baseline",
               source="model", method="a change waits half the interval on average (150 s), up to 300 s, "
                                      "before the next poll sees it; processing comes on top"),
    ]
    return Output(figures, notes)
