"""Scenario 7: what a cold instance pays — ``import function_app`` and the first invocation of
each function kind (HTTP, queue, timer), each in a fresh process.

Import time is the wall time of the import statement in a new interpreter; ``-X importtime`` in
a separate run names the modules that cost most. First invocations run ``bench.first_call``
against the local stack: the Graph webhook with a valid notification, the delta worker with a
message for a linked calendar, the ``poll_links`` timer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from bench.report import ROOT, Figure, Target
from bench.scenarios import Context, Output
from devtools.stack_world import bench_stack, bulk_links, wait_quiet

if TYPE_CHECKING:
    from devtools.stack import Stack

IMPORT_TARGET = 0.5
HTTP_FIRST_TARGET = 1.0


def import_seconds() -> float:
    code = "import time; t = time.perf_counter(); import function_app; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def import_breakdown() -> list[tuple[str, float]]:
    """The top-level packages by cumulative import time (``-X importtime``), largest first."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import function_app"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True)
    totals: dict[str, float] = {}
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = [p.strip() for p in line[len("import time:"):].split("|")]
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        name = parts[2]
        if name.startswith(" ") or line.split("|")[2].startswith("  "):
            continue  # nested import: counted in its parent's cumulative time
        totals[name.strip()] = totals.get(name.strip(), 0.0) + int(parts[1]) / 1e6
    return sorted(totals.items(), key=lambda kv: kv[1], reverse=True)


def first_call(stack: Stack, kind: str, body: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.first_call", "--kind", kind, "--body", body], cwd=ROOT,
                         env={**os.environ, **stack.env}, capture_output=True, text=True, timeout=300, check=False)
    lines = [line for line in out.stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"first-call probe ({kind}) failed: {out.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_scenario(ctx: Context) -> Output:
    reps = 3 if ctx.quick else 5
    imp = Figure("7", "import function_app", "s", target=Target("<=", IMPORT_TARGET))
    for _ in range(reps):
        imp.samples.append(import_seconds())
    top = import_breakdown()[:5]
    imp.method = (f"wall time of the import in a fresh interpreter, {reps} times; largest top-level imports "
                  "(-X importtime, cumulative): " + ", ".join(f"{name} {secs * 1000:.0f} ms" for name, secs in top))
    imp.miss_reason = ("The largest top-level imports are " + ", ".join(f"{n} ({s * 1000:.0f} ms)" for n, s in top[:3])
                       + "; moving the heaviest behind first use in the triggers would close it.")
    kinds = {"http": "HTTP (Graph webhook)", "queue": "queue (delta worker)", "timer": "timer (poll_links)"}
    firsts = {k: Figure("7", f"first {v} invocation", "s") for k, v in kinds.items()}
    seconds = {k: Figure("7", f"second {v} invocation", "s") for k, v in kinds.items()}
    firsts["http"].target = Target("<=", HTTP_FIRST_TARGET)
    stack = bench_stack()
    try:
        (link,) = bulk_links(stack, 1, provider="praxis", log=ctx.log)
        wait_quiet(stack, timeout=60)
        # The measured processes must not race the in-process host for the same link's lease.
        stack.host.stop()
        record = stack.graph.subscription(link.subscription_id)
        assert record is not None
        notification = json.dumps({"value": [{
            "subscriptionId": link.subscription_id, "clientState": record.client_state, "changeType": "updated",
            "resource": f"Users/{link.user.id}/Events/x", "tenantId": link.user.tenant_id}]})
        message = json.dumps({"link": str(link.key), "reason": "notification", "full": False, "observed_at": 0})
        bodies = {"http": notification, "queue": message, "timer": ""}
        for run in range(ctx.runs):
            for kind in kinds:
                result = first_call(stack, kind, bodies[kind])
                firsts[kind].samples.append(result["first_s"])
                seconds[kind].samples.append(result["second_s"])
                ctx.log(f"run {run + 1}, {kind}: first {result['first_s']:.3f} s, second "
                        f"{result['second_s']:.3f} s ({result['status']})")
    finally:
        stack.stop()
    for kind in kinds:
        firsts[kind].method = ("in a fresh process after `import function_app`: the first call, including the "
                               "lazy imports and client set-up it triggers")
    firsts["http"].miss_reason = ("The first webhook call builds the storage clients and imports the notification "
                                  "service; building them at import time (the worker's start) would move it out of "
                                  "the first request.")
    notes = [f"Targets are ours: import ≤ {IMPORT_TARGET} s (Flex Consumption allows 30 s for initialisation, "
             f"but every cold instance pays it), first webhook call ≤ {HTTP_FIRST_TARGET} s (Graph wants an answer "
             "within 3 s, even from a cold instance). The queue worker's first call includes msgraph-sdk's first "
             "request in the process."]
    figures = [imp]
    for kind in kinds:
        figures += [firsts[kind], seconds[kind]]
    return Output(figures, notes)
