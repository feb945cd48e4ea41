"""Documented Graph behaviours the stand-in produces on request — switched through its control API
(``/_sandbox/graph/behaviour``, ``/_sandbox/graph/faults``) and its faults page — each met by the
real adapter (msgraph-sdk over HTTPS) the way the service must meet it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from devtools.sandbox.graph.testing import GraphTestEnv, StaticTokenCredential, WebhookReceiver, World, tls_context
from devtools.sandbox.graph.timezones import WINDOWS_TO_IANA, zone
from shared.adapters.graph_constants import SUBSCRIPTION_FORBIDDEN, mailbox_subscription_resource
from shared.adapters.graph_sdk import GraphSdkAdapter
from shared.domain import EventDraft
from shared.errors import AuthError, BadRequest, SyncStateExpired, Throttled

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:kiota_abstractions"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:msgraph")]
SCOPES = frozenset({"Calendars.ReadWrite", "Calendars.ReadWrite.Shared", "User.Read", "MailboxSettings.Read"})
BERLIN = ZoneInfo("Europe/Berlin")
START, END = datetime(2031, 1, 1, tzinfo=UTC), datetime(2031, 3, 1, tzinfo=UTC)
T = datetime(2031, 1, 15, 9, tzinfo=BERLIN)


@pytest.fixture
def control(env: GraphTestEnv) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{env.http_base}/_sandbox/graph", timeout=10) as client:
        yield client


@pytest.fixture
async def graph(world: World) -> AsyncIterator[GraphSdkAdapter]:
    adapter = GraphSdkAdapter(StaticTokenCredential(world.token(world.anna, scopes=SCOPES)),
                              base_url=world.env.base_url, verify=str(world.env.ca_path))
    try:
        yield adapter
    finally:
        await adapter.close()


def behave(control: httpx.Client, **settings: Any) -> None:
    response = control.patch("/behaviour", json=settings)
    assert response.status_code == 200, response.text
    assert all(response.json()[k] == v for k, v in settings.items())


def fault(control: httpx.Client, **rule: Any) -> dict[str, Any]:
    response = control.post("/faults", json=rule)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def create(control: httpx.Client, world: World, subject: str, start: datetime | date, end: datetime | date,
           **extra: Any) -> str:
    body = {"subject": subject, "start": start.isoformat(), "end": end.isoformat(), **extra}
    response = control.post(f"/users/{world.anna.id}/events", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["immutableId"])


async def full_round(graph: GraphSdkAdapter, world: World, link: str = "") -> tuple[list[Any], str]:
    cal = world.env.graph.state.default_calendar(world.anna.id).id
    pages = [await graph.delta(world.anna.id, cal, start=START, end=END, link=link)]
    while pages[-1].next_link:
        pages.append(await graph.delta(world.anna.id, cal, start=START, end=END, link=pages[-1].next_link))
    return pages, pages[-1].delta_link


async def raw_get(world: World, url: str) -> httpx.Response:
    token = world.token(world.anna, scopes=SCOPES)
    async with httpx.AsyncClient(verify=tls_context(world.env.ca_path),
                                 headers={"Authorization": f"Bearer {token}", "Prefer": 'IdType="ImmutableId"'}) as c:
        return await c.get(url)


async def test_removed_with_reason_changed(world: World, control: httpx.Client, graph: GraphSdkAdapter) -> None:
    behave(control, removed_reason_changed=True)
    event = create(control, world, "Termin", T, T + timedelta(hours=1))
    _, link = await full_round(graph, world)
    assert control.delete(f"/events/{event}").status_code == 204
    raw = (await raw_get(world, link)).json()
    assert [item["@removed"] for item in raw["value"]] == [{"reason": "changed"}]
    pages, _ = await full_round(graph, world, link)
    assert [r for p in pages for r in p.removed] == [event]


@pytest.mark.parametrize("kind", ["syncStateNotFound-400", "resyncRequired-400"])
async def test_sync_state_codes_only_in_inner_error_start_a_fresh_round(world: World, control: httpx.Client,
                                                                      graph: GraphSdkAdapter, kind: str) -> None:
    _, link = await full_round(graph, world)
    fault(control, kind=kind, path="/calendarView/delta", count=2)
    raw = await raw_get(world, link)
    assert raw.status_code == 400
    error = raw.json()["error"]
    assert error["code"] == "BadRequest" and error["innerError"]["code"] == kind.removesuffix("-400")
    with pytest.raises(SyncStateExpired):
        await graph.delta(world.anna.id, "", start=START, end=END, link=link)


async def test_retry_after_as_an_http_date(world: World, control: httpx.Client, graph: GraphSdkAdapter) -> None:
    rule = fault(control, kind="503", path="/calendarView/delta", count=1, retryAfter=30, retryAfterAsDate=True)
    assert rule["retryAfterAsDate"] is True
    with pytest.raises(Throttled) as caught:
        await full_round(graph, world)
    assert caught.value.retry_after is not None and 25 < caught.value.retry_after <= 31


async def test_partial_delta_items_are_completed_by_reading_the_event(world: World, control: httpx.Client,
                                                                      graph: GraphSdkAdapter) -> None:
    event = create(control, world, "Termin", T, T + timedelta(hours=1))
    _, link = await full_round(graph, world)
    behave(control, partial_delta_items=True)
    moved = T + timedelta(hours=3)
    assert control.patch(f"/events/{event}", json={"start": moved.isoformat(),
                                                   "end": (moved + timedelta(hours=1)).isoformat()}).status_code == 200
    [item] = (await raw_get(world, link)).json()["value"]
    assert "start" not in item and "end" not in item and item["id"] == event
    pages, _ = await full_round(graph, world, link)
    [seen] = [e for p in pages for e in p.events]
    assert (seen.id, seen.start, seen.end) == (event, moved, moved + timedelta(hours=1))
    assert all(p.skipped == [] for p in pages)


async def test_custom_zone_labels_resolve_through_the_original_zone(world: World, control: httpx.Client,
                                                                     graph: GraphSdkAdapter) -> None:
    behave(control, custom_zone_labels=1)
    event = create(control, world, "Einladung", T, T + timedelta(hours=1), timeZone="W. Europe Standard Time")
    pages, _ = await full_round(graph, world)
    [raw] = (await raw_get(world, f"{world.env.base_url}/users/{world.anna.id}/events/{event}")).json()["start"],
    assert raw["timeZone"] == "tzone://Microsoft/Custom" and raw["dateTime"].startswith("2031-01-15T09:00:00")
    [seen] = [e for p in pages for e in p.events]
    assert (seen.start, seen.end) == (T, T + timedelta(hours=1))


async def test_custom_labels_without_a_named_zone_use_the_mailbox_zone_or_are_skipped(
        world: World, control: httpx.Client, graph: GraphSdkAdapter) -> None:
    behave(control, custom_zone_labels=2)
    event = create(control, world, "Einladung", T, T + timedelta(hours=1), timeZone="W. Europe Standard Time")
    pages, _ = await full_round(graph, world)
    [seen] = [e for p in pages for e in p.events]
    assert seen.start == T, "the mailbox names its zone (W. Europe): read in it"

    behave(control, custom_mailbox_zone=True)
    # A new adapter (as each sync run has): the mailbox zone is read again.
    fresh = GraphSdkAdapter(StaticTokenCredential(world.token(world.anna, scopes=SCOPES)),
                            base_url=world.env.base_url, verify=str(world.env.ca_path))
    try:
        pages, _ = await full_round(fresh, world)
    finally:
        await fresh.close()
    assert [e.id for p in pages for e in p.events] == []
    [skipped] = [s for p in pages for s in p.skipped]
    assert skipped.id == event and "cannot be resolved" in skipped.reason


async def test_a_custom_mailbox_zone_does_not_shift_all_day_events(world: World, control: httpx.Client,
                                                                   graph: GraphSdkAdapter) -> None:
    behave(control, custom_mailbox_zone=True)
    settings = (await raw_get(world, f"{world.env.base_url}/users/{world.anna.id}/mailboxSettings")).json()
    assert settings["timeZone"] == "Customized Time Zone"
    assert settings["workingHours"]["timeZone"]["@odata.type"] == "#microsoft.graph.customTimeZone"
    create(control, world, "Urlaub", date(2031, 1, 20), date(2031, 1, 22), allDay=True)
    pages, _ = await full_round(graph, world)
    [seen] = [e for p in pages for e in p.events]
    assert (seen.is_all_day, seen.start, seen.end) == (True, datetime(2031, 1, 20, tzinfo=BERLIN),
                                                       datetime(2031, 1, 22, tzinfo=BERLIN))


async def test_user_purpose_is_an_object_and_the_zone_still_reads(world: World, graph: GraphSdkAdapter) -> None:
    settings = (await raw_get(world, f"{world.env.base_url}/users/{world.anna.id}/mailboxSettings")).json()
    assert settings["userPurpose"] == {"value": "user"}
    assert await graph.mailbox_time_zone(world.anna.id) == "Europe/Berlin"


def test_every_cldr_windows_zone_is_known() -> None:
    assert len(WINDOWS_TO_IANA) > 130
    for name in WINDOWS_TO_IANA:
        zone(name)  # raises for a name Exchange would refuse


async def test_events_in_rarer_windows_zones_are_accepted(world: World, graph: GraphSdkAdapter) -> None:
    cal = world.env.graph.state.default_calendar(world.anna.id).id
    for iana in ("America/Whitehorse", "Asia/Kathmandu", "Pacific/Chatham", "America/Punta_Arenas"):
        draft = EventDraft(subject="Termin", body_html="", start=T, end=T + timedelta(hours=1), time_zone=iana,
                           show_as="busy", categories=(), booking_id="")
        event_id = await graph.create_event(world.anna.id, cal, draft, transaction_id=f"tx-{iana}")
        stored = world.env.graph.state.event(event_id)
        # Sent as its Windows name; CLDR may spell the IANA alias differently (Asia/Katmandu).
        assert stored.tz in WINDOWS_TO_IANA
        for moment in (T, T + timedelta(days=180)):
            assert moment.astimezone(zone(stored.tz)).utcoffset() == moment.astimezone(ZoneInfo(iana)).utcoffset()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    hook = WebhookReceiver().start()
    yield hook
    hook.stop()


async def test_a_delegated_subscription_to_a_shared_calendar_is_refused_with_403(
        world: World, graph: GraphSdkAdapter, receiver: WebhookReceiver) -> None:
    state = world.env.graph.state
    shared = state.default_calendar(world.jonas.id).id
    state.share_calendar(shared, world.anna.id, can_edit=True, accept=True)
    with pytest.raises(AuthError) as caught:
        await graph.create_subscription(world.anna.id, shared, notification_url=f"{receiver.url}/n",
                                        lifecycle_url=f"{receiver.url}/l", client_state="zustand",
                                        expires_at=datetime.now(UTC) + timedelta(hours=2))
    assert caught.value.code == SUBSCRIPTION_FORBIDDEN


async def test_refused_calendar_subscriptions_leave_the_mailbox_wide_one(world: World, control: httpx.Client,
                                                                         graph: GraphSdkAdapter,
                                                                         receiver: WebhookReceiver) -> None:
    behave(control, refuse_calendar_subscriptions=True, coalesce_delay=0.05)
    state = world.env.graph.state
    other = state.create_calendar(world.anna.id, "Behandlungsraum 2")
    kwargs: dict[str, Any] = {"notification_url": f"{receiver.url}/n", "lifecycle_url": f"{receiver.url}/l",
                              "client_state": "zustand", "expires_at": datetime.now(UTC) + timedelta(hours=2)}
    with pytest.raises(BadRequest):
        await graph.create_subscription(world.anna.id, other.id, **kwargs)
    info = await graph.create_subscription(world.anna.id, other.id, mailbox_wide=True, **kwargs)
    assert info.resource == mailbox_subscription_resource(world.anna.id)
    create(control, world, "Im zweiten Kalender", T, T + timedelta(hours=1), calendarId=other.id)
    received = receiver.wait_for(lambda got: any(r.path == "/n" and r.body for r in got))
    assert any(v["subscriptionId"] == info.id for r in received if r.path == "/n" and r.body
               for v in r.json()["value"])


@pytest.mark.parametrize(("url", "strict", "accepted"), [
    ("http://sync.example.com/api/graph/notify", False, False),
    ("{receiver}/n", False, True),          # loopback: the local Functions host
    ("{receiver}/n", True, False),          # as strict as Graph: https only
])
async def test_notification_urls_must_be_https_except_loopback(world: World, control: httpx.Client,
                                                                graph: GraphSdkAdapter, receiver: WebhookReceiver,
                                                                url: str, strict: bool, accepted: bool) -> None:
    behave(control, require_https_notification_url=strict)
    target = url.format(receiver=receiver.url)
    cal = world.env.graph.state.default_calendar(world.anna.id).id
    create_call = graph.create_subscription(world.anna.id, cal, notification_url=target, lifecycle_url=target,
                                            client_state="zustand", expires_at=datetime.now(UTC) + timedelta(hours=2))
    if accepted:
        assert (await create_call).id
    else:
        with pytest.raises(BadRequest):
            await create_call


def test_the_faults_page_offers_the_new_kinds_and_modes(env: GraphTestEnv, world: World) -> None:
    with httpx.Client(base_url=env.http_base, timeout=10, follow_redirects=True) as web:
        page = web.get("/outlook/faults")
        assert "syncStateNotFound-400" in page.text and "resyncRequired-400" in page.text
        assert "retry_after_date" in page.text and "partial_delta_items" in page.text
        origin = {"Origin": env.http_base}
        web.post("/outlook/faults/add", headers=origin,
                 data={"kind": "429", "path": "/x$", "retry_after": "5", "retry_after_date": "on"})
        assert [f.retry_after_date for f in env.graph.state.faults] == [True]
        web.post("/outlook/behaviour", headers=origin,
                 data={"empty_page_probability": "0", "replay_probability": "0", "duplicate_probability": "0",
                       "delta_token_max_age": "", "custom_zone_labels": "2", "partial_delta_items": "on",
                       "removed_reason_changed": "on"})
        b = env.graph.state.behaviour
        assert (b.custom_zone_labels, b.partial_delta_items, b.removed_reason_changed, b.custom_mailbox_zone) == (
            2, True, True, False)


class _StandInGraphs:
    """A ``GraphProvider`` handing out the real adapter on the stand-in, as a sync run gets it."""

    def __init__(self, world: World) -> None:
        self.world = world

    async def for_link(self, link: Any) -> GraphSdkAdapter:
        token = self.world.token(self.world.anna, scopes=SCOPES)
        return GraphSdkAdapter(StaticTokenCredential(token), base_url=self.world.env.base_url,
                               verify=str(self.world.env.ca_path))


async def test_the_sync_engine_on_the_stand_in_skips_reports_and_completes(world: World,
                                                                           control: httpx.Client) -> None:
    from shared.connect.links_api import link_json
    from shared.context import Services
    from shared.domain import Link, LinkKey, LinkMode, slot_external_id
    from shared.messages import SyncMessage, SyncReason
    from shared.repos.links import LinkRepository
    from shared.storage.memory import MemoryStorage
    from shared.sync.worker import run_sync
    from tests.support.outlook_world import CrashingTimum, make_settings

    key = LinkKey("prov-1", "res-1")
    timum = CrashingTimum()
    timum.add_resource("prov-1", "Raum", resource_id="res-1")
    services = Services(settings=make_settings(), storage=MemoryStorage(), timum=timum,
                        graph=_StandInGraphs(world), clock=lambda: datetime(2031, 1, 10, tzinfo=UTC))
    cal = world.env.graph.state.default_calendar(world.anna.id).id
    await LinkRepository(services.storage).save(Link(
        provider_id="prov-1", resource_id="res-1", mode=LinkMode.DELEGATED, tenant_id=world.tenant_id,
        mailbox_id=world.anna.id, calendar_id=cal, calendar_name="Kalender", calendar_owner=world.anna.mail))
    readable = create(control, world, "Termin", T, T + timedelta(hours=1))
    custom = create(control, world, "Einladung", T + timedelta(hours=2), T + timedelta(hours=3))
    # Every timed event under custom labels, no named zone anywhere: nothing can be read.
    behave(control, custom_zone_labels=2, custom_mailbox_zone=True, removed_reason_changed=True)

    def slots() -> set[str]:
        return {s.external_id for s in timum.slots.get(("prov-1", "res-1"), {}).values()}

    out = await run_sync(services, SyncMessage(str(key), SyncReason.SETUP, full=True), worker_id="w")
    assert out.status == "ok" and out.skipped == 2
    link = await LinkRepository(services.storage).require(key)
    assert link.delta_link and link_json(link)["skipped"]["count"] == 2, "the round completed"
    assert slots() == set(), "nothing placed on a guessed time"

    behave(control, custom_zone_labels=0, custom_mailbox_zone=False)
    out = await run_sync(services, SyncMessage(str(key), SyncReason.RESYNC, full=True), worker_id="w")
    assert out.skipped == 0 and slots() == {slot_external_id(key, readable), slot_external_id(key, custom)}
    assert link_json(await LinkRepository(services.storage).require(key))["skipped"] == {"count": 0, "sample": None}

    assert control.delete(f"/events/{custom}").status_code == 204
    out = await run_sync(services, SyncMessage(str(key), SyncReason.NOTIFICATION), worker_id="w")
    assert out.status == "ok" and slots() == {slot_external_id(key, readable)}, "@removed (changed) removes"


async def test_app_only_object_id_without_user_read_all(world: World) -> None:
    """Reading a user app-only takes User.Read.All, which the app does not ask for; the mailbox
    settings (MailboxSettings.Read) still name the user by object id."""
    def adapter(roles: set[str]) -> GraphSdkAdapter:
        return GraphSdkAdapter(StaticTokenCredential(world.token(roles=roles)), base_url=world.env.base_url,
                               verify=str(world.env.ca_path))

    narrow, broad = adapter({"Calendars.ReadWrite"}), adapter({"Calendars.ReadWrite", "MailboxSettings.Read"})
    try:
        raw = await raw_get(world, f"{world.env.base_url}/users/{world.jonas.mail}")
        assert raw.status_code == 200, "a delegated token reads users"
        with pytest.raises(AuthError):
            await narrow.user_object_id(world.jonas.mail)
        assert await broad.user_object_id(world.jonas.mail) == world.jonas.id
    finally:
        await narrow.close()
        await broad.close()
