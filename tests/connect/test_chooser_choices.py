"""What the chooser offers, and that it never offers what it then refuses: where the calendar
goes (provider and resource), linking a calendar to an existing resource of the same name instead
of creating a duplicate, the new resource's name, no preselection into a resource "Kalender",
and moving the calendar a resource already has."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import azure.functions as func

from shared.connect.flow import session_store
from shared.domain import LinkKey
from shared.http.connect_bp import handle_calendars
from shared.repos.links import LinkRepository, calendar_key
from tests.support.connect_world import MemoryWorld, http_request, open_session, query_of


def _cookie(session_id: str) -> dict[str, str]:
    return {"Cookie": f"timum-connect={session_id}"}


def _get(session_id: str) -> func.HttpRequest:
    return http_request("GET", "/api/connect/calendars", headers=_cookie(session_id))


def _post(session_id: str, form: dict[str, str]) -> func.HttpRequest:
    return http_request("POST", "/api/connect/calendars", body=urlencode(form).encode(),
                        headers={**_cookie(session_id), "Content-Type": "application/x-www-form-urlencoded"})


def _key(calendar_id: str, mailbox: str = "anna") -> str:
    return calendar_key("tid-1", mailbox, calendar_id)


def _csrf(world: MemoryWorld, session_id: str) -> str:
    return session_store(world.services).csrf_token(session_id)


def _checked(page: str) -> list[str]:
    return re.findall(r'value="([^"]+)" required checked', page)


async def test_the_page_names_the_provider_and_resource_the_calendar_goes_to(world: MemoryWorld) -> None:
    sid = await open_session(world.services)
    page = (await handle_calendars(world.services, _get(sid))).get_body().decode()
    assert "Ziel in timum: die Ressource „Dr. Anna Weber“ im timum-Konto „prov-1“." in page
    sid = await open_session(world.services, resource=None, locale="en")
    page = (await handle_calendars(world.services, _get(sid))).get_body().decode()
    assert "Destination in timum: a resource in timum account “prov-1”" in page
    # With the name timum signed into the link, the account is named as the provider knows it.
    sid = await open_session(world.services, provider_name="Physiopraxis <Sonnenschein>")
    page = (await handle_calendars(world.services, _get(sid))).get_body().decode()
    assert "im timum-Konto „Physiopraxis &lt;Sonnenschein&gt;“." in page


async def test_a_new_resource_is_not_preselected_from_the_default_calendar(world: MemoryWorld) -> None:
    sid = await open_session(world.services, resource=None)
    page = (await handle_calendars(world.services, _get(sid))).get_body().decode()
    assert _checked(page) == []
    # the default calendar would become a resource named after Anna, not "Kalender"
    default = world.graph.default_calendar("anna")
    assert f'value="{_key(default)}" required data-suggest="Anna Weber"' in page
    form = {"csrf": _csrf(world, sid), "calendar": _key(default), "action": "create"}
    response = await handle_calendars(world.services, _post(sid, form))
    assert response.status_code == 303
    new_id = query_of(response.headers["Location"])["resourceId"]
    assert world.timum.resources[("prov-1", new_id)]["name"] == "Anna Weber"


async def test_with_a_resource_from_timum_its_calendar_is_preselected(world: MemoryWorld) -> None:
    sid = await open_session(world.services)
    page = (await handle_calendars(world.services, _get(sid))).get_body().decode()
    assert _checked(page) == [_key(world.graph.default_calendar("anna"))]


async def test_the_new_resources_name_can_be_edited_and_is_checked(world: MemoryWorld) -> None:
    sid = await open_session(world.services, resource=None)
    before = set(world.timum.resources)
    form = {"csrf": _csrf(world, sid), "calendar": _key("cal-room1"), "action": "create", "new_name": "x" * 201}
    refused = await handle_calendars(world.services, _post(sid, form))
    assert refused.status_code == 400 and "höchstens 200 Zeichen" in refused.get_body().decode()
    form["new_name"] = "Raum\x07 1"
    assert (await handle_calendars(world.services, _post(sid, form))).status_code == 400
    assert set(world.timum.resources) == before      # refused names create nothing
    form["new_name"] = "  Behandlung   Süd  "
    response = await handle_calendars(world.services, _post(sid, form))
    assert response.status_code == 303
    new_id = query_of(response.headers["Location"])["resourceId"]
    assert world.timum.resources[("prov-1", new_id)]["name"] == "Behandlung Süd"


async def test_a_calendar_named_like_an_existing_resource_offers_that_resource(world: MemoryWorld) -> None:
    world.timum.add_resource("prov-1", "Behandlungsraum 1", resource_id="res-room1")
    world.timum.add_resource("prov-2", "Behandlungsraum 1", resource_id="res-foreign")
    sid = await open_session(world.services, resource=None)
    page = (await handle_calendars(world.services, _get(sid))).get_body().decode()
    assert "In timum gibt es schon die Ressource „Behandlungsraum 1“." in page
    assert 'value="existing:res-room1"' in page and "res-foreign" not in page
    assert "Mit der vorhandenen Ressource „Behandlungsraum 1“ verbinden" in page
    assert 'value="create"' in page          # next to "create a new one"
    resources = len(world.timum.resources)
    form = {"csrf": _csrf(world, sid), "calendar": _key("cal-room1"), "action": "existing:res-room1"}
    response = await handle_calendars(world.services, _post(sid, form))
    assert response.status_code == 303 and query_of(response.headers["Location"])["resourceId"] == "res-room1"
    assert len(world.timum.resources) == resources      # no duplicate
    link = await LinkRepository(world.storage).require(LinkKey("prov-1", "res-room1"))
    assert link.calendar_id == "cal-room1"


async def test_only_offered_resources_can_be_linked(world: MemoryWorld) -> None:
    world.timum.add_resource("prov-2", "Behandlungsraum 1", resource_id="res-foreign")
    sid = await open_session(world.services, resource=None)
    form = {"csrf": _csrf(world, sid), "calendar": _key("cal-room1"), "action": "existing:res-foreign"}
    response = await handle_calendars(world.services, _post(sid, form))
    assert response.status_code == 409
    assert await LinkRepository(world.storage).get(LinkKey("prov-2", "res-foreign")) is None


async def test_every_action_offered_for_the_calendar_this_resource_has_works(world: MemoryWorld) -> None:
    """The calendar linked to this resource can be picked; "create a new resource" with it moves
    it there instead of refusing."""
    sid = await open_session(world.services)
    form = {"csrf": _csrf(world, sid), "calendar": _key("cal-room1"), "action": "link"}
    assert (await handle_calendars(world.services, _post(sid, form))).status_code == 303
    sid = await open_session(world.services)
    page = (await handle_calendars(world.services, _get(sid))).get_body().decode()
    assert _checked(page) == [_key("cal-room1")] and 'value="create"' in page
    form = {"csrf": _csrf(world, sid), "calendar": _key("cal-room1"), "action": "create", "new_name": "Raum Nord"}
    response = await handle_calendars(world.services, _post(sid, form))
    assert response.status_code == 303, response.get_body()[:400]
    new_id = query_of(response.headers["Location"])["resourceId"]
    repo = LinkRepository(world.storage)
    assert await repo.get(LinkKey("prov-1", "res-1")) is None
    assert (await repo.require(LinkKey("prov-1", new_id))).calendar_id == "cal-room1"
    assert await repo.calendar_owner("tid-1", "anna", "cal-room1") == LinkKey("prov-1", new_id)
