"""The fuzz run of every HTTP endpoint (``devtools.fuzz``) as a benchmark: ``python -m bench.fuzz
[--examples N]``, or ``python -m bench --only fuzz``; this module only reports its figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Any

from bench.report import Figure, Target
from devtools.fuzz import run_fuzz


def run_scenario(ctx: Any) -> Any:
    """The long fuzz run as a benchmark scenario (``python -m bench --only fuzz``)."""
    from bench.scenarios import Output

    examples = 10 if ctx.quick else 40
    started = time.monotonic()
    results = run_fuzz(examples, log=ctx.log)
    failures = [f"{r.operation}: {f}" for r in results for f in r.failures]
    total = sum(r.requests for r in results)
    statuses: Counter[int] = Counter()
    unsendable: Counter[str] = Counter()
    for r in results:
        statuses.update(r.statuses)
        unsendable.update(r.unsendable)
    fig = Figure("9", f"fuzz: failing operations ({total:,} requests)", "operations",
                 [float(sum(1 for r in results if r.failures))], target=Target("<=", 0))
    fig.method = (f"{examples} generated requests per operation over {len(results)} operations in "
                  f"{time.monotonic() - started:.0f} s; statuses {dict(sorted(statuses.items()))}; requests the "
                  f"HTTP client refused to send (not counted as failures): {sum(unsendable.values())}"
                  + (f" {dict(unsendable)}" if unsendable else ""))
    fig.miss_reason = "Failures: " + " | ".join(failures[:5])
    five = Figure("9", "fuzz: 5xx answers", "answers", [float(sum(v for k, v in statuses.items() if k >= 500))],
                  target=Target("<=", 0))
    notes = ["```", *(r.line() for r in results), "```"]
    return Output([fig, five], notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=200, help="requests per operation")
    parser.add_argument("--only", nargs="*", default=[], help="operationIds")
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.CRITICAL)
    results = run_fuzz(args.examples, only=args.only)
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

