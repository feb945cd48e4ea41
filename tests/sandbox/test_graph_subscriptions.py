"""Subscriptions of the Graph stand-in through the real msgraph-sdk: the validation handshake
(success, wrong answer, error, timeout), limits on expiry and clientState, who may subscribe,
asynchronous batched notifications with duplicates and retries, lifecycle notifications and
expiry."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import pytest

from devtools.sandbox.graph.testing import WebhookReceiver, World

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:kiota_abstractions"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:msgraph")]
SCOPES = {"Calendars.ReadWrite", "User.Read"}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    hook = WebhookReceiver().start()
    yield hook
    hook.stop()


def subscription(receiver: WebhookReceiver, resource: str, *, minutes: int = 120, lifecycle: bool = True,
                 client_state: str = "geheimer-zustand") -> Any:
    from msgraph.generated.models.subscription import Subscription

    return Subscription(change_type="created,updated,deleted", resource=resource, client_state=client_state,
                        notification_url=f"{receiver.url}/api/graph/notify?code=funktionsschluessel",
                        lifecycle_notification_url=f"{receiver.url}/api/graph/lifecycle" if lifecycle else None,
                        expiration_date_time=datetime.now(UTC) + timedelta(minutes=minutes))


def values(received: list[Any]) -> list[dict[str, Any]]:
    return [v for r in received for v in r.json()["value"]]


async def test_handshake_then_asynchronous_notifications(world: World, receiver: WebhookReceiver) -> None:
    state = world.env.graph.state
    state.behaviour.coalesce_delay = 0.3
    cal = state.default_calendar(world.anna.id)
    client, http = world.client(world.token(world.anna, scopes=SCOPES))
    async with http:
        sub = await client.subscriptions.post(
            subscription(receiver, f"/users/{world.anna.id}/calendars/{cal.id}/events"))
    assert sub.client_state == "geheimer-zustand" and sub.application_id == world.client_id
    handshakes = [r for r in receiver.received if "validationToken" in r.query]
    assert [r.path for r in handshakes] == ["/api/graph/notify", "/api/graph/lifecycle"]
    token = parse_qs(handshakes[0].query)["validationToken"][0]
    assert token.startswith("Validation: Testing client application reachability")
    assert handshakes[0].headers["content-type"].startswith("text/plain")
    assert "code=funktionsschluessel" in handshakes[0].query

    first = state.create_event(world.anna.id, "Termin A", datetime(2031, 6, 2, 9, tzinfo=UTC),
                               datetime(2031, 6, 2, 10, tzinfo=UTC))
    second = state.create_event(world.anna.id, "Termin B", datetime(2031, 6, 2, 11, tzinfo=UTC),
                                datetime(2031, 6, 2, 12, tzinfo=UTC))
    received = await asyncio.to_thread(
        receiver.wait_for, lambda rs: len(values([r for r in rs if r.path == "/api/graph/notify"
                                                  and "validationToken" not in r.query])) >= 2)
    posts = [r for r in received if r.path == "/api/graph/notify" and "validationToken" not in r.query]
    assert len(posts) == 1, "changes close together travel in one POST"
    items = values(posts)
    assert {i["resourceData"]["id"] for i in items} == {first.id, second.id}
    item = items[0]
    assert item["subscriptionId"] == sub.id and item["changeType"] == "created"
    assert item["clientState"] == "geheimer-zustand" and item["tenantId"] == world.tenant_id
    assert item["resource"] == f"Users/{world.anna.id}/Events/{item['resourceData']['id']}"
    assert item["resourceData"]["@odata.type"] == "#Microsoft.Graph.Event"
    assert item["resourceData"]["@odata.etag"].startswith('W/"')
    assert item["subscriptionExpirationDateTime"].endswith("Z")

    records = await asyncio.to_thread(
        state.wait_for_deliveries, lambda ds: any(d.status == 202 and sub.id in d.subscription_ids for d in ds))
    records = [d for d in records if sub.id in d.subscription_ids]
    assert records[-1].status == 202 and records[-1].outcome == "ok" and records[-1].duration_ms >= 0
    assert all("funktionsschluessel" not in d.target for d in state.list_deliveries())


async def test_validation_failures_and_limits(world: World, receiver: WebhookReceiver) -> None:
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    state = world.env.graph.state
    resource = f"/users/{world.anna.id}/events"
    client, http = world.client(world.token(world.anna, scopes=SCOPES))
    async with http:
        for mode, message in (("wrong", "must exactly match"), ("status", "must respond with 200 OK")):
            receiver.validation = mode
            with pytest.raises(ODataError) as err:
                await client.subscriptions.post(subscription(receiver, resource))
            assert err.value.response_status_code == 400, mode
            assert message in err.value.error.message
        receiver.validation = "slow"
        state.behaviour.validation_timeout = 0.5
        with pytest.raises(ODataError) as err:
            await client.subscriptions.post(subscription(receiver, resource))
        assert err.value.response_status_code == 400 and "timed out" in err.value.error.message

        receiver.validation = "echo"
        with pytest.raises(ODataError) as err:
            await client.subscriptions.post(subscription(receiver, resource, minutes=4231))
        assert err.value.response_status_code == 400 and "4230 minutes" in err.value.error.message
        with pytest.raises(ODataError):
            await client.subscriptions.post(subscription(receiver, resource, client_state="x" * 129))
        short = await client.subscriptions.post(subscription(receiver, resource, minutes=10))
        assert short.expiration_date_time - datetime.now(UTC) > timedelta(minutes=44)
        state.behaviour.max_subscriptions_per_mailbox = 1
        with pytest.raises(ODataError) as err:
            await client.subscriptions.post(subscription(receiver, resource))
        assert err.value.response_status_code == 403, "a full mailbox takes no more subscriptions"
    assert not [s for s in state.list_subscriptions() if s.mailbox_id == world.anna.id and s.id != short.id]


async def test_who_may_subscribe_to_a_shared_calendar(world: World, receiver: WebhookReceiver) -> None:
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    state = world.env.graph.state
    jonas_cal = state.default_calendar(world.jonas.id)
    state.share_calendar(jonas_cal.id, world.anna.id, can_edit=True, accept=True)
    delegated, http = world.client(world.token(world.anna, scopes=SCOPES | {"Calendars.ReadWrite.Shared"}))
    async with http:
        for resource in (f"/users/{world.jonas.id}/calendars/{jonas_cal.id}/events",
                         f"/users/{world.anna.id}/calendars/{jonas_cal.id}/events"):
            with pytest.raises(ODataError) as err:
                await delegated.subscriptions.post(subscription(receiver, resource))
            assert err.value.response_status_code == 403, resource
    app, http = world.client(world.token(roles={"Calendars.ReadWrite"}))
    async with http:
        sub = await app.subscriptions.post(
            subscription(receiver, f"/users/{world.jonas.id}/calendars/{jonas_cal.id}/events"))
        listed = await app.subscriptions.get()
        assert [s.id for s in listed.value] == [sub.id]
        await app.subscriptions.by_subscription_id(sub.id).delete()
    assert state.subscription(sub.id) is None


async def test_duplicates_and_retries_with_backoff(world: World, receiver: WebhookReceiver) -> None:
    state = world.env.graph.state
    state.behaviour.duplicate_probability = 1.0
    receiver.statuses = [500, 503]
    client, http = world.client(world.token(world.anna, scopes=SCOPES))
    async with http:
        sub = await client.subscriptions.post(subscription(receiver, "me/events", lifecycle=False))
    ids = state.create_event(world.anna.id, "Termin", datetime(2031, 6, 3, 9, tzinfo=UTC),
                             datetime(2031, 6, 3, 10, tzinfo=UTC))
    received = await asyncio.to_thread(
        receiver.wait_for, lambda rs: any(r.status == 202 and "validationToken" not in r.query for r in rs))
    posts = [r for r in received if "validationToken" not in r.query]
    assert [p.status for p in posts] == [500, 503, 202]
    assert all(p.body == posts[0].body for p in posts), "a retry resends the same notifications"
    assert [(i["changeType"], i["resourceData"]["id"]) for i in values(posts[:1])] == [
        ("created", ids.id), ("updated", ids.id)]
    records = await asyncio.to_thread(
        state.wait_for_deliveries, lambda ds: any(d.status == 202 and sub.id in d.subscription_ids for d in ds))
    attempts = [(d.attempt, d.status, d.outcome) for d in records if sub.id in d.subscription_ids]
    assert attempts == [(1, 500, "http_error"), (2, 503, "http_error"), (3, 202, "ok")]


async def test_lifecycle_notifications_and_expiry(world: World, receiver: WebhookReceiver) -> None:
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    state = world.env.graph.state
    client, http = world.client(world.token(world.anna, scopes=SCOPES))
    async with http:
        sub = await client.subscriptions.post(subscription(receiver, f"/users/{world.anna.id}/events"))

        def lifecycle_events(rs: list[Any]) -> list[str]:
            return [v["lifecycleEvent"] for r in rs if r.path == "/api/graph/lifecycle" and "validationToken"
                    not in r.query for v in r.json()["value"]]

        state.trigger_lifecycle(sub.id, "missed")
        await asyncio.to_thread(receiver.wait_for, lambda rs: lifecycle_events(rs) == ["missed"])
        state.behaviour.reauthorization_lead = 3 * 3600.0
        received = await asyncio.to_thread(receiver.wait_for, lambda rs: len(lifecycle_events(rs)) == 2)
        assert lifecycle_events(received)[1] == "reauthorizationRequired"
        last = [r for r in received if r.path == "/api/graph/lifecycle"][-1].json()["value"][0]
        assert last["subscriptionId"] == sub.id and last["clientState"] == "geheimer-zustand"
        await client.subscriptions.by_subscription_id(sub.id).reauthorize.post()
        renewed = await client.subscriptions.by_subscription_id(sub.id).patch(
            type(sub)(expiration_date_time=datetime.now(UTC) + timedelta(hours=20)))
        assert renewed.expiration_date_time > sub.expiration_date_time

        state.trigger_lifecycle(sub.id, "subscriptionRemoved")
        await asyncio.to_thread(receiver.wait_for, lambda rs: lifecycle_events(rs)[-1:] == ["subscriptionRemoved"])
        with pytest.raises(ODataError) as err:
            await client.subscriptions.by_subscription_id(sub.id).get()
        assert err.value.response_status_code == 404

        doomed = await client.subscriptions.post(subscription(receiver, f"/users/{world.anna.id}/events",
                                                              lifecycle=False))
    state.subscriptions[doomed.id].expiration = datetime.now(UTC) - timedelta(seconds=1)
    state.housekeeping()
    assert state.subscription(doomed.id) is None
    before = len(receiver.notifications("/api/graph/notify"))
    state.create_event(world.anna.id, "Nach Ablauf", datetime(2031, 6, 4, 9, tzinfo=UTC),
                       datetime(2031, 6, 4, 10, tzinfo=UTC))
    assert not state.outbox, "an expired subscription gets nothing"
    assert len(receiver.notifications("/api/graph/notify")) == before
