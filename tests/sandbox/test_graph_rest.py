"""Graph stand-in REST surface, driven by the real msgraph-sdk: users, calendars (own and
shared), events with extended properties, transactionId, id formats, time zones, series, and
the 401/403 answers."""

from __future__ import annotations

from datetime import UTC, date, datetime

import httpx
import pytest

from devtools.sandbox.graph.testing import World, tls_context

PROP = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name timumBookingId"
OWN = {"Calendars.ReadWrite", "User.Read", "MailboxSettings.Read"}
SHARED = OWN | {"Calendars.ReadWrite.Shared"}
# kiota warns about its own deprecated placeholder class when msgraph modules load lazily.
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:kiota_abstractions"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:msgraph")]


def raw(world: World, token: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=world.env.base_url, verify=tls_context(world.env.ca_path), headers=headers)


async def test_me_calendars_and_mailbox_settings(world: World) -> None:
    state = world.env.graph.state
    jonas_cal = state.default_calendar(world.jonas.id)
    state.share_calendar(jonas_cal.id, world.anna.id, can_edit=True, accept=True)
    state.create_calendar(world.anna.id, "Behandlungsraum 1")
    client, http = world.client(world.token(world.anna, scopes=SHARED))
    async with http:
        me = await client.me.get()
        assert me.id == world.anna.id and me.mail == world.anna.mail
        settings = await client.me.mailbox_settings.get()
        assert settings.time_zone == "W. Europe Standard Time"
        calendars = await client.me.calendars.get()
        by_name = {(c.name, c.owner.address): c for c in calendars.value}
        own = by_name[("Kalender", world.anna.mail)]
        assert own.is_default_calendar and own.can_edit and own.can_share
        assert ("Behandlungsraum 1", world.anna.mail) in by_name
        shared = by_name[("Kalender", world.jonas.mail)]
        assert shared.id == jonas_cal.id and shared.can_edit and not shared.can_share
        assert not shared.is_default_calendar and shared.owner.name == "Jonas Becker"
        groups = await client.me.calendar_groups.get()
        assert [g.name for g in groups.value] == ["Meine Kalender", "Weitere Kalender"]


async def test_extended_property_expand_filter_and_transaction_id(world: World) -> None:
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
    from msgraph.generated.models.event import Event
    from msgraph.generated.models.single_value_legacy_extended_property import SingleValueLegacyExtendedProperty
    from msgraph.generated.users.item.calendars.item.events.events_request_builder import EventsRequestBuilder
    from msgraph.generated.users.item.calendars.item.events.item.event_item_request_builder import (
        EventItemRequestBuilder,
    )

    cal = world.env.graph.state.default_calendar(world.anna.id)
    client, http = world.client(world.token(world.anna, scopes=OWN))
    async with http:
        def draft(booking: str) -> Event:
            return Event(subject=f"Termin {booking}", transaction_id=f"tx-{booking}",
                         start=DateTimeTimeZone(date_time="2030-05-06T10:00:00", time_zone="W. Europe Standard Time"),
                         end=DateTimeTimeZone(date_time="2030-05-06T10:30:00", time_zone="W. Europe Standard Time"),
                         single_value_extended_properties=[SingleValueLegacyExtendedProperty(id=PROP, value=booking)])

        events = client.users.by_user_id(world.anna.id).calendars.by_calendar_id(cal.id).events
        first = await events.post(draft("B-1"))
        again = await events.post(draft("B-1"))
        other = await events.post(draft("B-2"))
        assert first.id == again.id != other.id
        assert first.transaction_id == "tx-B-1"
        assert first.start.time_zone == "W. Europe Standard Time"
        assert first.start.date_time.startswith("2030-05-06T10:00:00")

        expand = f"singleValueExtendedProperties($filter=id eq '{PROP}')"
        got = await events.by_event_id(first.id).get(RequestConfiguration(
            query_parameters=EventItemRequestBuilder.EventItemRequestBuilderGetQueryParameters(expand=[expand])))
        assert [(p.id, p.value) for p in got.single_value_extended_properties] == [(PROP, "B-1")]
        plain = await events.by_event_id(first.id).get()
        assert not plain.single_value_extended_properties
        assert plain.start.time_zone == "UTC" and plain.start.date_time.startswith("2030-05-06T08:00:00")

        found = await events.get(RequestConfiguration(
            query_parameters=EventsRequestBuilder.EventsRequestBuilderGetQueryParameters(
                filter=f"singleValueExtendedProperties/Any(ep: ep/id eq '{PROP}' and ep/value eq 'B-2')",
                expand=[expand])))
        assert [e.id for e in found.value] == [other.id]
        assert found.value[0].single_value_extended_properties[0].value == "B-2"


async def test_immutable_ids_survive_a_move_default_ids_do_not(world: World) -> None:
    state = world.env.graph.state
    room = state.create_calendar(world.anna.id, "Behandlungsraum 2")
    ids = state.create_event(world.anna.id, "Kontrolle", datetime(2030, 3, 4, 9, tzinfo=UTC),
                             datetime(2030, 3, 4, 10, tzinfo=UTC))
    token = world.token(world.anna, scopes=OWN)
    async with raw(world, token) as http:
        resp = await http.get(f"/users/{world.anna.id}/events/{ids.id}", headers={"Prefer": 'IdType="ImmutableId"'})
        assert resp.status_code == 200
        assert resp.json()["id"] == ids.immutable_id
        assert resp.headers["Preference-Applied"] == 'IdType="ImmutableId"'
        assert (await http.get(f"/me/events/{ids.id}")).json()["id"] == ids.id

        moved = state.move_event_to_calendar(ids.immutable_id, room.id)
        assert moved.immutable_id == ids.immutable_id and moved.id != ids.id
        gone = await http.get(f"/me/events/{ids.id}")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "ErrorItemNotFound"
        assert set(gone.json()["error"]["innerError"]) == {"date", "request-id", "client-request-id"}
        still = await http.get(f"/me/calendars/{room.id}/events/{ids.immutable_id}")
        assert still.status_code == 200 and still.json()["subject"] == "Kontrolle"


async def test_time_zone_preference_and_all_day_events(world: World) -> None:
    state = world.env.graph.state
    timed = state.create_event(world.anna.id, "Sprechstunde", datetime(2030, 7, 1, 7, 30, tzinfo=UTC),
                               datetime(2030, 7, 1, 8, 0, tzinfo=UTC))
    all_day = state.create_event(world.anna.id, "Fortbildung", date(2030, 7, 2), date(2030, 7, 3), all_day=True,
                                 show_as="oof")
    async with raw(world, world.token(world.anna, scopes=OWN)) as http:
        berlin = (await http.get(f"/me/events/{timed.id}",
                                 headers={"Prefer": 'outlook.timezone="W. Europe Standard Time"'})).json()
        assert berlin["start"] == {"dateTime": "2030-07-01T09:30:00.0000000", "timeZone": "W. Europe Standard Time"}
        iana = (await http.get(f"/me/events/{timed.id}", headers={"Prefer": 'outlook.timezone="America/New_York"'}))
        assert iana.json()["start"]["dateTime"] == "2030-07-01T03:30:00.0000000"
        utc = (await http.get(f"/me/events/{all_day.id}")).json()
        assert utc["isAllDay"] and utc["showAs"] == "oof"
        assert utc["start"] == {"dateTime": "2030-07-02T00:00:00.0000000", "timeZone": "UTC"}
        assert utc["end"]["dateTime"] == "2030-07-03T00:00:00.0000000"
        bad = await http.get(f"/me/events/{timed.id}", headers={"Prefer": 'outlook.timezone="Mars/Olympus"'})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "TimeZoneNotSupportedException"
        not_midnight = await http.post("/me/events", json={
            "subject": "x", "isAllDay": True,
            "start": {"dateTime": "2030-07-02T10:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2030-07-03T00:00:00", "timeZone": "UTC"}})
        assert not_midnight.status_code == 400


async def test_calendar_view_expands_series_with_exception_and_deleted_occurrence(world: World) -> None:
    state = world.env.graph.state
    series = state.create_event(
        world.anna.id, "Teammeeting", datetime(2030, 1, 7, 8, tzinfo=UTC), datetime(2030, 1, 7, 9, tzinfo=UTC),
        recurrence={"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
                    "range": {"type": "numbered", "startDate": "2030-01-07", "numberOfOccurrences": 4}})
    state.modify_occurrence(series.immutable_id, date(2030, 1, 14), subject="Teammeeting (verlegt)",
                            start=datetime(2030, 1, 15, 12, tzinfo=UTC), end=datetime(2030, 1, 15, 13, tzinfo=UTC))
    state.cancel_occurrence(series.immutable_id, date(2030, 1, 21))
    private = state.create_event(world.anna.id, "Arzttermin", datetime(2030, 1, 9, 14, tzinfo=UTC),
                                 datetime(2030, 1, 9, 15, tzinfo=UTC), sensitivity="private", show_as="tentative")
    async with raw(world, world.token(world.anna, scopes=OWN)) as http:
        resp = await http.get("/me/calendarView", params={"startDateTime": "2030-01-01T00:00:00Z",
                                                          "endDateTime": "2030-02-01T00:00:00Z", "$top": "50"},
                              headers={"Prefer": 'IdType="ImmutableId"'})
        items = resp.json()["value"]
        summary = [(i["type"], i["subject"], i["start"]["dateTime"][:16]) for i in items]
        assert summary == [("occurrence", "Teammeeting", "2030-01-07T08:00"),
                           ("singleInstance", "Arzttermin", "2030-01-09T14:00"),
                           ("exception", "Teammeeting (verlegt)", "2030-01-15T12:00"),
                           ("occurrence", "Teammeeting", "2030-01-28T08:00")]
        assert all(i["seriesMasterId"] == series.immutable_id for i in items if i["type"] != "singleInstance")
        assert items[1]["id"] == private.immutable_id
        assert items[1]["sensitivity"] == "private" and items[1]["showAs"] == "tentative"
        master = (await http.get(f"/me/events/{series.id}")).json()
        assert master["type"] == "seriesMaster"
        assert master["recurrence"]["pattern"]["daysOfWeek"] == ["monday"]
        assert master["recurrence"]["range"]["numberOfOccurrences"] == 4
        no_window = await http.get("/me/calendarView")
        assert no_window.status_code == 400 and no_window.json()["error"]["code"] == "ErrorInvalidParameter"
        paged = (await http.get("/me/calendarView", params={"startDateTime": "2030-01-01T00:00:00Z",
                                                            "endDateTime": "2030-02-01T00:00:00Z", "$top": "3"}))
        first = paged.json()
        assert len(first["value"]) == 3
        rest = (await http.get(first["@odata.nextLink"])).json()
        assert len(rest["value"]) == 1 and "@odata.nextLink" not in rest


async def test_patch_and_delete_through_the_sdk(world: World) -> None:
    from msgraph.generated.models.event import Event
    from msgraph.generated.models.free_busy_status import FreeBusyStatus
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    ids = world.env.graph.state.create_event(world.anna.id, "Mittagspause", datetime(2030, 2, 1, 11, tzinfo=UTC),
                                             datetime(2030, 2, 1, 12, tzinfo=UTC))
    client, http = world.client(world.token(world.anna, scopes=OWN))
    async with http:
        item = client.me.events.by_event_id(ids.id)
        changed = await item.patch(Event(show_as=FreeBusyStatus.Free, subject="Mittagspause (frei)"))
        assert changed.show_as == FreeBusyStatus.Free and changed.subject == "Mittagspause (frei)"
        assert changed.change_key != (await item.get()).change_key or changed.subject == "Mittagspause (frei)"
        await item.delete()
        with pytest.raises(ODataError) as err:
            await item.get()
        assert err.value.response_status_code == 404
        assert err.value.error.code == "ErrorItemNotFound"


async def test_authentication_and_permission_errors(world: World) -> None:
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    state = world.env.graph.state
    jonas_cal = state.default_calendar(world.jonas.id)
    async with raw(world, None) as http:
        resp = await http.get("/me/calendars")
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "InvalidAuthenticationToken"
    async with raw(world, "sbx-at.not-issued") as http:
        assert (await http.get("/me")).status_code == 401
    expired = world.token(world.anna, scopes=OWN, lifetime=-1)
    client, http_client = world.client(expired)
    async with http_client:
        with pytest.raises(ODataError) as err:
            await client.me.calendars.get()
        assert err.value.response_status_code == 401

    no_calendars = world.token(world.anna, scopes={"User.Read"})
    async with raw(world, no_calendars) as http:
        resp = await http.get("/me/calendars")
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "ErrorAccessDenied"
        assert (await http.get("/me/mailboxSettings")).status_code == 403

    state.share_calendar(jonas_cal.id, world.anna.id, can_edit=False, accept=True)
    window = {"startDateTime": "2030-01-01T00:00:00Z", "endDateTime": "2030-01-02T00:00:00Z"}
    async with raw(world, world.token(world.anna, scopes=OWN)) as http:
        resp = await http.get(f"/users/{world.jonas.id}/calendars/{jonas_cal.id}/calendarView", params=window)
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "ErrorAccessDenied"
    async with raw(world, world.token(world.anna, scopes=SHARED)) as http:
        for path in (f"/users/{world.jonas.id}/calendars/{jonas_cal.id}/calendarView",
                     f"/users/{world.anna.id}/calendars/{jonas_cal.id}/calendarView"):
            assert (await http.get(path, params=window)).status_code == 200
        write = await http.post(f"/users/{world.anna.id}/calendars/{jonas_cal.id}/events", json={
            "subject": "x", "start": {"dateTime": "2030-01-01T10:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2030-01-01T11:00:00", "timeZone": "UTC"}})
        assert write.status_code == 403, "a read-only share must not accept writes"

    async with raw(world, world.token(roles={"User.Read.All"})) as http:
        resp = await http.get(f"/users/{world.anna.id}/calendars")
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "ErrorAccessDenied"
    app_token = world.token(roles={"Calendars.ReadWrite"})
    async with raw(world, app_token) as http:
        assert (await http.get(f"/users/{world.jonas.mail}/calendars/{jonas_cal.id}/calendarView",
                               params=window)).status_code == 200
        me = await http.get("/me")
        assert me.status_code == 400
        assert (await http.get(f"/users/{world.anna.id}/calendars/{jonas_cal.id}")).status_code == 404
    foreign = world.token(roles={"Calendars.ReadWrite"}, tenant_id="another-tenant")
    async with raw(world, foreign) as http:
        resp = await http.get(f"/users/{world.anna.id}/calendars")
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "ErrorInvalidUser"
