"""Microsoft Graph stand-in (calendars, events, delta, subscriptions, limits) and the sandbox
Outlook: a server-rendered UI to act as a mailbox user, a JSON control API for scripts, and
published ICS calendars.

``GraphSandbox`` is what the sandbox server composes:

* ``https_routes`` — Graph REST under ``/v1.0`` (the real msgraph-sdk talks to it unchanged);
* ``http_routes`` — ``/outlook/…`` (UI), ``/outlook/published/{token}/calendar.ics`` and the
  control API under ``/_sandbox/graph/…``;
* ``startup()`` / ``shutdown()`` — notification delivery and housekeeping tasks;
* ``state`` — the thread-safe world (``GraphState``), also the Python API for tests.

Documented Graph behaviours that a well-behaved tenant rarely shows are produced on request,
through ``PATCH /_sandbox/graph/behaviour`` or the faults page: ``@removed`` with reason
``changed``, partial delta items, custom zone labels on events, a custom mailbox zone,
per-calendar subscriptions refused (only ``/users/{id}/events``), https-only notification URLs;
and through fault rules (``POST /_sandbox/graph/faults``): 429/503 with ``Retry-After`` as
seconds or as an HTTP date (``retryAfterAsDate``), and the sync-state codes as a 400 with the
code only in ``innerError`` (kinds ``syncStateNotFound-400``, ``resyncRequired-400``).
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from devtools.sandbox.config import SandboxConfig
from devtools.sandbox.directory import Directory, SandboxUser
from devtools.sandbox.graph.delivery import Dispatcher
from devtools.sandbox.graph.model import Behaviour, GraphError
from devtools.sandbox.graph.rest import GraphApi
from devtools.sandbox.graph.state import EventIds, GraphState

__all__ = ["Behaviour", "EventIds", "GraphError", "GraphSandbox", "GraphState"]


class GraphSandbox:
    def __init__(self, directory: Directory, config: SandboxConfig, *, behaviour: Behaviour | None = None,
                 seed: int | None = None) -> None:
        self.directory = directory
        self.config = config
        self.state = GraphState(directory, behaviour, seed=seed)
        self.dispatcher = Dispatcher(self.state, config)
        self.api = GraphApi(self.state, directory, self.dispatcher)
        self.https_routes: list[BaseRoute] = self.api.routes()
        self.http_routes: list[BaseRoute] = self._http_routes()

    def _http_routes(self) -> list[BaseRoute]:
        from devtools.sandbox.graph.control import control_routes
        from devtools.sandbox.graph.ics import ics_routes
        from devtools.sandbox.graph.ui import ui_routes

        return [*ics_routes(self.state), *ui_routes(self.state, self.config), *control_routes(self.state)]

    async def startup(self) -> None:
        await self.dispatcher.startup()

    async def shutdown(self) -> None:
        await self.dispatcher.shutdown()

    def seed_demo(self, users: list[SandboxUser]) -> None:
        from devtools.sandbox.graph.seed import seed_demo

        seed_demo(self.state, users)
