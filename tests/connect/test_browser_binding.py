"""The sign-in binding cookie and the sign-in outcome pages in a real headless Chromium, against
the local host on Azurite and the sandbox (the fixtures of ``tests/connect/conftest.py``).

The service runs on http://127.0.0.1 here. Chromium treats loopback as a secure context: it
stores the ``__Host-`` / ``Secure`` / ``SameSite=None`` binding cookie from plain http and sends
it along with Microsoft's cross-site form post — which these tests prove, so the local setup runs
exactly the production cookie.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from devtools.sandbox.seed import tenant_id_for
from tests.support.browser import (
    ANNA,
    SONNENSCHEIN,
    BrowserStack,
    accept_consent_if_asked,
    pick_account,
    wait_for_chooser,
)

pytestmark = pytest.mark.browser

LENA = "lena.hoffmann@praxis-sonnenschein.example"


def _binding_cookies(page: Any) -> list[dict[str, Any]]:
    return [c for c in page.context.cookies() if c["name"].startswith("__Host-timum-signin-")]


def test_chromium_keeps_the_binding_cookie_on_loopback_and_the_sign_in_finishes(stack: BrowserStack,
                                                                               page_factory: Any) -> None:
    page = page_factory()
    page.goto(stack.timum_page(SONNENSCHEIN))
    page.locator("#resource-res-anna-weber button.connect-resource").click()
    page.wait_for_url(re.compile(r"/oauth2/v2.0/authorize"))
    [cookie] = _binding_cookies(page)
    assert (cookie["domain"], cookie["path"]) == ("127.0.0.1", "/")
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "None"
    pick_account(page, ANNA)
    accept_consent_if_asked(page)
    # Microsoft's form post comes from another site (https://127.0.0.1:<port>): the cookie came along.
    wait_for_chooser(page)
    assert "Ziel in timum: die Ressource „Dr. Anna Weber“" in page.content()
    # The sign-in is over: the answer that opened the chooser took the binding cookie away.
    assert _binding_cookies(page) == []


def test_a_victims_browser_cannot_finish_someone_elses_sign_in(stack: BrowserStack, page_factory: Any) -> None:
    attacker = page_factory()
    attacker.goto(stack.timum_page(SONNENSCHEIN))
    attacker.locator("#resource-res-anna-weber button.connect-resource").click()
    attacker.wait_for_url(re.compile(r"/oauth2/v2.0/authorize"))
    lure = attacker.url

    victim = page_factory()
    victim.goto(lure)
    pick_account(victim, LENA)
    accept_consent_if_asked(victim)
    victim.wait_for_url(re.compile(r"/api/oauth/callback"))
    assert victim.locator("h1").inner_text() == "Das hat nicht geklappt"
    assert "Diese Anmeldung wurde in einem anderen Browser begonnen." in victim.content()
    back = victim.get_by_role("link", name="Zurück zu timum").get_attribute("href")
    assert back == f"{stack.sandbox.http_base}/timum/"
    assert not [c for c in victim.context.cookies() if "timum-connect" in c["name"]]   # no chooser session


def test_declined_consent_has_its_own_page_and_a_fresh_sign_in(stack: BrowserStack, page_factory: Any) -> None:
    identity = stack.sandbox.identity
    identity.set_admin_consent(tenant_id_for("praxis-sonnenschein.example"), False)
    identity.set_user_consent(LENA, False)
    page = page_factory()
    page.goto(stack.timum_page(SONNENSCHEIN))
    page.locator("#outlook-connect").click()
    pick_account(page, LENA)
    [started] = _binding_cookies(page)
    page.locator("button[name=decision][value=cancel]").click()
    page.wait_for_url(re.compile(r"/api/oauth/callback"))
    content = page.content()
    assert "Sie haben die Berechtigungen abgelehnt." in content
    assert "Administrator" not in content
    retry = page.get_by_role("link", name="Erneut anmelden")
    assert retry.get_attribute("href", timeout=1000).startswith(stack.sandbox.https_base)
    assert page.get_by_role("link", name="Zurück zu timum").count() == 1
    # The declined sign-in's cookie is gone; the retry's own one is in place.
    [retry_cookie] = _binding_cookies(page)
    assert retry_cookie["name"] != started["name"]
    # She changes her mind: the retry is a new sign-in, bound to this browser, ending in the chooser.
    retry.click()
    pick_account(page, LENA)
    page.locator("button[name=decision][value=accept]").click()
    wait_for_chooser(page)
    assert page.locator("h1").inner_text() == "Outlook-Kalender auswählen"
    assert _binding_cookies(page) == []
