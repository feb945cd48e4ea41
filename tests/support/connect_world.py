"""What the connect-flow tests build (fixtures in ``tests/connect/conftest.py``): settings,
in-memory services, the sandbox's configuration, and a scripted sign-in that walks the sandbox's
Microsoft pages with plain HTTP (the browser tests use Chromium)."""

from __future__ import annotations

import base64
import html
import os
import re
import secrets
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import azure.functions as func
import httpx

from devtools.azurite import free_port
from devtools.sandbox.config import SandboxConfig
from devtools.sandbox.server import RunningSandbox
from shared.adapters.graph_memory import MemoryGraph, MemoryGraphProvider
from shared.adapters.timum_memory import MemoryTimum
from shared.config import Settings
from shared.connect.credentials import RealGraphProvider
from shared.connect.flow import session_store
from shared.connect.store import ConnectContext
from shared.context import Services
from shared.domain import Link, LinkMode
from shared.signing import ConnectLink, sign_connect_link
from shared.storage.memory import MemoryStorage
from tests.support.settings import make_settings as support_settings
from tests.support.twins import twin_services

CONNECT_SECRET = "sandbox-connect-secret"
WEBHOOK_SECRET = "sandbox-webhook-secret"
RETURN_BASE = "http://127.0.0.1:7080/timum/"
#: the service's address as the sandbox knows it (redirect URIs); the browser tests serve it
SERVICE_PORT = free_port()
SERVICE_URL = f"http://127.0.0.1:{SERVICE_PORT}"
JONAS = "jonas@praxis.example"
ROOM = "raum3@praxis.example"


def make_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


KEY_ONE = f"k1:{make_key()}"


def settings_env(**overrides: str) -> dict[str, str]:
    env = {
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "SERVICE_BASE_URL": SERVICE_URL,
        "ENTRA_CLIENT_ID": SandboxConfig().client_id,
        "ENTRA_CLIENT_SECRET": SandboxConfig().client_secret,
        "TOKEN_ENCRYPTION_KEYS": KEY_ONE,
        "TIMUM_API_BASE_URL": "http://127.0.0.1:7080/timum",
        "TIMUM_API_KEY": "sandbox-timum-api-key",
        "TIMUM_WEBHOOK_SECRETS": WEBHOOK_SECRET,
        "TIMUM_CONNECT_SECRETS": CONNECT_SECRET,
        "TIMUM_RETURN_URL_ALLOWLIST": RETURN_BASE,
    }
    env.update(overrides)
    return env


def make_settings(**overrides: str) -> Settings:
    return support_settings(**settings_env(**overrides))


def connect_token(provider: str = "prov-1", resource: str | None = "res-1", *, locale: str = "de",
                  return_url: str = RETURN_BASE + "providers/prov-1", lifetime: int = 600,
                  now: float | None = None, secret: str = CONNECT_SECRET, nonce: str | None = None,
                  provider_name: str = "") -> str:
    issued = int(time.time() if now is None else now)
    return sign_connect_link(ConnectLink(provider_id=provider, resource_id=resource, locale=locale,
                                         return_url=return_url, expires_at=issued + lifetime,
                                         nonce=nonce or secrets.token_urlsafe(24), provider_name=provider_name),
                             secret)


def http_request(method: str, path: str, *, params: dict[str, str] | None = None, body: bytes = b"",
                 headers: dict[str, str] | None = None, route_params: dict[str, str] | None = None,
                 base: str = SERVICE_URL) -> func.HttpRequest:
    query = "&".join(f"{k}={v}" for k, v in (params or {}).items())
    url = f"{base}{path}" + (f"?{query}" if query else "")
    return func.HttpRequest(method=method, url=url, headers=headers or {}, params=params or {},
                            route_params=route_params or {}, body=body)


# --- in-memory services -----------------------------------------------------------------------

class AppOnlyView:
    """The shared twin seen with app-only credentials (no signed-in user, every mailbox)."""

    def __init__(self, graph: MemoryGraph) -> None:
        self._graph = graph

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._graph, name)
        if not callable(target):
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            before = self._graph.app_only
            self._graph.app_only = True
            try:
                return await target(*args, **kwargs)
            finally:
                self._graph.app_only = before

        return call


class ModeAwareProvider(MemoryGraphProvider):
    async def for_link(self, link: Link) -> Any:
        port = await super().for_link(link)
        return AppOnlyView(self.graph) if link.mode is LinkMode.APP_ONLY else port


@dataclass
class MemoryWorld:
    services: Services
    storage: MemoryStorage
    timum: MemoryTimum
    graph: MemoryGraph
    provider: MemoryGraphProvider


def make_memory_world() -> MemoryWorld:
    """Services over the in-memory twins: Anna's mailbox with two calendars, Jonas's calendar
    shared with her, a read-only room calendar, and timum resource res-1 of provider prov-1."""
    storage = MemoryStorage()
    timum = MemoryTimum()
    timum.add_resource("prov-1", "Dr. Anna Weber", resource_id="res-1")
    timum.add_resource("prov-2", "Fremde Praxis", resource_id="res-9")
    graph = MemoryGraph(tenant_id="tid-1")
    graph.add_mailbox("anna", display_name="Anna Weber", mail="anna@praxis.example")
    # Other mailboxes are addressed by mail, as app-only access reaches a shared calendar's owner.
    graph.add_mailbox(JONAS, display_name="Jonas Becker", mail=JONAS)
    graph.add_mailbox(ROOM, display_name="Raum 3", mail=ROOM)
    graph.add_calendar("anna", "Behandlungsraum 1", calendar_id="cal-room1")
    graph.share_calendar(graph.default_calendar(JONAS), "anna", can_edit=True)
    graph.share_calendar(graph.default_calendar(ROOM), "anna", can_edit=False)
    graph.sign_in("anna")
    provider = ModeAwareProvider(graph)
    services = twin_services(settings=make_settings(), storage=storage, graph=graph, provider=provider, timum=timum)
    return MemoryWorld(services, storage, timum, graph, provider)


async def open_session(services: Services, *, resource: str | None = "res-1", provider: str = "prov-1",
                       locale: str = "de", account_id: str = "anna-oid.tid-1", tenant_id: str = "tid-1",
                       provider_name: str = "") -> str:
    """A chooser session as the OAuth callback leaves it (the sign-in itself is tested elsewhere)."""
    context = ConnectContext(provider_id=provider, resource_id=resource, locale=locale,
                             return_url=RETURN_BASE + f"providers/{provider}", provider_name=provider_name)
    return await session_store(services).create(context, account_id=account_id, tenant_id=tenant_id,
                                                 account_name="Anna Weber", now=services.clock())


# --- the sandbox -------------------------------------------------------------------------------

def sandbox_config(state_dir: Path) -> SandboxConfig:
    """The sandbox as these tests run it: any free ports, redirecting to ``SERVICE_URL``."""
    return SandboxConfig(https_port=0, http_port=0, service_base_url=SERVICE_URL, state_dir=state_dir)


def sandbox_settings(sandbox: RunningSandbox, **overrides: str) -> Settings:
    return make_settings(ENTRA_AUTHORITY_HOST=sandbox.https_base, GRAPH_BASE_URL=sandbox.config.graph_base_url,
                         CA_BUNDLE=sandbox.ca_path, TIMUM_API_BASE_URL=sandbox.config.timum_api_base_url,
                         **overrides)


def live_services(sandbox: RunningSandbox) -> Services:
    """Services with the sandbox's identity platform and Graph, in-memory storage and timum."""
    settings = sandbox_settings(sandbox)
    storage = MemoryStorage()
    timum = MemoryTimum()
    timum.add_resource("prov-1", "Dr. Anna Weber", resource_id="res-1")
    return Services(settings=settings, storage=storage, timum=timum, graph=RealGraphProvider(settings, storage))


_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', re.S)
_INPUT = re.compile(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"')


def _forms(html: str) -> list[tuple[str, dict[str, str]]]:
    return [(action, dict(_INPUT.findall(body))) for action, body in _FORM.findall(html)]


class MicrosoftSignIn:
    """Walks the sandbox's sign-in pages like a user: pick an account, then accept (or decline)
    the consent screen, or leave the admin-approval screen. Returns what reaches the redirect URI."""

    def __init__(self, sandbox: RunningSandbox) -> None:
        self.sandbox = sandbox
        self.client = httpx.Client(verify=ssl.create_default_context(cafile=sandbox.ca_path), follow_redirects=False,
                                   timeout=10.0)

    def close(self) -> None:
        self.client.close()

    def _submit(self, page: httpx.Response, action_part: str, data: dict[str, str]) -> httpx.Response:
        for action, fields in _forms(page.text):
            if action_part in action:
                return self.client.post(urljoin(str(page.url), action), data={**fields, **data})
        raise AssertionError(f"no form for {action_part} on the page: {page.text[:300]}")

    def run(self, auth_uri: str, user_mail: str, *, decision: str = "accept",
            leave_without_consent: bool = False) -> dict[str, str]:
        user = self.sandbox.directory.user(user_mail)
        assert user is not None, user_mail
        page = self.client.get(auth_uri)
        assert page.status_code == 200, page.text[:500]
        response = self._submit(page, "/authorize/select", {"user": user.id})
        if response.status_code == 200 and not self._answer(response):
            action = "/authorize/return" if leave_without_consent else "/authorize/consent"
            response = self._submit(response, action, {} if leave_without_consent else {"decision": decision})
        if response.status_code in (302, 303):
            location = response.headers["location"]
            assert location.startswith(SERVICE_URL), location
            return dict(parse_qsl(urlsplit(location).query))
        # response_mode=form_post: the page posts the answer to the redirect URI
        assert response.status_code == 200, response.text[:800]
        answer = self._answer(response)
        assert answer is not None, response.text[:800]
        return answer

    @staticmethod
    def _answer(page: httpx.Response) -> dict[str, str] | None:
        found = [f for a, f in _forms(page.text) if a == f"{SERVICE_URL}/api/oauth/callback"]
        return {k: html.unescape(v) for k, v in found[0].items()} if found else None


def query_of(url: str) -> dict[str, Any]:
    return dict(parse_qsl(urlsplit(url).query))
