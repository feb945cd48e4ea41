"""Attacks on the sign-in, performed against the real stack: the local Functions host serving the
app on Azurite, the sandbox's identity platform, Graph and timum (``devtools.stack``).

* A victim's browser finishing a sign-in that an attacker started (the victim's calendar would
  land in the attacker's timum) — and the reverse, login CSRF — must be refused: nothing linked,
  no account or session stored.
* A forged admin-consent answer (no state of ours, another tenant than the state names) must
  record nothing.
* The error page of a forged connect link must not link to an address taken from the link.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from devtools.sandbox.browser import FormBrowser, sign_in
from devtools.sandbox.seed import tenant_id_for
from devtools.stack import Stack, running_stack
from shared.connect.store import AUTHFLOWS, SESSIONS
from shared.repos.accounts import ACCOUNTS, TENANTS, TenantRepository

ATTACKER_PROVIDER = "prov-attacker"
ATTACKER_RESOURCE = "res-attacker"
VICTIM = "anna.weber@praxis-sonnenschein.example"
ATTACKER = "jonas.becker@praxis-sonnenschein.example"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack(seed_demo=True) as running:
        running.ensure_resource(ATTACKER_PROVIDER, ATTACKER_RESOURCE, "Angreifer")
        yield running


def _rows(stack: Stack, table: str) -> list[Any]:
    async def read() -> list[Any]:
        return list(await stack.services().storage.table(table).query())

    return stack.run(read())


def _start(stack: Stack, client: httpx.Client) -> httpx.Response:
    response = client.get(stack.timum.connect_url(ATTACKER_PROVIDER, ATTACKER_RESOURCE))
    assert response.status_code == 302, response.text[:300]
    return response


def _post_answer(stack: Stack, client: httpx.Client, answer: dict[str, str]) -> httpx.Response:
    return client.post(stack.api_url("oauth/callback"), data=answer)


def _nothing_linked(stack: Stack, before_accounts: int) -> None:
    assert stack.link(ATTACKER_PROVIDER, ATTACKER_RESOURCE) is None
    assert len(_rows(stack, ACCOUNTS)) == before_accounts
    assert _rows(stack, SESSIONS) == []


def test_the_binding_cookie_is_http_only_secure_same_site_none_and_only_its_hash_is_stored(stack: Stack) -> None:
    with stack.http(follow_redirects=False) as browser:
        response = _start(stack, browser)
    cookie = response.headers["set-cookie"]
    name, _, rest = cookie.partition("=")
    value = rest.split(";", 1)[0]
    assert re.fullmatch(r"__Host-timum-signin-[0-9a-f]{16}", name)
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "secure", "path", "max-age", "samesite"} <= attributes and "domain" not in attributes
    assert "SameSite=None" in cookie and "Path=/;" in cookie
    assert len(value) >= 40
    state = parse_qs(urlsplit(response.headers["location"]).query)["state"][0]
    # the flow row holds neither the binding nor the state in plain text
    stored = json.dumps([dict(r) for r in _rows(stack, AUTHFLOWS)], default=str)
    assert value not in stored and state not in stored


@pytest.mark.parametrize("victim_cookie", ["none", "own"])
def test_a_victims_browser_cannot_finish_the_attackers_sign_in(stack: Stack, victim_cookie: str) -> None:
    accounts = len(_rows(stack, ACCOUNTS))
    with stack.http(follow_redirects=False) as attacker, stack.http(follow_redirects=False) as victim:
        started = _start(stack, attacker)
        if victim_cookie == "own":
            # The victim has a binding cookie of the same name (e.g. planted): its value differs.
            name = started.headers["set-cookie"].split("=", 1)[0]
            victim.cookies.set(name, "planted-" + "x" * 40, domain="127.0.0.1", path="/")
        # The attacker sends the Microsoft sign-in URL to the victim, who signs in.
        answer = sign_in(FormBrowser(victim), started.headers["location"], VICTIM)
        assert "code" in answer
        refused = _post_answer(stack, victim, answer)
    assert refused.status_code == 400
    assert "in einem anderen Browser begonnen" in refused.text
    assert "Zurück zu timum" in refused.text
    assert "set-cookie" not in refused.headers   # no chooser session for the victim
    _nothing_linked(stack, accounts)


def test_login_csrf_the_attackers_answer_in_the_victims_browser_is_refused(stack: Stack) -> None:
    """The attacker signs in with their own account, stops before the callback and makes the
    victim's browser post the answer: the victim would otherwise work in the attacker's account."""
    accounts = len(_rows(stack, ACCOUNTS))
    with stack.http(follow_redirects=False) as attacker, stack.http(follow_redirects=False) as victim:
        started = _start(stack, attacker)
        answer = sign_in(FormBrowser(attacker), started.headers["location"], ATTACKER)
        refused = _post_answer(stack, victim, answer)
        assert refused.status_code == 400 and "anderen Browser" in refused.text
        _nothing_linked(stack, accounts)
        # The starting browser still finishes its own sign-in: the refusal consumed nothing.
        finished = _post_answer(stack, attacker, answer)
        assert finished.status_code == 303 and finished.headers["location"].endswith("/api/connect/calendars")


def _consent_state(stack: Stack, tenant: str) -> str:
    from datetime import timedelta

    from shared.connect import flow
    from shared.connect.store import ConnectContext, PendingFlow

    async def put() -> str:
        services = stack.services()
        state = "st-" + base64.urlsafe_b64encode(tenant.encode()).decode().rstrip("=") + "-x" * 8
        context = ConnectContext(ATTACKER_PROVIDER, None, "de", stack.timum.provider_page_url(ATTACKER_PROVIDER))
        await flow.AuthFlowRepository(services.storage, flow.cipher_for(services.settings)).put(
            state, PendingFlow(kind="adminconsent", context=context, flow={}, tenant=tenant),
            expires_at=services.clock() + timedelta(hours=1))
        return state

    return stack.run(put())


def test_forged_admin_consent_answers_record_nothing(stack: Stack) -> None:
    # Klinik Nord forbids user consent and has no admin consent: a forged answer must not make
    # the service believe it has app-only access there.
    nord = tenant_id_for("klinik-nord.example")
    sonnenschein = tenant_id_for("praxis-sonnenschein.example")
    stack.sandbox.identity.set_admin_consent(sonnenschein, True)
    with stack.http(follow_redirects=False) as client:
        forged = client.get(stack.api_url("oauth/admin-callback") + "?" + urlencode(
            {"admin_consent": "True", "tenant": sonnenschein}))
        assert forged.status_code == 400 and "Zustimmungslink ist ungültig" in forged.text
        # A genuine request for Klinik Nord, answered with another (consented) tenant.
        state = _consent_state(stack, nord)
        other = client.get(stack.api_url("oauth/admin-callback") + "?" + urlencode(
            {"admin_consent": "True", "tenant": sonnenschein, "state": state}))
        assert other.status_code == 400
        assert not stack.run(TenantRepository(stack.services().storage).has_admin_consent(sonnenschein))
        assert _rows(stack, TENANTS) == []
        # The right tenant, really consented: recorded once; the state is then spent.
        stack.sandbox.identity.set_admin_consent(nord, True)
        good = client.get(stack.api_url("oauth/admin-callback") + "?" + urlencode(
            {"admin_consent": "True", "tenant": nord, "state": state}))
        assert good.status_code == 200 and "Zugriff freigegeben" in good.text
        again = client.get(stack.api_url("oauth/admin-callback") + "?" + urlencode(
            {"admin_consent": "True", "tenant": nord, "state": state}))
        assert again.status_code == 400
    assert [r.pk for r in _rows(stack, TENANTS)] == [nord]
    stack.sandbox.identity.set_admin_consent(nord, False)


def test_a_forged_links_error_page_takes_no_return_address_from_it(stack: Stack) -> None:
    # An allowed prefix, but not the address timum put in a signed link: an attacker's page
    # dressed up as timum's would otherwise be one click away.
    lure = stack.timum.provider_page_url(ATTACKER_PROVIDER) + "/phish"
    payload = base64.urlsafe_b64encode(json.dumps(
        {"v": 1, "pid": ATTACKER_PROVIDER, "loc": "de", "ret": lure, "exp": 9_999_999_999,
         "nonce": "n" * 24}).encode()).decode().rstrip("=")
    with stack.http(follow_redirects=False) as client:
        page = client.get(stack.api_url("connect") + "?token=" + payload + ".AAAA")
    assert page.status_code == 400 and "ungültig" in page.text
    assert lure not in page.text
    assert 'href="' + stack.timum.provider_page_url(ATTACKER_PROVIDER).split("/providers/")[0] in page.text
