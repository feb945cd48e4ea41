"""The sandbox timum inside the composed sandbox server: mounted, seeded, and reachable the way the
service reaches it (``TIMUM_API_BASE_URL`` = the sandbox's ``timum_api_base_url``)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx

from devtools.sandbox.server import RunningSandbox
from devtools.sandbox.timum.seed import ANNA_WEBER, SONNENSCHEIN
from shared.adapters.timum_http import TimumHttpAdapter
from shared.domain import BlockedSlot


async def test_adapter_works_against_the_composed_sandbox(sandbox: RunningSandbox) -> None:
    assert sandbox.timum is not None
    cfg, state = sandbox.config, sandbox.timum.state
    # Writes go to a provider of this test's own, so the demo practice stays as seeded for other tests.
    provider = "prov-" + uuid.uuid4().hex[:8]
    state.add_provider(provider, "Praxis am See")
    adapter = TimumHttpAdapter(cfg.timum_api_base_url, cfg.timum_api_key, cfg.timum_webhook_secrets,
                               f"{cfg.timum_api_base_url}/v1/webhooks/link-status", client=httpx.AsyncClient())
    try:
        demo = await adapter.get_resource(SONNENSCHEIN, ANNA_WEBER)
        assert demo is not None and demo["name"] == "Dr. Anna Weber"
        rid = await adapter.create_resource(provider, "Raum 3")
        start = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
        await adapter.put_blocked_slot(provider, rid, BlockedSlot("ol-1", start, start + timedelta(hours=1)))
        assert [s.external_id for s in await adapter.list_blocked_slots(provider, rid, source="outlook")] == ["ol-1"]
        await adapter.send_link_status({"providerId": provider, "resourceId": rid, "status": "ok",
                                        "mode": "delegated", "calendarName": "Kalender"})
        link = state.resource(provider, rid).link
        assert link is not None and link.status == "ok"
    finally:
        await adapter.close()


def test_pages_are_mounted_with_the_shared_stylesheet(sandbox: RunningSandbox) -> None:
    with httpx.Client(base_url=sandbox.http_base) as client:
        page = client.get(f"/timum/providers/{SONNENSCHEIN}")
        assert page.status_code == 200 and "Physiopraxis Sonnenschein" in page.text
        assert client.get("/_sandbox/static/sandbox.css").status_code == 200
