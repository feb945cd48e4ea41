"""The whole local stack in one process, for end-to-end tests and benchmarks.

``start_stack()`` is the programmatic twin of ``make run`` (``devtools/run.py``): Azurite on free
ports, the sandbox (identity platform, Graph, timum) in a thread, and the local Functions host
serving the real ``function_app`` in another thread — with the process environment set the way
``local.settings.json.example`` describes sandbox mode, but pointing at those ports, with a freshly
generated token-encryption key.

The functions read ``os.environ`` and cache settings and clients per process
(``shared.config.get_settings``, ``shared.wiring``), so only one stack can run at a time: the
environment is set before anything loads settings, ``shared.wiring.reset()`` runs on start and
on stop, and ``stop()`` puts the environment back as it was.

The harness has its own event loop (a background thread) and its own storage client, so
synchronous callers — pytest tests, benchmark scripts — can read and write state through the
app's own repositories with ``stack.run(coro)``. Helpers link resources the way the connect flow
does (``link_app_only``) or by walking the connect flow itself (``link_delegated``), and wait for
conditions with a deadline (``wait_for``), re-checking whenever a function invocation finished.

    with running_stack(seed_demo=False) as stack:
        linked = stack.link_app_only(user_mail, "Raum 1", "prov-1", "res-1")
        stack.graph.create_event(linked.user.id, "Termin", start, end, calendar_id=linked.calendar_id)
        stack.wait_timum(lambda s: len(s.list_slots("prov-1", "res-1")) == 1)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import os
import secrets
import shutil
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import httpx

from devtools import azurite
from devtools.connect_walker import ConnectFlowError, ConnectWalker
from devtools.run import load_values

if TYPE_CHECKING:
    from devtools.devhost import HostHandle
    from devtools.sandbox.directory import Directory, SandboxUser
    from devtools.sandbox.graph.model import Calendar
    from devtools.sandbox.graph.state import GraphState
    from devtools.sandbox.requestlog import RequestEntry
    from devtools.sandbox.server import RunningSandbox
    from devtools.sandbox.timum.state import TimumState
    from shared.config import Settings
    from shared.context import Services
    from shared.domain import Link
    from shared.storage.azure import AzureStorage

log = logging.getLogger("devtools.stack")
T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_SETTINGS = ROOT / "local.settings.json.example"

#: held while a stack runs: settings, wiring caches and the environment are per process
_one_stack = threading.Lock()


class StackError(RuntimeError):
    """The stack could not start, or a helper could not reach the state it waited for."""


def _fresh_key() -> str:
    return f"stack1:{base64.b64encode(secrets.token_bytes(32)).decode()}"


def stack_environment(*, service_base_url: str, storage_connection_string: str, https_base: str, http_base: str,
                      ca_path: str, polling_interval_minutes: int = 1, sync_window_past_days: int = 1,
                      sync_window_future_days: int = 365, extra_env: Mapping[str, str] | None = None
                      ) -> dict[str, str]:
    """The app settings of ``local.settings.json.example`` (sandbox mode), pointed at these ports."""
    values = load_values(EXAMPLE_SETTINGS)
    values.update({
        "AzureWebJobsStorage": storage_connection_string,
        "SERVICE_BASE_URL": service_base_url,
        "ENTRA_AUTHORITY_HOST": https_base,
        "GRAPH_BASE_URL": f"{https_base}/v1.0",
        "CA_BUNDLE": ca_path,
        "TOKEN_ENCRYPTION_KEYS": _fresh_key(),
        "TIMUM_API_BASE_URL": f"{http_base}/timum",
        "TIMUM_RETURN_URL_ALLOWLIST": f"{http_base}/timum/",
        "TIMUM_STATUS_WEBHOOK_URL": f"{http_base}/timum/v1/webhooks/link-status",
        "ICS_IMPORT_ALLOW_LOOPBACK": "true",
        "POLLING_INTERVAL_MINUTES": str(polling_interval_minutes),
        "SYNC_WINDOW_PAST_DAYS": str(sync_window_past_days),
        "SYNC_WINDOW_FUTURE_DAYS": str(sync_window_future_days),
    })
    values.update(extra_env or {})
    return values


class _Loop:
    """An event loop in a daemon thread; synchronous callers submit coroutines to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="stack-harness", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        if not self.loop.is_running():
            self.loop.close()


@dataclass(frozen=True)
class LinkedCalendar:
    """What a link helper set up: the link as stored after its first sync, and the sandbox side."""

    link: Link
    user: SandboxUser
    calendar_id: str


class Stack:
    """A running stack. Build it with :func:`start_stack`; ``stop()`` (or ``with``) ends it."""

    def __init__(self, *, azurite_server: azurite.Azurite, sandbox: RunningSandbox, host: HostHandle,
                 env: dict[str, str], saved_env: dict[str, str | None], workdir: Path, loop: _Loop,
                 storage: AzureStorage, settings: Settings, persistent_storage: bool) -> None:
        self.azurite = azurite_server
        self.sandbox = sandbox
        self.host = host
        self.env = env
        self.settings = settings
        self.storage = storage
        self._saved_env = saved_env
        self._workdir = workdir
        self._loop = loop
        self._persistent = persistent_storage
        self._services: Services | None = None
        self._stopped = False
        self.tls = ssl.create_default_context(cafile=sandbox.ca_path)

    # --- where things are ---------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """The function app, e.g. ``http://127.0.0.1:53211`` (routes under ``/api``)."""
        return self.host.base_url

    def api_url(self, path: str) -> str:
        return f"{self.base_url}/api/{path.lstrip('/')}"

    @property
    def graph(self) -> GraphState:
        """The sandbox Outlook/Graph world (thread-safe Python API)."""
        assert self.sandbox.graph is not None
        return self.sandbox.graph.state

    @property
    def timum(self) -> TimumState:
        """The sandbox timum (thread-safe Python API)."""
        assert self.sandbox.timum is not None
        return self.sandbox.timum.state

    @property
    def directory(self) -> Directory:
        return self.sandbox.directory

    @property
    def client_id(self) -> str:
        return self.sandbox.config.client_id

    def http(self, **kwargs: Any) -> httpx.Client:
        """An HTTP client that trusts the sandbox CA and, like a browser, keeps Secure cookies on
        loopback http (the service's sign-in binding cookie) (the caller closes it)."""
        kwargs.setdefault("timeout", 15.0)
        client = httpx.Client(verify=self.tls, **kwargs)
        client.event_hooks["request"].append(_send_secure_cookies_on_loopback(client))
        return client

    # --- the harness loop and the app's state -----------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60.0) -> T:
        """Run ``coro`` on the harness loop (its own storage client) and return its result."""
        return self._loop.run(coro, timeout)

    def services(self) -> Services:
        """``Services`` as the functions build them, but on the harness loop and storage client."""
        if self._services is None:
            from shared.adapters.timum_http import TimumHttpAdapter
            from shared.connect.credentials import RealGraphProvider
            from shared.context import Services

            s = self.settings
            timum = TimumHttpAdapter(s.timum_api_base_url, s.timum_api_key, s.timum_webhook_secrets,
                                     s.timum_status_webhook_url)
            self._services = Services(settings=s, storage=self.storage, timum=timum,
                                      graph=RealGraphProvider(s, self.storage))
        return self._services

    def link(self, provider: str, resource: str) -> Link | None:
        """The link row as stored now."""
        from shared.domain import LinkKey
        from shared.repos.links import LinkRepository

        return self.run(LinkRepository(self.storage).get(LinkKey(provider, resource)))

    def queue_depth(self, queue: str) -> int:
        """Approximate number of messages waiting (visible or not) in ``queue``."""
        return self.run(self.storage.queue(queue).peek_count())

    def fire(self, function: str, payload: str = "") -> httpx.Response:
        """Run a timer or queue function now through the host's admin API (master key)."""
        with httpx.Client(timeout=30.0) as client:
            return client.post(f"{self.base_url}/admin/functions/{function}", json={"input": payload},
                               headers={"x-functions-key": self.env["MASTER_KEY"]})

    def graph_requests(self, *, since_seq: int = 0, mailbox: str | None = None) -> list[RequestEntry]:
        """Requests the sandbox Graph served after ``since_seq`` (see ``request_seq``)."""
        return self.sandbox.requests.entries(service="graph", since_seq=since_seq, mailbox=mailbox)

    def request_seq(self) -> int:
        """Sequence number of the newest request the sandbox logged (a bookmark for counting)."""
        return self.sandbox.requests.last_seq

    # --- waiting ------------------------------------------------------------------------------
    def wait_for(self, predicate: Callable[[], T | None], timeout: float = 30.0, *, what: str = "condition",
                 poll: float = 0.25) -> T:
        """Return ``predicate()``'s first truthy value; ``StackError`` after ``timeout`` seconds.

        Re-checks whenever a function invocation finished (the app changed something) and at the
        latest every ``poll`` seconds (the sandbox changed something on its own).
        """
        deadline = time.monotonic() + timeout
        while True:
            marker = self._last_invocation()
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StackError(f"{what} not reached within {timeout:.0f} s")
            with contextlib.suppress(TimeoutError):
                self.host.invocations.wait_for(functools.partial(self._moved_on, marker),
                                               timeout=min(poll, remaining))

    def wait_timum(self, predicate: Callable[[TimumState], bool], timeout: float = 30.0, *,
                   what: str = "timum state") -> None:
        """Block until the sandbox timum's state satisfies ``predicate`` (woken by its changes)."""
        try:
            self.timum.wait_until(predicate, timeout=timeout)
        except TimeoutError:
            raise StackError(f"{what} not reached within {timeout:.0f} s") from None

    def _last_invocation(self) -> tuple[int, str]:
        return self._marker(self.host.records())

    @classmethod
    def _moved_on(cls, marker: tuple[int, str], records: list[Any]) -> bool:
        return cls._marker(records) != marker

    @staticmethod
    def _marker(records: list[Any]) -> tuple[int, str]:
        # The log is bounded, so its length alone stops changing once full; the newest id does not.
        return len(records), records[-1].invocation_id if records else ""

    # --- sandbox set-up helpers -------------------------------------------------------------------
    def user(self, user: str) -> SandboxUser:
        found = self.directory.user(user)
        if found is None:
            raise StackError(f"no sandbox user {user!r}")
        return found

    def calendar(self, user: str, name: str) -> Calendar:
        """The user's own calendar called ``name``, created when missing."""
        for cal in self.graph.own_calendars(user):
            if cal.name == name:
                return cal
        return self.graph.create_calendar(user, name)

    def ensure_resource(self, provider: str, resource: str, name: str | None = None) -> None:
        """Make sure the sandbox timum has the provider and the resource."""
        from devtools.sandbox.timum.state import UnknownItem

        try:
            self.timum.provider(provider)
        except UnknownItem:
            self.timum.add_provider(provider, provider)
        try:
            self.timum.resource(provider, resource)
        except UnknownItem:
            self.timum.create_resource(provider, name or resource, resource_id=resource)

    # --- linking ------------------------------------------------------------------------------
    def link_app_only(self, user: str, calendar_name: str, provider: str, resource: str, *,
                      timeout: float = 60.0) -> LinkedCalendar:
        """Link ``provider|resource`` to the user's calendar with app-only access, as the connect
        flow does after an administrator consented: consent in the sandbox directory, the Link
        (APP_ONLY) and its calendar claim through the repositories, ``AdminMessage(SETUP)`` on the
        link-admin queue and the link-status announcement. Returns once the link has a
        subscription (or polls) and finished its first sync."""
        from shared.adapters.timezones import to_iana
        from shared.domain import Link, LinkKey, LinkMode, SyncMode
        from shared.messages import LINK_ADMIN_QUEUE, AdminAction, AdminMessage
        from shared.repos.accounts import TenantRepository
        from shared.repos.links import LinkRepository

        person = self.user(user)
        self.directory.set_admin_consent(person.tenant_id, self.client_id, True)
        cal = self.calendar(person.id, calendar_name)
        self.ensure_resource(provider, resource, calendar_name)
        services = self.services()
        fresh = Link(provider_id=provider, resource_id=resource, mode=LinkMode.APP_ONLY,
                     tenant_id=person.tenant_id, mailbox_id=person.mail, calendar_id=cal.id,
                     calendar_name=cal.name, calendar_owner=person.mail,
                     time_zone=to_iana(person.time_zone) or "Europe/Berlin", sync_mode=SyncMode.PUSH,
                     created_at=services.clock())

        async def write() -> Link:
            from shared.connect.status import announce

            await TenantRepository(self.storage).record_admin_consent(person.tenant_id, now=services.clock())
            repo = LinkRepository(self.storage)
            await repo.claim_calendar(fresh)
            existing = await repo.get(LinkKey(provider, resource))
            if existing is not None:
                fresh.etag = existing.etag
            saved = await repo.save(fresh)
            await self.storage.queue(LINK_ADMIN_QUEUE).send(
                AdminMessage(link=str(saved.key), action=AdminAction.SETUP).to_json())
            await announce(services, saved)
            return saved

        self.run(write())
        link = self.wait_linked(provider, resource, timeout=timeout)
        return LinkedCalendar(link, person, cal.id)

    def wait_linked(self, provider: str, resource: str, *, timeout: float = 60.0) -> Link:
        """Wait until the link has a subscription (or polls) and completed a sync."""
        from shared.domain import SyncMode

        def ready() -> Link | None:
            link = self.link(provider, resource)
            if link is None or link.last_sync_at is None:
                return None
            if link.subscription_id or link.sync_mode is SyncMode.POLLING:
                return link
            return None

        return self.wait_for(ready, timeout, what=f"first sync of {provider}|{resource}")

    def link_delegated(self, user: str, calendar_name: str, provider: str, resource: str, *,
                       timeout: float = 60.0) -> LinkedCalendar:
        """Link by walking the real connect flow over HTTP, as a user's browser would: the signed
        link behind the sandbox timum's button → the sandbox's sign-in and consent pages → the
        OAuth callback → the calendar chooser. Returns once the link finished its first sync."""
        person = self.user(user)
        cal = self.calendar(person.id, calendar_name)
        self.ensure_resource(provider, resource, calendar_name)
        start = self.timum.connect_url(provider, resource)
        with self.http(follow_redirects=False) as client:
            try:
                landed = ConnectWalker(client, person.id, cal.name).walk(start)
            except ConnectFlowError as exc:
                raise StackError(str(exc)) from exc
        params = dict(parse_qsl(urlsplit(landed).query))
        if params.get("outlook") != "connected":
            raise StackError(f"the connect flow ended without a link (outlook={params.get('outlook')!r}, "
                             f"reason={params.get('reason')!r})")
        link = self.wait_linked(provider, resource, timeout=timeout)
        return LinkedCalendar(link, person, cal.id)

    # --- outages ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def storage_outage(self) -> Iterator[None]:
        """Stop Azurite for the block, then start it again on the same ports.

        With ``persistent_storage`` the data survives; an in-memory Azurite comes back empty.
        """
        self.azurite.stop()
        try:
            yield
        finally:
            self.azurite = _start_azurite(self._workdir, self._persistent, ports=(
                self.azurite.blob_port, self.azurite.queue_port, self.azurite.table_port))

    # --- shutdown -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the host, the sandbox and Azurite; restore the environment."""
        if self._stopped:
            return
        self._stopped = True
        errors: list[BaseException] = []
        for step in (self.host.stop, self._close_harness, self.sandbox.stop, self.azurite.stop):
            try:
                step()
            except Exception as exc:  # keep stopping the rest, report the first
                errors.append(exc)
        _restore_env(self._saved_env)
        _reset_app_caches()
        shutil.rmtree(self._workdir, ignore_errors=True)
        _one_stack.release()
        if errors:
            raise StackError("the stack did not stop cleanly") from errors[0]

    def _close_harness(self) -> None:
        async def close() -> None:
            if self._services is not None:
                closer = getattr(self._services.timum, "close", None)
                if closer is not None:
                    await closer()
            await self.storage.close()

        try:
            self.run(close(), timeout=15)
        finally:
            self._loop.close()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def _send_secure_cookies_on_loopback(client: httpx.Client) -> Callable[[httpx.Request], None]:
    """Browsers treat http://127.0.0.1 and http://localhost as secure contexts: they keep and
    send Secure cookies there (the service's sign-in binding cookie is one). httpx, like Python's
    cookie jar, sends them over https only; this request hook adds them on loopback http."""

    def hook(request: httpx.Request) -> None:
        host = request.url.host
        if request.url.scheme != "http" or host not in _LOOPBACK_HOSTS:
            return
        present = request.headers.get("cookie", "")
        names = {part.split("=", 1)[0].strip() for part in present.split(";") if part.strip()}
        extra = [f"{c.name}={c.value}" for c in client.cookies.jar
                 if c.secure and c.name not in names and c.domain.lstrip(".") == host
                 and request.url.path.startswith(c.path or "/") and not c.is_expired()]
        if extra:
            request.headers["cookie"] = "; ".join([p for p in (present, *extra) if p])

    return hook


def _restore_env(saved: Mapping[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


async def _close_app_clients() -> None:
    """Close the clients the functions cached, on the host's loop after it drained: dropped
    unclosed, they would report themselves whenever the garbage collector meets them — in the
    middle of whatever runs in this process next."""
    from shared import wiring

    await wiring.close_clients()


def _reset_app_caches() -> None:
    from shared import wiring

    wiring.reset()


def _start_azurite(workdir: Path, persistent: bool, *, ports: tuple[int, int, int] | None = None
                   ) -> azurite.Azurite:
    blob, queue, table = ports or (None, None, None)
    location = workdir / "azurite" if persistent else None
    server = azurite.start(blob_port=blob, queue_port=queue, table_port=table, location=location,
                           log=workdir / "azurite.log")
    if location is not None:
        server.keep = True  # the stack's work directory goes as a whole at stop()
    return server


def start_stack(*, seed_demo: bool = True, extra_env: Mapping[str, str] | None = None,
                polling_interval_minutes: int = 1, sync_window_past_days: int = 1,
                sync_window_future_days: int = 365, persistent_storage: bool = False,
                graph_seed: int | None = 1234, host_json: str | os.PathLike[str] | None = None,
                app: str = "function_app") -> Stack:
    """Start Azurite, the sandbox and the function app; returns when all three serve.

    ``extra_env`` overrides app settings (after the example's values and the ports).
    ``persistent_storage`` keeps Azurite's data on disk (in the stack's temporary directory), so
    :meth:`Stack.storage_outage` can stop and restart it without losing state. ``graph_seed``
    seeds the Graph stand-in's randomness (empty pages, replays, duplicate notifications).
    """
    if not _one_stack.acquire(blocking=False):
        raise StackError("a stack is already running in this process (settings are per process)")
    workdir = Path(tempfile.mkdtemp(prefix="stack-"))
    started: list[Callable[[], None]] = []
    saved_env: dict[str, str | None] = {}
    try:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        port = azurite.free_port()
        service_base_url = f"http://127.0.0.1:{port}"
        store = _start_azurite(workdir, persistent_storage)
        started.append(store.stop)

        from devtools.sandbox.config import SandboxConfig
        from devtools.sandbox.server import start_in_thread

        config = SandboxConfig(https_port=0, http_port=0, service_base_url=service_base_url,
                               state_dir=workdir / "sandbox", seed_demo=seed_demo)
        sandbox = start_in_thread(config)
        started.append(sandbox.stop)
        if graph_seed is not None and sandbox.graph is not None:
            import random

            sandbox.graph.state.rng = random.Random(graph_seed)

        env = stack_environment(service_base_url=service_base_url,
                                storage_connection_string=store.connection_string,
                                https_base=config.https_base, http_base=config.http_base,
                                ca_path=str(sandbox.ca_path), polling_interval_minutes=polling_interval_minutes,
                                sync_window_past_days=sync_window_past_days,
                                sync_window_future_days=sync_window_future_days, extra_env=extra_env)
        for key, value in env.items():
            saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value
        _reset_app_caches()

        from shared.config import load_settings

        settings = load_settings()  # one message naming every bad setting, before anything starts

        from devtools.devhost import run_in_thread

        host = run_in_thread(app, port=port, host_json=str(host_json or ROOT / "host.json"),
                             function_directory=str(ROOT), after_stop=_close_app_clients)
        started.append(host.stop)

        from shared.storage.azure import AzureStorage

        loop = _Loop()
        started.append(loop.close)
        stack = Stack(azurite_server=store, sandbox=sandbox, host=host, env=env, saved_env=saved_env,
                      workdir=workdir, loop=loop, storage=AzureStorage.from_settings(settings), settings=settings,
                      persistent_storage=persistent_storage)
    except BaseException:
        for stop in reversed(started):
            with contextlib.suppress(Exception):
                stop()
        _restore_env(saved_env)
        _reset_app_caches()
        shutil.rmtree(workdir, ignore_errors=True)
        _one_stack.release()
        raise
    log.info("stack up: app %s, sandbox %s / %s", stack.base_url, config.http_base, config.https_base)
    return stack


@contextlib.contextmanager
def running_stack(**kwargs: Any) -> Iterator[Stack]:
    """``with running_stack(seed_demo=False) as stack:`` — start_stack that always stops."""
    stack = start_stack(**kwargs)
    try:
        yield stack
    finally:
        stack.stop()
