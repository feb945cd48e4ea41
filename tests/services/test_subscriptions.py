"""Subscriptions, their upkeep and lifecycle, link set-up and teardown, over the twins."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.connect.teardown import TeardownRepository, unlink
from shared.domain import EventDraft, LinkHealth, SyncMode, booking_transaction_id
from shared.errors import NeedsReconnect, TransientError
from shared.messages import LINK_ADMIN_QUEUE, SYNC_QUEUE, AdminAction, AdminMessage, SyncMessage, SyncReason
from shared.repos.links import LeaseRepository, LinkRepository, SubscriptionRepository
from shared.repos.sync_state import BookingEventState, BookingMapRepository, BookingMapRow, EventMapRepository
from shared.services.subscriptions import (
    ensure_subscription,
    handle_admin_message,
    handle_lifecycle,
    renew_expiring,
    teardown,
)
from shared.sync.worker import run_sync
from tests.support.outlook_world import KEY, MAILBOX, NOW, World, queued

H = timedelta(hours=1)
T = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


async def test_setup_subscribes_and_asks_for_a_full_sync(world: World) -> None:
    world.add(start=T, end=T + H)
    outcome = await handle_admin_message(world.services, AdminMessage(str(KEY), AdminAction.SETUP))
    assert outcome.result == "push"
    link = await world.link()
    assert link.sync_mode is SyncMode.PUSH and link.subscription_id
    assert link.subscription_expires_at == NOW + timedelta(minutes=4200)
    sub = world.graph.subscriptions[link.subscription_id]
    assert sub.notification_url == "https://sync.example.test/api/graph/notifications"
    assert sub.lifecycle_url == "https://sync.example.test/api/graph/lifecycle"
    assert sub.resource == f"/users/{MAILBOX}/calendars/{world.calendar}/events"
    assert len(sub.client_state) >= 40
    record = await SubscriptionRepository(world.storage).get(link.subscription_id)
    assert record is not None and record.link == KEY and record.client_state_matches(sub.client_state)
    # The clientState is a secret: stored hashed only.
    stored = world.storage.tables["subscriptions"].rows  # type: ignore[attr-defined]
    assert sub.client_state not in json.dumps(list(stored.values()), default=str)

    messages = queued(world, SYNC_QUEUE)
    assert [SyncMessage.parse(m) for m in messages] == [
        SyncMessage(str(KEY), SyncReason.SETUP, full=True, observed_at=NOW.timestamp())]
    await run_sync(world.services, SyncMessage.parse(messages[0]), worker_id="w")
    assert len(world.slots()) == 1

    # A repeated SETUP keeps the live subscription.
    again = await handle_admin_message(world.services, AdminMessage(str(KEY), AdminAction.SETUP))
    assert again.result == "push" and (await world.link()).subscription_id == link.subscription_id
    assert len(world.graph.subscriptions) == 1


async def test_shared_calendar_with_delegated_access_polls(world: World) -> None:
    world.graph.add_mailbox("jonas@praxis.example")
    shared = world.graph.default_calendar("jonas@praxis.example")
    world.graph.share_calendar(shared, MAILBOX)
    link = await world.link()
    link.calendar_id = shared
    link = await LinkRepository(world.storage).save(link)
    saved = await ensure_subscription(world.services, link)
    assert saved.sync_mode is SyncMode.POLLING and not saved.subscription_id
    assert world.graph.subscriptions == {}
    # Polling still syncs: delta works on a shared calendar.
    world.graph.put_event("jonas@praxis.example", shared, start=T, end=T + H)
    assert (await world.sync()).status == "ok" and len(world.slots()) == 1


async def test_tenant_refusing_subscriptions_polls_and_drops_the_old_one(world: World) -> None:
    link = await ensure_subscription(world.services, await world.link())
    old = link.subscription_id
    world.graph.refuse_subscriptions = True
    saved = await ensure_subscription(world.services, link, force=True)
    assert saved.sync_mode is SyncMode.POLLING and not saved.subscription_id
    assert old not in world.graph.subscriptions
    assert await SubscriptionRepository(world.storage).get(old) is None


async def test_setup_with_a_revoked_token_reports_once(world: World) -> None:
    world.provider.revoked.add("acc-1")
    first = await handle_admin_message(world.services, AdminMessage(str(KEY), AdminAction.SETUP))
    second = await handle_admin_message(world.services, AdminMessage(str(KEY), AdminAction.SETUP))
    assert first.result == second.result == "needs_reconnect"
    assert first.health_change is not None and first.health_change.new is LinkHealth.NEEDS_RECONNECT
    assert second.health_change is None
    assert [e["data"]["status"] for e in world.timum.status_webhooks] == ["needs_reconnect"]
    assert queued(world, SYNC_QUEUE) == []


async def test_renew_expiring(world: World) -> None:
    link = await ensure_subscription(world.services, await world.link())
    sub_id = link.subscription_id
    report = await renew_expiring(world.services)
    assert (report.renewed, report.recreated) == (0, 0)  # 70 h left: not due yet
    world.clock.advance(hours=60)
    report = await renew_expiring(world.services)
    assert report.renewed == 1
    renewed = await world.link()
    assert renewed.subscription_id == sub_id
    assert renewed.subscription_expires_at == world.clock() + timedelta(minutes=4200)
    assert world.graph.subscriptions[sub_id].expires_at == renewed.subscription_expires_at


async def test_renewal_of_a_vanished_subscription_recreates_and_resyncs(world: World) -> None:
    link = await ensure_subscription(world.services, await world.link())
    del world.graph.subscriptions[link.subscription_id]
    world.clock.advance(hours=60)
    report = await renew_expiring(world.services)
    assert report.recreated == 1
    fresh = await world.link()
    assert fresh.subscription_id and fresh.subscription_id != link.subscription_id
    assert await SubscriptionRepository(world.storage).get(link.subscription_id) is None
    assert [SyncMessage.parse(m).full for m in queued(world, SYNC_QUEUE)] == [True]


async def test_renewal_failures_are_deferred_or_reported(world: World) -> None:
    await ensure_subscription(world.services, await world.link())
    world.clock.advance(hours=60)
    world.graph.fail_next(TransientError("503"), op="renew_subscription")
    report = await renew_expiring(world.services)
    assert report.deferred == 1 and report.renewed == 0
    world.graph.fail_next(NeedsReconnect("invalid_grant"), op="renew_subscription")
    report = await renew_expiring(world.services)
    assert [(k, c.new) for k, c in report.health_changes] == [(KEY, LinkHealth.NEEDS_RECONNECT)]
    # Links that need a reconnect are left alone until they are reconnected.
    report = await renew_expiring(world.services)
    assert (report.renewed, report.deferred, report.health_changes) == (0, 0, [])
    assert world.graph.closed == world.provider.handed_out


async def test_lifecycle_events(world: World) -> None:
    link = await ensure_subscription(world.services, await world.link())
    index = SubscriptionRepository(world.storage)
    record = await index.get(link.subscription_id)
    assert record is not None

    world.graph.require_reauthorization(link.subscription_id)
    event = world.graph.lifecycle_notifications[-1]
    assert await handle_lifecycle(world.services, event, record) == "reauthorized"
    assert world.graph.subscriptions[link.subscription_id].reauthorized == 1

    assert await handle_lifecycle(world.services, "missed", record) == "resync"
    assert [SyncMessage.parse(m).full for m in queued(world, SYNC_QUEUE)] == [False]

    world.graph.remove_subscription(link.subscription_id)
    assert await handle_lifecycle(world.services, world.graph.lifecycle_notifications[-1], record) == "resubscribed"
    fresh = await world.link()
    assert fresh.subscription_id != link.subscription_id and fresh.subscription_id in world.graph.subscriptions
    assert await index.get(link.subscription_id) is None
    assert world.graph.closed == world.provider.handed_out
    assert [SyncMessage.parse(m).full for m in queued(world, SYNC_QUEUE)] == [True]
    # The old subscription's late events change nothing.
    assert await handle_lifecycle(world.services, "subscriptionRemoved", record) == "ignored"
    assert (await world.link()).subscription_id == fresh.subscription_id


async def test_reauthorize_falls_back_to_a_new_subscription(world: World) -> None:
    link = await ensure_subscription(world.services, await world.link())
    del world.graph.subscriptions[link.subscription_id]
    outcome = await handle_admin_message(world.services, AdminMessage(str(KEY), AdminAction.REAUTHORIZE,
                                                                      subscription_id=link.subscription_id))
    assert outcome.result == "reauthorized"
    fresh = await world.link()
    assert fresh.subscription_id in world.graph.subscriptions
    assert [SyncMessage.parse(m).full for m in queued(world, SYNC_QUEUE)] == [True]


async def test_resubscribe_for_a_stale_subscription_is_ignored(world: World) -> None:
    link = await ensure_subscription(world.services, await world.link())
    outcome = await handle_admin_message(world.services, AdminMessage(str(KEY), AdminAction.RESUBSCRIBE,
                                                                      subscription_id="an-old-one"))
    assert outcome.result == "stale"
    assert (await world.link()).subscription_id == link.subscription_id


async def test_calendar_gone_during_setup_is_an_error(world: World) -> None:
    world.graph.remove_calendar(world.calendar)
    outcome = await handle_admin_message(world.services, AdminMessage(str(KEY), AdminAction.SETUP))
    assert outcome.result == "error"
    assert (await world.link()).health is LinkHealth.ERROR


async def _linked_with_traces(world: World) -> tuple[str, str]:
    """A subscribed, synced link with one Outlook slot and one booking event of ours."""
    await ensure_subscription(world.services, await world.link())
    world.add(start=T, end=T + H)
    draft = EventDraft(subject="Buchung", body_html="", start=T + 2 * H, end=T + 3 * H, time_zone="Europe/Berlin",
                       booking_id="bk-1")
    event_id = await world.graph.create_event(MAILBOX, world.calendar, draft,
                                              transaction_id=booking_transaction_id("bk-1"))
    await BookingMapRepository(world.storage).put(KEY, BookingMapRow("bk-1", event_id, 1, "h",
                                                                     booking_transaction_id("bk-1"),
                                                                     BookingEventState.ACTIVE))
    await world.sync()
    assert len(world.slots()) == 1
    link = await world.link()
    return link.subscription_id, event_id


async def test_teardown_after_unlink_removes_every_trace(world: World) -> None:
    sub_id, booking_event = await _linked_with_traces(world)
    await unlink(world.services, await world.link(), delete_outlook_events=True)
    messages = [AdminMessage.parse(m) for m in queued(world, LINK_ADMIN_QUEUE)]
    assert [m.action for m in messages] == [AdminAction.TEARDOWN]
    outcome = await handle_admin_message(world.services, messages[0])
    assert outcome.result.startswith("removed 1 slots, 1 events")
    assert world.slots() == {}
    assert sub_id not in world.graph.subscriptions
    assert booking_event not in world.graph.events
    assert await EventMapRepository(world.storage).load(KEY) == {}
    assert await BookingMapRepository(world.storage).list(KEY) == []
    assert await TeardownRepository(world.storage).get(KEY, sub_id) is None
    # Delivered twice: nothing left to do, nothing fails.
    again = await handle_admin_message(world.services, messages[0])
    assert again.result.startswith("removed 0 slots")
    assert world.graph.closed == world.provider.handed_out


async def test_teardown_keeps_outlook_events_unless_asked(world: World) -> None:
    _, booking_event = await _linked_with_traces(world)
    await unlink(world.services, await world.link())
    [message] = [AdminMessage.parse(m) for m in queued(world, LINK_ADMIN_QUEUE)]
    await handle_admin_message(world.services, message)
    assert world.slots() == {} and booking_event in world.graph.events


async def test_teardown_waits_for_a_running_sync(world: World) -> None:
    sub_id, _ = await _linked_with_traces(world)
    await unlink(world.services, await world.link())
    assert await LeaseRepository(world.storage).acquire(KEY, "sync-worker", now=NOW)
    with pytest.raises(TransientError) as caught:
        await teardown(world.services, KEY, subscription_id=sub_id)
    assert caught.value.retry_after
    assert len(world.slots()) == 1


async def test_teardown_after_relink_only_drops_the_old_subscription(world: World) -> None:
    sub_id, _ = await _linked_with_traces(world)
    link = await world.link()
    new_calendar = world.graph.add_calendar(MAILBOX, "Raum 2")
    await unlink(world.services, link, keep_row=True)
    link.calendar_id, link.subscription_id, link.delta_link = new_calendar, "", ""
    await LinkRepository(world.storage).save(link)
    [message] = [AdminMessage.parse(m) for m in queued(world, LINK_ADMIN_QUEUE)]
    assert (await handle_admin_message(world.services, message)).result == "relinked"
    assert sub_id not in world.graph.subscriptions
    assert len(world.slots()) == 1
    # The new calendar's first full round removes the old calendar's slots.
    await world.sync(full=True)
    assert world.slots() == {}
