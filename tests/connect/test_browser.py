"""The whole connect flow in a real headless Chromium: sandbox timum's buttons → signed link →
sandbox Microsoft sign-in → chooser → back in timum; the admin-consent path; the error pages.

The service runs in the local Functions host on a dedicated Azurite, with the real adapters
pointed at the sandbox (identity platform, Graph, timum)."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from devtools import azurite as azurite_mod
from devtools.devhost.host import HostHandle, run_in_thread
from devtools.sandbox.seed import tenant_id_for
from devtools.sandbox.server import RunningSandbox
from shared import wiring
from shared.domain import LinkKey, LinkMode, SyncMode
from shared.repos.links import LinkRepository
from shared.storage.azure import AzureStorage
from tests.connect.conftest import CONNECT_SECRET, KEY_ONE, SERVICE_PORT, SERVICE_URL, WEBHOOK_SECRET

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--ignore-certificate-errors",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
SONNENSCHEIN = "prov-sonnenschein"
KLINIK_NORD = "prov-klinik-nord"
ANNA = "anna.weber@praxis-sonnenschein.example"
TOBIAS = "tobias.wagner@klinik-nord.example"
PETRA = "petra.schulz@klinik-nord.example"


@dataclass
class Stack:
    sandbox: RunningSandbox
    host: HostHandle
    storage_connection: str

    def timum_page(self, provider: str, lang: str = "de") -> str:
        return f"{self.sandbox.http_base}/timum/providers/{provider}" + ("?lang=en" if lang == "en" else "")

    def link(self, provider: str, resource: str) -> Any:
        async def read() -> Any:
            storage = AzureStorage(connection_string=self.storage_connection)
            try:
                return await LinkRepository(storage).get(LinkKey(provider, resource))
            finally:
                await storage.close()

        # Playwright's sync API keeps an event loop running in this thread: read from another one.
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, read()).result()


@pytest.fixture(scope="module")
def stack(sandbox: RunningSandbox) -> Iterator[Stack]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: make browser installs it")
    store = azurite_mod.start()
    env = {
        "AzureWebJobsStorage": store.connection_string,
        "SERVICE_BASE_URL": SERVICE_URL,
        "ENTRA_CLIENT_ID": sandbox.config.client_id,
        "ENTRA_CLIENT_SECRET": sandbox.config.client_secret,
        "ENTRA_AUTHORITY_HOST": sandbox.https_base,
        "GRAPH_BASE_URL": sandbox.config.graph_base_url,
        "CA_BUNDLE": sandbox.ca_path,
        "TOKEN_ENCRYPTION_KEYS": KEY_ONE,
        "TIMUM_API_BASE_URL": sandbox.config.timum_api_base_url,
        "TIMUM_API_KEY": sandbox.config.timum_api_key,
        "TIMUM_WEBHOOK_SECRETS": WEBHOOK_SECRET,
        "TIMUM_CONNECT_SECRETS": CONNECT_SECRET,
        "TIMUM_RETURN_URL_ALLOWLIST": f"{sandbox.http_base}/timum/",
        "TIMUM_STATUS_WEBHOOK_URL": f"{sandbox.http_base}/timum/v1/webhooks/link-status",
        "FUNCTION_KEY": "browser-test-function-key",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        wiring.reset()
        from tests.connect.browser_app import app

        host = run_in_thread(app, port=SERVICE_PORT, env=env)
        try:
            yield Stack(sandbox, host, store.connection_string)
        finally:
            host.stop()
            wiring.reset()
            store.stop()


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page_factory(browser: Any) -> Iterator[Any]:
    contexts: list[Any] = []

    def make(*, locale: str = "de-DE", javascript: bool = True) -> Any:
        context = browser.new_context(locale=locale, ignore_https_errors=True, java_script_enabled=javascript)
        context.set_default_timeout(20_000)
        contexts.append(context)
        return context.new_page()

    try:
        yield make
    finally:
        for context in contexts:
            context.close()


def _pick_account(page: Any, mail: str) -> None:
    page.locator("button.account", has_text=mail).click()


def _accept_consent_if_asked(page: Any) -> None:
    consent = page.locator("button[name=decision][value=accept]")
    if consent.count():
        consent.click()


def _chooser(page: Any) -> None:
    page.wait_for_url(re.compile(r"/api/connect/calendars$"))


def test_link_the_resource_from_the_timum_button(stack: Stack, page_factory: Any) -> None:
    page = page_factory()
    page.goto(stack.timum_page(SONNENSCHEIN))
    page.locator("#resource-res-anna-weber button.connect-resource").click()
    _pick_account(page, ANNA)
    _accept_consent_if_asked(page)
    _chooser(page)

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


def test_create_a_resource_from_a_calendar_without_javascript(stack: Stack, page_factory: Any) -> None:
    page = page_factory(locale="en-GB", javascript=False)
    page.goto(stack.timum_page(SONNENSCHEIN, lang="en"))
    page.locator("#outlook-connect").click()
    _pick_account(page, ANNA)
    _accept_consent_if_asked(page)
    # form_post without JavaScript: the user presses "Continue"
    page.get_by_role("button", name=re.compile("Weiter|Continue")).click()
    _chooser(page)
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


def test_admin_consent_path_for_a_tenant_that_forbids_user_consent(stack: Stack, page_factory: Any) -> None:
    identity = stack.sandbox.identity
    nord = tenant_id_for("klinik-nord.example")
    identity.set_admin_consent(nord, False)
    for user in (TOBIAS, PETRA):
        identity.set_user_consent(user, False)

    page = page_factory()
    page.goto(stack.timum_page(KLINIK_NORD))
    page.locator("#outlook-connect").click()
    _pick_account(page, TOBIAS)
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
    _pick_account(admin, PETRA)
    admin.get_by_role("button", name=re.compile("Akzeptieren|Accept")).click()
    admin.wait_for_url(re.compile(r"/api/oauth/admin-callback"))
    assert admin.locator("h1").inner_text() == "Zugriff freigegeben"

    # Tobias tries again and reaches the chooser without any consent screen.
    page.goto(stack.timum_page(KLINIK_NORD))
    page.locator("#outlook-connect").click()
    _pick_account(page, TOBIAS)
    _chooser(page)
    assert page.locator("h1").inner_text() == "Outlook-Kalender auswählen"


def test_error_pages(stack: Stack, page_factory: Any) -> None:
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
