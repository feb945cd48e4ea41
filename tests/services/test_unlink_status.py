"""Unlinking tells timum: an ``unlinked`` link-status webhook, exactly once, even when the first
POST fails (the teardown worker sends it again with the same delivery id)."""

from __future__ import annotations

from shared.connect.status import LINK_STATUS, forget
from shared.connect.teardown import unlink
from shared.errors import TransientError
from shared.messages import LINK_ADMIN_QUEUE, AdminMessage
from shared.services.subscriptions import ensure_subscription, handle_admin_message
from shared.storage.base import encode_key
from tests.support.outlook_world import KEY, World, queued


def _statuses(world: World) -> list[dict[str, object]]:
    return [e["data"] for e in world.timum.status_webhooks]  # type: ignore[misc]


async def test_unlink_sends_one_unlinked_status(world: World) -> None:
    link = await ensure_subscription(world.services, await world.link())
    await unlink(world.services, link)
    await forget(world.services, link)
    [event] = world.timum.status_webhooks
    assert event["data"] == {"providerId": KEY.provider_id, "resourceId": KEY.resource_id, "status": "unlinked",
                             "mode": "delegated", "reason": "", "calendarName": "Behandlungsraum 1"}
    assert (encode_key(str(KEY)), "") not in world.storage.table(LINK_STATUS).rows  # type: ignore[attr-defined]
    # The teardown worker finds it delivered and sends nothing more.
    for raw in queued(world, LINK_ADMIN_QUEUE):
        await handle_admin_message(world.services, AdminMessage.parse(raw))
    assert len(world.timum.status_webhooks) == 1


async def test_failed_unlink_webhook_is_sent_by_the_teardown_worker(world: World) -> None:
    link = await world.link()  # polling-like: no subscription, so nothing else for the worker to do
    world.timum.fail_next(TransientError("timum is down"), op="send_link_status")
    await unlink(world.services, link)
    await forget(world.services, link)  # the links API forgets; a pending unlinked status stays
    assert world.timum.status_webhooks == []
    [message] = queued(world, LINK_ADMIN_QUEUE)
    await handle_admin_message(world.services, AdminMessage.parse(message))
    assert [d["status"] for d in _statuses(world)] == ["unlinked"]
    await handle_admin_message(world.services, AdminMessage.parse(message))  # a duplicate delivery
    assert len(world.timum.status_webhooks) == 1


async def test_relink_sends_no_unlinked_status(world: World) -> None:
    link = await ensure_subscription(world.services, await world.link())
    await unlink(world.services, link, keep_row=True, keep_claim=True)
    assert all(d["status"] != "unlinked" for d in _statuses(world))
