"""In a real headless Chromium: a provider adds a calendar shared with them read-only as one that
only blocks the resource's times, and sees the hint on Outlook's all-day events."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.domain import Link
from shared.repos.links import LinkRepository
from shared.storage.azure import AzureStorage
from tests.connect.conftest import sandbox  # noqa: F401 - fixture
from tests.connect.test_browser import (  # noqa: F401 - fixtures
    ANNA,
    SONNENSCHEIN,
    Stack,
    _accept_consent_if_asked,
    _chooser,
    _pick_account,
    browser,
    page_factory,
    stack,
)

pytestmark = pytest.mark.browser


def _block_links(stack: Stack, resource: str) -> list[Link]:  # noqa: F811
    async def read() -> list[Link]:
        storage = AzureStorage(connection_string=stack.storage_connection)
        try:
            return await LinkRepository(storage).list_block_only(SONNENSCHEIN, resource)
        finally:
            await storage.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, read()).result()


def test_add_a_read_only_calendar_that_only_blocks(stack: Stack, page_factory: Any) -> None:  # noqa: F811
    graph = stack.sandbox.graph.state  # type: ignore[union-attr]
    jonas = graph.user("jonas.becker@praxis-sonnenschein.example")
    anna = graph.user(ANNA)
    private = graph.create_calendar(jonas.id, "Jonas privat (nur lesen)")
    graph.share_calendar(private.id, anna.id, can_edit=False, accept=True)

    page = page_factory()
    page.goto(stack.timum_page(SONNENSCHEIN))
    page.locator("#resource-res-anna-weber button.connect-resource").click()
    _pick_account(page, ANNA)
    _accept_consent_if_asked(page)
    _chooser(page)

    assert "Ganztägige Termine gelten in Outlook standardmäßig als „frei“" in page.content()
    read_only = page.get_by_label(re.compile("Jonas privat"))
    assert read_only.is_enabled()
    label = page.locator("label", has_text="Jonas privat").inner_text()
    assert "Nur Lesezugriff – kann nur Zeiten blockieren." in label
    read_only.check()
    page.get_by_role("button", name="Nur Zeiten blockieren für „Dr. Anna Weber“").click()

    page.wait_for_url(re.compile(r"/timum/providers/prov-sonnenschein\?"))
    query = parse_qs(urlsplit(page.url).query)
    assert query["outlook"] == ["connected"] and query["resourceId"] == ["res-anna-weber"]
    [block] = _block_links(stack, "res-anna-weber")
    assert block.calendar_name == "Jonas privat (nur lesen)" and block.block_only
