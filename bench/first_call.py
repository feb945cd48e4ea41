"""First invocation of one function kind in a fresh process: ``python -m bench.first_call --kind http``.

Imports ``function_app`` as the Python worker does, then calls one decorated function twice, as
the host would: ``http`` — the Graph notification webhook with a valid notification; ``queue`` —
the delta worker with a message for a linked calendar (its first Graph request in the process);
``timer`` — the ``poll_links`` timer. Settings come from the environment. Prints one JSON object
with the import time and both calls' times in seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from types import SimpleNamespace
from typing import Any


async def _twice(call: Any) -> tuple[float, float, str]:
    t = time.perf_counter()
    first = await call()
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    await call()
    second_s = time.perf_counter() - t
    status = str(getattr(first, "status_code", "done"))
    return first_s, second_s, status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=["http", "queue", "timer"], required=True)
    parser.add_argument("--body", default="", help="http: the notification body; queue: the message body")
    args = parser.parse_args(argv)
    t = time.perf_counter()
    import function_app  # noqa: F401 - what the worker imports at start

    import_s = time.perf_counter() - t
    import azure.functions as func

    if args.kind == "http":
        from shared.http.graph_bp import graph_notifications

        def call() -> Any:
            req = func.HttpRequest(method="POST", url="http://127.0.0.1/api/graph/notifications", headers={},
                                   params={}, route_params={}, body=args.body.encode())
            return graph_notifications(req)
    elif args.kind == "queue":
        from azure.functions.queue import QueueMessage

        from shared.jobs.sync_bp import sync_worker

        def call() -> Any:
            # The worker's own message type, as the host builds it (with the dequeue count).
            return sync_worker(QueueMessage(id="bench", body=args.body.encode(), dequeue_count=1))
    else:
        from shared.jobs.sync_bp import poll_links

        def call() -> Any:
            return poll_links(SimpleNamespace(past_due=False))

    first_s, second_s, status = asyncio.run(_twice(call))
    json.dump({"import_s": import_s, "first_s": first_s, "second_s": second_s, "status": status}, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
