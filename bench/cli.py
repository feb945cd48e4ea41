"""``python -m bench [--quick] [--only NAME[,NAME…]]``: run the scenarios, print the table, write
``bench/results.md``.

Each scenario starts what it needs (Azurite, the sandbox, the local host — ``devtools.stack``) and
stops it again, so a failing scenario cannot spoil the next one; its error is reported instead
of its figures.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.report import ROOT, ScenarioResult, console_table, markdown, write_markdown
from bench.scenarios import Context, Output

RESULTS = ROOT / "bench" / "results.md"


@dataclass(frozen=True)
class Entry:
    key: str
    title: str
    module: str

    @property
    def name(self) -> str:
        """The scenario's name on the command line: its module's, with dashes."""
        return self.module.rsplit(".", 1)[-1].replace("_", "-")


SCENARIOS: tuple[Entry, ...] = (
    Entry("1", "Outlook change → blocked slot written", "bench.scenarios.outlook_latency"),
    Entry("2", "Booking webhook → Outlook event written", "bench.scenarios.booking_latency"),
    Entry("3", "Graph requests per burst and per idle calendar-day", "bench.scenarios.graph_requests"),
    Entry("4", "Graph webhook acknowledgement latency under load", "bench.scenarios.webhook_ack"),
    Entry("5", "Initial sync of a large calendar", "bench.scenarios.initial_sync"),
    Entry("6", "ICS feed of many bookings", "bench.scenarios.ics_feed"),
    Entry("7", "Import time and first invocation per function kind", "bench.scenarios.cold_start"),
    Entry("8", "Fault-injection soak over the whole stack", "bench.soak"),
    Entry("9", "Fuzzing every HTTP endpoint", "bench.fuzz"),
    Entry("10", "Hostile POSTs to the anonymous Graph webhook", "bench.scenarios.webhook_flood"),
    Entry("11", "Organisation mapping page (5,000 people) and a bulk link of 200 calendars",
          "bench.scenarios.org_mapping"),
)


def _select(only: str | None) -> list[Entry]:
    if not only:
        return list(SCENARIOS)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    chosen: list[Entry] = []
    for want in wanted:
        match = [e for e in SCENARIOS if want in (e.key, e.name)]
        if not match:
            names = ", ".join(f"{e.key}/{e.name}" for e in SCENARIOS)
            raise SystemExit(f"unknown scenario {want!r}; choose from {names}")
        chosen += [m for m in match if m not in chosen]
    return chosen


def _runner(entry: Entry) -> Callable[[Context], Output]:
    import importlib

    module = importlib.import_module(entry.module)
    run: Callable[[Context], Output] = module.run_scenario
    return run


def _say_for(say: Callable[[str], None], key: str, text: str) -> None:
    say(f"  {key}: {text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a minute or two")
    parser.add_argument("--only", help="comma-separated scenario numbers or names (see --list)")
    parser.add_argument("--runs", type=int, default=None, help="runs per scenario (default 3, quick 1)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--output", default=str(RESULTS), help="where to write the markdown report")
    parser.add_argument("--verbose", action="store_true", help="log the stack's own messages too")
    args = parser.parse_args(argv)
    if args.list:
        for e in SCENARIOS:
            print(f"{e.key}  {e.name:16} {e.title}")
        return 0
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # The app logs one line per invocation; a benchmark produces hundreds of thousands.
        logging.disable(logging.CRITICAL)
    runs = args.runs or (1 if args.quick else 3)
    chosen = _select(args.only)
    started = datetime.now(UTC)
    t0 = time.monotonic()
    results: list[ScenarioResult] = []

    def say(text: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {text}", flush=True)

    for entry in chosen:
        say(f"scenario {entry.key} ({entry.name}): {entry.title}")
        begun = time.monotonic()
        ctx = Context(quick=args.quick, runs=runs, log=functools.partial(_say_for, say, entry.key))
        try:
            output = _runner(entry)(ctx)
            results.append(ScenarioResult(entry.key, entry.title, output.figures, time.monotonic() - begun,
                                          output.notes))
        except Exception as exc:  # one scenario's failure is reported, the rest still run
            traceback.print_exc()
            last = (str(exc).strip().splitlines() or [""])[-1][:300]
            results.append(ScenarioResult(entry.key, entry.title, [], time.monotonic() - begun,
                                          error=f"{type(exc).__name__}: {last}"))
    elapsed = time.monotonic() - t0
    print()
    print(console_table(results))
    command = "python -m bench" + (" --quick" if args.quick else "") + (f" --only {args.only}" if args.only else "")
    write_markdown(Path(args.output), markdown(results, quick=args.quick, runs=runs, started=started,
                                               elapsed=elapsed, command=command))
    print(f"\nwrote {args.output} ({elapsed / 60:.1f} min)")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
