"""The bulk link on the twins: a crash halfway or a second press never makes two links or two
resources; rows fail alone; and delegated links move to app-only push once the organisation is
connected, keeping their delta state, without being duplicated."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from shared.connect import chooser
from shared.connect.flow import session_store
from shared.connect.store import ConnectContext
from shared.domain import LinkKey, LinkMode, SyncMode
from shared.errors import TransientError
from shared.messages import LINK_ADMIN_QUEUE, AdminAction, AdminMessage
from shared.org import service
from shared.org.adopt import adopt, queue_tenant
from shared.org.directory import MemoryOrgDirectory
from shared.org.service import Choice, link_choices
from shared.org.store import CREATING, FAILED, LINKED, JobRow, MappingJobRepository, OrgRepository
from shared.repos.links import LinkRepository, calendar_key
from shared.services.subscriptions import handle_admin_message
from tests.support.connect_world import JONAS, RETURN_BASE, MemoryWorld, open_session

CONTEXT = ConnectContext(provider_id="prov-1", resource_id=None, locale="de",
                         return_url=RETURN_BASE + "providers/prov-1", scope="org")


@pytest.fixture
def directory() -> MemoryOrgDirectory:
    tenant = MemoryOrgDirectory()
    for i in range(6):
        tenant.add(f"Person {i}", f"p{i}@praxis.example")
    tenant.add("Raum 1", "raum1@praxis.example", kind="room")
    return tenant


def _choices(directory: MemoryOrgDirectory, count: int) -> list[Choice]:
    out = []
    for box in directory.mailboxes[:count]:
        cal = directory.calendars_by_mailbox[box.id][0]
        out.append(Choice(calendar_key("tid-1", box.id, cal.id), box.id, "new"))
    return out


async def test_a_crash_halfway_and_a_second_press_make_nothing_twice(world: MemoryWorld,
                                                                     directory: MemoryOrgDirectory) -> None:
    services = replace(world.services, org_directory=lambda tid: directory)
    choices = _choices(directory, 5)
    # timum fails the third resource creation: that row fails alone.
    world.timum.fail_next(TransientError("timum is down"), op="create_resource", times=1)
    first = await link_choices(services, CONTEXT, "tid-1", choices, directory)
    assert sorted(first.values()).count("linked") == 4 and "failed" in first.values()
    resources_after_first = len(await world.timum.list_resources("prov-1"))

    # The process died after a resource was created but before the row knew it.
    jobs = MappingJobRepository(world.storage, "prov-1", "tid-1")
    failed_key = next(k for k, v in first.items() if v == "failed")
    row = await jobs.get(failed_key)
    assert row is not None
    stray = await world.timum.create_resource("prov-1", row.resource_name)
    row.state = CREATING
    await jobs.save(row, now=world.services.clock())

    # While the row is freshly "creating", another press leaves it alone (the first is on it)…
    busy = await link_choices(services, CONTEXT, "tid-1", [c for c in choices if c.key == failed_key], directory)
    assert busy == {failed_key: "in_progress"}
    # …minutes later it is a crash's leftover, and is resumed.
    later = replace(services, clock=lambda: world.services.clock() + timedelta(minutes=5))
    second = await link_choices(later, CONTEXT, "tid-1", choices, directory)
    assert set(second.values()) == {"linked"}
    links = await LinkRepository(world.storage).list_for_provider("prov-1")
    assert len(links) == 5 and len({(k.mailbox_id, k.calendar_id) for k in links}) == 5
    # The half-made resource was taken, not doubled.
    assert stray in {k.resource_id for k in links}
    assert len(await world.timum.list_resources("prov-1")) == resources_after_first + 1
    assert all(r.state == LINKED for r in await jobs.all())

    third = await link_choices(services, CONTEXT, "tid-1", choices, directory)
    assert set(third.values()) == {"linked"}
    assert len(await world.timum.list_resources("prov-1")) == resources_after_first + 1


async def test_a_row_that_failed_after_its_resource_was_made_keeps_that_resource(
        world: MemoryWorld, directory: MemoryOrgDirectory) -> None:
    services = replace(world.services, org_directory=lambda tid: directory)
    (choice,) = _choices(directory, 1)
    box = directory.mailboxes[0]
    cal = directory.calendars_by_mailbox[box.id][0]
    # As a press leaves a row whose resource was made and whose link step then failed.
    made = await world.timum.create_resource("prov-1", box.name)
    jobs = MappingJobRepository(world.storage, "prov-1", "tid-1")
    row = await jobs.plan(JobRow(calendar_key=choice.key, mailbox_id=box.id, mailbox_address=box.address,
                                 calendar_id=cal.id, calendar_name=cal.name, owner_name=box.name, action="new",
                                 resource_name=box.name), now=services.clock())
    row.resource_id, row.state, row.error = made, FAILED, "failed"
    await jobs.save(row, now=services.clock())
    count = len(await world.timum.list_resources("prov-1"))

    again = await link_choices(services, CONTEXT, "tid-1", [choice], directory)
    assert again[choice.key] == "linked"
    assert len(await world.timum.list_resources("prov-1")) == count
    (link,) = await LinkRepository(world.storage).list_for_provider("prov-1")
    assert link.resource_id == made


async def test_an_out_of_scope_row_fails_alone_and_a_taken_calendar_is_refused(world: MemoryWorld,
                                                                            directory: MemoryOrgDirectory) -> None:
    services = replace(world.services, org_directory=lambda tid: directory)
    choices = _choices(directory, 3)
    directory.out_of_scope.add(directory.mailboxes[1].id)
    report = await link_choices(services, CONTEXT, "tid-1", choices, directory)
    assert report[choices[1].key] == "out_of_scope"
    assert report[choices[0].key] == report[choices[2].key] == "linked"
    # Another provider cannot take a calendar this one linked.
    other = replace(CONTEXT, provider_id="prov-2")
    world.timum.add_resource("prov-2", "Fremd", resource_id="res-x")
    taken = await link_choices(services, other, "tid-1", [choices[0]], directory)
    assert taken[choices[0].key] == "calendar_taken"
    bogus = Choice(choices[2].key, choices[2].mailbox_id, "existing", resource_id="res-9")  # prov-2's resource
    refused = await link_choices(services, CONTEXT, "tid-1", [bogus], directory)
    assert refused[choices[2].key] in ("resource_unavailable", "linked")


async def test_the_mapping_page_pages_and_searches(world: MemoryWorld) -> None:
    big = MemoryOrgDirectory()
    for i in range(60):
        big.add(f"Mitarbeiter {i:02d}", f"m{i:02d}@praxis.example")
    big.add("Zimmer Süd", "sued@praxis.example", kind="room")
    services = replace(world.services, org_directory=lambda tid: big)
    await OrgRepository(world.storage).connect("tid-1", "prov-1", frozenset({"Calendars.ReadWrite"}),
                                               now=world.services.clock())
    session_id = await session_store(services).create(CONTEXT, account_id="", tenant_id="tid-1",
                                                      account_name="Petra", now=services.clock())
    first = await service.view(services, session_id, search="", cursor="", locale="en")
    assert isinstance(first, service.OrgPage) and len(first.values["rows"]) == 25 and first.values["next_cursor"]
    second = await service.view(services, session_id, search="", cursor=first.values["next_cursor"], locale="en")
    assert isinstance(second, service.OrgPage)
    assert {r["id"] for r in first.values["rows"]}.isdisjoint({r["id"] for r in second.values["rows"]})
    found = await service.view(services, session_id, search="zimmer", cursor="", locale="en")
    assert isinstance(found, service.OrgPage)
    assert [(r["name"], r["kind"]) for r in found.values["rows"]] == [("Zimmer Süd", "Raum")]
    # A cursor the page did not issue is refused, not followed.
    forged = await service.view(services, session_id, search="", cursor="https://evil.example/users", locale="en")
    assert not isinstance(forged, service.OrgPage)
    # A chooser (single-calendar) session does not open the organisation page.
    single = await open_session(services)
    refused = await service.view(services, single, search="", cursor="", locale="en")
    assert not isinstance(refused, service.OrgPage) and refused.code == "session_expired"


async def test_delegated_links_move_to_app_only_push_once_the_organisation_is_connected(
        world: MemoryWorld) -> None:
    services = world.services
    session_id = await open_session(services, resource="res-1")
    session = await session_store(services).get(session_id, now=services.clock())
    assert session is not None
    shared = next(c for c in await world.graph.list_calendars("anna") if c.is_shared and c.owner_address == JONAS)
    graph = await services.graph.for_link(chooser._probe(session))
    link = await chooser.connect_calendar(services, session, shared, "res-1", graph)
    assert link.mode is LinkMode.DELEGATED and link.sync_mode is SyncMode.POLLING
    repo = LinkRepository(services.storage)
    stored = await repo.get(link.key)
    assert stored is not None
    stored.delta_link = "https://graph.example/delta?token=kept"
    await repo.save(stored)

    # Not connected yet: the link stays as it is.
    assert await adopt(services, link.key) == "not_connected"
    await OrgRepository(services.storage).connect("tid-1", "prov-1", frozenset({"Calendars.ReadWrite"}),
                                                  now=services.clock())
    world.storage.queue(LINK_ADMIN_QUEUE).drain()
    assert await queue_tenant(services, "tid-1") == 1
    message = json.loads(world.storage.queue(LINK_ADMIN_QUEUE).drain()[0])
    assert message["action"] == AdminAction.ADOPT_APP_ONLY.value
    outcome = await handle_admin_message(services, AdminMessage.parse(message))
    assert outcome.result == "moved"
    moved = await repo.get(LinkKey("prov-1", "res-1"))
    assert moved is not None
    assert moved.mode is LinkMode.APP_ONLY and moved.sync_mode is SyncMode.PUSH and moved.subscription_id
    assert moved.mailbox_id.lower() == JONAS and not moved.account_id
    assert moved.delta_link == "https://graph.example/delta?token=kept"  # delta state kept
    assert await repo.calendar_owner("tid-1", JONAS, shared.id) == moved.key
    assert len(await repo.list_for_provider("prov-1")) == 1
    # Running the message again changes nothing.
    assert (await handle_admin_message(services, AdminMessage.parse(message))).result == "already"
    again = await repo.get(moved.key)
    assert again is not None and again.subscription_id == moved.subscription_id
