"""Run the sandbox timum alone in a background thread (uvicorn on a free port) — for tests and for
scripts that need timum without the whole sandbox server.

The listening socket is bound before the config is made, so the port in every URL (return URLs,
booking links) is the real one, and there is no window in which another process could take it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from devtools.sandbox.config import SandboxConfig
from devtools.sandbox.timum.sandbox import TimumSandbox
from devtools.sandbox.timum.state import TimumState

#: path under the sandbox's own port where ``serve_timum`` points the booking webhooks by default, so a
#: test can mount its stand-in of the service there (``extra_routes``)
TEST_SERVICE_PREFIX = "/_test-service"


@dataclass(frozen=True)
class ReceivedWebhook:
    headers: dict[str, str]     # lower-case names
    body: bytes


@dataclass
class WebhookRecorder:
    """Stands in for the service's booking-webhook endpoint: records each request and answers from
    ``script`` (HTTP statuses, or ``"hang"`` to answer only after the sender gave up), then 202."""

    path: str = TEST_SERVICE_PREFIX + "/api/timum/bookings"
    script: list[int | str] = field(default_factory=list)
    received: list[ReceivedWebhook] = field(default_factory=list)

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        self.received.append(ReceivedWebhook({k.lower(): v for k, v in request.headers.items()}, body))
        action = self.script.pop(0) if self.script else 202
        if action == "hang":
            # Hold the answer until the sender's timeout closes the connection.
            while (await request.receive())["type"] != "http.disconnect":
                pass
            return Response(status_code=202)
        return Response(status_code=int(action))

    def routes(self) -> list[BaseRoute]:
        return [Route(self.path, self.endpoint, methods=["POST"])]

    def reset(self, script: Sequence[int | str] = ()) -> None:
        self.received.clear()
        self.script[:] = list(script)


@dataclass
class RunningTimum:
    sandbox: TimumSandbox
    config: SandboxConfig

    @property
    def state(self) -> TimumState:
        return self.sandbox.state

    @property
    def base_url(self) -> str:
        return self.config.http_base

    @property
    def api_base_url(self) -> str:
        """What the service's ``TIMUM_API_BASE_URL`` would be."""
        return self.config.timum_api_base_url

    @property
    def status_webhook_url(self) -> str:
        """What the service's ``TIMUM_STATUS_WEBHOOK_URL`` would be."""
        return f"{self.config.timum_api_base_url}/v1/webhooks/link-status"


@contextlib.contextmanager
def serve_timum(config: SandboxConfig | None = None, *, extra_routes: Sequence[BaseRoute] = (),
                seed: bool = False, **sandbox_kwargs: Any) -> Iterator[RunningTimum]:
    """Serve a fresh ``TimumSandbox`` on 127.0.0.1 and a free port until the block ends.

    Without ``service_base_url`` in ``config``, booking webhooks go to ``TEST_SERVICE_PREFIX`` on the
    same port.
    """
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the socket says
    # it is TCP; with proto 0 every answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    base = config or SandboxConfig(service_base_url=f"http://127.0.0.1:{port}{TEST_SERVICE_PREFIX}")
    cfg = replace(base, host="127.0.0.1", http_port=port)
    sandbox = TimumSandbox(cfg, **sandbox_kwargs)
    if seed:
        sandbox.seed_demo()
    ready = threading.Event()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await sandbox.startup()
        ready.set()
        try:
            yield
        finally:
            await sandbox.shutdown()

    app = Starlette(routes=[*sandbox.http_routes, *extra_routes], lifespan=lifespan)
    # uvicorn installs signal handlers only in the main thread, so the test runner keeps its own.
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", ws="none", http="h11",
                                    access_log=False, timeout_graceful_shutdown=5))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name=f"timum-sandbox-{port}", daemon=True)
    thread.start()
    try:
        if not ready.wait(30) or failure:
            raise RuntimeError("the sandbox timum did not start") from (failure[0] if failure else None)
        yield RunningTimum(sandbox, cfg)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
