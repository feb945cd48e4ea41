"""The code a live conflict check runs, loaded once per process in a thread of its own.

The first live read of a process imports msgraph-sdk's request side, the sign-in libraries
(azure-identity and its aiohttp transport for app-only links, MSAL for delegated ones),
icalendar's Windows zone table (the zone resolver's) and httpx's async backend: ~0.4 s on an idle
machine, seconds on a busy one. Imported on the event loop they block it, and a blocked loop
cannot end the read at its budget: first checks of a fresh process answered after up to 2 s
although the budget is 1.5 s (bench/results.md). Imported here, the loop stays free: a check that
comes before the loading is done waits for it within its budget and past that answers from the
synced state (``timeout``).

Only what the live read imports is loaded. Parsing a sample of every response model as well
(~1.5 s of CPU the check never needs: it reads raw JSON), run beside the first read, held the
GIL and the module import locks that read was waiting for.

Nothing starts at ``import function_app``: the other functions' cold start stays as it was, and
a process that never answers a conflict check never pays this.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

log = logging.getLogger(__name__)

_lock = threading.Lock()
_loading: Future[float] | None = None


def load_live_read_code() -> float:
    """Import what the first live read would import; return the seconds spent."""
    began = time.perf_counter()
    import aiohttp  # noqa: F401 - azure-identity's transport (the storage clients may have it already)
    import anyio  # noqa: F401 - httpx's async backend, imported by its first request
    import azure.identity.aio  # noqa: F401 - AppOnlyCredential's client
    import msal  # noqa: F401 - DelegatedCredential's client

    from shared.adapters import graph_sdk, timezones

    graph_sdk.load_request_side()
    # The resolver imports icalendar's Windows table on first use (the Graph adapter maps every
    # event's zone through it).
    timezones.resolve_zone("UTC")
    return time.perf_counter() - began


def _run(loader: Callable[[], float], future: Future[float]) -> None:
    global _loading
    try:
        seconds = loader()
    except BaseException as exc:  # handed to the awaiting checks, which fall back
        log.warning("loading the live conflict check's code failed: %s", type(exc).__name__)
        with _lock:
            _loading = None  # the next check tries again
        future.set_exception(exc)
    else:
        log.info("live conflict check's code loaded in %.2f s", seconds)
        future.set_result(seconds)


def start(loader: Callable[[], float] = load_live_read_code) -> Future[float]:
    """Start loading in a daemon thread unless it has started; the future ends when it is done."""
    global _loading
    with _lock:
        if _loading is None:
            _loading = Future()
            # Running: a check that gives up waiting (its budget) cannot cancel it for the others.
            _loading.set_running_or_notify_cancel()
            threading.Thread(target=_run, args=(loader, _loading), name="conflict-check-preload",
                             daemon=True).start()
        return _loading


async def ready() -> None:
    """Return once the code is loaded (start it if nobody has). Cancelling the wait leaves the
    loading running for the next check."""
    await asyncio.wrap_future(start())


def reset() -> None:
    """Forget the loading state (tests that replace the loader)."""
    global _loading
    with _lock:
        _loading = None
