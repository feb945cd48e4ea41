"""What the browser tests build: headless Chromium with its pages, the steps a person takes on the
sandbox's Microsoft pages, and the connect browser tests' service (the local Functions host on an
Azurite of its own, the real adapters pointed at the sandbox). Fixtures: ``tests/connect/conftest.py``
and ``tests/e2e/test_newcomer_browser.py``."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from devtools.devhost import host as devhost_host
from devtools.sandbox.server import RunningSandbox
from shared import wiring
from shared.domain import Link, LinkKey
from shared.repos.links import LinkRepository
from shared.storage.azure import AzureStorage
from tests.support.connect_world import CONNECT_SECRET, KEY_ONE, SERVICE_PORT, SERVICE_URL, WEBHOOK_SECRET
from tests.support.storage import running_azurite

T = TypeVar("T")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--ignore-certificate-errors",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
#: seeded sandbox timum providers and the mailbox most browser tests sign in with
SONNENSCHEIN = "prov-sonnenschein"
KLINIK_NORD = "prov-klinik-nord"
ANNA = "anna.weber@praxis-sonnenschein.example"


def require_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: make browser installs it")


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium driven by Playwright's sync API, closed afterwards."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def page_factory(browser: Any, *, timeout_ms: int = 20_000, **context_options: Any) -> Iterator[Callable[..., Any]]:
    """``make(locale=, javascript=)`` → a page in a fresh browser context (own cookies); every
    context is closed afterwards. ``context_options`` go to each context (e.g. permissions)."""
    contexts: list[Any] = []

    def make(*, locale: str = "de-DE", javascript: bool = True) -> Any:
        context = browser.new_context(locale=locale, ignore_https_errors=True, java_script_enabled=javascript,
                                      **context_options)
        context.set_default_timeout(timeout_ms)
        contexts.append(context)
        return context.new_page()

    try:
        yield make
    finally:
        for context in contexts:
            context.close()


# --- a person on the sandbox's Microsoft pages ----------------------------------------------------

def pick_account(page: Any, mail: str) -> None:
    page.locator("button.account", has_text=mail).click()


def accept_consent_if_asked(page: Any) -> None:
    consent = page.locator("button[name=decision][value=accept]")
    if consent.count():
        consent.click()


def wait_for_chooser(page: Any) -> None:
    page.wait_for_url(re.compile(r"/api/connect/calendars$"))


def open_chooser_for_resource(page: Any, stack: BrowserStack, resource_id: str, mail: str = ANNA) -> None:
    """From the resource's button in sandbox timum through sign-in and consent to the chooser."""
    page.goto(stack.timum_page(SONNENSCHEIN))
    page.locator(f"#resource-{resource_id} button.connect-resource").click()
    pick_account(page, mail)
    accept_consent_if_asked(page)
    wait_for_chooser(page)


# --- the connect browser tests' service ------------------------------------------------------------

@dataclass
class BrowserStack:
    sandbox: RunningSandbox
    host: devhost_host.HostHandle
    storage_connection: str

    def timum_page(self, provider: str, lang: str = "de") -> str:
        return f"{self.sandbox.http_base}/timum/providers/{provider}" + ("?lang=en" if lang == "en" else "")

    def read_storage(self, read: Callable[[AzureStorage], Awaitable[T]]) -> T:
        """``read`` on the service's storage, from a thread of its own: Playwright's sync API keeps
        an event loop running in the test's thread."""
        async def run() -> T:
            storage = AzureStorage(connection_string=self.storage_connection)
            try:
                return await read(storage)
            finally:
                await storage.close()

        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, run()).result()

    def link(self, provider: str, resource: str) -> Link | None:
        return self.read_storage(lambda storage: LinkRepository(storage).get(LinkKey(provider, resource)))


def browser_stack_env(sandbox: RunningSandbox, storage_connection: str) -> dict[str, str]:
    return {
        "AzureWebJobsStorage": storage_connection,
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


@contextmanager
def browser_stack(sandbox: RunningSandbox) -> Iterator[BrowserStack]:
    """The connect blueprints (``tests/connect/browser_app.py``) in the local host on
    ``SERVICE_PORT``, on an Azurite of their own, with the process environment the app reads."""
    require_chromium()
    with running_azurite() as store:
        env = browser_stack_env(sandbox, store.connection_string)
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            wiring.reset()
            from tests.connect.browser_app import app

            host = devhost_host.run_in_thread(app, port=SERVICE_PORT, env=env)
            try:
                yield BrowserStack(sandbox, host, store.connection_string)
            finally:
                host.stop()
                wiring.reset()
