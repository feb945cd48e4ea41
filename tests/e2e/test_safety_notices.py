"""Conflict notices end to end: an Outlook event that lands on a confirmed booking reaches the
sandbox timum as one ``conflict`` status webhook, and its removal as one ``resolved``; links carry
``syncedThrough`` in the links API and in the status webhooks."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

from devtools.stack import Stack
from shared.connect.links_api import sign_api_request
from tests.support.e2e import ANNA, Names, berlin


def _notices(stack: Stack, names: Names, kind: str) -> list[dict[str, Any]]:
    return [r.payload["data"] for r in stack.timum.list_received_statuses()
            if r.resource_id == names.resource and r.payload["data"].get("kind") == kind and not r.duplicate]


def _watch_until(stack: Stack, names: Names, kind: str, count: int) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]] | None:
        assert stack.fire("watch_links").status_code in (200, 202)
        found = _notices(stack, names, kind)
        return found if len(found) >= count else None

    return stack.wait_for(ready, what=f"{count} {kind} notice(s)")


def test_an_outlook_event_on_a_booking_is_a_conflict_until_it_goes(stack: Stack, names: Names) -> None:
    linked = stack.link_app_only(ANNA, names.calendar, names.provider, names.resource)
    start = berlin(22, 10)
    made = stack.timum.make_booking(names.provider, names.resource, start, start + timedelta(minutes=45))
    # The booking's own Outlook event is no conflict: wait until it is written and synced.
    stack.wait_for(lambda: any(made.id in str(e.ext_props) for e in stack.graph.calendar_events(linked.calendar_id))
                   or None, what="the booking's Outlook event")
    event = stack.graph.create_event(linked.user.id, "Privattermin", start + timedelta(minutes=30),
                                     start + timedelta(minutes=90), calendar_id=linked.calendar_id)
    stack.wait_for(lambda: stack.timum.list_slots(names.provider, names.resource, "outlook") or None,
                   what="the event's blocked slot")

    [conflict] = _watch_until(stack, names, "conflict", 1)
    assert conflict["bookingId"] == made.id and conflict["status"] == "ok"
    assert "title" not in conflict and conflict["syncedThrough"]
    assert stack.fire("watch_links").status_code in (200, 202)
    assert len(_notices(stack, names, "conflict")) == 1, "told once"

    stack.graph.delete_event(event.immutable_id)
    stack.wait_for(lambda: not stack.timum.list_slots(names.provider, names.resource, "outlook") or None,
                   what="the blocked slot removed")
    [resolved] = _watch_until(stack, names, "resolved", 1)
    assert resolved["conflictId"] == conflict["conflictId"]


def test_links_api_reports_synced_through(stack: Stack, names: Names) -> None:
    stack.link_app_only(ANNA, names.calendar, names.provider, names.resource)
    path = f"/api/providers/{names.provider}/links"
    headers = sign_api_request("GET", path, names.provider, b"", list(stack.settings.timum_webhook_secrets),
                               timestamp=int(time.time()))
    headers["x-functions-key"] = stack.env["FUNCTION_KEY"]
    with stack.http() as client:
        response = client.get(stack.base_url + path, headers=headers)
    assert response.status_code == 200
    [link] = [lk for lk in json.loads(response.text)["links"] if lk["resourceId"] == names.resource]
    assert link["syncedThrough"] is not None


def test_a_lagging_link_is_stale_until_it_catches_up(stack: Stack, names: Names) -> None:
    """A link whose subscription lapsed and whose last round is two hours old (the clock moved on,
    simulated in its row) is announced stale; timum pauses online booking; a round makes it fresh."""
    from dataclasses import replace
    from datetime import UTC, datetime

    from shared.messages import SYNC_QUEUE, SyncMessage, SyncReason
    from shared.repos.links import LinkRepository

    stack.link_app_only(ANNA, names.calendar, names.provider, names.resource)

    async def age_it() -> None:
        repo = LinkRepository(stack.storage)
        link = await repo.require(names.key)
        past = datetime.now(UTC) - timedelta(hours=2)
        await repo.save(replace(link, last_sync_at=past, subscription_expires_at=past))

    stack.run(age_it())
    [stale] = _watch_until(stack, names, "stale", 1)
    assert stale["staleAfterMinutes"] == 60 and stale["status"] == "ok"
    assert stack.timum.resource(names.provider, names.resource).stale

    stack.run(stack.storage.queue(SYNC_QUEUE).send(
        SyncMessage(link=str(names.key), reason=SyncReason.RESYNC, full=True).to_json()))
    [fresh] = _watch_until(stack, names, "fresh", 1)
    assert fresh["syncedThrough"] > stale["syncedThrough"]
    assert not stack.timum.resource(names.provider, names.resource).stale
    assert len(_notices(stack, names, "stale")) == 1
