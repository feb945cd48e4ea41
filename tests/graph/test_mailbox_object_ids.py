"""App-only links address their mailbox by the directory object id (Microsoft's recommendation);
links made with the SMTP address are migrated lazily on their first Graph use, calendar claim
included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.adapters.graph_constants import subscription_resource
from shared.adapters.graph_memory import MemoryGraph, MemoryGraphProvider
from shared.context import Services
from shared.domain import Link, LinkKey, LinkMode
from shared.messages import SyncMessage, SyncReason
from shared.outlook.mailbox_ids import ensure_object_id
from shared.repos.links import LinkRepository
from shared.services.subscriptions import ensure_subscription
from shared.storage.memory import MemoryStorage
from shared.sync.worker import run_sync
from tests.support.outlook_world import NOW, Clock, CrashingTimum, make_settings

OBJECT_ID = "6f1c2b3a-9d4e-4f5a-8b7c-0d1e2f3a4b5c"
ADDRESS = "raum1@praxis.example"
KEY = LinkKey("prov-1", "res-1")
H = timedelta(hours=1)
T = datetime(2026, 11, 24, 9, tzinfo=UTC)


async def world() -> tuple[Services, MemoryGraph, str]:
    graph = MemoryGraph(seed=3, clock=Clock(), app_only=True)
    graph.add_mailbox(OBJECT_ID, display_name="Raum 1", mail=ADDRESS)
    calendar = graph.default_calendar(OBJECT_ID)
    timum = CrashingTimum()
    timum.add_resource("prov-1", "Raum 1", resource_id="res-1")
    services = Services(settings=make_settings(), storage=MemoryStorage(), timum=timum,
                        graph=MemoryGraphProvider(graph), clock=lambda: NOW)
    link = Link(provider_id="prov-1", resource_id="res-1", mode=LinkMode.APP_ONLY, tenant_id="tid",
                mailbox_id=ADDRESS, calendar_id=calendar, calendar_name="Kalender", calendar_owner=ADDRESS)
    repo = LinkRepository(services.storage)
    await repo.claim_calendar(link)
    await repo.save(link)
    return services, graph, calendar


async def test_subscription_set_up_migrates_the_link_and_subscribes_by_object_id() -> None:
    services, graph, calendar = await world()
    repo = LinkRepository(services.storage)
    link = await ensure_subscription(services, await repo.require(KEY))
    assert link.mailbox_id == OBJECT_ID
    assert (await repo.require(KEY)).mailbox_id == OBJECT_ID
    [sub] = graph.subscriptions.values()
    assert sub.resource == subscription_resource(OBJECT_ID, calendar)
    # The calendar claim moved with it: the new key names the link, the address key is free.
    assert await repo.calendar_owner("tid", OBJECT_ID, calendar) == KEY
    assert await repo.calendar_owner("tid", ADDRESS, calendar) is None


async def test_a_sync_run_migrates_an_existing_link_once() -> None:
    services, graph, calendar = await world()
    graph.put_event(OBJECT_ID, calendar, subject="Termin", start=T, end=T + H)
    out = await run_sync(services, SyncMessage(str(KEY), SyncReason.RESYNC, full=True), worker_id="w")
    assert out.status == "ok" and out.upserts == 1
    assert (await LinkRepository(services.storage).require(KEY)).mailbox_id == OBJECT_ID
    looked_up = graph.requests["user_object_id"]
    await run_sync(services, SyncMessage(str(KEY), SyncReason.NOTIFICATION), worker_id="w")
    assert graph.requests["user_object_id"] == looked_up == 1


async def test_delegated_links_and_unknown_users_are_left_alone() -> None:
    services, graph, calendar = await world()
    repo = LinkRepository(services.storage)
    link = await repo.require(KEY)
    delegated = Link(**{**link.__dict__, "mode": LinkMode.DELEGATED, "etag": ""})
    assert await ensure_object_id(services, delegated, graph) is delegated
    ghost = Link(**{**link.__dict__, "mailbox_id": "weg@praxis.example", "etag": ""})
    assert (await ensure_object_id(services, ghost, graph)).mailbox_id == "weg@praxis.example"


async def test_a_calendar_claimed_under_the_object_id_by_another_link_blocks_the_migration() -> None:
    services, graph, calendar = await world()
    repo = LinkRepository(services.storage)
    other = Link(provider_id="prov-1", resource_id="res-2", mode=LinkMode.APP_ONLY, tenant_id="tid",
                 mailbox_id=OBJECT_ID, calendar_id=calendar, calendar_name="Kalender", calendar_owner=ADDRESS)
    await repo.claim_calendar(other)
    link = await ensure_object_id(services, await repo.require(KEY), graph)
    assert link.mailbox_id == ADDRESS and (await repo.require(KEY)).mailbox_id == ADDRESS
    assert await repo.calendar_owner("tid", ADDRESS, calendar) == KEY


async def test_a_tenant_that_refuses_the_look_up_is_not_asked_again_soon() -> None:
    from shared.errors import AuthError

    services, graph, calendar = await world()
    repo = LinkRepository(services.storage)
    link = Link(**{**(await repo.require(KEY)).__dict__, "tenant_id": "tid-refusing", "etag": ""})
    graph.fail_next(AuthError("Graph answered 403", code="graph_forbidden"), op="user_object_id")
    assert (await ensure_object_id(services, link, graph)).mailbox_id == ADDRESS
    asked = graph.requests["user_object_id"]
    assert (await ensure_object_id(services, link, graph)).mailbox_id == ADDRESS
    assert graph.requests["user_object_id"] == asked, "no second look-up within the hour"


async def test_the_chooser_makes_app_only_links_with_the_object_id_or_keeps_the_address() -> None:
    from shared.connect.chooser import _object_id
    from shared.errors import TransientError

    _, graph, _ = await world()
    assert await _object_id(graph, ADDRESS) == OBJECT_ID
    graph.fail_next(TransientError("Graph unreachable"), op="user_object_id")
    assert await _object_id(graph, ADDRESS) == ADDRESS, "the link's first run migrates it later"
