"""The connect blueprint as the host sees it, and the shared HTTP helpers."""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import azure.functions as func
import pytest

from shared import i18n
from shared.errors import (
    AuthError,
    BadRequest,
    Conflict,
    InvalidSignature,
    NeedsReconnect,
    NotFound,
    PayloadTooLarge,
    StorageError,
    SyncError,
    Throttled,
    TransientError,
)
from shared.http import connect_bp
from shared.http.connect_bp import handle_admin_callback, handle_connect_start, handle_oauth_callback
from shared.http.responses import cookie_value, error_response, read_body, read_form, render
from tests.support.connect_world import MemoryWorld, connect_token, http_request


def test_blueprint_routes_and_auth_levels() -> None:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    app.register_functions(connect_bp.bp)
    found = {}
    for fn in app.get_functions():
        trigger = fn.get_trigger()
        found[fn.get_function_name()] = (trigger.route, sorted(str(m.value) for m in trigger.methods),
                                         str(trigger.auth_level.value))
    assert found == {
        "connect_start": ("connect", ["GET"], "anonymous"),
        "oauth_callback": ("oauth/callback", ["GET", "POST"], "anonymous"),
        "oauth_admin_callback": ("oauth/admin-callback", ["GET"], "anonymous"),
        "connect_calendars": ("connect/calendars", ["GET", "POST"], "anonymous"),
        "provider_links": ("providers/{provider}/links", ["GET"], "function"),
        "provider_link_delete": ("providers/{provider}/links/{resource}", ["DELETE"], "function"),
        "provider_link_resync": ("providers/{provider}/links/{resource}/resync", ["POST"], "function"),
        "provider_settings": ("providers/{provider}/settings", ["GET", "PUT"], "function"),
        "provider_ics_feed": ("providers/{provider}/links/{resource}/ics-feed", ["DELETE", "POST"], "function"),
        "provider_ics_import": ("providers/{provider}/links/{resource}/ics-import", ["POST"], "function"),
    }


async def test_refused_link_is_an_html_page_with_security_headers(world: MemoryWorld) -> None:
    token = connect_token(locale="en")
    bad = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    response = await handle_connect_start(world.services, http_request("GET", "/api/connect", params={"token": bad}))
    body = response.get_body().decode()
    assert response.status_code == 400 and response.mimetype == "text/html"
    assert "The connection link is not valid" in body and 'lang="en"' in body
    assert "Back to timum" in body
    csp = response.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp)
    assert nonce and f'<style nonce="{nonce.group(1)}">' in body
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["Cache-Control"] == "no-store"
    assert bad not in body   # the signed link is never echoed


async def test_callbacks_without_a_flow_explain_themselves(world: MemoryWorld) -> None:
    response = await handle_oauth_callback(world.services, http_request(
        "GET", "/api/oauth/callback", params={"state": "x", "code": "y"}, headers={"Accept-Language": "en"}))
    assert response.status_code == 400 and "The sign-in has expired" in response.get_body().decode()
    posted = await handle_oauth_callback(world.services, http_request(
        "POST", "/api/oauth/callback", body=b"state=x&code=y",
        headers={"Content-Type": "application/x-www-form-urlencoded"}))
    assert posted.status_code == 400 and "Die Anmeldung ist abgelaufen" in posted.get_body().decode()
    denied = await handle_admin_callback(world.services, http_request(
        "GET", "/api/oauth/admin-callback", params={"error": "access_denied", "error_description": "AADSTS65004"}))
    body = denied.get_body().decode()
    assert denied.status_code == 400 and "Dieser Zustimmungslink ist ungültig" in body
    assert 'href="http://127.0.0.1:7080/timum/"' in body   # a way back, though the request named none


def test_admin_consent_page_works_without_javascript() -> None:
    url = "https://login.example/organizations/v2.0/adminconsent?client_id=c&state=s&scope=x"
    page = render("admin_consent.html", locale="de", nonce="n0nce", consent_url=url,
                  mailto_url="mailto:?subject=a&body=b", return_url="", declined=False)
    assert 'readonly value="https://login.example/organizations/v2.0/adminconsent?client_id=c&amp;state=s' in page
    assert 'href="mailto:?subject=a&amp;body=b"' in page
    assert '<script nonce="n0nce">' in page and "hidden" in page   # the copy button only appears with JS
    assert "Microsoft-365-Administrator" in page


@pytest.mark.parametrize(("error", "status"), [
    (InvalidSignature("x"), 401), (PayloadTooLarge("x"), 413), (BadRequest("x", field="f"), 400),
    (NotFound("x"), 404), (Conflict("x"), 409), (Throttled("x", retry_after=2.4), 429),
    (TransientError("x"), 503), (StorageError("x"), 503), (NeedsReconnect("x"), 502), (AuthError("x"), 502),
    (SyncError("x"), 500), (RuntimeError("secret detail"), 500),
])
def test_error_responses_map_the_exception_tree(error: Exception, status: int) -> None:
    response = error_response(error)
    problem = json.loads(response.get_body())
    assert response.status_code == status == problem["status"]
    assert response.mimetype == "application/problem+json"
    if isinstance(error, SyncError):
        assert problem["code"] == error.code
    else:
        assert problem == {"type": "urn:problem-type:timum-outlook:internal", "title": "internal",
                           "status": 500, "code": "internal", "detail": "internal error"}
    if isinstance(error, Throttled):
        assert response.headers["Retry-After"] == "2"


def test_body_helpers() -> None:
    req = http_request("POST", "/x", body=b"a=1&a=2&b=%3Cx%3E", headers={
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8", "Cookie": "a=1; timum-connect=abc"})
    assert read_form(req) == {"a": "1", "b": "<x>"}
    assert cookie_value(req, "timum-connect") == "abc" and cookie_value(req, "missing") is None
    with pytest.raises(PayloadTooLarge):
        read_body(http_request("POST", "/x", body=b"x" * 11), limit=10)
    with pytest.raises(PayloadTooLarge):
        read_body(http_request("POST", "/x", body=b"", headers={"Content-Length": "999999"}), limit=10)
    with pytest.raises(BadRequest):
        read_form(http_request("POST", "/x", body=b"a=1", headers={"Content-Type": "text/plain"}))


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_both_languages_have_the_same_texts() -> None:
    de, en = i18n.MESSAGES["de"], i18n.MESSAGES["en"]
    assert de.keys() == en.keys()
    for key in de:
        assert _placeholders(de[key]) == _placeholders(en[key]), key
    # the templates use only catalogue keys
    used = set()
    for path in (Path(i18n.__file__).parent / "templates").glob("*.html"):
        used |= set(re.findall(r'_\("([a-z_.]+)"', path.read_text()))
    assert used and used <= de.keys()


@pytest.mark.parametrize(("header", "expected"), [
    ("en-GB,en;q=0.9,de;q=0.8", "en"), ("de-CH, en;q=0.5", "de"), ("fr-FR, en;q=0.3", "en"),
    ("fr, es", "de"), ("", "de"), (None, "de"), ("en;q=0, de;q=0.1", "de"), ("en;q=bogus, de", "de"),
])
def test_language_negotiation(header: str | None, expected: str) -> None:
    assert i18n.negotiate(header) == expected
