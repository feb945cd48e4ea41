"""The organisation path's binding cookies at the HTTP level: the administrator's sign-in binds a
cookie, its answer (off to admin consent) ends that sign-in and binds the consent with a second
one; the consent's answer ends that. Each goes with the answer that spends its flow; a refused
consent leaves the flow — the consent link may be opened again — and so its cookie."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import azure.functions as func

from shared.context import Services
from shared.http.connect_bp import handle_admin_callback
from tests.connect.test_binding_spent import Browser, _assert_cleared, _cookies
from tests.org.test_org_flow import admin_consents, org_token
from tests.support.connect_world import MicrosoftSignIn, http_request
from tests.support.org_world import OrgTenant


async def _to_consent(live: Services, microsoft: MicrosoftSignIn, org: OrgTenant) -> tuple[Browser, str, str]:
    """The administrator's sign-in, up to Microsoft's consent screen: (browser, consent URL,
    the consent's binding cookie name)."""
    browser = Browser(live)
    auth_uri, sign_in_cookie = await browser.start(org_token())
    answer = await browser.answer(microsoft.run(auth_uri, org.admin.mail))
    assert answer.status_code == 302 and "/adminconsent?" in answer.headers["Location"]
    _assert_cleared(answer, sign_in_cookie)
    [consent_cookie] = [n for n in _cookies(answer) if n != sign_in_cookie]
    assert browser.bindings() == {consent_cookie}
    return browser, answer.headers["Location"], consent_cookie


async def _admin_answer(browser: Browser, params: dict[str, str]) -> func.HttpResponse:
    cookie = "; ".join(f"{k}={v}" for k, v in browser.jar.items())
    response = await handle_admin_callback(browser.services, http_request(
        "GET", "/api/oauth/admin-callback", params=params, headers={"Cookie": cookie}))
    browser.keep(response)
    return response


async def test_the_consent_that_opens_the_mapping_page_clears_the_last_binding_cookie(
        live: Services, microsoft: MicrosoftSignIn, org_tenant: OrgTenant) -> None:
    browser, consent_url, consent_cookie = await _to_consent(live, microsoft, org_tenant)
    opened = await _admin_answer(browser, admin_consents(microsoft, consent_url))
    assert opened.status_code == 303 and opened.headers["Location"].endswith("/api/connect/organisation")
    _assert_cleared(opened, consent_cookie)
    assert browser.bindings() == set() and "timum-connect" in browser.jar   # the mapping page's session


async def test_a_refused_consent_keeps_the_cookie_for_the_link_opened_again(
        live: Services, microsoft: MicrosoftSignIn, org_tenant: OrgTenant) -> None:
    browser, consent_url, consent_cookie = await _to_consent(live, microsoft, org_tenant)
    page = microsoft.client.get(consent_url)
    back = microsoft._submit(page, "/adminconsent/consent", {"decision": "cancel"})
    refused = await _admin_answer(browser, {k: v[0] for k, v in
                                            parse_qs(urlsplit(back.headers["location"]).query).items()})
    assert refused.status_code == 400
    assert refused.headers.get_all("Set-Cookie") == []
    assert browser.bindings() == {consent_cookie}
    # The administrator opens the same link again and consents: straight to the mapping page.
    opened = await _admin_answer(browser, admin_consents(microsoft, consent_url))
    assert opened.status_code == 303 and opened.headers["Location"].endswith("/api/connect/organisation")
    _assert_cleared(opened, consent_cookie)
