"""Shared sandbox fixtures.

* ``sandbox`` (session): the composed sandbox (identity, Graph, timum) serving from a
  background thread on free ports. Override ``sandbox_service_base_url`` in a conftest closer
  to your tests to point its webhooks and redirect URIs at your service.
* ``sandbox_ca`` / ``sandbox_tls`` / ``sandbox_http``: the CA file, a TLS context trusting it,
  and an httpx client using that context.
* ``sandbox_control``: the control-API client.
* ``tenant_factory``: a fresh tenant with users per test, so tests that change consent or
  revoke tokens do not disturb each other or the demo data.
* ``form_browser``: a cookie-keeping form-following client for the sign-in pages.
* ``msal_app``: a factory of real ``msal.ConfidentialClientApplication`` objects pointed at the
  sandbox, built the way the service builds them (``instance_discovery=False``, ``verify=``).
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from devtools.sandbox import server as sandbox_server
from devtools.sandbox.browser import FormBrowser
from devtools.sandbox.ca import client_ssl_context
from devtools.sandbox.client import SandboxControl
from devtools.sandbox.config import SandboxConfig
from devtools.sandbox.graph.testing import GraphTestEnv
from devtools.sandbox.graph.testing import World as GraphWorld
from devtools.sandbox.server import RunningSandbox
from tests.support.sandbox_tenants import TenantFactory, make_fresh_tenant


@pytest.fixture(scope="session")
def sandbox_service_base_url() -> str:
    """Where the sandbox believes the service listens (webhook targets, redirect URIs)."""
    return "http://127.0.0.1:7071"


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory, sandbox_service_base_url: str) -> Iterator[RunningSandbox]:
    config = SandboxConfig(https_port=0, http_port=0, state_dir=tmp_path_factory.mktemp("sandbox-state"),
                           service_base_url=sandbox_service_base_url)
    # Through the module: the fast tier replaces ``start_in_thread`` to refuse it.
    running = sandbox_server.start_in_thread(config)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def sandbox_ca(sandbox: RunningSandbox) -> str:
    return sandbox.ca_path


@pytest.fixture(scope="session")
def sandbox_tls(sandbox_ca: str) -> ssl.SSLContext:
    """Client TLS context trusting the sandbox CA, for httpx (``verify=sandbox_tls``)."""
    return client_ssl_context(sandbox_ca)


@pytest.fixture
def sandbox_http(sandbox_tls: ssl.SSLContext) -> Iterator[httpx.Client]:
    with httpx.Client(verify=sandbox_tls, timeout=10) as client:
        yield client


@pytest.fixture
def sandbox_control(sandbox: RunningSandbox) -> Iterator[SandboxControl]:
    with SandboxControl(sandbox.http_base) as control:
        yield control


@pytest.fixture
def form_browser(sandbox_tls: ssl.SSLContext) -> Iterator[FormBrowser]:
    """A fresh "browser" (own cookie jar) per test."""
    with httpx.Client(verify=sandbox_tls, timeout=10) as client:
        yield FormBrowser(client)


@pytest.fixture
def tenant_factory(sandbox: RunningSandbox) -> TenantFactory:
    """``make(user_consent_allowed=, users=, name=)`` → a fresh tenant (``make_fresh_tenant``)."""
    return functools.partial(make_fresh_tenant, sandbox)


@pytest.fixture
def msal_app(sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch) -> Callable[..., object]:
    import msal

    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's verify= (see
    # test_identity.py::test_requests_ca_bundle_variable_overrides_msal_verify); clear them so
    # MSAL's own verify= takes effect, as it would on a machine without them.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)

    def make(tenant: str, **kwargs: object) -> msal.ConfidentialClientApplication:
        config = sandbox.config
        return msal.ConfidentialClientApplication(
            config.client_id, client_credential=config.client_secret,
            authority=f"{sandbox.https_base}/{tenant}", instance_discovery=False, verify=sandbox.ca_path,
            **kwargs)
    return make


@pytest.fixture
def redirect_uri(sandbox: RunningSandbox) -> str:
    return sandbox.config.redirect_uris[0]


@pytest.fixture(scope="session")
def sandbox_state_dir(sandbox: RunningSandbox) -> Path:
    return sandbox.config.state_dir


# --- the Graph stand-in, as the SDK and raw HTTP clients see it ----------------------------------

@pytest.fixture(scope="session")
def env(sandbox: RunningSandbox) -> GraphTestEnv:
    return GraphTestEnv.of(sandbox)


@pytest.fixture
def world(env: GraphTestEnv) -> Iterator[GraphWorld]:
    """A fresh Graph world (users, calendars, tokens) over the session's sandbox, reset afterwards."""
    yield env.world()
    env.reset()
