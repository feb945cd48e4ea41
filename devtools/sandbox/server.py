"""Composition of the sandbox: one directory, the three stand-ins, two listeners, one event loop.

* HTTPS listener (``config.https_port``, certificate from :mod:`devtools.sandbox.ca`): the
  identity platform (``/{tenant}/oauth2/v2.0/…``) and Microsoft Graph (``/v1.0/…``) — the two
  hosts the real MSAL, azure-identity and msgraph-sdk insist on reaching over HTTPS.
* HTTP listener (``config.http_port``): the landing page ``/``, sandbox Outlook
  (``/outlook/``), timum (API ``/timum/v1/``, pages ``/timum/``), the control APIs
  (``/_sandbox/…``), the request log and the shared stylesheet.

Both run as uvicorn servers in one asyncio loop. :func:`start_in_thread` runs that loop in a
background thread (tests, benchmarks, ``make run``); ``python -m devtools.sandbox`` runs it in
the foreground. Listening sockets are bound before anything is built, so with port 0 the
stand-ins already know the real ports when they compute URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib
import socket
import threading
from collections.abc import Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from devtools.sandbox import ui
from devtools.sandbox.ca import CertificatePaths, ensure_certificates
from devtools.sandbox.config import SandboxConfig
from devtools.sandbox.directory import Directory, TokenError
from devtools.sandbox.identity import IdentityPlatform, identity_routes
from devtools.sandbox.identity_control import control_routes
from devtools.sandbox.requestlog import RequestLog, RequestLogMiddleware, graph_mailbox, is_me_path
from devtools.sandbox.seed import register_app, seed_directory

if TYPE_CHECKING:
    from devtools.sandbox.graph import GraphSandbox
    from devtools.sandbox.timum import TimumSandbox


class CompositionError(RuntimeError):
    """A stand-in package the sandbox is composed of is missing or failed to build."""


def _load_component(module: str, attribute: str) -> Any:
    try:
        return getattr(importlib.import_module(module), attribute)
    except ImportError as exc:
        raise CompositionError(
            f"The sandbox needs {module}.{attribute}, which could not be imported ({exc}). "
            f"Start with with_{module.rsplit('.', 1)[1]}=False to run without it.") from exc
    except AttributeError as exc:
        raise CompositionError(f"{module} does not define {attribute}.") from exc


class Sandbox:
    """The composed sandbox, built but not yet serving."""

    def __init__(self, config: SandboxConfig, *, with_graph: bool = True, with_timum: bool = True) -> None:
        self.config = config
        self.directory = Directory()
        self.requests = RequestLog()
        self.certificates: CertificatePaths = ensure_certificates(config.state_dir, extra_hosts=(config.host,))
        self.identity = IdentityPlatform(self.directory, config)
        register_app(self.directory, config)
        self.graph: GraphSandbox | None = None
        self.timum: TimumSandbox | None = None
        if with_graph:
            self.graph = _load_component("devtools.sandbox.graph", "GraphSandbox")(self.directory, config)
        if with_timum:
            self.timum = _load_component("devtools.sandbox.timum", "TimumSandbox")(config)
        if config.seed_demo:
            users = seed_directory(self.directory)
            if self.graph is not None:
                self.graph.seed_demo(users)
            if self.timum is not None:
                self.timum.seed_demo()
        self.https_app = self._https_app()
        self.http_app = self._http_app()

    async def startup(self) -> None:
        if self.graph is not None:
            await self.graph.startup()
        if self.timum is not None:
            await self.timum.startup()

    async def shutdown(self) -> None:
        if self.timum is not None:
            await self.timum.shutdown()
        if self.graph is not None:
            await self.graph.shutdown()

    # --- apps ------------------------------------------------------------------------------
    def _https_app(self) -> Starlette:
        routes: list[BaseRoute] = [*identity_routes(self.identity)]
        if self.graph is not None:
            routes += self.graph.https_routes
        routes.append(Mount(ui.STATIC_PATH, StaticFiles(directory=ui.STATIC_DIR), name="static"))
        return Starlette(routes=routes, middleware=[
            Middleware(RequestLogMiddleware, log=self.requests, listener="https", mailbox_resolver=self._mailbox),
        ])

    def _http_app(self) -> Starlette:
        routes: list[BaseRoute] = [
            Route("/", self._landing, methods=["GET"]),
            Route("/_sandbox/requests", self._requests_json, methods=["GET", "DELETE"]),
            Route("/_sandbox/requests/page", self._requests_page, methods=["GET"]),
            Route("/_sandbox/health", self._health, methods=["GET"]),
            Route("/_sandbox/reset-demo", self._reset_demo, methods=["POST"]),
            *control_routes(self.identity),
        ]
        if self.graph is not None:
            routes += self.graph.http_routes
        if self.timum is not None:
            routes += self.timum.http_routes
        routes.append(Mount(ui.STATIC_PATH, StaticFiles(directory=ui.STATIC_DIR), name="static"))
        return Starlette(routes=routes, middleware=[
            Middleware(RequestLogMiddleware, log=self.requests, listener="http"),
        ])

    def _mailbox(self, path: str, headers: dict[str, str]) -> str | None:
        segment = graph_mailbox(path)
        if segment is not None:
            user = self.directory.user(segment)
            return user.mail if user else segment
        if is_me_path(path):
            auth = headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                try:
                    claims = self.directory.verify_access_token(auth[7:].strip())
                except TokenError:
                    return None
                user = self.directory.users.get(claims.user_id or "")
                return user.mail if user else None
        return None

    # --- pages and small endpoints ---------------------------------------------------------
    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "graph": self.graph is not None, "timum": self.timum is not None})

    async def _landing(self, request: Request) -> Response:
        lang = ui.pick_language(request)
        tenants = []
        for tenant in list(self.directory.tenants.values()):
            tenants.append({
                "name": tenant.name, "domain": tenant.domain, "id": tenant.id,
                "user_consent_allowed": tenant.user_consent_allowed,
                "admin_consented": self.config.client_id in tenant.admin_consented_apps,
                "users": sorted(self.directory.tenant_users(tenant.id), key=lambda u: (not u.is_admin, u.mail)),
            })
        return ui.render(
            request, "landing.html", lang=lang, title="Sandbox", nav="home", config=self.config,
            tenants=tenants, with_graph=self.graph is not None, with_timum=self.timum is not None,
            ca_path=str(self.certificates.ca.resolve()), reset_done=request.query_params.get("done") == "reset",
        )

    async def _reset_demo(self, request: Request) -> Response:
        """The home page's "reset" button: timum and Outlook back to the demo data, faults off, the
        request log emptied — what tests and trials left behind goes. The service's own links stay
        (they live in its storage); the sandbox timum still shows and can unlink them."""
        lang = ui.pick_language(request)
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.url.netloc:
            return Response("Forbidden", status_code=403)
        if self.timum is not None:
            self.timum.state.reset()
            self.timum.seed_demo()
        if self.graph is not None:
            state = self.graph.state
            state.clear_faults()
            for user in list(self.directory.users.values()):
                for calendar in state.own_calendars(user.id):
                    for event in state.calendar_events(calendar.id):
                        state.delete_event(state.ids(event).immutable_id)
            if self.config.seed_demo:
                self.graph.seed_demo(list(self.directory.users.values()))
        self.requests.clear()
        return RedirectResponse("/?done=reset" + ("&lang=en" if lang == "en" else ""), status_code=303)

    async def _requests_json(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.requests.clear()
            return JSONResponse({"cleared": True, "last_seq": self.requests.last_seq})
        q = request.query_params
        try:
            since_seq, since_epoch = _parse_since(q.get("since"))
            limit = int(q["limit"]) if q.get("limit") else None
        except ValueError as exc:
            return JSONResponse({"error": "bad_request", "message": str(exc)}, status_code=400)
        entries = self.requests.entries(service=q.get("service"), since_seq=since_seq, since_epoch=since_epoch,
                                        mailbox=q.get("mailbox"), limit=limit)
        return JSONResponse({"last_seq": self.requests.last_seq, "count": len(entries),
                             "entries": [e.to_json() for e in entries]})

    async def _requests_page(self, request: Request) -> Response:
        lang = ui.pick_language(request)
        service = request.query_params.get("service") or None
        entries = list(reversed(self.requests.entries(service=service, limit=500)))
        counts: dict[str, int] = {}
        for entry in self.requests.entries():
            counts[entry.service] = counts.get(entry.service, 0) + 1
        return ui.render(request, "requests.html", lang=lang, title="Anfragen" if lang == "de" else "Requests",
                         nav="requests", entries=entries, service=service, counts=counts,
                         refresh=request.query_params.get("refresh") == "1")


def _parse_since(raw: str | None) -> tuple[int | None, float | None]:
    """``since`` is a sequence number (exclusive; ``last_seq`` of an earlier answer), a Unix
    time in seconds, or an ISO 8601 timestamp (both inclusive)."""
    if not raw:
        return None, None
    if raw.isdigit():
        return int(raw), None
    try:
        return None, float(raw)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError("since must be a sequence number, a Unix time or an ISO 8601 timestamp") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return None, moment.timestamp()


# =============================================================================================
# Serving
# =============================================================================================

class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to its owner (two servers share one loop) and
    says when it is listening."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Idle keep-alive connections would get a graceful TLS close, which waits for a
        # close_notify from clients that are not reading (pooled connections of MSAL or
        # httpx) until the graceful-shutdown timeout. Dropping idle ones makes stop() quick;
        # connections with a request in flight still finish.
        for connection in list(self.server_state.connections):
            cycle = getattr(connection, "cycle", None)
            transport = getattr(connection, "transport", None)
            if transport is not None and (cycle is None or getattr(cycle, "response_complete", False)):
                transport.abort()
        await super().shutdown(sockets=sockets)


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


class RunningSandbox:
    """A sandbox serving in a background thread. Use as a context manager or call :meth:`stop`."""

    def __init__(self, sandbox: Sandbox, https_socket: socket.socket, http_socket: socket.socket, *,
                 log_level: str) -> None:
        self.sandbox = sandbox
        self.config = sandbox.config
        self.directory = sandbox.directory
        self.identity = sandbox.identity
        self.graph = sandbox.graph
        self.timum = sandbox.timum
        self.requests = sandbox.requests
        self._sockets = (https_socket, http_socket)
        self._log_level = log_level
        self._ready = threading.Event()
        #: set when the serving thread has finished (stopped or crashed)
        self.stopped = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._thread_main, name="sandbox", daemon=True)

    @property
    def https_base(self) -> str:
        return self.config.https_base

    @property
    def http_base(self) -> str:
        return self.config.http_base

    @property
    def ca_path(self) -> str:
        return str(self.sandbox.certificates.ca)

    def set_service_base_url(self, url: str) -> None:
        """Point the sandbox at a service listening elsewhere (e.g. a test server on a free
        port): webhook targets follow the config, and the new redirect URIs are registered
        for the app (the old ones stay valid)."""
        self.config.service_base_url = url
        register_app(self.directory, self.config)

    def _start(self, timeout: float) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise TimeoutError(f"the sandbox did not start within {timeout} s")
        if self._error is not None:
            self._thread.join(timeout)
            raise RuntimeError("the sandbox failed to start") from self._error

    def stop(self, timeout: float = 15.0) -> None:
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
                loop.call_soon_threadsafe(event.set)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> RunningSandbox:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- the serving thread ----------------------------------------------------------------
    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to the starting thread
            self._error = self._error or exc
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._ready.set()
            self.stopped.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        certs = self.sandbox.certificates
        common: dict[str, Any] = {"lifespan": "off", "log_config": None, "access_log": False,
                                  "log_level": self._log_level, "timeout_graceful_shutdown": 3,
                                  "server_header": False}
        servers = [
            _Server(uvicorn.Config(self.sandbox.https_app, ssl_certfile=str(certs.cert),
                                   ssl_keyfile=str(certs.key), **common)),
            _Server(uvicorn.Config(self.sandbox.http_app, **common)),
        ]
        started_components = False
        tasks: list[asyncio.Task[None]] = []
        try:
            await self.sandbox.startup()
            started_components = True
            tasks = [asyncio.create_task(server.serve(sockets=[sock]))
                     for server, sock in zip(servers, self._sockets, strict=True)]
            listening: asyncio.Future[Any] = asyncio.ensure_future(
                asyncio.gather(*(s.listening.wait() for s in servers)))
            waiting: list[asyncio.Future[Any]] = [listening, *tasks]
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if listening not in done:
                listening.cancel()
                failed = next(t for t in tasks if t.done())
                raise RuntimeError("a sandbox listener stopped while starting") from failed.exception()
            self._ready.set()
            stop_wait: asyncio.Future[Any] = asyncio.ensure_future(self._stop_event.wait())
            await asyncio.wait([stop_wait, *tasks], return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            for server in servers:
                server.should_exit = True
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            else:
                for sock in self._sockets:
                    sock.close()
            if started_components:
                await self.sandbox.shutdown()


def start_in_thread(config: SandboxConfig, *, with_graph: bool = True, with_timum: bool = True,
                    log_level: str = "warning", startup_timeout: float = 60.0) -> RunningSandbox:
    """Build the sandbox and serve it from a background thread; returns once both listeners accept.

    Port 0 in ``config`` picks a free port; ``config`` is updated with the real one.
    """
    https_socket = _bind(config.host, config.https_port)
    try:
        http_socket = _bind(config.host, config.http_port)
    except OSError:
        https_socket.close()
        raise
    config.https_port = https_socket.getsockname()[1]
    config.http_port = http_socket.getsockname()[1]
    try:
        sandbox = Sandbox(config, with_graph=with_graph, with_timum=with_timum)
    except BaseException:
        https_socket.close()
        http_socket.close()
        raise
    running = RunningSandbox(sandbox, https_socket, http_socket, log_level=log_level)
    running._start(startup_timeout)
    return running
