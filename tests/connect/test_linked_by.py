"""Who has a calendar, in words: a link remembers which Microsoft account linked it (``linkedBy`` in
the links API), and the chooser names the provider's resource that already has a calendar."""

from __future__ import annotations

from urllib.parse import urlencode

from shared.connect.flow import session_store
from shared.connect.links_api import list_links
from shared.domain import Link, LinkKey, LinkMode
from shared.http.connect_bp import handle_calendars
from shared.repos.links import LinkRepository, calendar_key
from tests.support.connect_world import JONAS, MemoryWorld, http_request, open_session


async def _link(world: MemoryWorld, calendar_id: str) -> int:
    sid = await open_session(world.services)
    form = {"csrf": session_store(world.services).csrf_token(sid), "action": "link",
            "calendar": calendar_key("tid-1", "anna", calendar_id)}
    request = http_request("POST", "/api/connect/calendars", body=urlencode(form).encode(),
                           headers={"Cookie": f"timum-connect={sid}",
                                    "Content-Type": "application/x-www-form-urlencoded"})
    return int((await handle_calendars(world.services, request)).status_code)


async def test_a_shared_calendar_names_its_owner_and_who_linked_it(world: MemoryWorld) -> None:
    assert await _link(world, world.graph.default_calendar(JONAS)) == 303
    link = await LinkRepository(world.storage).require(LinkKey("prov-1", "res-1"))
    assert link.calendar_owner == JONAS and link.linked_by == "Anna Weber"
    [listed] = (await list_links(world.services, "prov-1"))["links"]
    assert (listed["calendarOwner"], listed["linkedBy"]) == (JONAS, "Anna Weber")


async def test_a_reconnect_keeps_who_linked_it(world: MemoryWorld) -> None:
    assert await _link(world, "cal-room1") == 303
    assert await _link(world, "cal-room1") == 303
    link = await LinkRepository(world.storage).require(LinkKey("prov-1", "res-1"))
    assert link.linked_by == "Anna Weber"


async def _taken(world: MemoryWorld, provider: str, resource: str) -> None:
    repo = LinkRepository(world.storage)
    link = Link(provider_id=provider, resource_id=resource, mode=LinkMode.DELEGATED, tenant_id="tid-1",
                mailbox_id="anna", calendar_id="cal-room1", calendar_name="Behandlungsraum 1", calendar_owner="",
                account_id="anna-oid.tid-1")
    await repo.claim_calendar(link)
    await repo.save(link)


async def _chooser(world: MemoryWorld) -> str:
    sid = await open_session(world.services)
    request = http_request("GET", "/api/connect/calendars", headers={"Cookie": f"timum-connect={sid}"})
    return str((await handle_calendars(world.services, request)).get_body().decode())


async def test_a_calendar_taken_by_another_resource_names_it(world: MemoryWorld) -> None:
    world.timum.add_resource("prov-1", "Dr. Anna <Weber>", resource_id="res-anna")
    await _taken(world, "prov-1", "res-anna")
    page = await _chooser(world)
    assert "Bereits mit einer anderen timum-Ressource verbunden." in page
    assert "Aktuell mit „Dr. Anna &lt;Weber&gt;“ verbunden." in page


async def test_another_providers_resource_stays_unnamed(world: MemoryWorld) -> None:
    world.timum.add_resource("prov-other", "Fremde Praxis", resource_id="res-x")
    await _taken(world, "prov-other", "res-x")
    page = await _chooser(world)
    assert "Bereits mit einer anderen timum-Ressource verbunden." in page and "Fremde Praxis" not in page


async def test_a_resource_timum_no_longer_knows_keeps_the_general_note(world: MemoryWorld) -> None:
    await _taken(world, "prov-1", "res-deleted")
    page = await _chooser(world)
    assert "Bereits mit einer anderen timum-Ressource verbunden." in page and "Aktuell mit" not in page
