"""In a real headless Chromium: a provider adds a calendar shared with them read-only as one that
only blocks the resource's times, and sees the hint on Outlook's all-day events."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.domain import Link
from shared.repos.links import LinkRepository
from tests.support.browser import ANNA, SONNENSCHEIN, BrowserStack, open_chooser_for_resource

pytestmark = pytest.mark.browser


def _block_links(stack: BrowserStack, resource: str) -> list[Link]:
    return stack.read_storage(lambda storage: LinkRepository(storage).list_block_only(SONNENSCHEIN, resource))


def test_add_a_read_only_calendar_that_only_blocks(stack: BrowserStack, page_factory: Any) -> None:
    graph = stack.sandbox.graph.state  # type: ignore[union-attr]
    jonas = graph.user("jonas.becker@praxis-sonnenschein.example")
    anna = graph.user(ANNA)
    private = graph.create_calendar(jonas.id, "Jonas privat (nur lesen)")
    graph.share_calendar(private.id, anna.id, can_edit=False, accept=True)

    page = page_factory()
    open_chooser_for_resource(page, stack, "res-anna-weber")

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
