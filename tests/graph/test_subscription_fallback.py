"""When Graph refuses a per-calendar subscription (400), the link subscribes to its mailbox
(``/users/{id}/events``) and still syncs per calendar; a 403 still means polling. The links API
says which resource each link uses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.adapters.graph_constants import mailbox_subscription_resource
from shared.connect.links_api import link_json
from shared.domain import SyncMode, slot_external_id
from shared.messages import AdminAction, AdminMessage
from shared.repos.links import SubscriptionRepository
from shared.services.subscriptions import ensure_subscription, handle_admin_message
from shared.storage.memory import MemoryStorage
from tests.support.outlook_world import KEY, MAILBOX, make_world

H = timedelta(hours=1)
T = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


async def test_a_refused_calendar_subscription_falls_back_to_the_mailbox() -> None:
    w = await make_world(MemoryStorage())
    w.graph.refuse_calendar_subscriptions = True
    outcome = await handle_admin_message(w.services, AdminMessage(str(KEY), AdminAction.SETUP))
    assert outcome.result == "push"
    link = await w.link()
    assert (link.sync_mode, link.subscription_resource) == (SyncMode.PUSH, "mailbox")
    [sub] = w.graph.subscriptions.values()
    assert sub.resource == mailbox_subscription_resource(MAILBOX) and sub.id == link.subscription_id
    assert (await SubscriptionRepository(w.storage).get(sub.id)) is not None
    assert link_json(link)["subscriptionResource"] == "mailbox"

    # A change in the linked calendar notifies through the mailbox subscription and syncs.
    eid = w.add(subject="Termin", start=T, end=T + H)
    assert [n["subscriptionId"] for n in w.graph.drain_notifications()] == [sub.id]
    await w.sync(full=True)
    assert set(w.slots()) == {slot_external_id(KEY, eid)}

    # A change in another calendar of the mailbox notifies too, and costs an empty round.
    other = w.graph.add_calendar(MAILBOX, "Privat")
    w.graph.put_event(MAILBOX, other, subject="Privat", start=T, end=T + H)
    assert len(w.graph.drain_notifications()) == 1
    before = dict(w.slots())
    out = await w.sync()
    assert (out.upserts, out.deletes) == (0, 0) and w.slots() == before


async def test_once_graph_accepts_the_calendar_again_a_resubscription_uses_it() -> None:
    w = await make_world(MemoryStorage())
    w.graph.refuse_calendar_subscriptions = True
    link = await ensure_subscription(w.services, await w.link())
    assert link.subscription_resource == "mailbox"
    w.graph.refuse_calendar_subscriptions = False
    link = await ensure_subscription(w.services, link, force=True)
    assert link.subscription_resource == "calendar" and link_json(link)["subscriptionResource"] == "calendar"
    assert len(w.graph.subscriptions) == 1, "the mailbox subscription was dropped"


async def test_a_forbidden_subscription_still_means_polling() -> None:
    w = await make_world(MemoryStorage())
    w.graph.refuse_subscriptions = True
    link = await ensure_subscription(w.services, await w.link())
    assert (link.sync_mode, link.subscription_resource, link.subscription_id) == (SyncMode.POLLING, "", "")
    assert link_json(link)["subscriptionResource"] is None
    assert w.graph.subscriptions == {}
