"""At most one live Graph subscription per link: racing set-ups (a reconnect sends two) keep the
first and delete the loser; the renewal timer deletes subscriptions no link names."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from shared.connect.teardown import unlink
from shared.repos.links import SubscriptionRepository
from shared.services.subscriptions import ORPHAN_GRACE, ensure_subscription, renew_expiring, resubscribe
from tests.support.outlook_world import KEY, MAILBOX, World


async def _indexed(world: World) -> set[str]:
    return {record.subscription_id for record, _ in await SubscriptionRepository(world.storage).list_all()}


async def test_two_set_ups_of_one_link_leave_one_subscription(world: World) -> None:
    # Both workers read the link before either saved (a reconnect queues two SETUPs).
    read_by_first, read_by_second = await world.link(), await world.link()
    first = await ensure_subscription(world.services, read_by_first)
    second = await ensure_subscription(world.services, read_by_second)
    assert first.subscription_id and second.subscription_id == first.subscription_id
    assert set(world.graph.subscriptions) == {first.subscription_id}
    assert await _indexed(world) == {first.subscription_id}
    # …and unlinking leaves none behind.
    await unlink(world.services, await world.link())
    assert await _indexed(world) == set()


async def test_concurrent_resubscribes_keep_one(world: World) -> None:
    original = (await ensure_subscription(world.services, await world.link())).subscription_id
    # Two workers, each with its own copy of the link as stored (duplicate lifecycle messages).
    await asyncio.gather(resubscribe(world.services, await world.link()),
                         resubscribe(world.services, await world.link()))
    current = await world.link()
    assert set(world.graph.subscriptions) == {current.subscription_id}
    assert current.subscription_id != original
    assert await _indexed(world) == {current.subscription_id}


async def test_renewal_timer_deletes_orphans_after_a_grace_period(world: World) -> None:
    link = await ensure_subscription(world.services, await world.link())
    graph = await world.services.graph.for_link(link)
    # A crash between creating a subscription and saving the link left this one behind.
    orphan = await graph.create_subscription(MAILBOX, link.calendar_id, notification_url="https://x/n",
                                             lifecycle_url="https://x/l", client_state="s" * 40,
                                             expires_at=world.clock() + timedelta(days=2))
    await SubscriptionRepository(world.storage).put(orphan.id, KEY, "s" * 40, now=world.clock())
    await renew_expiring(world.services)
    assert orphan.id in world.graph.subscriptions  # may still be on its way into the link row
    world.clock.advance(seconds=ORPHAN_GRACE.total_seconds() + 60)
    report = await renew_expiring(world.services)
    assert report.orphans == 1
    current = await world.link()
    assert set(world.graph.subscriptions) == {current.subscription_id}
    assert await _indexed(world) == {current.subscription_id}


async def test_subscription_removed_while_access_is_lost_is_replaced_after_the_reconnect(world: World) -> None:
    from shared.domain import LinkHealth
    from shared.messages import AdminAction, AdminMessage
    from shared.services.subscriptions import handle_admin_message

    link = await ensure_subscription(world.services, await world.link())
    removed = link.subscription_id
    world.provider.revoked.add("acc-1")
    world.graph.remove_subscription(removed)  # Graph drops it with the lost access
    outcome = await handle_admin_message(world.services, AdminMessage(str(KEY), AdminAction.RESUBSCRIBE,
                                                                      subscription_id=removed))
    assert outcome.result == "needs_reconnect"
    after = await world.link()
    assert after.health is LinkHealth.NEEDS_RECONNECT and after.subscription_id == ""
    assert await _indexed(world) == set()
    world.provider.revoked.clear()  # the user signed in again; the reconnect queues set-ups
    for _ in range(2):
        await handle_admin_message(world.services, AdminMessage(str(KEY), AdminAction.SETUP))
    current = await world.link()
    assert current.subscription_id and set(world.graph.subscriptions) == {current.subscription_id}
