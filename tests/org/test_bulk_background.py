"""The mapping page's "Übernehmen" answers once the rows are planned; the link-admin worker links
them (``OrgLinkMessage``) and the page follows the progress through a small JSON status.

In-memory world (twins) with the very HTTP handlers and the worker's job function."""

from __future__ import annotations

import html
import json
import re
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import azure.functions as func
import pytest

from shared.connect.flow import session_store
from shared.connect.store import ConnectContext
from shared.context import Services
from shared.errors import BadRequest
from shared.http.connect_bp import session_cookie_name
from shared.http.org_bp import handle_organisation, handle_status
from shared.jobs.sync_bp import ADMIN_JOB
from shared.messages import LINK_ADMIN_QUEUE, AdminMessage, OrgLinkMessage, parse_admin_message
from shared.org import service
from shared.org.directory import MemoryOrgDirectory
from shared.org.store import CREATING, FAILED, LINKED, PENDING, MappingJobRepository, OrgRepository
from shared.repos.links import LinkRepository
from tests.support.connect_world import RETURN_BASE, MemoryWorld, http_request

CONTEXT = ConnectContext(provider_id="prov-1", resource_id=None, locale="de",
                         return_url=RETURN_BASE + "providers/prov-1", scope="org")


async def run_org_messages(services: Services) -> list[dict[str, Any]]:
    """The link-admin worker, for the organisation's messages on the queue (others stay)."""
    queue = services.storage.queue(LINK_ADMIN_QUEUE)
    taken = [json.loads(m) for m in queue.drain()]  # type: ignore[attr-defined]
    for data in taken:
        message = parse_admin_message(data)
        if isinstance(message, OrgLinkMessage):
            await ADMIN_JOB.run(services, message, None)  # type: ignore[arg-type]
        else:
            await queue.send(data)
    return [m for m in taken if "org_link" in m]


class Admin:
    """An administrator's browser on the mapping page of a 30-person practice."""

    def __init__(self, services: Services, session_id: str) -> None:
        self.services = services
        self.cookie = {"Cookie": f"{session_cookie_name(services)}={session_id}"}

    async def page(self, **params: str) -> tuple[func.HttpResponse, str]:
        response = await handle_organisation(self.services, http_request(
            "GET", "/api/connect/organisation", params=params, headers=self.cookie))
        return response, response.get_body().decode()

    async def press(self, choose: int, *, value: str = "new") -> tuple[func.HttpResponse, str]:
        _, body = await self.page()
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', body))
        selects = re.findall(r'<select name="(c\.[^"]+)"', body)[:choose]
        form = {**fields, **dict.fromkeys(selects, value), **{f"n.{n[2:]}": "" for n in selects}}
        response = await handle_organisation(self.services, http_request(
            "POST", "/api/connect/organisation", body=urlencode(form).encode(),
            headers={**self.cookie, "Content-Type": "application/x-www-form-urlencoded"}))
        return response, response.get_body().decode()

    async def status(self, status_url: str) -> func.HttpResponse:
        return await handle_status(self.services, http_request(
            "GET", "/api/connect/organisation/status", params=dict(parse_qsl(urlsplit(status_url).query)),
            headers=self.cookie))


def _attribute(body: str, name: str) -> str:
    found = re.search(rf'{name}="([^"]*)"', body)
    assert found is not None, f"no {name} on the page"
    return html.unescape(found.group(1))


@pytest.fixture
async def admin(world: MemoryWorld) -> Admin:
    directory = MemoryOrgDirectory()
    for i in range(30):
        directory.add(f"Person {i:02d}", f"p{i:02d}@praxis.example", calendars=("Calendar",))
    services = replace(world.services, org_directory=lambda tid: directory)
    await OrgRepository(world.storage).connect("tid-1", "prov-1", frozenset({"Calendars.ReadWrite"}),
                                               now=services.clock())
    session_id = await session_store(services).create(CONTEXT, account_id="", tenant_id="tid-1",
                                                      account_name="Petra", now=services.clock())
    return Admin(services, session_id)


async def test_the_press_is_answered_at_once_and_the_worker_links_the_rows(admin: Admin) -> None:
    services = admin.services
    pressed, body = await admin.press(20)
    # Answered with the rows planned, nothing linked yet: the page shows the progress.
    assert pressed.status_code == 200
    assert "0 verbunden, 0 nicht, 20 in Arbeit" in body
    assert "connect-src 'self'" in pressed.headers["Content-Security-Policy"]
    assert '<script nonce="' in body and _attribute(body, "data-pattern") == (
        "Die Kalender werden im Hintergrund verbunden: {linked} verbunden, {failed} nicht, {waiting} in Arbeit.")
    assert await LinkRepository(services.storage).list_for_provider("prov-1") == []
    rows = await MappingJobRepository(services.storage, "prov-1", "tid-1").all()
    assert len(rows) == 20 and {r.state for r in rows} == {PENDING}
    status_url = _attribute(body, "data-status-url")
    polled = await admin.status(status_url)
    assert polled.status_code == 200 and polled.headers["Cache-Control"] == "no-store"
    assert json.loads(polled.get_body()) == {"waiting": 20, "linked": 0, "failed": 0, "done": False}

    # One message for the whole press, on the existing link-admin queue.
    [message] = await run_org_messages(services)
    assert message == {"org_link": {"provider": "prov-1", "tenant": "tid-1"}}
    assert len(await LinkRepository(services.storage).list_for_provider("prov-1")) == 20
    assert json.loads((await admin.status(status_url)).get_body()) == {
        "waiting": 0, "linked": 20, "failed": 0, "done": True}
    # Each new link's own set-up was queued as before.
    setups = [json.loads(m) for m in services.storage.queue(LINK_ADMIN_QUEUE).drain()]  # type: ignore[attr-defined]
    assert sum(1 for m in setups if m.get("action") == "setup") == 20

    # The page the script reloads to once done: the press's summary, the rows linked.
    reload_url = _attribute(body, "data-reload-url")
    _, final = await admin.page(**dict(parse_qsl(urlsplit(reload_url).query)))
    assert "20 Kalender verbunden, 0 nicht." in final and 'id="progress"' not in final
    assert final.count("Verbunden mit") == 20


async def test_pressing_twice_before_the_worker_ran_makes_nothing_twice(admin: Admin) -> None:
    services = admin.services
    before = len(await services.timum.list_resources("prov-1"))
    await admin.press(5)
    await admin.press(5)
    messages = await run_org_messages(services)
    assert len(messages) == 2   # the second run finds the rows linked and does nothing
    links = await LinkRepository(services.storage).list_for_provider("prov-1")
    assert len(links) == 5 and len({k.resource_id for k in links}) == 5
    assert len(await services.timum.list_resources("prov-1")) == before + 5


async def test_a_row_refused_at_once_counts_in_the_summary(admin: Admin) -> None:
    # An existing resource that is not there: refused while planning, no job, said on the page.
    pressed, body = await admin.press(2, value="existing:res-gone")
    assert "Diese Ressource gibt es nicht (mehr)" in body
    assert "0 Kalender verbunden, 2 nicht." in body and 'id="progress"' not in body
    assert services_queue_is_empty(admin.services)


def services_queue_is_empty(services: Services) -> bool:
    return services.storage.queue(LINK_ADMIN_QUEUE).drain() == []  # type: ignore[attr-defined]


async def test_a_bulk_link_that_gives_up_says_so_and_keeps_a_creating_row(admin: Admin) -> None:
    services = admin.services
    jobs = MappingJobRepository(services.storage, "prov-1", "tid-1")
    before = len(await services.timum.list_resources("prov-1"))
    _, body = await admin.press(3)
    rows = sorted(await jobs.all(), key=lambda r: r.calendar_key)
    # One row died while its resource was being made: it must not be made a second time later.
    rows[0].state = CREATING
    await jobs.save(rows[0], now=services.clock())
    services.storage.queue(LINK_ADMIN_QUEUE).drain()  # type: ignore[attr-defined]
    poisoned = OrgLinkMessage("prov-1", "tid-1")
    assert ADMIN_JOB.poisoned is not None
    assert await ADMIN_JOB.poisoned(services, poisoned)  # handled here, not as one link's error
    states = {r.calendar_key: r.state for r in await jobs.all()}
    assert states[rows[0].calendar_key] == CREATING
    assert [states[r.calendar_key] for r in rows[1:]] == [FAILED, FAILED]
    # Once the creating row is stale too, the page is done and says what failed.
    later = replace(services, clock=lambda: admin.services.clock() + timedelta(minutes=5))
    status = await service.status(later, admin.cookie["Cookie"].split("=", 1)[1],
                                  since=dict(parse_qsl(urlsplit(_attribute(body, "data-status-url")).query))["since"],
                                  refused="0")
    assert status == {"waiting": 0, "linked": 0, "failed": 3, "done": True}
    # A next press finishes every row, the stale creating one included, with one resource each.
    await admin.press(3)
    await run_org_messages(later)
    assert {r.state for r in await jobs.all()} == {LINKED}
    assert len(await services.timum.list_resources("prov-1")) == before + 3


async def test_a_row_another_run_is_creating_brings_the_message_back_later(admin: Admin) -> None:
    services = admin.services
    jobs = MappingJobRepository(services.storage, "prov-1", "tid-1")
    await admin.press(2)
    services.storage.queue(LINK_ADMIN_QUEUE).drain()  # type: ignore[attr-defined]
    row = sorted(await jobs.all(), key=lambda r: r.calendar_key)[0]
    row.state = CREATING
    await jobs.save(row, now=services.clock())
    await service.run_queued_jobs(services, "prov-1", "tid-1")
    queued = services.storage.queue(LINK_ADMIN_QUEUE).messages  # type: ignore[attr-defined]
    [(due, again)] = [(at, m) for at, m in queued if "org_link" in m]
    assert json.loads(again) == {"org_link": {"provider": "prov-1", "tenant": "tid-1"}}
    assert due - time.monotonic() > service.CREATING_STALE.total_seconds()
    # The other row was linked meanwhile; the creating one is left to its run.
    assert sorted(r.state for r in await jobs.all()) == [CREATING, LINKED]


async def test_the_status_is_for_the_sessions_own_press_only(admin: Admin) -> None:
    anonymous = await handle_status(admin.services, http_request(
        "GET", "/api/connect/organisation/status", params={"since": "1", "refused": "0"}))
    assert anonymous.status_code == 400 and anonymous.mimetype == "application/problem+json"
    no_press = await handle_status(admin.services, http_request(
        "GET", "/api/connect/organisation/status", params={"since": "yesterday"}, headers=admin.cookie))
    assert no_press.status_code == 400


def test_organisation_messages_are_checked_and_told_apart_from_link_messages() -> None:
    assert isinstance(parse_admin_message({"link": "p|r", "action": "setup"}), AdminMessage)
    assert parse_admin_message(OrgLinkMessage("prov-1", "tid-1").to_json()) == OrgLinkMessage("prov-1", "tid-1")
    bad_ones = ({"org_link": "x"}, {"org_link": {"provider": "p"}}, {"org_link": {"provider": "p/../x", "tenant": "t"}})
    for bad in bad_ones:
        with pytest.raises(BadRequest):
            parse_admin_message(bad)
    assert str(OrgLinkMessage("prov-1", "tid-1").key) == "prov-1|org:tid-1"


def test_a_press_is_read_from_its_urls_only_when_well_formed() -> None:
    assert service.Press.parse("1767225600", "3") == service.Press(1767225600, 3)
    assert service.Press.parse("1767225600", "99999") == service.Press(1767225600, 0)
    assert service.Press.parse("1767225600", "9999") == service.Press(1767225600, service.MAX_ROWS_PER_SUBMIT)
    assert service.Press.parse("", "1") is None and service.Press.parse("-5", None) is None
    assert service.Press.parse("9" * 13, None) is None


async def test_the_link_admin_poison_queue_tells_its_two_kinds_apart(admin: Admin,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import shared.wiring as wiring
    from shared.jobs.common import run_poison
    from shared.messages import AdminAction

    services = admin.services
    monkeypatch.setattr(wiring, "get_services", lambda: services)
    await admin.press(3)
    await run_org_messages(services)
    [link, *_] = await LinkRepository(services.storage).list_for_provider("prov-1")
    # A link's message that failed every try: written on that link, as before.
    setup = AdminMessage(link=str(link.key), action=AdminAction.SETUP).to_json()
    await run_poison(ADMIN_JOB, func.QueueMessage(body=json.dumps(setup).encode()))
    stored = await LinkRepository(services.storage).require(link.key)
    assert stored.last_error.startswith("gave_up: link-admin: ")
    # The organisation's: its waiting rows say they failed, so the page ends and offers a new press.
    await admin.press(5)   # five more (linked rows offer no choice any more)
    jobs = MappingJobRepository(services.storage, "prov-1", "tid-1")
    assert sorted(r.state for r in await jobs.all()) == [LINKED] * 3 + [PENDING] * 5
    org = OrgLinkMessage("prov-1", "tid-1").to_json()
    await run_poison(ADMIN_JOB, func.QueueMessage(body=json.dumps(org).encode()))
    assert sorted(r.state for r in await jobs.all()) == [FAILED] * 5 + [LINKED] * 3
