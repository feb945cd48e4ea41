"""Adding a block-only calendar in the chooser: read-only shared calendars allowed, the resource's
own link untouched, never two roles for one calendar."""

from __future__ import annotations

from shared.connect.flow import session_store
from shared.domain import LinkKey, SyncMode, block_key
from shared.http.connect_bp import handle_calendars
from shared.messages import LINK_ADMIN_QUEUE
from shared.repos.links import LinkRepository
from tests.connect.test_chooser import _get, _key, _post
from tests.support.connect_world import RETURN_BASE, ROOM, MemoryWorld, open_session, query_of


async def _submit(w: MemoryWorld, calendar: str, action: str, *, mailbox: str = "anna") -> tuple[int, str, str]:
    sid = await open_session(w.services)
    form = {"csrf": session_store(w.services).csrf_token(sid), "calendar": _key(w, calendar, mailbox),
            "action": action}
    response = await handle_calendars(w.services, _post(sid, form))
    return response.status_code, response.headers.get("Location", ""), response.get_body().decode()


async def test_a_read_only_calendar_blocks_the_resource(world: MemoryWorld) -> None:
    room = world.graph.default_calendar(ROOM)
    status, location, _ = await _submit(world, "cal-room1", "link")
    assert status == 303
    status, location, _ = await _submit(world, room, "block")
    assert status == 303 and query_of(location) == {"outlook": "connected", "resourceId": "res-1"}

    repo = LinkRepository(world.storage)
    main = await repo.require(LinkKey("prov-1", "res-1"))
    assert main.calendar_id == "cal-room1" and not main.block_only, "the resource's own link stays"
    [block] = await repo.list_block_only("prov-1", "res-1")
    assert block.key == block_key("prov-1", "res-1", "tid-1", "anna", room)
    assert block.calendar_id == room and block.block_of == "res-1"
    assert block.reconnect_url == main.reconnect_url == RETURN_BASE + "providers/prov-1"
    # delegated access cannot subscribe to a shared calendar: it is polled
    assert block.sync_mode is SyncMode.POLLING
    messages = world.storage.queue(LINK_ADMIN_QUEUE).drain()
    assert any(str(block.key) in m for m in messages)
    [announced] = [w["data"] for w in world.timum.status_webhooks if w["data"].get("calendarRole") == "block_only"]
    assert announced["resourceId"] == "res-1" and announced["linkId"] == block.resource_id

    # The page now says the calendar blocks this resource; adding it again is a reconnect, not a second link.
    page = (await handle_calendars(world.services, _get(await open_session(world.services)))).get_body().decode()
    assert "Blockiert bereits Zeiten dieser Ressource." in page
    assert "Ganztägige Termine gelten in Outlook standardmäßig als „frei“" in page
    status, _, _ = await _submit(world, room, "block")
    assert status == 303 and len(await repo.list_block_only("prov-1", "res-1")) == 1


async def test_one_calendar_has_one_role(world: MemoryWorld) -> None:
    assert (await _submit(world, "cal-room1", "link"))[0] == 303
    status, _, page = await _submit(world, "cal-room1", "block")
    assert status == 409 and "bereits" in page
    room = world.graph.default_calendar(ROOM)
    assert (await _submit(world, room, "block"))[0] == 303
    status, _, page = await _submit(world, room, "link")
    assert status == 400 and "schreibgeschützt" in page


async def test_blocking_needs_a_resource(world: MemoryWorld) -> None:
    sid = await open_session(world.services, resource=None)
    form = {"csrf": session_store(world.services).csrf_token(sid), "calendar": _key(world, "cal-room1"),
            "action": "block"}
    response = await handle_calendars(world.services, _post(sid, form))
    assert response.status_code == 400
    assert "Zeiten blockieren geht nur für eine Ressource aus timum." in response.get_body().decode()
    assert await LinkRepository(world.storage).list_all() == []
