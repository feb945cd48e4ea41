"""The composed sandbox: listeners, landing page, stylesheet, certificates, request log, CLI."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from devtools.sandbox import ca
from devtools.sandbox.browser import FormBrowser, sign_in
from devtools.sandbox.client import SandboxControl
from devtools.sandbox.config import SandboxConfig
from devtools.sandbox.server import CompositionError, RunningSandbox, _load_component, start_in_thread
from tests.support.sandbox_tenants import FreshTenant

ROOT = Path(__file__).resolve().parents[2]


def test_both_listeners_with_all_three_stand_ins(sandbox: RunningSandbox, sandbox_http: httpx.Client) -> None:
    assert sandbox.graph is not None and sandbox.timum is not None
    health = httpx.get(f"{sandbox.http_base}/_sandbox/health").json()
    assert health == {"status": "ok", "graph": True, "timum": True}
    # The HTTPS listener presents a certificate the sandbox CA vouches for, for 127.0.0.1 and localhost.
    discovery = "/common/v2.0/.well-known/openid-configuration"
    assert sandbox_http.get(sandbox.https_base + discovery).status_code == 200
    localhost = f"https://localhost:{sandbox.config.https_port}{discovery}"
    assert sandbox_http.get(localhost).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(sandbox.https_base + discovery, verify=ssl.create_default_context())


def test_landing_page_links_everything_in_german_and_english(sandbox: RunningSandbox) -> None:
    page = httpx.get(f"{sandbox.http_base}/")
    assert page.status_code == 200
    for link in ('href="/outlook/"', 'href="/timum/"', 'href="/_sandbox/identity/"',
                 'href="/_sandbox/requests/page"', 'href="/_sandbox/static/sandbox.css"'):
        assert link in page.text
    assert '<html lang="de">' in page.text and "Physiopraxis Sonnenschein" in page.text
    assert "Klinik Nord" in page.text and "Dr. Anna Weber" in page.text
    assert sandbox.config.https_base in page.text and sandbox.config.client_id in page.text
    assert sandbox.config.client_secret not in page.text
    english = httpx.get(f"{sandbox.http_base}/", headers={"Accept-Language": "en-US,en;q=0.8"})
    assert '<html lang="en">' in english.text and "Request log" in english.text
    assert 'href="/?ui_locales=de"' in english.text


def test_stylesheet_on_both_listeners(sandbox: RunningSandbox, sandbox_http: httpx.Client) -> None:
    plain = httpx.get(f"{sandbox.http_base}/_sandbox/static/sandbox.css")
    tls = sandbox_http.get(f"{sandbox.https_base}/_sandbox/static/sandbox.css")
    assert plain.status_code == tls.status_code == 200
    assert plain.headers["content-type"].startswith("text/css")
    assert plain.text == tls.text and ":focus-visible" in plain.text and "system-ui" in plain.text


def test_demo_seed_is_stable(sandbox: RunningSandbox) -> None:
    from devtools.sandbox.seed import tenant_id_for, user_id_for

    praxis = sandbox.directory.tenant("praxis-sonnenschein.example")
    klinik = sandbox.directory.tenant("klinik-nord.example")
    assert praxis is not None and klinik is not None
    assert praxis.id == tenant_id_for("praxis-sonnenschein.example") and praxis.user_consent_allowed
    assert klinik.name == "Klinik Nord" and not klinik.user_consent_allowed
    anna = sandbox.directory.user("anna.weber@praxis-sonnenschein.example")
    petra = sandbox.directory.user("petra.schulz@klinik-nord.example")
    assert anna is not None and anna.is_admin and anna.id == user_id_for(anna.mail)
    assert petra is not None and petra.is_admin and petra.tenant_id == klinik.id
    assert {u.display_name for u in sandbox.directory.tenant_users(praxis.id)} >= {
        "Dr. Anna Weber", "Jonas Becker", "Lena Hoffmann"}
    assert {u.display_name for u in sandbox.directory.tenant_users(klinik.id)} >= {"Petra Schulz", "Tobias Wagner"}
    app = sandbox.directory.apps[sandbox.config.client_id]
    assert app.redirect_uris == sandbox.config.redirect_uris


# --- request log -------------------------------------------------------------------------------

def test_request_log_records_without_secrets(sandbox: RunningSandbox, sandbox_control: SandboxControl,
                                             tenant_factory: Callable[..., FreshTenant],
                                             form_browser: FormBrowser, sandbox_http: httpx.Client) -> None:
    tenant = tenant_factory()
    mark = sandbox_control.requests()["last_seq"]
    config = sandbox.config
    authorize = (f"{sandbox.https_base}/{tenant.id}/oauth2/v2.0/authorize?client_id={config.client_id}"
                 f"&response_type=code&redirect_uri={config.redirect_uris[0]}&scope=openid%20offline_access"
                 f"&state=secret-state-value&response_mode=form_post")
    code = sign_in(form_browser, authorize, tenant.user.mail)["code"]
    tokens = sandbox_http.post(f"{sandbox.https_base}/{tenant.id}/oauth2/v2.0/token", data={
        "grant_type": "authorization_code", "client_id": config.client_id, "client_secret": config.client_secret,
        "code": code, "redirect_uri": config.redirect_uris[0]}).json()
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    sandbox_http.get(f"{config.graph_base_url}/me", headers=bearer)
    sandbox_http.get(f"{config.graph_base_url}/users/{tenant.user.mail}/calendars", headers=bearer)

    log = sandbox_control.requests(since=mark)
    entries = log["entries"]
    assert entries and all(e["seq"] > mark for e in entries)
    identity = [e for e in entries if e["service"] == "identity"]
    assert [e["method"] for e in identity][:1] == ["GET"] and identity[0]["status"] == 200
    assert any(e["path"].endswith("/oauth2/v2.0/token") and e["status"] == 200 for e in identity)
    graph = [e for e in entries if e["service"] == "graph"]
    assert [e["mailbox"] for e in graph] == [tenant.user.mail, tenant.user.mail]
    assert all(e["duration_ms"] >= 0 and e["timestamp"].endswith("Z") for e in entries)
    dump = str(log)
    for secret in (code, tokens["access_token"], tokens["refresh_token"], "secret-state-value",
                   config.client_secret):
        assert secret not in dump
    assert "state=…" in dump

    only_graph = sandbox_control.requests(service="graph", since=mark)
    assert only_graph["count"] == 2
    assert sandbox_control.count_requests(service="graph", since=log["last_seq"]) == 0
    page = httpx.get(f"{sandbox.http_base}/_sandbox/requests/page?service=graph")
    assert page.status_code == 200 and "/calendars" in page.text
    bad = httpx.get(f"{sandbox.http_base}/_sandbox/requests?since=yesterday")
    assert bad.status_code == 400


def test_request_log_filters_by_time(sandbox: RunningSandbox, sandbox_control: SandboxControl) -> None:
    httpx.get(f"{sandbox.http_base}/_sandbox/health")
    newest = sandbox_control.requests(limit=1)["entries"][-1]
    by_epoch = sandbox_control.requests(since=newest["epoch"])
    assert newest["seq"] in [e["seq"] for e in by_epoch["entries"]]
    by_iso = sandbox_control.requests(since=newest["timestamp"])
    assert all(e["epoch"] >= newest["epoch"] - 0.001 for e in by_iso["entries"])


# --- certificates ------------------------------------------------------------------------------

def test_certificates_are_reused_while_valid_and_replaced_when_broken(tmp_path: Path) -> None:
    first = ca.ensure_certificates(tmp_path)
    originals = {p: p.read_bytes() for p in (first.ca, first.cert, first.key)}
    assert (first.key.stat().st_mode & 0o777) == 0o600
    second = ca.ensure_certificates(tmp_path)
    assert {p: p.read_bytes() for p in (second.ca, second.cert, second.key)} == originals

    server = x509.load_pem_x509_certificate(originals[first.cert])
    authority = x509.load_pem_x509_certificate(originals[first.ca])
    server.verify_directly_issued_by(authority)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1"}

    first.cert.write_text("not a certificate")
    third = ca.ensure_certificates(tmp_path)
    assert third.ca.read_bytes() == originals[first.ca]        # the CA survives: clients keep trusting
    assert third.cert.read_bytes() != originals[first.cert]
    x509.load_pem_x509_certificate(third.cert.read_bytes()).verify_directly_issued_by(authority)

    # A host the certificate does not cover yet gets a new server certificate from the same CA.
    fourth = ca.ensure_certificates(tmp_path, extra_hosts=("sandbox.test",))
    names = x509.load_pem_x509_certificate(fourth.cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "sandbox.test" in names and fourth.ca.read_bytes() == originals[first.ca]


# --- composition and lifecycle -----------------------------------------------------------------

@pytest.mark.stack
def test_service_base_url_can_move(tmp_path: Path) -> None:
    config = SandboxConfig(https_port=0, http_port=0, state_dir=tmp_path, seed_demo=False)
    with start_in_thread(config, with_graph=False, with_timum=False) as running:
        old = list(config.redirect_uris)
        running.set_service_base_url("http://127.0.0.1:18081")
        app = running.directory.apps[config.client_id]
        assert app.redirect_uris == [*old, "http://127.0.0.1:18081/api/oauth/callback",
                                     "http://127.0.0.1:18081/api/oauth/admin-callback"]
        assert running.config.service_base_url == "http://127.0.0.1:18081"


def test_missing_component_fails_clearly() -> None:
    with pytest.raises(CompositionError, match="devtools.sandbox.nonexistent"):
        _load_component("devtools.sandbox.nonexistent", "Thing")


@pytest.mark.stack
def test_identity_only_sandbox_and_busy_port(tmp_path: Path) -> None:
    config = SandboxConfig(https_port=0, http_port=0, state_dir=tmp_path, seed_demo=False)
    with start_in_thread(config, with_graph=False, with_timum=False) as running:
        assert running.graph is None and running.timum is None
        assert running.directory.tenants == {}
        assert set(running.directory.apps) == {config.client_id}   # the app is registered regardless
        assert httpx.get(f"{running.http_base}/_sandbox/health").json()["graph"] is False
        assert httpx.get(f"{running.http_base}/outlook/").status_code == 404
        busy = SandboxConfig(https_port=0, http_port=config.http_port, state_dir=tmp_path)
        with pytest.raises(OSError, match=f"{config.http_port}"):
            start_in_thread(busy, with_graph=False, with_timum=False)
    assert running.stopped.is_set()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", config.http_port)) != 0


def test_command_line_starts_and_stops_on_sigint(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.sandbox", "--https-port", "0", "--http-port", "0",
         "--state-dir", str(tmp_path), "--service-base-url", "http://127.0.0.1:7999"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        banner = "".join(lines)
        assert "Sandbox" in banner and "Klinik Nord" in banner, banner + (process.stderr.read()
                                                                          if process.poll() is not None
                                                                          and process.stderr else "")
        http_base = lines[0].split()[1].rstrip("/")
        state = httpx.get(f"{http_base}/_sandbox/identity/state").json()
        assert state["apps"][0]["redirect_uris"][0] == "http://127.0.0.1:7999/api/oauth/callback"
        assert (tmp_path / "ca.pem").exists()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
