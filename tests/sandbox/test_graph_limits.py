"""Limits of the Graph stand-in: four concurrent requests per app and mailbox, injected faults
(429/503 with Retry-After, hanging requests) that the SDK's retry handler must ride out, and
``$batch`` with ``dependsOn`` and 424 for failed dependencies."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest

from devtools.sandbox.graph.testing import World, tls_context

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:kiota_abstractions"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:msgraph")]
SCOPES = {"Calendars.ReadWrite", "User.Read"}


def raw(world: World, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=world.env.base_url, verify=tls_context(world.env.ca_path), timeout=30,
                             headers={"Authorization": f"Bearer {token}"})


async def test_fifth_concurrent_request_per_mailbox_is_throttled(world: World) -> None:
    state = world.env.graph.state
    state.add_fault("slow", path=r"/calendars$", delay=60)
    token = world.token(world.anna, scopes=SCOPES)
    async with raw(world, token) as http:
        held = [asyncio.create_task(http.get("/me/calendars")) for _ in range(4)]
        await asyncio.to_thread(state.wait_inflight, world.anna.id, 4)
        fifth = await http.get(f"/users/{world.anna.id}/events")
        assert fifth.status_code == 429
        assert fifth.json()["error"]["code"] == "ApplicationThrottled"
        assert "MailboxConcurrency" in fifth.json()["error"]["message"]
        assert fifth.headers["Retry-After"] == "1"
        other_mailbox = await http.get(f"/users/{world.jonas.id}")
        assert other_mailbox.status_code == 200, "the limit is per mailbox"
        state.release_held()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200] * 4
        assert (await http.get(f"/users/{world.anna.id}/events")).status_code == 200


async def test_injected_faults_and_the_sdk_retry_handler(world: World) -> None:
    state = world.env.graph.state
    client, http = world.client(world.token(world.anna, scopes=SCOPES))
    async with http:
        throttle = state.add_fault("429", path=r"/me/calendars$", count=1, retry_after=1)
        unavailable = state.add_fault("503", path=r"/me/calendars$", count=1, retry_after=1)
        calendars = await client.me.calendars.get()
        assert [c.name for c in calendars.value] == ["Kalender"]
        assert (throttle.hits, unavailable.hits) == (1, 1)
        assert not state.faults, "counted rules disappear once used up"

    async with raw(world, world.token(world.anna, scopes=SCOPES)) as plain:
        state.add_fault("504", path="/events", method="POST", count=1)
        resp = await plain.post("/me/events", json={
            "subject": "x", "start": {"dateTime": "2031-01-01T10:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2031-01-01T11:00:00", "timeZone": "UTC"}})
        assert resp.status_code == 504
        assert (await plain.get("/me/events")).json()["value"] == [], "a failed request changed nothing"
        state.add_fault("timeout", path="/me$", delay=0.2)
        assert (await plain.get("/me")).status_code == 504
    with pytest.raises(ValueError):
        state.add_fault("418")


async def test_batch_with_depends_on_and_failed_dependency(world: World) -> None:
    state = world.env.graph.state
    cal = state.default_calendar(world.anna.id)
    existing = state.create_event(world.anna.id, "Bestehend", datetime(2031, 8, 1, 9, tzinfo=UTC),
                                  datetime(2031, 8, 1, 10, tzinfo=UTC))
    body = {"subject": "Neu", "start": {"dateTime": "2031-08-02T09:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2031-08-02T10:00:00", "timeZone": "UTC"}}
    requests = [
        {"id": "1", "method": "POST", "url": f"/users/{world.anna.id}/calendars/{cal.id}/events", "body": body,
         "headers": {"Content-Type": "application/json"}},
        {"id": "2", "method": "GET", "url": f"/me/events/{existing.id}?$select=subject", "dependsOn": ["1"]},
        {"id": "3", "method": "DELETE", "url": "/me/events/AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0Adoesnotexist"},
        {"id": "4", "method": "GET", "url": "/me/calendars", "dependsOn": ["3"]},
        {"id": "5", "method": "GET", "url": f"/me/events/{existing.id}",
         "headers": {"Prefer": 'IdType="ImmutableId"'}},
    ]
    async with raw(world, world.token(world.anna, scopes=SCOPES)) as http:
        resp = await http.post("/$batch", json={"requests": requests})
        assert resp.status_code == 200
        by_id = {r["id"]: r for r in resp.json()["responses"]}
        assert by_id["1"]["status"] == 201 and by_id["1"]["body"]["subject"] == "Neu"
        assert by_id["2"]["status"] == 200 and by_id["2"]["body"]["subject"] == "Bestehend"
        assert "start" not in by_id["2"]["body"]
        assert by_id["3"]["status"] == 404
        assert by_id["4"]["status"] == 424
        assert by_id["5"]["body"]["id"] == existing.immutable_id
        assert by_id["1"]["headers"]["Content-Type"].startswith("application/json")

        too_many = [{"id": str(i), "method": "GET", "url": "/me"} for i in range(21)]
        resp = await http.post("/$batch", json={"requests": too_many})
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "BadRequest"
        twice = [{"id": "a", "method": "GET", "url": "/me"}, {"id": "A", "method": "GET", "url": "/me"}]
        assert (await http.post("/$batch", json={"requests": twice})).status_code == 400
    async with httpx.AsyncClient(base_url=world.env.base_url, verify=tls_context(world.env.ca_path)) as anonymous:
        assert (await anonymous.post("/$batch", json={"requests": []})).status_code == 401
