"""Sandbox Outlook pages, the Graph control API and published ICS calendars, on the composed
sandbox's HTTP listener: forms that create, move and delete events, share and publish
calendars, trigger lifecycle notifications and switch faults; the feed as Outlook emits it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import httpx
import icalendar
import pytest
import recurring_ical_events

from devtools.sandbox.graph.testing import GraphTestEnv, WebhookReceiver, World, tls_context

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:kiota_abstractions"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:msgraph")]
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"


@pytest.fixture
def web(env: GraphTestEnv) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=env.http_base, timeout=10, follow_redirects=True) as client:
        yield client


def test_mailbox_picker_and_demo_calendar_in_both_languages(env: GraphTestEnv, web: httpx.Client) -> None:
    page = web.get("/outlook/")
    assert page.status_code == 200 and "Als welche Person" in page.text
    assert "Dr. Anna Weber" in page.text and "/_sandbox/static/sandbox.css" in page.text
    anna = next(u for u in env.directory.users.values() if u.display_name == "Dr. Anna Weber"
                and env.graph.state.own_calendars(u.id)[0].name == "Kalender"
                and len(env.graph.state.own_calendars(u.id)) == 3)
    week = web.get(f"/outlook/{anna.id}/")
    assert week.status_code == 200
    assert "Teammeeting" in week.text and "Mittagspause" in week.text and "Frei" in week.text
    assert "Behandlungsraum 1" in week.text and "Jonas Becker" in week.text, "the accepted shared calendar"
    english = web.get(str(week.url), params={"lang": "en"})
    assert "New event" in english.text and "Neuer Termin" not in english.text
    assert web.get(f"/outlook/{anna.id}/settings").status_code == 200
    assert web.get(f"/outlook/{anna.id}/notifications").status_code == 200
    assert "Fehlerregel" in web.get("/outlook/faults").text
    assert web.get("/outlook/nobody/calendars/none").status_code == 404


def test_forms_create_move_and_delete_events(world: World, web: httpx.Client) -> None:
    state = world.env.graph.state
    cal = state.default_calendar(world.anna.id)
    base = f"/outlook/{world.anna.id}"
    resp = web.post(f"{base}/calendars/{cal.id}/events", data={
        "subject": "Physio-Gruppe", "date": "2031-09-01", "start": "18:00", "end": "19:00", "show_as": "tentative",
        "private": "on", "repeat": "weekly", "days": ["monday", "thursday"], "count": "4"})
    assert resp.status_code == 200 and "Termin angelegt" in resp.text
    (series,) = state.calendar_events(cal.id)
    assert series.recurrence["pattern"]["daysOfWeek"] == ["monday", "thursday"]
    assert series.sensitivity == "private" and series.show_as == "tentative"
    view = state.view(cal.id, datetime(2031, 9, 1, tzinfo=UTC), datetime(2031, 9, 30, tzinfo=UTC))
    assert [i.start_utc.isoformat() for i in view] == [
        "2031-09-01T16:00:00+00:00", "2031-09-04T16:00:00+00:00", "2031-09-08T16:00:00+00:00",
        "2031-09-11T16:00:00+00:00"]
    assert "Physio-Gruppe" in resp.text and "privat" in resp.text

    occurrence = state.ids(series, "2031-09-04").immutable_id
    web.post(f"{base}/events/{occurrence}/delete", data={"scope": "occurrence"})
    assert series.cancelled == {"2031-09-04"}

    resp = web.post(f"{base}/calendars/{cal.id}/events", data={
        "subject": "Fortbildung", "date": "2031-09-10", "all_day": "on", "days_long": "2", "show_as": "oof"})
    course = next(e for e in state.calendar_events(cal.id) if e.subject == "Fortbildung")
    assert course.is_all_day and (course.end_local - course.start_local) == timedelta(days=2)
    room = state.create_calendar(world.anna.id, "Behandlungsraum 1")
    moved = web.post(f"{base}/events/{state.ids(course).immutable_id}/move",
                     data={"date": "2031-09-12", "start": "08:00", "end": "12:00", "calendar": room.id})
    assert moved.status_code == 200 and "Termin geändert" in moved.text
    assert course.calendar_id == room.id and not course.is_all_day
    assert course.start_local == datetime(2031, 9, 12, 8, 0)

    web.post(f"{base}/events/{state.ids(series, '2031-09-08').immutable_id}/delete", data={"scope": "series"})
    assert state.calendar_events(cal.id) == []
    bad = web.post(f"{base}/calendars/{cal.id}/events", data={"subject": "x", "date": "kein Datum"})
    assert bad.status_code == 200 and "alert-error" in bad.text
    foreign = web.post(f"{base}/calendars/{cal.id}/events", data={"subject": "x", "date": "2031-09-01"},
                       headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403


def test_sharing_needs_acceptance_before_the_calendar_is_listed(world: World, web: httpx.Client) -> None:
    state = world.env.graph.state
    jonas_cal = state.default_calendar(world.jonas.id)
    web.post(f"/outlook/{world.jonas.id}/share", data={"calendar": jonas_cal.id, "with": world.anna.id})
    token = world.token(world.anna, scopes={"Calendars.ReadWrite", "Calendars.ReadWrite.Shared"})
    with httpx.Client(base_url=world.env.base_url, verify=tls_context(world.env.ca_path),
                      headers={"Authorization": f"Bearer {token}"}) as graph:
        assert jonas_cal.id not in {c["id"] for c in graph.get("/me/calendars").json()["value"]}
        page = web.get(f"/outlook/{world.anna.id}/settings")
        assert "Einladung zum Kalender" in page.text
        web.post(f"/outlook/{world.anna.id}/accept", data={"calendar": jonas_cal.id})
        listed = {c["id"]: c for c in graph.get("/me/calendars").json()["value"]}
        assert listed[jonas_cal.id]["canEdit"] is False, "shared read-only unless 'can edit' was ticked"
        assert listed[jonas_cal.id]["owner"]["address"] == world.jonas.mail


def test_published_calendar_is_outlook_like_ics(world: World, web: httpx.Client) -> None:
    state = world.env.graph.state
    cal = state.default_calendar(world.anna.id)
    series = state.create_event(
        world.anna.id, "Teammeeting", datetime(2031, 10, 6, 7, tzinfo=UTC), datetime(2031, 10, 6, 8, tzinfo=UTC),
        recurrence={"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
                    "range": {"type": "endDate", "startDate": "2031-10-06", "endDate": "2031-11-03"}})
    state.cancel_occurrence(series.immutable_id, date(2031, 10, 13))
    state.modify_occurrence(series.immutable_id, date(2031, 10, 20), start=datetime(2031, 10, 21, 9, tzinfo=UTC),
                            end=datetime(2031, 10, 21, 10, tzinfo=UTC))
    state.create_event(world.anna.id, "Mittagspause", datetime(2031, 10, 7, 11, tzinfo=UTC),
                       datetime(2031, 10, 7, 12, tzinfo=UTC), show_as="free")
    state.create_event(world.anna.id, "Arzttermin", datetime(2031, 10, 8, 13, tzinfo=UTC),
                       datetime(2031, 10, 8, 14, tzinfo=UTC), sensitivity="private")
    state.create_event(world.anna.id, "Abgesagt", datetime(2031, 10, 9, 13, tzinfo=UTC),
                       datetime(2031, 10, 9, 14, tzinfo=UTC), is_cancelled=True)
    state.create_event(world.anna.id, "Fortbildung", date(2031, 10, 10), date(2031, 10, 11), all_day=True)

    page = web.post(f"/outlook/{world.anna.id}/publish", data={"calendar": cal.id, "detail": "full"})
    found = re.search(r"https?://[^<\s]+/outlook/published/[0-9a-f]+/calendar\.ics", page.text)
    assert found is not None, "the published calendar's link is shown"
    url = found.group(0)
    assert web.get(url, headers={"User-Agent": "python-httpx/0.28"}).headers["content-type"].startswith("text/html")
    resp = web.get(url, headers={"User-Agent": BROWSER})
    assert resp.headers["content-type"] == "text/calendar; charset=utf-8"
    text = resp.text
    assert "TZID:W. Europe Standard Time" in text and "BEGIN:STANDARD" in text and "BYDAY=-1SU" in text
    assert "DTSTART;TZID=W. Europe Standard Time:20311006T090000" in text
    assert "EXDATE;TZID=W. Europe Standard Time:20311013T090000" in text
    assert "RECURRENCE-ID;TZID=W. Europe Standard Time:20311020T090000" in text

    parsed = icalendar.Calendar.from_ical(resp.content)
    assert str(parsed["X-WR-CALNAME"]) == "Kalender" and "UID" not in parsed
    events = {str(e["SUMMARY"]): e for e in parsed.walk("VEVENT")}
    assert str(events["Mittagspause"]["TRANSP"]) == "TRANSPARENT"
    assert str(events["Mittagspause"]["X-MICROSOFT-CDO-BUSYSTATUS"]) == "FREE"
    assert str(events["Privat"]["CLASS"]) == "PRIVATE" and "Arzttermin" not in text
    assert str(events["Abgesagt"]["STATUS"]) == "CANCELLED"
    assert str(events["Fortbildung"]["X-MICROSOFT-CDO-ALLDAYEVENT"]) == "TRUE"

    expanded = recurring_ical_events.of(parsed).between(datetime(2031, 10, 1, tzinfo=UTC),
                                                        datetime(2031, 11, 30, tzinfo=UTC))
    meetings = sorted(e["DTSTART"].dt.astimezone(UTC) for e in expanded if str(e["SUMMARY"]) == "Teammeeting")
    assert meetings == [datetime(2031, 10, 6, 7, tzinfo=UTC), datetime(2031, 10, 21, 9, tzinfo=UTC),
                        datetime(2031, 10, 27, 8, tzinfo=UTC), datetime(2031, 11, 3, 8, tzinfo=UTC)]

    limited = web.post(f"/outlook/{world.anna.id}/publish", data={"calendar": cal.id, "detail": "availability"})
    assert limited.status_code == 200
    busy_only = web.get(url, headers={"User-Agent": BROWSER}).text
    assert "Teammeeting" not in busy_only and "SUMMARY:Frei" in busy_only
    web.post(f"/outlook/{world.anna.id}/publish", data={"calendar": cal.id, "action": "stop"})
    assert web.get(url, headers={"User-Agent": BROWSER}).status_code == 404


async def test_notifications_page_lifecycle_button_and_fault_switches(world: World) -> None:
    from msgraph.generated.models.subscription import Subscription

    state = world.env.graph.state
    receiver = WebhookReceiver().start()
    try:
        client, http = world.client(world.token(world.anna, scopes={"Calendars.ReadWrite"}))
        async with http:
            sub = await client.subscriptions.post(Subscription(
                change_type="created,updated,deleted", resource="me/events", client_state="nicht-zeigen",
                notification_url=f"{receiver.url}/notify?code=schluessel",
                lifecycle_notification_url=f"{receiver.url}/lc",
                expiration_date_time=datetime.now(UTC) + timedelta(hours=1)))
        async with httpx.AsyncClient(base_url=world.env.http_base, follow_redirects=True) as web:
            page = await web.post(f"/outlook/{world.anna.id}/subscriptions/{sub.id}/lifecycle",
                                  data={"event": "missed"})
            assert "Lebenszyklus-Benachrichtigung ausgelöst" in page.text
            await asyncio.to_thread(receiver.wait_for, lambda rs: any(r.path == "/lc" and "validationToken"
                                                                      not in r.query for r in rs))
            await asyncio.to_thread(state.wait_for_deliveries,
                                    lambda ds: any(d.kind == "lifecycle" and sub.id in d.subscription_ids for d in ds))
            page = await web.get(f"/outlook/{world.anna.id}/notifications")
            assert sub.id in page.text and "lifecycle" in page.text and "Quittiert nach" in page.text
            assert "nicht-zeigen" not in page.text and "schluessel" not in page.text

            await web.post("/outlook/faults/add", data={"kind": "503", "path": "/me/calendars$", "count": "1"})
            token = world.token(world.anna, scopes={"Calendars.ReadWrite"})
            async with httpx.AsyncClient(base_url=world.env.base_url, verify=tls_context(world.env.ca_path),
                                         headers={"Authorization": f"Bearer {token}"}) as graph:
                assert (await graph.get("/me/calendars")).status_code == 503
                assert (await graph.get("/me/calendars")).status_code == 200
                await web.post("/outlook/behaviour", data={"empty_page_probability": "0", "replay_probability": "0",
                                                           "duplicate_probability": "0", "delta_token_max_age": ""})
                first = await graph.get("/me/calendarView/delta", params={
                    "startDateTime": "2031-01-01T00:00:00Z", "endDateTime": "2031-02-01T00:00:00Z"})
                lost = await web.post("/outlook/delta/lose")
                assert "Delta-Status vergessen" in lost.text
                assert (await graph.get(first.json()["@odata.deltaLink"])).status_code == 410
    finally:
        receiver.stop()


def test_control_api(world: World, web: httpx.Client) -> None:
    state = world.env.graph.state
    api = "/_sandbox/graph"
    created = web.post(f"{api}/users/{world.anna.id}/events", json={
        "subject": "Kontrolle", "start": "2031-12-01T09:00:00", "end": "2031-12-01T09:30:00", "showAs": "tentative"})
    assert created.status_code == 201
    ids = created.json()
    ev = state.event(ids["immutableId"])
    assert ev.start_local == datetime(2031, 12, 1, 9, 0) and ev.tz == world.anna.time_zone
    room = web.post(f"{api}/users/{world.anna.id}/calendars", json={"name": "Raum 3"}).json()
    moved = web.patch(f"{api}/events/{ids['immutableId']}", json={"calendarId": room["id"], "subject": "Kontrolle 2"})
    assert moved.json()["immutableId"] == ids["immutableId"] and moved.json()["id"] != ids["id"]
    assert state.event(ids["immutableId"]).subject == "Kontrolle 2"
    assert web.patch(f"{api}/events/{ids['immutableId']}", json={"start": "morgen"}).status_code == 400
    assert web.delete(f"{api}/events/{ids['immutableId']}").status_code == 204
    assert web.delete(f"{api}/events/{ids['immutableId']}").status_code == 404

    share = web.post(f"{api}/calendars/{room['id']}/share", json={"with": world.jonas.mail, "accept": True})
    assert share.json()["accepted"] is True
    published = web.post(f"{api}/calendars/{room['id']}/publish", json={"detail": "limited"}).json()
    assert published["url"].endswith("/calendar.ics")
    rule = web.post(f"{api}/faults", json={"kind": "429", "path": "/nothing", "count": 2}).json()
    assert rule["remaining"] == 2 and web.get(f"{api}/faults").json()[0]["id"] == rule["id"]
    assert web.post(f"{api}/faults", json={"kind": "500"}).status_code == 400
    assert web.delete(f"{api}/faults").status_code == 204
    assert web.patch(f"{api}/behaviour", json={"duplicate_probability": 0.5}).json()["duplicate_probability"] == 0.5
    assert web.patch(f"{api}/behaviour", json={"nope": 1}).status_code == 400
    assert web.post(f"{api}/delta/lose-state", json={"user": world.anna.id}).json()["forgotten"] >= 0
    overview = web.get(f"{api}/state").json()
    assert any(u["id"] == world.anna.id for u in overview["users"])
    assert isinstance(web.get(f"{api}/deliveries").json(), list)
    assert web.post(f"{api}/subscriptions/unknown/lifecycle", json={"event": "missed"}).status_code == 404


def _current_nav(html: str) -> list[str]:
    return re.findall(r'<a href="[^"]*" aria-current="page">([^<]+)</a>', html)


def test_navigation_marks_the_page_shown(world: World, web: httpx.Client) -> None:
    anna = world.anna.id
    assert _current_nav(web.get("/outlook/").text) == ["Postfach wählen"]
    assert _current_nav(web.get(f"/outlook/{anna}/").text) == ["Kalender"]
    assert _current_nav(web.get(f"/outlook/{anna}/settings").text) == ["Freigaben"]
    assert _current_nav(web.get(f"/outlook/{anna}/notifications").text) == ["Benachrichtigungen"]
    assert _current_nav(web.get("/outlook/faults").text) == ["Fehler &amp; Grenzen"]
    assert _current_nav(web.get("/outlook/faults", params={"lang": "en"}).text) == ["Faults &amp; limits"]
    home = web.get(f"/outlook/{anna}/")
    assert '<a href="/">Sandbox-Übersicht</a>' in home.text, "every Outlook page leads back to the sandbox home"


def test_show_as_is_editable_and_deleting_keeps_the_week(world: World, web: httpx.Client) -> None:
    state = world.env.graph.state
    cal = state.default_calendar(world.anna.id)
    base = f"/outlook/{world.anna.id}"
    web.post(f"{base}/calendars/{cal.id}/events", data={
        "subject": "Team", "date": "2031-10-15", "start": "10:00", "end": "11:00", "show_as": "busy"})
    (event,) = state.calendar_events(cal.id)
    event_id = state.ids(event).immutable_id
    week = web.get(f"{base}/calendars/{cal.id}", params={"week": "2031-10-15"})
    assert re.search(r'<select name="show_as">.*?<option value="busy" selected>Gebucht</option>', week.text, re.S)

    changed = web.post(f"{base}/events/{event_id}/move", data={
        "date": "2031-10-15", "start": "10:00", "end": "11:00", "show_as": "free"})
    assert changed.status_code == 200 and "Termin geändert" in changed.text
    assert state.event(event_id).show_as == "free"
    unchanged = web.post(f"{base}/events/{event_id}/move", data={
        "date": "2031-10-15", "start": "10:00", "end": "11:00", "show_as": "no-such-value"})
    assert unchanged.status_code == 200 and state.event(event_id).show_as == "free"

    assert '<input type="hidden" name="week" value="2031-10-13">' in week.text
    deleted = web.post(f"{base}/events/{event_id}/delete", data={"week": "2031-10-13"})
    assert "Termin gelöscht" in deleted.text
    assert deleted.url.params["week"] == "2031-10-13", "back to the week the event was in, not today's"
    assert "week=2031-10-06" in deleted.text and "week=2031-10-20" in deleted.text, "its back and next links"
    assert state.calendar_events(cal.id) == []


def test_published_calendars_name_their_detail_level_in_words(world: World, web: httpx.Client) -> None:
    state = world.env.graph.state
    cal = state.default_calendar(world.anna.id)
    web.post(f"/outlook/{world.anna.id}/publish", data={"calendar": cal.id, "detail": "availability"})
    page = web.get(f"/outlook/{world.anna.id}/settings")
    assert "<td>Nur Verfügbarkeit</td>" in page.text and "<td>availability</td>" not in page.text
    english = web.get(f"/outlook/{world.anna.id}/settings", params={"lang": "en"})
    assert "<td>Availability only</td>" in english.text
    state.unpublish_calendar(cal.id)
