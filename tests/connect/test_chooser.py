"""The calendar chooser over the in-memory twins: what it lists, what it refuses, and what a
choice changes (link, calendar claim, teardown of an old link, SETUP, status webhook)."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import azure.functions as func
import pytest

from shared.bookings.payload import booking_to_json
from shared.bookings.service import apply_booking_message
from shared.connect.flow import session_store
from shared.connect.status import set_health
from shared.connect.teardown import TeardownRepository
from shared.domain import Booking, BookingStatus, Link, LinkHealth, LinkKey, LinkMode, SyncMode
from shared.errors import NeedsReconnect, Throttled, TransientError
from shared.http.connect_bp import handle_calendars
from shared.messages import BOOKING_QUEUE, LINK_ADMIN_QUEUE, AdminAction, AdminMessage
from shared.repos.accounts import TenantRepository
from shared.repos.links import LinkRepository, SubscriptionRepository, calendar_key
from tests.support.connect_world import JONAS, RETURN_BASE, ROOM, MemoryWorld, http_request, open_session, query_of


def _cookie(session_id: str) -> dict[str, str]:
    return {"Cookie": f"other=1; timum-connect={session_id}"}


def _get(session_id: str | None, *, lang: str = "de") -> func.HttpRequest:
    headers = _cookie(session_id) if session_id else {}
    headers["Accept-Language"] = lang
    return http_request("GET", "/api/connect/calendars", headers=headers)


def _post(session_id: str, form: dict[str, str]) -> func.HttpRequest:
    return http_request("POST", "/api/connect/calendars", body=urlencode(form).encode(),
                        headers={**_cookie(session_id), "Content-Type": "application/x-www-form-urlencoded"})


def _key(world: MemoryWorld, calendar_id: str, mailbox: str = "anna") -> str:
    return calendar_key("tid-1", mailbox, calendar_id)


def _csrf(world: MemoryWorld, session_id: str) -> str:
    return session_store(world.services).csrf_token(session_id)


def _admin_messages(world: MemoryWorld) -> list[AdminMessage]:
    return [AdminMessage.parse(json.loads(m)) for m in world.storage.queue(LINK_ADMIN_QUEUE).drain()]


async def test_lists_own_and_shared_calendars_with_their_limits(world: MemoryWorld) -> None:
    sid = await open_session(world.services)
    response = await handle_calendars(world.services, _get(sid))
    page = response.get_body().decode()
    assert response.status_code == 200
    assert "Outlook-Kalender auswählen" in page and "Dr. Anna Weber" in page
    assert "Behandlungsraum 1" in page and "von Jonas Becker &lt;jonas@praxis.example&gt;" in page
    room = _key(world, world.graph.default_calendar(ROOM))
    # the read-only room calendar can only block the resource's times, and says so
    assert f'value="{room}"\n' in page or f'value="{room}"' in page
    [tag] = re.findall(rf'<input[^>]*id="cal-{room}"[^>]*>', page)
    assert not re.search(r"\sdisabled[\s>]", tag) and f'aria-describedby="cal-{room}-notes"' in tag
    assert "Nur Lesezugriff – kann nur Zeiten blockieren." in page and 'value="block"' in page
    assert "freigegeben sind und Sie die Freigabe in Outlook angenommen" in page
    assert 'value="link"' in page and 'value="create"' in page
    cancel = query_of(page.split('href="')[-1].split('"')[0].replace("&amp;", "&"))
    assert cancel == {"outlook": "cancelled"}
    headers = response.headers
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "form-action 'self' http://127.0.0.1:7080" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY" and headers["Referrer-Policy"] == "no-referrer"


async def test_english_and_no_resource_in_the_link(world: MemoryWorld) -> None:
    sid = await open_session(world.services, resource=None, locale="en")
    page = (await handle_calendars(world.services, _get(sid))).get_body().decode()
    assert "Choose an Outlook calendar" in page and '<html lang="en">' in page
    assert 'value="link"' not in page and 'value="create"' in page


async def test_hostile_calendar_names_are_text(world: MemoryWorld) -> None:
    hostile = '<script>alert("x")</script> & \'quoted" <img src=x onerror=alert(1)>'
    world.graph.add_calendar("anna", hostile, calendar_id="cal-evil")
    world.timum.add_resource("prov-1", '"><b>Raum</b>', resource_id="res-2")
    sid = await open_session(world.services, resource="res-2")
    page = (await handle_calendars(world.services, _get(sid))).get_body().decode()
    assert "<script>alert" not in page and "<img src=x" not in page and "<b>Raum</b>" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#39;quoted&#34;" in page
    assert "&#34;&gt;&lt;b&gt;Raum&lt;/b&gt;" in page
    # the only scripts and styles are ours, with this response's nonce
    assert page.count("<script") == page.count("<script nonce=") == 1 and page.count("<style nonce=") == 1


async def test_csrf_is_required_and_nothing_changes_without_it(world: MemoryWorld) -> None:
    sid = await open_session(world.services)
    choice = {"calendar": _key(world, "cal-room1"), "action": "link"}
    for form in (choice, {**choice, "csrf": "forged"}, {**choice, "csrf": _csrf(world, "another-session")}):
        response = await handle_calendars(world.services, _post(sid, form))
        assert response.status_code == 403
        assert "Das Formular ist abgelaufen" in response.get_body().decode()
    assert await LinkRepository(world.storage).list_all() == []
    assert world.storage.queue(LINK_ADMIN_QUEUE).drain() == []
    assert world.timum.status_webhooks == []
    # a form that is not a form submission at all
    raw = http_request("POST", "/api/connect/calendars", body=b'{"calendar": "x"}',
                       headers={**_cookie(sid), "Content-Type": "application/json"})
    assert (await handle_calendars(world.services, raw)).status_code == 400


async def test_linking_the_resource_of_the_link(world: MemoryWorld) -> None:
    sid = await open_session(world.services)
    form = {"csrf": _csrf(world, sid), "calendar": _key(world, "cal-room1"), "action": "link"}
    response = await handle_calendars(world.services, _post(sid, form))
    assert response.status_code == 303
    location = response.headers["Location"]
    assert location.startswith(RETURN_BASE + "providers/prov-1?")
    assert query_of(location) == {"outlook": "connected", "resourceId": "res-1"}
    assert "Max-Age=0" in response.headers["Set-Cookie"]
    link = await LinkRepository(world.storage).require(LinkKey("prov-1", "res-1"))
    assert (link.mode, link.sync_mode, link.calendar_id, link.mailbox_id) == (
        LinkMode.DELEGATED, SyncMode.PUSH, "cal-room1", "anna")
    assert (link.account_id, link.tenant_id, link.time_zone, link.calendar_name) == (
        "anna-oid.tid-1", "tid-1", "Europe/Berlin", "Behandlungsraum 1")
    assert await LinkRepository(world.storage).calendar_owner("tid-1", "anna", "cal-room1") == link.key
    assert _admin_messages(world) == [AdminMessage(link="prov-1|res-1", action=AdminAction.SETUP)]
    [status] = world.timum.status_webhooks
    assert status["data"] == {"providerId": "prov-1", "resourceId": "res-1", "status": "ok", "mode": "delegated",
                              "reason": "", "calendarName": "Behandlungsraum 1"}
    # the session is single-use
    again = await handle_calendars(world.services, _post(sid, form))
    assert again.status_code == 400 and "Sitzung ist abgelaufen" in again.get_body().decode()


async def test_creating_a_resource_from_the_calendar(world: MemoryWorld) -> None:
    sid = await open_session(world.services, resource=None)
    form = {"csrf": _csrf(world, sid), "calendar": _key(world, "cal-room1"), "action": "create"}
    response = await handle_calendars(world.services, _post(sid, form))
    assert response.status_code == 303
    new_id = query_of(response.headers["Location"])["resourceId"]
    assert world.timum.resources[("prov-1", new_id)]["name"] == "Behandlungsraum 1"
    link = await LinkRepository(world.storage).require(LinkKey("prov-1", new_id))
    assert link.calendar_id == "cal-room1"


async def test_one_calendar_one_resource(world: MemoryWorld) -> None:
    repo = LinkRepository(world.storage)
    taken = Link(provider_id="prov-1", resource_id="res-other", mode=LinkMode.DELEGATED, tenant_id="tid-1",
                 mailbox_id="anna", calendar_id="cal-room1", calendar_name="Behandlungsraum 1",
                 calendar_owner="", account_id="anna-oid.tid-1")
    await repo.claim_calendar(taken)
    await repo.save(taken)
    sid = await open_session(world.services)
    page = (await handle_calendars(world.services, _get(sid))).get_body().decode()
    assert "Bereits mit einer anderen timum-Ressource verbunden." in page
    form = {"csrf": _csrf(world, sid), "calendar": _key(world, "cal-room1"), "action": "link"}
    response = await handle_calendars(world.services, _post(sid, form))
    body = response.get_body().decode()
    assert response.status_code == 409 and "Jeder Kalender kann nur mit einer Ressource verbunden werden" in body
    assert 'role="alert"' in body
    assert await repo.get(LinkKey("prov-1", "res-1")) is None
    assert await repo.calendar_owner("tid-1", "anna", "cal-room1") == LinkKey("prov-1", "res-other")
    assert world.storage.queue(LINK_ADMIN_QUEUE).drain() == []


async def test_relinking_a_resource_ends_its_old_link_cleanly(world: MemoryWorld) -> None:
    repo = LinkRepository(world.storage)
    old = Link(provider_id="prov-1", resource_id="res-1", mode=LinkMode.DELEGATED, tenant_id="tid-1",
               mailbox_id="anna", calendar_id=world.graph.default_calendar("anna"), calendar_name="Kalender",
               calendar_owner="", account_id="anna-oid.tid-1", subscription_id="sub-old", delta_link="https://d")
    await repo.claim_calendar(old)
    old = await repo.save(old)
    await SubscriptionRepository(world.storage).put("sub-old", old.key, "client-state")
    sid = await open_session(world.services)
    form = {"csrf": _csrf(world, sid), "calendar": _key(world, "cal-room1"), "action": "link"}
    assert (await handle_calendars(world.services, _post(sid, form))).status_code == 303
    link = await repo.require(LinkKey("prov-1", "res-1"))
    assert (link.calendar_id, link.subscription_id, link.delta_link) == ("cal-room1", "", "")
    assert await repo.calendar_owner("tid-1", "anna", old.calendar_id) is None
    assert await SubscriptionRepository(world.storage).get("sub-old") is None
    messages = _admin_messages(world)
    assert AdminMessage(link="prov-1|res-1", action=AdminAction.TEARDOWN, subscription_id="sub-old") in messages
    assert messages[-1] == AdminMessage(link="prov-1|res-1", action=AdminAction.SETUP)
    snapshot = await TeardownRepository(world.storage).get(old.key, "sub-old")
    assert snapshot is not None and snapshot.calendar_id == old.calendar_id and snapshot.account_id == old.account_id


async def test_shared_calendars_poll_unless_the_tenant_consented_to_app_only_access(world: MemoryWorld) -> None:
    jonas_cal = world.graph.default_calendar(JONAS)
    sid = await open_session(world.services)
    form = {"csrf": _csrf(world, sid), "calendar": _key(world, jonas_cal), "action": "link"}
    assert (await handle_calendars(world.services, _post(sid, form))).status_code == 303
    link = await LinkRepository(world.storage).require(LinkKey("prov-1", "res-1"))
    assert (link.mode, link.sync_mode, link.mailbox_id) == (LinkMode.DELEGATED, SyncMode.POLLING, "anna")

    await TenantRepository(world.storage).record_admin_consent("tid-1", now=world.services.clock())
    world.timum.add_resource("prov-1", "Jonas", resource_id="res-jonas")
    # the calendar is still taken by res-1 through Anna's mailbox: free it first
    from shared.connect.links_api import delete_link

    await delete_link(world.services, "prov-1", "res-1")
    sid = await open_session(world.services, resource="res-jonas")
    page = (await handle_calendars(world.services, _get(sid))).get_body().decode()
    assert "Dank der Zustimmung Ihres Administrators" in page
    form = {"csrf": _csrf(world, sid), "calendar": _key(world, jonas_cal), "action": "link"}
    assert (await handle_calendars(world.services, _post(sid, form))).status_code == 303
    app_link = await LinkRepository(world.storage).require(LinkKey("prov-1", "res-jonas"))
    assert (app_link.mode, app_link.sync_mode) == (LinkMode.APP_ONLY, SyncMode.PUSH)
    assert (app_link.mailbox_id, app_link.calendar_id, app_link.account_id) == ("jonas@praxis.example", jonas_cal, "")


async def test_problems_are_explained_on_the_chooser(world: MemoryWorld) -> None:
    room = world.graph.default_calendar(ROOM)
    cases = [
        ({"calendar": _key(world, room), "action": "link"}, 400, "schreibgeschützt"),
        ({"action": "link"}, 400, "Bitte wählen Sie zuerst einen Kalender."),
        ({"calendar": "cal-unknown", "action": "link"}, 404, "nicht mehr verfügbar"),
        ({"calendar": _key(world, "cal-room1"), "action": "steal"}, 400, "angebotenen Aktionen"),
    ]
    sid = await open_session(world.services)
    for form, status, text in cases:
        response = await handle_calendars(world.services, _post(sid, {"csrf": _csrf(world, sid), **form}))
        assert response.status_code == status, form
        assert text in response.get_body().decode()
    no_resource = await open_session(world.services, resource=None)
    response = await handle_calendars(world.services, _post(no_resource, {
        "csrf": _csrf(world, no_resource), "calendar": _key(world, "cal-room1"), "action": "link"}))
    assert response.status_code == 400 and "nennt keine Ressource" in response.get_body().decode()
    assert await LinkRepository(world.storage).list_all() == []


async def test_a_double_submitted_form_runs_once(world: MemoryWorld) -> None:
    sid = await open_session(world.services)
    store = session_store(world.services)
    session = await store.get(sid, now=world.services.clock())
    assert session is not None
    await store.set_busy(session, True)   # the first submission is still running
    form = {"csrf": _csrf(world, sid), "calendar": _key(world, "cal-room1"), "action": "create"}
    response = await handle_calendars(world.services, _post(sid, form))
    assert response.status_code == 409 and "gerade schon gespeichert" in response.get_body().decode()
    assert len(world.timum.resources) == 2   # no resource created


async def test_missing_session_or_revoked_sign_in(world: MemoryWorld) -> None:
    response = await handle_calendars(world.services, _get(None, lang="en"))
    assert response.status_code == 400 and "Your session has expired" in response.get_body().decode()
    assert "Max-Age=0" in response.headers["Set-Cookie"]
    sid = await open_session(world.services)
    world.provider.revoked.add("anna-oid.tid-1")
    response = await handle_calendars(world.services, _get(sid))
    assert response.status_code == 400 and "nicht mehr gültig" in response.get_body().decode()
    assert "http://127.0.0.1:7080/timum/providers/prov-1" in response.get_body().decode()
    world.provider.revoked.clear()
    world.graph.fail_next(NeedsReconnect("revoked"))
    response = await handle_calendars(world.services, _get(sid))
    assert response.status_code == 400


async def test_reconnecting_the_same_calendar_keeps_the_sync_state(world: MemoryWorld) -> None:
    sid = await open_session(world.services)
    form = {"csrf": _csrf(world, sid), "calendar": _key(world, "cal-room1"), "action": "link"}
    assert (await handle_calendars(world.services, _post(sid, form))).status_code == 303
    repo = LinkRepository(world.storage)
    link = await repo.require(LinkKey("prov-1", "res-1"))
    link.subscription_id, link.delta_link = "sub-1", "https://graph/delta?token=1"
    link = await repo.save(link)
    _admin_messages(world)

    again = await open_session(world.services)
    form = {"csrf": _csrf(world, again), "calendar": _key(world, "cal-room1"), "action": "link"}
    assert (await handle_calendars(world.services, _post(again, form))).status_code == 303
    kept = await repo.require(LinkKey("prov-1", "res-1"))
    assert (kept.subscription_id, kept.delta_link, kept.calendar_id) == ("sub-1", link.delta_link, "cal-room1")
    assert _admin_messages(world) == [AdminMessage(link="prov-1|res-1", action=AdminAction.SETUP)]
    assert len(world.timum.status_webhooks) == 1     # nothing new to tell timum


async def test_a_set_up_writing_the_link_while_it_is_reconnected_is_no_error(world: MemoryWorld,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # The sign-in that precedes a reconnect queues the link's set-up; its worker may save the row
    # between the chooser's read and its write. The reconnect re-reads and applies itself again.
    sid = await open_session(world.services)
    form = {"csrf": _csrf(world, sid), "calendar": _key(world, "cal-room1"), "action": "link"}
    assert (await handle_calendars(world.services, _post(sid, form))).status_code == 303
    repo = LinkRepository(world.storage)
    key = LinkKey("prov-1", "res-1")
    await set_health(world.services, await repo.require(key), LinkHealth.NEEDS_RECONNECT, "needs_reconnect: x")
    real_get = LinkRepository.get
    raced: list[str] = []

    async def get_then_race(self: LinkRepository, wanted: LinkKey) -> Link | None:
        found = await real_get(self, wanted)
        if wanted == key and found is not None and not raced:
            worker = await real_get(LinkRepository(world.storage), key)
            assert worker is not None
            worker.subscription_id = "sub-from-the-set-up"
            await LinkRepository(world.storage).save(worker)
            raced.append(worker.etag)
        return found

    again = await open_session(world.services)
    monkeypatch.setattr(LinkRepository, "get", get_then_race)
    form = {"csrf": _csrf(world, again), "calendar": _key(world, "cal-room1"), "action": "link"}
    response = await handle_calendars(world.services, _post(again, form))
    monkeypatch.undo()
    assert raced and response.status_code == 303
    kept = await repo.require(key)
    assert (kept.health, kept.subscription_id) == (LinkHealth.OK, "sub-from-the-set-up")


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The chooser's pauses, recorded instead of slept. Only the chooser's own pause is replaced:
    ``asyncio.sleep`` itself is also called by the server threads earlier tests left running."""
    from shared.connect import chooser

    slept: list[float] = []

    async def pause(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    monkeypatch.setattr(chooser, "_pause", pause)
    return slept


async def test_a_transient_failure_is_tried_again_before_the_error_page(world: MemoryWorld,
                                                                         quick_retries: list[float]) -> None:
    sid = await open_session(world.services)
    world.graph.fail_next(Throttled("429", retry_after=0.2), op="list_calendars")
    world.graph.fail_next(TransientError("504", code="timeout"), op="list_calendars")
    world.timum.fail_next(TransientError("503", code="timum_unavailable"), op="get_resource")
    response = await handle_calendars(world.services, _get(sid))
    assert response.status_code == 200 and "Behandlungsraum 1" in response.get_body().decode()
    assert quick_retries == [0.3, 1.0, 0.3]


async def test_a_lasting_failure_shows_try_again_later_after_three_tries(world: MemoryWorld,
                                                                          quick_retries: list[float]) -> None:
    sid = await open_session(world.services)
    world.timum.fail_next(TransientError("503", code="timum_unavailable"), op="get_resource", times=3)
    response = await handle_calendars(world.services, _get(sid))
    assert response.status_code == 503
    assert len(quick_retries) == 2


async def test_a_long_retry_after_is_not_waited_out_on_the_page(world: MemoryWorld,
                                                                quick_retries: list[float]) -> None:
    sid = await open_session(world.services)
    world.graph.fail_next(Throttled("429", retry_after=30.0), op="me")
    response = await handle_calendars(world.services, _get(sid))
    assert response.status_code == 503 and quick_retries == []


async def test_bookings_stored_while_the_link_needed_a_reconnect_are_written_after_it(world: MemoryWorld) -> None:
    sid = await open_session(world.services)
    form = {"csrf": _csrf(world, sid), "calendar": _key(world, "cal-room1"), "action": "link"}
    assert (await handle_calendars(world.services, _post(sid, form))).status_code == 303
    queue = world.storage.queue(BOOKING_QUEUE)
    assert [json.loads(m) for m in queue.drain()] == [{"replay_link": "prov-1|res-1"}]
    repo = LinkRepository(world.storage)
    await set_health(world.services, await repo.require(LinkKey("prov-1", "res-1")), LinkHealth.NEEDS_RECONNECT,
                     "needs_reconnect: invalid_grant")
    start = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)
    made = Booking(id="bk-1", provider_id="prov-1", resource_id="res-1", version=1, start=start,
                   end=start + timedelta(minutes=30), status=BookingStatus.CONFIRMED, service_name="Massage")
    written = await apply_booking_message(world.services, {"booking": booking_to_json(made)})
    assert written.result == "needs_reconnect"
    window = (start - timedelta(days=1), start + timedelta(days=1))
    assert world.graph.calendar_view("anna", "cal-room1", *window) == []

    again = await open_session(world.services)
    form = {"csrf": _csrf(world, again), "calendar": _key(world, "cal-room1"), "action": "link"}
    assert (await handle_calendars(world.services, _post(again, form))).status_code == 303
    [replay] = [json.loads(m) for m in queue.drain()]
    assert (await apply_booking_message(world.services, replay)).result == "replayed:1"
    [event] = world.graph.calendar_view("anna", "cal-room1", *window)
    assert event.start == start
