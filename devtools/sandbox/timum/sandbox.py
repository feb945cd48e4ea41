"""``TimumSandbox``: the parts of the sandbox timum put together for the sandbox server."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
from starlette.routing import BaseRoute

from devtools.sandbox.config import SandboxConfig
from devtools.sandbox.timum.api import TimumApi
from devtools.sandbox.timum.control import TimumControl
from devtools.sandbox.timum.seed import seed_demo
from devtools.sandbox.timum.state import TimumState
from devtools.sandbox.timum.ui import TimumUi
from devtools.sandbox.timum.webhooks import DEFAULT_RETRY_DELAYS, DEFAULT_TIMEOUT, BookingWebhookSender


class TimumSandbox:
    """timum as the service sees it: API (``/timum/v1/…``), pages (``/timum/…``), control
    (``/_sandbox/timum/…``), and booking webhooks to ``config.service_base_url + /api/timum/bookings``.

    The server mounts ``http_routes``, calls ``startup()`` on its event loop (the webhook sender runs
    there) and ``shutdown()`` at the end. ``state`` is the thread-safe Python API.
    """

    def __init__(self, config: SandboxConfig, *, webhook_retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
                 webhook_timeout: float = DEFAULT_TIMEOUT,
                 webhook_transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.state = TimumState(config)
        self.sender = BookingWebhookSender(self.state, config.timum_webhook_secrets,
                                           retry_delays=webhook_retry_delays, timeout=webhook_timeout,
                                           transport=webhook_transport)
        self.api = TimumApi(self.state)
        self.ui = TimumUi(self.state)
        self.control = TimumControl(self.state, self.seed_demo)
        self.http_routes: list[BaseRoute] = [*self.api.routes(), *self.ui.routes(), *self.control.routes()]

    async def startup(self) -> None:
        await self.sender.start()

    async def shutdown(self) -> None:
        await self.sender.stop()

    def seed_demo(self) -> None:
        seed_demo(self.state)
