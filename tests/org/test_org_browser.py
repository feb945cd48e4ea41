"""The organisation path in a real headless Chromium: sandbox timum's "Für die ganze Organisation
verbinden" → administrator's sign-in → Microsoft's admin consent → the mapping page (search,
out-of-scope row, one "Übernehmen") → app-only push links stored in Azurite → back in timum.

Runs on the stack of the connect browser tests (local Functions host, dedicated Azurite, real
adapters against the sandbox; the fixtures of ``tests/connect/conftest.py``, shared by
``tests/org/conftest.py``)."""

from __future__ import annotations

import asyncio
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from devtools.sandbox.server import RunningSandbox
from shared.domain import LinkMode, SyncMode
from tests.support.browser import KLINIK_NORD, BrowserStack

pytestmark = pytest.mark.browser


def _tenant(running: RunningSandbox) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:6]
    directory = running.directory
    tenant = directory.add_tenant(f"Praxis {suffix}", f"praxis-{suffix}.example", user_consent_allowed=False)
    admin = directory.add_user(tenant.id, f"Petra Admin {suffix}", "petra", is_admin=True)
    staff = directory.add_user(tenant.id, f"Anna Org {suffix}", "anna")
    outside = directory.add_user(tenant.id, f"Jonas Extern {suffix}", "jonas")
    room = directory.add_resource_mailbox(tenant.id, f"Raum Süd {suffix}", "raum-sued", kind="room")
    return {"tenant": tenant, "admin": admin, "staff": staff, "outside": outside, "room": room, "suffix": suffix}


def _link_admin_worker(stack: BrowserStack, tenant_id: str) -> None:
    """What the press's ``OrgLinkMessage`` asks of the link-admin worker, which this host leaves
    out (``tests/connect/browser_app.py``: no queue workers acting on the side). The message itself
    and the worker's job are tested in ``test_bulk_background.py``."""
    from shared.adapters.timum_http import TimumHttpAdapter
    from shared.config import get_settings
    from shared.connect.credentials import RealGraphProvider
    from shared.context import Services
    from shared.org.service import run_queued_jobs
    from shared.storage.azure import AzureStorage

    async def run() -> None:
        settings = get_settings()
        storage = AzureStorage(connection_string=stack.storage_connection)
        timum = TimumHttpAdapter(settings.timum_api_base_url, settings.timum_api_key, settings.timum_webhook_secrets,
                                 settings.timum_status_webhook_url)
        try:
            await run_queued_jobs(Services(settings=settings, storage=storage, timum=timum,
                                           graph=RealGraphProvider(settings, storage)), KLINIK_NORD, tenant_id)
        finally:
            await timum.close()
            await storage.close()

    # Playwright's sync API keeps an event loop running in this thread: run on another one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, run()).result()


def test_an_administrator_maps_the_organisation_in_the_browser(stack: BrowserStack, page_factory: Any) -> None:
    org = _tenant(stack.sandbox)
    page = page_factory()
    page.goto(stack.timum_page(KLINIK_NORD))
    page.locator("#outlook-connect-org").click()
    # Microsoft: the administrator signs in (profile only), then grants the application permissions.
    page.locator("button.account", has_text=org["admin"].mail).click()
    accept = page.locator("button[name=decision][value=accept]")
    accept.click()
    page.wait_for_url(re.compile(r"/v2\.0/adminconsent"))
    assert "Kalender in allen Postfächern lesen und schreiben" in page.content()
    # The administrator limited the app to everyone but Jonas (RBAC for Applications).
    stack.sandbox.identity.set_app_mailbox_scope(org["tenant"].id, [org["admin"].id, org["staff"].id,
                                                                    org["room"].id])
    page.locator("button[name=decision][value=accept]").click()

    page.wait_for_url(re.compile(r"/api/connect/organisation$"))
    assert page.locator("h1").inner_text() == "Ganze Organisation verbinden"
    assert "Die Räume Ihrer Organisation auflisten (nur lesend)" in page.content()
    outside = page.locator("tr", has_text=org["outside"].mail)
    assert "Von Ihrem Administrator nicht freigegeben" in outside.inner_text()
    assert outside.locator("a", has_text="So ändert Ihr Administrator den Bereich").count() == 1

    # Search narrows the list to the room; it is marked as a room.
    page.get_by_label("Person, Raum oder E-Mail-Adresse suchen").fill(f"Raum Süd {org['suffix']}")
    page.get_by_role("button", name="Suchen").click()
    rows = page.locator("tbody tr")
    assert rows.count() == 1 and "Raum" in rows.first.inner_text()
    page.get_by_label(re.compile("timum-Ziel für „Kalender“")).select_option("new")
    page.get_by_role("button", name="Übernehmen").click()
    # Answered at once with the progress; the page polls its status while the worker links the
    # row, and shows the result page (its address names the press) when all is done.
    progress = page.locator("#progress-text")
    assert progress.inner_text().endswith("0 verbunden, 0 nicht, 1 in Arbeit.")
    _link_admin_worker(stack, org["tenant"].id)
    page.wait_for_url(re.compile(r"/api/connect/organisation\?.*since=\d+"), timeout=30_000)
    assert page.locator("#summary").inner_text() == "1 Kalender verbunden, 0 nicht."
    assert "Verbunden mit „Raum Süd" in page.locator("tbody").inner_text()

    # The staff member's calendar too, from the unfiltered list.
    page.get_by_label("Person, Raum oder E-Mail-Adresse suchen").fill(org["staff"].mail)
    page.get_by_role("button", name="Suchen").click()
    page.get_by_label(re.compile("timum-Ziel für „Kalender“")).select_option("new")
    page.get_by_label("Name der neuen Ressource").fill("Anna (Physiotherapie)")
    page.get_by_role("button", name="Übernehmen").click()
    page.wait_for_selector("#progress")
    _link_admin_worker(stack, org["tenant"].id)
    page.wait_for_url(re.compile(r"/api/connect/organisation\?.*since=\d+"), timeout=30_000)
    assert page.locator("#summary").inner_text() == "1 Kalender verbunden, 0 nicht."
    assert "Verbunden mit „Anna (Physiotherapie)“" in page.locator("tbody").inner_text()

    resources = {r.name: r.id for r in stack.sandbox.timum.state.list_resources(KLINIK_NORD)}  # type: ignore[union-attr]
    link = stack.link(KLINIK_NORD, resources["Anna (Physiotherapie)"])
    assert link is not None and (link.mode, link.sync_mode) == (LinkMode.APP_ONLY, SyncMode.PUSH)
    assert link.mailbox_id == org["staff"].id and link.tenant_id == org["tenant"].id
    page.get_by_role("link", name="Zurück zu timum").click()
    page.wait_for_url(re.compile(r"/timum/providers/prov-klinik-nord\?.*outlook=organisation"))
    assert "Die Zuordnung Ihrer Organisation wurde gespeichert." in page.content()
