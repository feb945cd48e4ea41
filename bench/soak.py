"""The fault-injection soak (``devtools.soak``) as a benchmark: ``python -m bench.soak [--steps N]
[--seed S]``, or ``python -m bench --only soak``; this module only reports its figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bench.report import Figure, Target
from devtools.soak import ABRUPT_GRACE_SECONDS, BENCH_STEPS, SoakConfig, make_plan, run_soak


def run_scenario(ctx: Any) -> Any:
    """The soak as a benchmark scenario (``python -m bench --only soak``)."""
    from bench.scenarios import Output

    # The full benchmark must end within 20 minutes; `python -m bench.soak` runs 10,000 steps.
    steps = 100 if ctx.quick else BENCH_STEPS
    report = run_soak(SoakConfig(steps=steps, seed=1), log=ctx.log)
    for line in report.lines():
        ctx.log(line)
    problems = Figure("8", f"soak: problems after {steps:,} steps", "problems", [float(len(report.problems))],
                      target=Target("<=", 0))
    problems.method = "; ".join(line.strip() for line in report.lines()[:9])
    problems.miss_reason = "See the problems listed in the notes; each names the link and the item."
    duration = Figure("8", "soak: time to quiescence after the last step", "s", [report.quiesce_seconds])
    retries = Figure("8", "soak: connect attempts that ended on an error page", "attempts",
                     [float(report.reconnect_retries)],
                     method=f"reconnects of the delegated link under the injected faults; "
                            f"{report.reconnects_without_faults} went through only once the faults were lifted")
    notes = ["```", *report.lines(), "```"]
    return Output([problems, duration, retries], notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-rate", type=float, default=0.10)
    parser.add_argument("--abrupt-crashes", action="store_true",
                        help="cut running invocations off at a crash (waits out the queue's fetch leases)")
    parser.add_argument("--plan", action="store_true", help="print the plan as JSON lines and exit")
    args = parser.parse_args(argv)
    if args.plan:
        for step in make_plan(args.seed, args.steps, 4):
            print(json.dumps(step.to_json()))
        return 0
    import logging

    logging.disable(logging.CRITICAL)
    config = SoakConfig(steps=args.steps, seed=args.seed, fault_rate=args.fault_rate)
    if args.abrupt_crashes:
        config.crash_grace, config.quiet_timeout = ABRUPT_GRACE_SECONDS, 1800.0
    report = run_soak(config)
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

