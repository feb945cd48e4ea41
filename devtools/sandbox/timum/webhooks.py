"""Sends the sandbox timum's booking webhooks to the service, as real timum does: signed, one at a
time in the order they happened, retried with back-off on 5xx, timeouts and network errors only.

A delivery that waits for its retry does not hold up later ones — so a receiver that fails once
sees the next change before the retry, which is exactly what the service's version check is for.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Sequence

import httpx

from devtools.sandbox.timum.state import Attempt, Delivery, TimumState, UnknownItem
from shared.signing import SIGNATURE_HEADER, sign_webhook

log = logging.getLogger(__name__)

#: seconds before each retry; real timum keeps going far longer (see docs/timum-api.yaml)
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
DEFAULT_TIMEOUT = 10.0


def signature_header(body: bytes, secrets: Sequence[str], mode: str, now: float) -> str | None:
    """The ``Timum-Signature`` value for ``mode`` (see ``state.SIGNATURE_MODES``)."""
    if mode == "missing":
        return None
    if mode == "wrong_secret":
        return sign_webhook(body, ["not-the-configured-secret"], timestamp=int(now))
    if mode == "stale":
        return sign_webhook(body, secrets[:1], timestamp=int(now) - 3600)
    if mode == "all_secrets":
        return sign_webhook(body, secrets, timestamp=int(now))
    return sign_webhook(body, secrets[:1], timestamp=int(now))


class BookingWebhookSender:
    """Runs on the server's event loop; the state hands it deliveries from any thread."""

    def __init__(self, state: TimumState, secrets: Sequence[str], *,
                 retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS, timeout: float = DEFAULT_TIMEOUT,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not secrets:
            raise ValueError("booking webhooks need a signing secret")
        self.state = state
        self.secrets = tuple(secrets)
        self.retry_delays = tuple(retry_delays)
        self.timeout = timeout
        self._transport = transport
        self._heap: list[tuple[float, int, int]] = []
        self._order = itertools.count()
        self._tries: dict[int, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._client = httpx.AsyncClient(timeout=self.timeout, transport=self._transport)
        for delivery in self.state.set_delivery_listener(self._submit_threadsafe):
            self._push(delivery.seq, 0.0)
        self._task = asyncio.create_task(self._run(), name="timum-booking-webhooks")

    async def stop(self) -> None:
        self.state.set_delivery_listener(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _submit_threadsafe(self, delivery: Delivery) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._push(delivery.seq, 0.0)
            return
        # The loop may close between the check above and this call (server stopping): the delivery
        # then stays pending and goes out after the next start.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._push, delivery.seq, 0.0)

    def _push(self, seq: int, delay: float) -> None:
        assert self._loop is not None and self._wake is not None
        heapq.heappush(self._heap, (self._loop.time() + delay, next(self._order), seq))
        self._wake.set()

    async def _run(self) -> None:
        assert self._loop is not None and self._wake is not None
        while True:
            if not self._heap:
                await self._wake.wait()
                self._wake.clear()
                continue
            due, _, seq = self._heap[0]
            wait = due - self._loop.time()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                self._wake.clear()
                continue
            heapq.heappop(self._heap)
            try:
                await self._attempt(seq)
            except Exception:  # a sandbox bug must not stop all later deliveries
                log.exception("booking webhook %s could not be attempted", seq)

    async def _attempt(self, seq: int) -> None:
        assert self._client is not None
        try:
            delivery = self.state.delivery(seq)
        except UnknownItem:  # forgotten by a reset
            return
        if delivery.outcome != "pending":
            return
        now = time.time()
        headers = {"Content-Type": "application/json", "Timum-Delivery": delivery.delivery_id,
                   "User-Agent": "timum-sandbox-webhooks/1"}
        signature = signature_header(delivery.body, self.secrets, self.state.signature_mode, now)
        if signature is not None:
            headers[SIGNATURE_HEADER] = signature
        started = time.monotonic()
        status: int | None = None
        error = ""
        try:
            response = await self._client.post(self.state.webhook_url, content=delivery.body, headers=headers)
            status = response.status_code
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.TransportError as exc:
            error = type(exc).__name__
        duration = time.monotonic() - started
        tries = self._tries.get(seq, 0) + 1
        self._tries[seq] = tries
        retryable = status is None or status >= 500
        delivered = status is not None and 200 <= status < 300
        final = not retryable or tries > len(self.retry_delays)
        self.state.record_attempt(seq, Attempt(at=now, status=status, duration=duration, error=error),
                                  final=final, delivered=delivered)
        if not final:
            self._push(seq, self.retry_delays[tries - 1])
