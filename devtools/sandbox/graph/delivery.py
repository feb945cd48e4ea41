"""Outbound HTTP of the Graph stand-in: the subscription validation handshake and the
asynchronous delivery of change and lifecycle notifications (coalesced per URL, retried with
exponential back-off, every attempt recorded with its status and duration).

Runs on the server's event loop; the state wakes it thread-safely when its outbox fills.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from collections import defaultdict
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from devtools.sandbox.config import SandboxConfig
from devtools.sandbox.graph.model import GraphError
from devtools.sandbox.graph.state import GraphState, OutboxItem


def display_target(url: str) -> str:
    """scheme://host/path of a URL: query strings may carry function keys and are never shown."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class Dispatcher:
    def __init__(self, state: GraphState, config: SandboxConfig) -> None:
        self.state = state
        self.config = config
        self.client: httpx.AsyncClient | None = None
        self._wake: asyncio.Event | None = None
        self._release: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle ----------------------------------------------------------------------------
    async def startup(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        ctx = ssl.create_default_context()
        if self.config.ca_path.exists():
            # Notification endpoints behind the sandbox's own CA are trusted like public ones.
            ctx.load_verify_locations(cafile=str(self.config.ca_path))
        self.client = httpx.AsyncClient(verify=ctx, follow_redirects=False)
        self._wake = asyncio.Event()
        self._release = asyncio.Event()
        wake = self._wake

        def wake_up() -> None:
            loop.call_soon_threadsafe(wake.set)

        self.state.wake = wake_up
        def release() -> None:
            loop.call_soon_threadsafe(self._release_now)

        self.state.release_hook = release
        self._spawn(self._dispatch_loop())
        self._spawn(self._housekeeping_loop())
        if self.state.outbox:
            wake.set()

    async def shutdown(self) -> None:
        self.state.wake = None
        self.state.release_hook = None
        if self._release is not None:
            self._release.set()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _release_now(self) -> None:
        if self._release is not None:
            self._release.set()
        self._release = asyncio.Event()

    async def hold(self, seconds: float) -> bool:
        """Wait up to ``seconds`` (a slow or hanging response); True if released early."""
        event = self._release or asyncio.Event()
        try:
            await asyncio.wait_for(event.wait(), seconds)
            return True
        except TimeoutError:
            return False

    # --- validation handshake -----------------------------------------------------------------
    async def validate(self, url: str) -> None:
        """POST ``url?validationToken=…``; the endpoint must echo the decoded token as text/plain."""
        assert self.client is not None, "dispatcher not started"
        token = f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"
        target = f"{url}{'&' if '?' in url else '?'}validationToken={quote(token, safe='')}"
        started = time.perf_counter()
        status: int | None = None
        outcome = "ok"
        error: GraphError | None = None
        try:
            resp = await self.client.post(target, content=b"",
                                          headers={"Content-Type": "text/plain; charset=utf-8"},
                                          timeout=self.state.behaviour.validation_timeout)
            status = resp.status_code
            ctype = resp.headers.get("content-type", "")
            if status != 200:
                outcome = "http_error"
                error = GraphError(400, "InvalidRequest", "Subscription validation request failed. Notification "
                                   "endpoint must respond with 200 OK to validation request.")
            elif resp.text != token or not ctype.lower().startswith("text/plain"):
                outcome = "http_error"
                error = GraphError(400, "InvalidRequest", "Subscription validation request failed. Response must "
                                   "exactly match validationToken query parameter.")
        except httpx.TimeoutException:
            outcome = "timeout"
            error = GraphError(400, "InvalidRequest", "Subscription validation request timed out.")
        except httpx.HTTPError:
            outcome = "error"
            error = GraphError(400, "InvalidRequest", "Subscription validation request failed. Notification "
                               "endpoint must respond with 200 OK to validation request.")
        self.state.record_delivery(kind="validation", target=display_target(url), subscription_ids=[],
                                   change_types=[], count=0, attempt=1, status=status, outcome=outcome,
                                   duration_ms=round((time.perf_counter() - started) * 1000, 1))
        if error is not None:
            raise error

    # --- notifications ------------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            # A short pause lets changes made together travel in one POST, as Graph batches them.
            await asyncio.sleep(self.state.behaviour.coalesce_delay)
            groups: dict[tuple[str, str], list[OutboxItem]] = defaultdict(list)
            for item in self.state.take_outbox():
                groups[(item.url, item.kind)].append(item)
            for (url, _), items in groups.items():
                self._spawn(self._deliver(url, items))

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.state.behaviour.housekeeping_interval)
            self.state.housekeeping()

    async def _deliver(self, url: str, items: list[OutboxItem]) -> None:
        assert self.client is not None
        behaviour = self.state.behaviour
        attempt = 0
        while items:
            attempt += 1
            payload = {"value": [i.payload for i in items]}
            started = time.perf_counter()
            status: int | None = None
            try:
                resp = await self.client.post(url, json=payload, timeout=behaviour.delivery_timeout)
                status = resp.status_code
                outcome = "ok" if 200 <= status < 300 else "http_error"
            except httpx.TimeoutException:
                outcome = "timeout"
            except httpx.HTTPError:
                outcome = "error"
            self.state.record_delivery(
                kind=items[0].kind, target=display_target(url),
                subscription_ids=sorted({i.subscription_id for i in items}),
                change_types=[i.change_type for i in items], count=len(items), attempt=attempt, status=status,
                outcome=outcome, duration_ms=round((time.perf_counter() - started) * 1000, 1))
            if outcome == "ok" or attempt >= behaviour.max_delivery_attempts:
                return
            await asyncio.sleep(behaviour.retry_base_delay * 2 ** (attempt - 1))
            # Notifications of subscriptions that expired or were deleted meanwhile are dropped.
            items = [i for i in items if i.kind == "lifecycle" or self.state.subscription(i.subscription_id)]
