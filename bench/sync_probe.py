"""One delta run of one link in a fresh worker process: ``python -m bench.sync_probe --link p|r``.

Builds the services exactly as the function host does (``shared.wiring``, settings from the
environment) and calls the worker's service function for a full sync. Prints one JSON object:
wall and CPU time of the run, the outcome's counters, and memory — the resident set before the
run (after the worker's modules are imported, as in a warm worker) and the peak during it (Linux
``VmHWM``; ``ru_maxrss`` elsewhere). ``--profile FILE`` writes cProfile statistics of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mib() -> float:
    kib = _status_kib("VmRSS")
    return kib / 1024 if kib is not None else float("nan")


def peak_mib() -> float:
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024


async def probe(link: str, full: bool, profile: str = "") -> dict[str, object]:
    from shared.messages import SyncMessage, SyncReason
    from shared.sync.worker import run_sync
    from shared.wiring import get_services

    services = get_services()
    message = SyncMessage(link, SyncReason.SETUP if full else SyncReason.NOTIFICATION, full=full)
    before = rss_mib()
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started, cpu = time.perf_counter(), time.process_time()
    outcome = await run_sync(services, message, worker_id="bench-sync-probe")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    peak = peak_mib()
    closer = getattr(services.timum, "close", None)
    if closer is not None:
        await closer()
    await services.storage.close()
    return {"seconds": seconds, "status": outcome.status, "pages": outcome.pages, "upserts": outcome.upserts,
            "deletes": outcome.deletes, "graph_requests": outcome.graph_requests, "rss_before_mib": before,
            "cpu_s": cpu, "peak_rss_mib": peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--link", required=True, help="provider|resource")
    parser.add_argument("--incremental", action="store_true", help="an incremental run instead of a full one")
    parser.add_argument("--profile", default="", help="write cProfile statistics of the run to this file")
    args = parser.parse_args(argv)
    # Imported before the baseline, as a worker that already served a message has them.
    import shared.adapters.graph_sdk
    import shared.outlook.run  # noqa: F401

    result = asyncio.run(probe(args.link, not args.incremental, args.profile))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
