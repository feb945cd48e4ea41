"""``DevHost``: serves one ``func.FunctionApp`` locally — HTTP, queue and timer triggers — plus
``run_in_thread`` for tests and tools that want the host on a background event loop.

Everything served comes from the app's own metadata, read once. Everything that depends on app
settings (keys, connections, ``%Setting%`` queue names and schedules) is resolved in the
constructor, so a misconfiguration fails before any socket or queue is touched.

Shutdown: stop accepting (HTTP listener closed, pollers and timers stop scheduling), let running
invocations finish within ``shutdown_timeout``, cancel what is left, then close the storage clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import azure.functions as func
import uvicorn

from devtools.devhost.config import ConfigError, DevHostError, HostOptions, load_host_json, resolve_setting_refs
from devtools.devhost.httpserver import DEFAULT_MAX_BODY_BYTES, HttpFrontend, Keys
from devtools.devhost.invoke import FunctionRunner, Invocation, InvocationLog
from devtools.devhost.metadata import (
    FunctionSpec,
    HttpTriggerSpec,
    QueueTriggerSpec,
    TimerTriggerSpec,
    describe_app,
    load_app,
)
from devtools.devhost.queues import (
    OutputDelivery,
    QueueClients,
    QueueConnection,
    QueueListener,
    ResolvedOutput,
    resolve_connection,
    validate_queue_name,
)
from devtools.devhost.routing import Router
from devtools.devhost.timers import Schedule, TimerLoop, parse_schedule, time_zone

log = logging.getLogger("devtools.devhost")
_T = TypeVar("_T")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the host decides when to stop, and must first
    drain queue and timer work that uvicorn knows nothing about."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _max_body(explicit: int | None, env: Mapping[str, str]) -> int:
    if explicit is not None:
        if explicit <= 0:
            raise ConfigError("max_body_bytes must be positive")
        return explicit
    # The real host's app setting for the same limit.
    raw = env.get("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT")
    if raw:
        if not raw.isdigit() or int(raw) <= 0:
            raise ConfigError("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT must be a positive number of bytes")
        return int(raw)
    return DEFAULT_MAX_BODY_BYTES


def _disabled(name: str, env: Mapping[str, str]) -> bool:
    return env.get(f"AzureWebJobs.{name}.Disabled", "").strip().lower() in ("1", "true")


class DevHost:
    """Serves one function app. ``start()``/``stop()`` run on the caller's event loop."""

    def __init__(self, app: func.FunctionApp | str, *, host: str = "127.0.0.1", port: int = 7071,
                 host_json: Mapping[str, Any] | str | os.PathLike[str] | None = None,
                 env: Mapping[str, str] | None = None, max_body_bytes: int | None = None,
                 shutdown_timeout: float = 10.0, thread_count: int | None = None,
                 function_directory: str | os.PathLike[str] | None = None) -> None:
        """``env`` holds the app settings the host resolves (keys, connections, ``%Setting%``);
        it defaults to ``os.environ``. The functions themselves always see the process environment."""
        self.app = load_app(app)
        self._bind_host = host
        self._port = port
        self.options: HostOptions = load_host_json(host_json)
        self._env: Mapping[str, str] = env if env is not None else os.environ
        self._max_body = _max_body(max_body_bytes, self._env)
        self._shutdown_timeout = shutdown_timeout
        self._thread_count = thread_count or int(self._env.get("PYTHON_THREADPOOL_THREAD_COUNT") or 0) or None
        self._directory = str(function_directory or Path.cwd())
        self.invocations = InvocationLog()
        self.functions: list[FunctionSpec] = describe_app(self.app)
        self._keys = Keys(function_key=self._env.get("FUNCTION_KEY") or None,
                          master_key=self._env.get("MASTER_KEY") or None)

        # Everything settings-dependent is resolved now, so a bad setting changes nothing.
        self._router: Router[FunctionSpec] = Router(prefix=self.options.http.route_prefix)
        self._queue_triggers: list[tuple[FunctionSpec, QueueConnection, str]] = []
        self._timers: list[tuple[FunctionSpec, Schedule]] = []
        self._outputs: dict[tuple[str, str], ResolvedOutput] = {}
        zone = time_zone(self._env.get("WEBSITE_TIME_ZONE"))
        for spec in self.functions:
            trigger = spec.trigger
            if _disabled(spec.name, self._env):
                # As in Azure: ``AzureWebJobs.<name>.Disabled`` stops the trigger (an HTTP route
                # answers 404, a queue is not read, a timer not scheduled); the admin API can
                # still run the function with the master key.
                continue
            if isinstance(trigger, HttpTriggerSpec):
                try:
                    self._router.add(trigger.route, trigger.methods, spec)
                except ConfigError as exc:
                    raise ConfigError(f"function {spec.name}: {exc}") from None
            elif isinstance(trigger, QueueTriggerSpec):
                what = f"function {spec.name} queue trigger"
                name = validate_queue_name(resolve_setting_refs(trigger.queue_name, self._env, what=what),
                                           what=what, trigger=True)
                self._queue_triggers.append((spec, resolve_connection(trigger.connection, self._env), name))
            elif isinstance(trigger, TimerTriggerSpec):
                schedule_text = resolve_setting_refs(trigger.schedule, self._env, what=f"function {spec.name}")
                try:
                    self._timers.append((spec, parse_schedule(schedule_text, zone)))
                except ConfigError as exc:
                    raise ConfigError(f"function {spec.name}: {exc}") from None
            else:  # pragma: no cover - describe() admits no other trigger
                raise ConfigError(f"function {spec.name}: unsupported trigger")
            for output in spec.queue_outputs:
                what = f"function {spec.name} queue output {output.arg_name}"
                name = validate_queue_name(resolve_setting_refs(output.queue_name, self._env, what=what),
                                           what=what, trigger=False)
                self._outputs[(spec.name, output.arg_name)] = ResolvedOutput(
                    resolve_connection(output.connection, self._env), name)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._listeners: list[QueueListener] = []
        self._timer_loops: list[TimerLoop] = []
        self._server: _Server | None = None
        self._server_task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self._bound_port: int | None = None
        self._clients: QueueClients | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stopping = False
        self._started = False

    @property
    def base_url(self) -> str:
        """``http://host:port`` (the port actually bound when 0 was asked for)."""
        port = self._bound_port or self._port
        host = f"[{self._bind_host}]" if ":" in self._bind_host else self._bind_host
        return f"http://{host}:{port}"

    def spawn(self, coro: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        """Run ``coro`` as an invocation task that shutdown waits for."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def start(self) -> None:
        if self._started:
            raise DevHostError("this host was already started")
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=self._thread_count, thread_name_prefix="devhost-fn")
        self._clients = QueueClients()
        delivery = OutputDelivery(clients=self._clients, encoding=self.options.queues.message_encoding,
                                  resolved=self._outputs, listeners=lambda: self._listeners)
        runner = FunctionRunner(executor=self._executor, function_timeout=self.options.function_timeout,
                                log_=self.invocations, deliver=delivery.deliver, function_directory=self._directory)
        try:
            await self._start_http(runner)
            for spec, connection, queue_name in self._queue_triggers:
                self._listeners.append(QueueListener(spec=spec, queue_name=queue_name, connection=connection,
                                                     clients=self._clients, options=self.options.queues,
                                                     runner=runner, spawn=self.spawn))
            # Queues exist before start() returns, so callers can enqueue at once; an unreachable
            # account is logged and retried by the listener instead of failing the whole host.
            await asyncio.gather(*(listener.prepare() for listener in self._listeners))
            for listener in self._listeners:
                self._loops.append(self._supervise(f"queue listener of {listener.spec.name}", listener.run()))
            for spec, schedule in self._timers:
                timer = TimerLoop(spec=spec, schedule=schedule, runner=runner, spawn=self.spawn)
                self._timer_loops.append(timer)
                self._loops.append(self._supervise(f"timer of {spec.name}", timer.run()))
        except BaseException:
            await self.stop()
            raise
        self._log_functions()
        if not self._keys.function_key and not self._keys.master_key and any(
                isinstance(s.trigger, HttpTriggerSpec) and s.trigger.auth_level != "anonymous"
                for s in self.functions):
            log.warning("Neither FUNCTION_KEY nor MASTER_KEY is set: function- and admin-level routes answer 401")

    def _supervise(self, what: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A trigger loop that dies must say so loudly instead of going quiet."""

        def done(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.error("The %s stopped unexpectedly", what, exc_info=task.exception())

        task = asyncio.ensure_future(coro)
        task.add_done_callback(done)
        return task

    async def _start_http(self, runner: FunctionRunner) -> None:
        frontend = HttpFrontend(router=self._router, runner=runner, keys=self._keys, options=self.options.http,
                                max_body_bytes=self._max_body, functions={s.name: s for s in self.functions},
                                is_stopping=lambda: self._stopping, spawn=self.spawn)
        infos = socket.getaddrinfo(self._bind_host, self._port, type=socket.SOCK_STREAM)
        if not infos:
            raise DevHostError(f"cannot resolve {self._bind_host!r}")
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise DevHostError(f"cannot listen on {self._bind_host}:{self._port}: {exc}") from exc
        self._socket = sock
        self._bound_port = int(sock.getsockname()[1])
        config = uvicorn.Config(frontend, lifespan="off", access_log=False, log_config=None, ws="none",
                                http="h11", interface="asgi3", server_header=False,
                                timeout_graceful_shutdown=max(1, int(self._shutdown_timeout)))
        self._server = _Server(config)
        self._server_task = asyncio.ensure_future(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._server_task.done():
                self._server_task.result()
                raise DevHostError("the HTTP server stopped during start-up")
            await asyncio.sleep(0.01)

    def _log_functions(self) -> None:
        lines = []
        for spec in self.functions:
            trigger = spec.trigger
            if _disabled(spec.name, self._env):
                # As in Azure: ``AzureWebJobs.<name>.Disabled`` stops the trigger (an HTTP route
                # answers 404, a queue is not read, a timer not scheduled); the admin API can
                # still run the function with the master key.
                continue
            if isinstance(trigger, HttpTriggerSpec):
                methods = ",".join(sorted(trigger.methods)) if trigger.methods else "ANY"
                prefix = self.options.http.route_prefix
                route = "/".join(p for p in (prefix, trigger.route.strip("/")) if p)
                lines.append(f"  {spec.name}: [{methods}] {self.base_url}/{route} ({trigger.auth_level})")
            else:
                lines.append(f"  {spec.name}: {spec.kind}Trigger")
        log.info("Serving %d functions at %s:\n%s", len(self.functions), self.base_url, "\n".join(lines))

    async def stop(self) -> None:
        """Stop accepting work, let running invocations finish (bounded), then release everything."""
        if self._stopping or not self._started:
            return
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._shutdown_timeout
        for listener in self._listeners:
            listener.stop()
        for timer in self._timer_loops:
            timer.stop()
        if self._server is not None:
            self._server.should_exit = True
        # Pollers finish their current receive and exit; cancelling mid-receive would strand messages.
        background = [t for t in [*self._loops, self._server_task] if t is not None]
        if background:
            _, pending = await asyncio.wait(background, timeout=max(0.0, deadline - loop.time()))
            if self._server is not None and self._server_task in pending:
                self._server.force_exit = True
            for task in pending:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
        running = set(self._tasks)
        if running:
            _, pending = await asyncio.wait(running, timeout=max(0.0, deadline - loop.time()))
            if pending:
                log.warning("Shutdown: cancelling %d invocation(s) still running", len(pending))
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        if self._clients is not None:
            await self._clients.close()
        if self._socket is not None:
            self._socket.close()
        if self._executor is not None:
            # Threads of sync functions cannot be interrupted; they are left to finish on their own.
            self._executor.shutdown(wait=False, cancel_futures=True)
        log.info("Host stopped")

    async def __aenter__(self) -> DevHost:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()


class HostHandle:
    """A DevHost running on its own event loop in a background thread."""

    def __init__(self, host: DevHost, thread: threading.Thread, loop: asyncio.AbstractEventLoop,
                 stop_event: asyncio.Event, errors: list[BaseException]) -> None:
        self.host = host
        self._thread = thread
        self.loop = loop
        self._stop_event = stop_event
        self._errors = errors

    @property
    def base_url(self) -> str:
        return self.host.base_url

    @property
    def invocations(self) -> InvocationLog:
        return self.host.invocations

    def records(self, function: str | None = None) -> list[Invocation]:
        return self.invocations.snapshot(function)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the host gracefully and wait for its thread; re-raises a shutdown error."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop_event.set)
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise DevHostError("the host did not stop in time")
        if self._errors:
            raise self._errors[0]

    def __enter__(self) -> HostHandle:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def run_in_thread(app: func.FunctionApp | str, *, start_timeout: float = 30.0,
                  after_stop: Callable[[], Awaitable[None]] | None = None, **kwargs: Any) -> HostHandle:
    """Start a DevHost in a new thread with its own event loop; returns once it serves.

    Configuration errors are raised here, in the caller's thread. ``after_stop`` runs on the host's
    loop once the host has stopped and drained its invocations, before the loop ends — the place
    to close clients the functions cached on that loop.
    """
    host = DevHost(app, **kwargs)
    ready = threading.Event()
    errors: list[BaseException] = []
    slots: dict[str, Any] = {}

    async def main() -> None:
        stop_event = asyncio.Event()
        slots["loop"], slots["stop"] = asyncio.get_running_loop(), stop_event
        try:
            await host.start()
        except BaseException as exc:
            errors.append(exc)
            ready.set()
            return
        ready.set()
        await stop_event.wait()
        try:
            await host.stop()
        finally:
            if after_stop is not None:
                await after_stop()

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=target, name="devhost", daemon=True)
    thread.start()
    if not ready.wait(start_timeout):
        raise DevHostError("the host did not start in time")
    if errors:
        thread.join()
        raise errors[0]
    return HostHandle(host, thread, slots["loop"], slots["stop"], errors)


@contextlib.contextmanager
def serving(app: func.FunctionApp | str, **kwargs: Any) -> Iterator[HostHandle]:
    """``with serving(app, port=0) as handle:`` — run_in_thread that always stops."""
    handle = run_in_thread(app, **kwargs)
    try:
        yield handle
    finally:
        handle.stop()
