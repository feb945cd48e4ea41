"""Where the time of one change went, from the local host's invocation records: the webhook's
own run, the wait in the queue, and the worker's run up to the write being measured.

Used to explain a missed latency target with the part that dominates, instead of guessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.report import percentile


@dataclass(frozen=True)
class Span:
    function: str
    start: float
    end: float


def spans(records: Sequence[Any], function: str) -> list[Span]:
    out = []
    for r in records:
        if r.function == function:
            start = r.started_at.timestamp()
            out.append(Span(function, start, start + r.duration_ms / 1000))
    return sorted(out, key=lambda s: s.start)


@dataclass(frozen=True)
class Breakdown:
    """Seconds: webhook run, queue wait (webhook end → worker start), worker run until the write."""

    webhook: float
    queue_wait: float
    worker: float


def breakdown(records: Sequence[Any], *, webhook: str, worker: str, posted: float, written: float) -> Breakdown | None:
    hook = next((s for s in spans(records, webhook) if s.start >= posted - 0.05), None)
    if hook is None:
        return None
    run = next((s for s in spans(records, worker) if s.start >= hook.start and s.start <= written), None)
    if run is None:
        return None
    return Breakdown(hook.end - hook.start, max(0.0, run.start - hook.end), max(0.0, written - run.start))


def dominant(parts: Sequence[Breakdown]) -> tuple[str, float, float, float]:
    """(name of the largest median part, its median, webhook median, queue-wait median)."""
    hooks = [p.webhook for p in parts]
    waits = [p.queue_wait for p in parts]
    works = [p.worker for p in parts]
    medians = {"webhook": percentile(hooks, 50), "queue wait": percentile(waits, 50),
               "worker": percentile(works, 50)}
    name = max(medians, key=lambda k: medians[k])
    return name, medians[name], medians["webhook"], medians["queue wait"]


def explain(parts: Sequence[Breakdown], *, worker_what: str) -> str:
    """One sentence on where the time went and what would shorten the largest part."""
    if not parts:
        return "No invocation records matched the changes, so the time could not be attributed."
    name, value, hook, wait = dominant(parts)
    works = percentile([p.worker for p in parts], 50)
    text = (f"Median split: webhook {hook * 1000:.0f} ms, queue wait {wait:.2f} s, {worker_what} {works:.2f} s. ")
    if name == "queue wait":
        return text + ("The queue wait dominates: the local host's listener backs off up to host.json's "
                       "maxPollingInterval (2 s) while a queue is empty, and waits for capacity under load; a "
                       "shorter maxPollingInterval or more worker instances close it.")
    if name == "worker":
        return text + (f"The worker dominates ({worker_what}): its Graph and timum round trips and table writes run "
                       "on the same two cores as the stand-ins and Azurite; fewer storage round trips per run "
                       "or a faster storage account close it.")
    return text + ("The webhook dominates: its enqueue to storage is on the critical path; a faster storage "
                   "account or batching the enqueue closes it.")
