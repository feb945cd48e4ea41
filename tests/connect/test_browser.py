"""The whole connect flow in a real headless Chromium: sandbox timum's buttons → signed link →
sandbox Microsoft sign-in → chooser → back in timum; the admin-consent path; the error pages.

The service runs in the local Functions host on a dedicated Azurite, with the real adapters
pointed at the sandbox (identity platform, Graph, timum)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from devtools.sandbox.seed import tenant_id_for
from shared.domain import LinkMode, SyncMode
from tests.support.browser import (
    ANNA,
    KLINIK_NORD,
    SONNENSCHEIN,
    BrowserStack,
    accept_consent_if_asked,
    open_chooser_for_resource,
    pick_account,
    wait_for_chooser,
)
from tests.support.connect_world import SERVICE_URL

pytestmark = pytest.mark.browser

TOBIAS = "tobias.wagner@klinik-nord.example"
PETRA = "petra.schulz@klinik-nord.example"


def test_link_the_resource_from_the_timum_button(stack: BrowserStack, page_factory: Any) -> None:
    page = page_factory()
    open_chooser_for_resource(page, stack, "res-anna-weber")

    assert page.locator("h1").inner_text() == "Outlook-Kalender auswählen"
    assert "„Dr. Anna Weber“" in page.locator("p.lead").inner_text()
    assert "Angemeldet bei Microsoft als Dr. Anna Weber" in page.content()
    # own and shared calendars, the shared one with its owner
    assert page.get_by_label(re.compile("Behandlungsraum 1")).count() == 1
    shared = page.locator("label", has_text="von Jonas Becker")
    assert shared.count() == 1
    # keyboard only: the default calendar is preselected; arrow down to "Behandlungsraum 1",
    # tab to the first action ("Mit „Dr. Anna Weber“ verbinden") and press Enter
    radios = page.locator("input[name=calendar]")
    assert radios.first.is_checked()
    radios.first.focus()
    page.keyboard.press("ArrowDown")
    assert page.get_by_label(re.compile("Behandlungsraum 1")).is_checked()
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent.trim()")
    assert focused == "Mit „Dr. Anna Weber“ verbinden"
    page.keyboard.press("Enter")

    page.wait_for_url(re.compile(r"/timum/providers/prov-sonnenschein\?"))
    query = parse_qs(urlsplit(page.url).query)
    assert query["outlook"] == ["connected"] and query["resourceId"] == ["res-anna-weber"]
    assert "Der Outlook-Kalender wurde verbunden." in page.content()
    link = stack.link(SONNENSCHEIN, "res-anna-weber")
    assert link is not None and link.calendar_name == "Behandlungsraum 1"
    assert (link.mode, link.sync_mode, link.time_zone) == (LinkMode.DELEGATED, SyncMode.PUSH, "Europe/Berlin")
    statuses = stack.sandbox.timum.state.wait_for_statuses(1)  # type: ignore[union-attr]
    assert any(s.resource_id == "res-anna-weber" and s.status == "ok" for s in statuses)


def test_create_a_resource_from_a_calendar_without_javascript(stack: BrowserStack, page_factory: Any) -> None:
    page = page_factory(locale="en-GB", javascript=False)
    page.goto(stack.timum_page(SONNENSCHEIN, lang="en"))
    page.locator("#outlook-connect").click()
    pick_account(page, ANNA)
    accept_consent_if_asked(page)
    # form_post without JavaScript: the user presses "Continue"
    page.get_by_role("button", name=re.compile("Weiter|Continue")).click()
    wait_for_chooser(page)
    assert page.locator("h1").inner_text() == "Choose an Outlook calendar"
    assert page.get_by_role("button", name=re.compile("^Connect to")).count() == 0
    # the calendar linked by the test before is marked and cannot be chosen
    taken = page.get_by_label(re.compile("Behandlungsraum 1"))
    assert taken.is_disabled()
    assert "Already connected to another timum resource." in page.content()
    page.get_by_label(re.compile("Behandlungsraum 2")).check()
    page.get_by_role("button", name="Create a new resource from the calendar").click()

    page.wait_for_url(re.compile(r"outlook=connected"))
    resource_id = parse_qs(urlsplit(page.url).query)["resourceId"][0]
    state = stack.sandbox.timum.state  # type: ignore[union-attr]
    assert state.resource(SONNENSCHEIN, resource_id).name == "Behandlungsraum 2"
    assert "The Outlook calendar is connected." in page.content()


def test_admin_consent_path_for_a_tenant_that_forbids_user_consent(stack: BrowserStack, page_factory: Any) -> None:
    identity = stack.sandbox.identity
    nord = tenant_id_for("klinik-nord.example")
    identity.set_admin_consent(nord, False)
    for user in (TOBIAS, PETRA):
        identity.set_user_consent(user, False)

    page = page_factory()
    page.goto(stack.timum_page(KLINIK_NORD))
    page.locator("#outlook-connect").click()
    pick_account(page, TOBIAS)
    # Microsoft: "approval required" — Tobias goes back to the app without consent
    page.get_by_role("button", name=re.compile("Ohne Zustimmung|without granting")).click()
    page.wait_for_url(re.compile(r"/api/oauth/callback"))
    assert page.locator("h1").inner_text() == "Ihr Microsoft-365-Administrator muss zustimmen"
    field = page.get_by_label("Link für Ihren Administrator")
    assert field.get_attribute("readonly") is not None
    consent_url = field.input_value()
    assert consent_url.startswith(f"{stack.sandbox.https_base}/organizations/v2.0/adminconsent?")
    assert page.locator("#copy-button").is_visible()             # JavaScript enhances the field
    mail = page.get_by_role("link", name="Per E-Mail weiterleiten").get_attribute("href")
    assert mail is not None and mail.startswith("mailto:?subject=")

    # The administrator opens the forwarded link in her own browser.
    admin = page_factory()
    admin.goto(consent_url)
    pick_account(admin, PETRA)
    admin.get_by_role("button", name=re.compile("Akzeptieren|Accept")).click()
    admin.wait_for_url(re.compile(r"/api/oauth/admin-callback"))
    assert admin.locator("h1").inner_text() == "Zugriff freigegeben"

    # Tobias tries again and reaches the chooser without any consent screen.
    page.goto(stack.timum_page(KLINIK_NORD))
    page.locator("#outlook-connect").click()
    pick_account(page, TOBIAS)
    wait_for_chooser(page)
    assert page.locator("h1").inner_text() == "Outlook-Kalender auswählen"


def test_error_pages(stack: BrowserStack, page_factory: Any) -> None:
    page = page_factory()
    connect_urls: list[str] = []
    page.on("request", lambda r: connect_urls.append(r.url) if "/api/connect?token=" in r.url else None)
    page.goto(stack.timum_page(SONNENSCHEIN))
    page.locator("#outlook-connect").click()
    page.wait_for_url(re.compile(r"/oauth2/v2.0/authorize"))
    [link] = connect_urls
    # the same link again
    page.goto(link)
    assert "Dieser Verbindungslink wurde bereits verwendet." in page.content()
    assert page.get_by_role("link", name="Zurück zu timum").get_attribute("href") == stack.timum_page(SONNENSCHEIN)
    # a changed link
    tampered = link[:-3] + ("abc" if not link.endswith("abc") else "xyz")
    response = page.goto(tampered)
    assert response is not None and response.status == 400
    assert "Der Verbindungslink ist ungültig." in page.content()
    # a chooser without a session
    response = page.goto(f"{SERVICE_URL}/api/connect/calendars")
    assert response is not None and response.status == 400
    assert "Ihre Sitzung ist abgelaufen." in page.content()
    # Microsoft's answer without a flow
    response = page.goto(f"{SERVICE_URL}/api/oauth/callback?state=unknown&code=x")
    assert response is not None and response.status == 400
    assert "Die Anmeldung ist abgelaufen oder wurde bereits abgeschlossen." in page.content()
