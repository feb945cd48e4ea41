"""Open-loop HTTP load generator, run as its own process: ``python -m bench.loadgen``.

Sends POSTs at a fixed rate for a fixed time over keep-alive HTTP/1.1 connections, regardless of
how fast answers come (open loop), and measures each request's latency from the moment it was
*due* — so a server that falls behind is charged for the wait it causes (no coordinated
omission). A request waits for one of ``--connections`` keep-alive connections; that wait
counts too. Raw asyncio streams keep the generator's own cost per request far below an HTTP
client library's; it needs that on two cores shared with the server. ``max_lag_ms`` says how
far the generator itself fell behind its schedule.

The run is bounded: ``--drain`` seconds after the last request was due, whatever is unanswered
is abandoned, counted as ``unanswered`` and enters the percentiles with the time it had waited
by then (a lower bound) — a server far below the rate makes a level longer by at most that.

Input: a JSON file with a list of bodies (strings), used round robin. Output: one JSON object
on stdout with counts, statuses and latency percentiles in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

#: after the last request is due, answers are awaited this long; what is still open then is abandoned
DRAIN_SECONDS = 10.0
#: seconds the generator waits for each connection before the schedule starts
OPEN_TIMEOUT = 2.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    service_ms: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    #: requests due (rate × duration), and those that got a connection and were written
    scheduled: int = 0
    sent: int = 0
    #: still waiting for a connection or an answer at the cut-off
    unanswered: int = 0
    late_starts: int = 0
    #: how far behind its schedule the generator itself fell, at worst
    max_lag_ms: float = 0.0
    #: seconds from the start to the last request due, and to the last answer
    send_window: float = 0.0
    last_answer: float = 0.0


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, raw: bytes) -> int:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            length = int(headers.get("content-length", "0") or 0)
            if length:
                await self.reader.readexactly(length)
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run(url: str, bodies: list[bytes], rate: float, duration: float, connections: int,
              headers: dict[str, str], *, drain: float = DRAIN_SECONDS) -> Tally:
    """Offer ``rate * duration`` requests on schedule; at ``duration + drain`` after the start
    whatever is still waiting or in flight is abandoned and counted as unanswered, so one level
    never outlasts that bound however slow the server is."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    raws = [(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
             f"Content-Length: {len(b)}\r\n{extra}\r\n").encode() + b for b in bodies]
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        conn = Connection(host, port)
        # A server too busy to accept now is not waited for here: the connection then opens with
        # its first request, inside the measured (and cut-off) time.
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(conn.open(), OPEN_TIMEOUT)
        pool.put_nowait(conn)
    tally = Tally()
    total = int(rate * duration)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    cutoff = start + duration + drain
    tally.scheduled = total
    pending: dict[int, float] = {}
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int, due: float) -> None:
        pending[i] = due
        conn = await pool.get()
        sent = loop.time()
        tally.sent += 1
        try:
            status = await conn.request(raws[i % len(raws)])
            key = str(status)
            tally.statuses[key] = tally.statuses.get(key, 0) + 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            tally.errors += 1
            conn.close()
        except asyncio.CancelledError:
            # Abandoned at the cut-off: the half-read answer makes the connection useless.
            conn.close()
            raise
        finally:
            pool.put_nowait(conn)
        done = loop.time()
        del pending[i]
        tally.latencies_ms.append((done - due) * 1000)
        tally.service_ms.append((done - sent) * 1000)
        tally.last_answer = done - start

    for i in range(total):
        due = start + i / rate
        wait = due - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        else:
            tally.max_lag_ms = max(tally.max_lag_ms, -wait * 1000)
            if wait < -0.005:
                tally.late_starts += 1
        tasks.append(asyncio.ensure_future(one(i, due)))
    tally.send_window = loop.time() - start
    _, unfinished = await asyncio.wait(tasks, timeout=max(0.0, cutoff - loop.time())) if tasks else (set(), set())
    stopped = loop.time()
    for task in unfinished:
        task.cancel()
    await asyncio.gather(*unfinished, return_exceptions=True)
    # An abandoned request waited at least until the cut-off: that wait enters the percentiles as
    # a lower bound, so a backlog is never hidden by leaving its requests out.
    tally.unanswered = len(pending)
    tally.latencies_ms += [(stopped - due) * 1000 for due in pending.values()]
    while not pool.empty():
        pool.get_nowait().close()
    return tally


def summary(tally: Tally, rate: float, duration: float) -> dict[str, Any]:
    lat = tally.latencies_ms
    answered = sum(tally.statuses.values())
    return {
        "rate": rate, "duration_s": duration, "requests": tally.scheduled, "sent": tally.sent,
        "answered": answered, "errors": tally.errors, "unanswered": tally.unanswered, "statuses": tally.statuses,
        "late_starts": tally.late_starts, "max_lag_ms": tally.max_lag_ms,
        # what the generator managed to offer, and what the server answered, per second
        "offered_rate": tally.scheduled / max(tally.send_window, 1e-9),
        "achieved_rate": answered / max(tally.last_answer, duration, 1e-9),
        "p50_ms": percentile(lat, 50), "p90_ms": percentile(lat, 90), "p99_ms": percentile(lat, 99),
        "max_ms": max(lat) if lat else float("nan"),
        "service_p50_ms": percentile(tally.service_ms, 50), "service_p99_ms": percentile(tally.service_ms, 99),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--bodies", required=True, help="JSON file: a list of request bodies (strings)")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--drain", type=float, default=DRAIN_SECONDS,
                        help="seconds to await answers after the last request is due")
    args = parser.parse_args(argv)
    with open(args.bodies, encoding="utf-8") as fh:
        bodies = [b.encode() for b in json.load(fh)]
    began = time.perf_counter()
    tally = asyncio.run(run(args.url, bodies, args.rate, args.duration, args.connections, {}, drain=args.drain))
    result = summary(tally, args.rate, args.duration)
    result["elapsed_s"] = time.perf_counter() - began
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
