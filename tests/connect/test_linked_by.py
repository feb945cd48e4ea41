"""A link remembers which Microsoft account linked it, so timum can say of a shared calendar whose
it is and who linked it; the links API reports it as ``linkedBy``."""

from __future__ import annotations

from urllib.parse import urlencode

from shared.connect.flow import session_store
from shared.connect.links_api import list_links
from shared.domain import LinkKey
from shared.http.connect_bp import handle_calendars
from shared.repos.links import LinkRepository, calendar_key
from tests.connect.conftest import JONAS, MemoryWorld, http_request, open_session


async def _link(world: MemoryWorld, calendar_id: str) -> int:
    sid = await open_session(world.services)
    form = {"csrf": session_store(world.services).csrf_token(sid), "action": "link",
            "calendar": calendar_key("tid-1", "anna", calendar_id)}
    request = http_request("POST", "/api/connect/calendars", body=urlencode(form).encode(),
                           headers={"Cookie": f"timum-connect={sid}",
                                    "Content-Type": "application/x-www-form-urlencoded"})
    return (await handle_calendars(world.services, request)).status_code


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
