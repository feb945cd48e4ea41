"""Helpers to drive the Graph stand-in from tests in one process: a throw-away CA and server
certificate, a uvicorn server in a background thread, a token credential for the real
msgraph-sdk, and a tiny webhook receiver whose answers a test can script.

Nothing here waits on a clock: servers report readiness through events, the receiver exposes a
condition tests block on (via ``asyncio.to_thread``) until the expected requests arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route


def make_tls(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """Write ``ca.pem``, ``server.pem`` and ``server.key`` for ``host``; return their paths."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Sandbox Test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    san: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        san.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        san.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path


def tls_context(ca_path: Path) -> ssl.SSLContext:
    """A client TLS context trusting the sandbox CA (httpx wants a context, not a path)."""
    return ssl.create_default_context(cafile=str(ca_path))


class ServerThread:
    """A uvicorn server on a free port in a daemon thread; ``url`` once ``start()`` returned."""

    def __init__(self, routes: list[BaseRoute], *, startup: Callable[[], Any] | None = None,
                 shutdown: Callable[[], Any] | None = None, tls: tuple[Path, Path] | None = None,
                 host: str = "127.0.0.1") -> None:
        self._ready = threading.Event()
        self._startup, self._shutdown = startup, shutdown

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            if self._startup is not None:
                await self._startup()
            self._ready.set()
            try:
                yield
            finally:
                if self._shutdown is not None:
                    await self._shutdown()

        self.app = Starlette(routes=routes, lifespan=lifespan)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self.port = self._sock.getsockname()[1]
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://{host}:{self.port}"
        # Keep-alive connections of finished test loops must not hold up shutdown.
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on", access_log=False,
                                timeout_graceful_shutdown=1,
                                ssl_certfile=str(tls[0]) if tls else None, ssl_keyfile=str(tls[1]) if tls else None)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"uvicorn-{self.port}", daemon=True)

    def _run(self) -> None:
        self.server.run(sockets=[self._sock])

    def start(self, timeout: float = 20.0) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("server did not start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=20)
        self._sock.close()


class StaticTokenCredential:
    """An async azure-identity style credential handing out one sandbox access token."""

    def __init__(self, token: str, expires_in: int = 3600) -> None:
        self.token = token
        self.expires_on = int(time.time()) + expires_in
        self.requested_scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                        enable_cae: bool = False, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.requested_scopes.append(scopes)
        return AccessToken(self.token, self.expires_on)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> StaticTokenCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


def graph_client(base_url: str, ca_path: Path, token: str, *, host: str = "127.0.0.1") -> tuple[Any, Any]:
    """A real ``GraphServiceClient`` aimed at the stand-in, and its httpx client (close it)."""
    import httpx
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph.graph_request_adapter import options as sdk_options
    from msgraph_core import GraphClientFactory

    auth = AzureIdentityAuthenticationProvider(StaticTokenCredential(token),
                                               scopes=["https://graph.microsoft.com/.default"],
                                               allowed_hosts=[host])
    http = GraphClientFactory.create_with_default_middleware(client=httpx.AsyncClient(verify=tls_context(ca_path)),
                                                             options=sdk_options)
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = base_url
    return GraphServiceClient(request_adapter=adapter), http


@dataclass
class Received:
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        import json

        return json.loads(self.body)


class WebhookReceiver:
    """A notification endpoint whose behaviour tests script.

    ``validation``: ``echo`` (correct), ``wrong`` (another body), ``status`` (answers 500),
    ``slow`` (waits ``slow_seconds`` before echoing). ``statuses``: HTTP statuses to answer the
    next notification POSTs with, in order; afterwards 202.
    """

    def __init__(self) -> None:
        self.validation = "echo"
        self.slow_seconds = 12.0
        self.statuses: list[int] = []
        self.received: list[Received] = []
        self._cond = threading.Condition()
        self._release = threading.Event()
        self.server = ServerThread([Route("/{path:path}", self._handle, methods=["POST"])])

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> WebhookReceiver:
        self.server.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self.server.stop()

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        token = request.query_params.get("validationToken")
        if token is not None:
            status = 200
            if self.validation == "slow":
                await asyncio.to_thread(self._release.wait, self.slow_seconds)
            response: Response = PlainTextResponse(token)
            if self.validation == "wrong":
                response = PlainTextResponse("not-the-token")
            elif self.validation == "status":
                status = 500
                response = PlainTextResponse("boom", status_code=500)
        else:
            with self._cond:
                status = self.statuses.pop(0) if self.statuses else 202
            response = Response(status_code=status)
        with self._cond:
            self.received.append(Received("/" + request.path_params["path"], request.url.query,
                                          dict(request.headers), body, status))
            self._cond.notify_all()
        return response

    def notifications(self, path: str | None = None) -> list[Received]:
        with self._cond:
            return [r for r in self.received if "validationToken" not in r.query and (path is None or r.path == path)]

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 20.0) -> list[Received]:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(list(self.received)), timeout):
                raise TimeoutError("the expected webhook calls did not arrive")
            return list(self.received)


@dataclass
class World:
    """A fresh tenant with two users (Anna, Jonas), one app and token helpers."""

    env: GraphTestEnv
    tenant_id: str
    anna: Any
    jonas: Any
    client_id: str

    def token(self, user: Any = None, *, scopes: frozenset[str] | set[str] = frozenset(),
              roles: frozenset[str] | set[str] = frozenset(), lifetime: float | None = None,
              tenant_id: str | None = None) -> str:
        token, _ = self.env.directory.issue_access_token(
            tenant_id=tenant_id or self.tenant_id, client_id=self.client_id, user_id=user.id if user else None,
            scopes=frozenset(scopes), roles=frozenset(roles), lifetime=lifetime)
        return str(token)

    def client(self, token: str) -> tuple[Any, Any]:
        return graph_client(self.env.base_url, self.env.ca_path, token)


@dataclass(kw_only=True, eq=False, repr=False)
class GraphTestEnv:
    """The Graph stand-in as tests see it: where it listens, its CA, its directory and state.

    ``of(running)`` wraps the composed sandbox (the ``sandbox`` fixture); ``standalone(path)``
    serves just the Graph stand-in, for callers without the composed server. ``world()`` gives
    each test its own tenant and deterministic behaviour; ``reset()`` restores what it changed.
    """

    directory: Any
    graph: Any
    base_url: str
    http_base: str
    ca_path: Path
    #: the servers ``standalone`` started, which ``stop()`` ends
    servers: tuple[ServerThread, ...] = ()
    #: the stand-in's behaviour before the first world, which ``reset()`` restores
    _behaviour: Any = field(init=False)

    def __post_init__(self) -> None:
        self._behaviour = self.graph.state.behaviour

    @classmethod
    def of(cls, running: Any) -> GraphTestEnv:
        return cls(directory=running.directory, graph=running.graph, base_url=f"{running.https_base}/v1.0",
                   http_base=running.http_base, ca_path=Path(running.ca_path))

    @classmethod
    def standalone(cls, directory_path: Path) -> GraphTestEnv:
        from devtools.sandbox.config import SandboxConfig
        from devtools.sandbox.directory import Directory
        from devtools.sandbox.graph import GraphSandbox

        ca_path, cert, key = make_tls(directory_path)
        directory = Directory()
        graph = GraphSandbox(directory, SandboxConfig(state_dir=directory_path), seed=1234)
        https = ServerThread(graph.https_routes, startup=graph.startup, shutdown=graph.shutdown,
                             tls=(cert, key)).start()
        http = ServerThread(graph.http_routes).start()
        return cls(directory=directory, graph=graph, base_url=f"{https.url}/v1.0", http_base=http.url,
                   ca_path=ca_path, servers=(http, https))

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def reset(self) -> None:
        self.graph.state.behaviour = self._behaviour
        self.graph.state.clear_faults()

    def world(self) -> World:
        """A new tenant and deterministic behaviour: no random empty pages, replays or duplicates."""
        import uuid

        from devtools.sandbox.graph.model import Behaviour

        state = self.graph.state
        state.behaviour = Behaviour(empty_page_probability=0.0, replay_probability=0.0, duplicate_probability=0.0,
                                    coalesce_delay=0.05, retry_base_delay=0.05, housekeeping_interval=0.2)
        state.clear_faults()
        tag = uuid.uuid4().hex[:8]
        tenant = self.directory.add_tenant(f"Praxis {tag}", f"praxis-{tag}.example")
        anna = self.directory.add_user(tenant.id, "Dr. Anna Weber", "anna.weber")
        jonas = self.directory.add_user(tenant.id, "Jonas Becker", "jonas.becker")
        return World(self, tenant.id, anna, jonas, str(uuid.uuid4()))
