"""calendarView/delta of the Graph stand-in through the real msgraph-sdk: paging (with empty
pages) to a deltaLink, incremental rounds with created/updated/@removed items, expanded series,
replays, and 410 syncStateNotFound after lost or expired state."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest

from devtools.sandbox.graph.testing import World, tls_context

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:kiota_abstractions"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:msgraph")]
SCOPES = {"Calendars.ReadWrite", "User.Read"}
WINDOW = ("2031-03-01T00:00:00Z", "2031-04-01T00:00:00Z")


def at(day: int, hour: int) -> datetime:
    return datetime(2031, 3, day, hour, tzinfo=UTC)


def _config(page_size: int) -> Any:
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.users.item.calendars.item.calendar_view.delta.delta_request_builder import (
        DeltaRequestBuilder,
    )

    config = RequestConfiguration(query_parameters=DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
        start_date_time=WINDOW[0], end_date_time=WINDOW[1]))
    config.headers.add("Prefer", f"odata.maxpagesize={page_size}")
    config.headers.add("Prefer", 'IdType="ImmutableId"')
    return config


async def delta_round(client: Any, user_id: str, cal_id: str, link: str | None,
                      page_size: int = 2) -> tuple[list[Any], str, int]:
    """Follow one round to its deltaLink; returns (items, deltaLink, number of empty pages)."""
    from kiota_abstractions.base_request_configuration import RequestConfiguration

    builder = client.users.by_user_id(user_id).calendars.by_calendar_id(cal_id).calendar_view.delta
    items: list[Any] = []
    empty = 0
    if link is None:
        page = await builder.get(_config(page_size))
    else:
        follow = RequestConfiguration()
        follow.headers.add("Prefer", f"odata.maxpagesize={page_size}")
        follow.headers.add("Prefer", 'IdType="ImmutableId"')
        page = await builder.with_url(link).get(follow)
    while True:
        items += page.value
        empty += not page.value
        if page.odata_delta_link:
            return items, page.odata_delta_link, empty
        assert page.odata_next_link, "every page carries a nextLink or a deltaLink"
        follow = RequestConfiguration()
        follow.headers.add("Prefer", f"odata.maxpagesize={page_size}")
        follow.headers.add("Prefer", 'IdType="ImmutableId"')
        page = await builder.with_url(page.odata_next_link).get(follow)


def removed(items: list[Any]) -> set[str]:
    return {i.id for i in items if "@removed" in (i.additional_data or {})}


def present(items: list[Any]) -> dict[str, Any]:
    return {i.id: i for i in items if "@removed" not in (i.additional_data or {})}


async def test_full_round_then_incremental_changes(world: World) -> None:
    state = world.env.graph.state
    state.behaviour.empty_page_probability = 1.0
    cal = state.default_calendar(world.anna.id)
    single = state.create_event(world.anna.id, "Kontrolltermin", at(3, 9), at(3, 10))
    series = state.create_event(
        world.anna.id, "Teammeeting", at(4, 8), at(4, 9),
        recurrence={"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["tuesday"]},
                    "range": {"type": "endDate", "startDate": "2031-03-04", "endDate": "2031-03-18"}})
    course = state.create_event(world.anna.id, "Fortbildung", date(2031, 3, 12), date(2031, 3, 13), all_day=True)
    mover = state.create_event(world.anna.id, "Hausbesuch", at(20, 14), at(20, 15))
    state.create_event(world.anna.id, "Im April", datetime(2031, 4, 10, 9, tzinfo=UTC),
                       datetime(2031, 4, 10, 10, tzinfo=UTC))
    occurrences = [series.occurrence_id(date(2031, 3, d)) for d in (4, 11, 18)]

    client, http = world.client(world.token(world.anna, scopes=SCOPES))
    async with http:
        items, delta_link, empty_pages = await delta_round(client, world.anna.id, cal.id, None)
        assert empty_pages >= 1, "empty pages with a nextLink must occur and be followed"
        got = present(items)
        assert set(got) == {single.immutable_id, course.immutable_id, mover.immutable_id, *occurrences}
        assert not removed(items)
        assert {got[o].type.value for o in occurrences} == {"occurrence"}
        assert {got[o].series_master_id for o in occurrences} == {series.immutable_id}
        assert got[course.immutable_id].is_all_day
        assert "$deltatoken=" in delta_link and "startDateTime" not in delta_link

        state.behaviour.empty_page_probability = 0.0
        created = state.create_event(world.anna.id, "Neuer Termin", at(25, 10), at(25, 11))
        state.update_event(single.immutable_id, subject="Kontrolltermin (verschoben)", start=at(5, 9), end=at(5, 10))
        state.delete_event(course.immutable_id)
        state.move_event(mover.immutable_id, datetime(2031, 5, 2, 14, tzinfo=UTC),
                         datetime(2031, 5, 2, 15, tzinfo=UTC))
        state.cancel_occurrence(series.immutable_id, date(2031, 3, 11))

        items, delta_link, _ = await delta_round(client, world.anna.id, cal.id, delta_link)
        got = present(items)
        assert set(got) == {created.immutable_id, single.immutable_id}
        assert got[single.immutable_id].subject == "Kontrolltermin (verschoben)"
        assert got[single.immutable_id].start.date_time.startswith("2031-03-05T09:00:00")
        assert removed(items) == {course.immutable_id, mover.immutable_id, occurrences[1]}
        gone = next(i for i in items if i.id == course.immutable_id)
        assert gone.additional_data["@removed"] == {"reason": "deleted"}

        items, _, _ = await delta_round(client, world.anna.id, cal.id, delta_link)
        assert items == [], "a round without changes is empty"


async def test_series_changes_and_replays(world: World) -> None:
    state = world.env.graph.state
    cal = state.default_calendar(world.anna.id)
    series = state.create_event(
        world.anna.id, "Mittagspause", at(3, 12), at(3, 13), show_as="free",
        recurrence={"pattern": {"type": "daily", "interval": 1},
                    "range": {"type": "numbered", "startDate": "2031-03-03", "numberOfOccurrences": 3}})
    client, http = world.client(world.token(world.anna, scopes=SCOPES))
    async with http:
        items, link, _ = await delta_round(client, world.anna.id, cal.id, None, page_size=10)
        assert len(present(items)) == 3
        exception = state.modify_occurrence(series.immutable_id, date(2031, 3, 4), subject="Mittagspause lang",
                                            end=at(4, 14))
        items, link, _ = await delta_round(client, world.anna.id, cal.id, link, page_size=10)
        got = present(items)
        assert list(got) == [exception.immutable_id]
        assert got[exception.immutable_id].type.value == "exception"
        assert got[exception.immutable_id].subject == "Mittagspause lang"

        state.behaviour.replay_probability = 1.0
        items, link, _ = await delta_round(client, world.anna.id, cal.id, link, page_size=10)
        assert len(items) == 1 and items[0].series_master_id == series.immutable_id, "replays repeat a known item"


async def test_lost_or_expired_state_answers_410(world: World) -> None:
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    state = world.env.graph.state
    cal = state.default_calendar(world.anna.id)
    state.create_event(world.anna.id, "Termin", at(3, 9), at(3, 10))
    client, http = world.client(world.token(world.anna, scopes=SCOPES))
    async with http:
        _, link, _ = await delta_round(client, world.anna.id, cal.id, None)
        assert state.lose_delta_state(world.anna.id) >= 1
        with pytest.raises(ODataError) as err:
            await delta_round(client, world.anna.id, cal.id, link)
        assert err.value.response_status_code == 410
        assert err.value.error.code == "syncStateNotFound"

        _, link, _ = await delta_round(client, world.anna.id, cal.id, None)
        state.behaviour.delta_token_max_age = 0.0
        with pytest.raises(ODataError) as err:
            await delta_round(client, world.anna.id, cal.id, link)
        assert err.value.response_status_code == 410

    token = world.token(world.anna, scopes=SCOPES)
    async with httpx.AsyncClient(verify=tls_context(world.env.ca_path),
                                 headers={"Authorization": f"Bearer {token}"}) as raw:
        resp = await raw.get(link)
        assert resp.status_code == 410
        assert resp.headers["Location"].endswith("/calendarView/delta()?$deltatoken=")
        assert resp.json()["error"]["code"] == "syncStateNotFound"
        assert set(resp.json()["error"]["innerError"]) == {"date", "request-id", "client-request-id"}


async def test_delta_path_forms_and_unsupported_query_options(world: World) -> None:
    state = world.env.graph.state
    cal = state.default_calendar(world.anna.id)
    state.create_event(world.anna.id, "Termin", at(3, 9), at(3, 10))
    token = world.token(world.anna, scopes=SCOPES)
    window = {"startDateTime": WINDOW[0], "endDateTime": WINDOW[1]}
    async with httpx.AsyncClient(base_url=world.env.base_url, verify=tls_context(world.env.ca_path),
                                 headers={"Authorization": f"Bearer {token}"}) as raw:
        for form in ("delta", "delta()"):
            resp = await raw.get(f"/me/calendars/{cal.id}/calendarView/{form}", params=window,
                                 headers={"Prefer": "odata.maxpagesize=5"})
            assert resp.status_code == 200
            body = resp.json()
            assert body["@odata.context"].endswith("$metadata#Collection(event)")
            assert [v["subject"] for v in body["value"]] == ["Termin"]
            assert body["value"][0]["@odata.type"] == "#microsoft.graph.event"
            assert "odata.maxpagesize=5" in resp.headers["Preference-Applied"]
        for option in ("$select", "$expand", "$filter"):
            resp = await raw.get("/me/calendarView/delta", params={**window, option: "subject"})
            assert resp.status_code == 400, option
            assert option in resp.json()["error"]["message"]
        resp = await raw.get("/me/calendarView/delta")
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "ErrorInvalidParameter"


async def test_a_page_serves_its_items_as_they_are_now(world: World) -> None:
    # Pages expand only their own events; what changed after the round began must still show.
    state = world.env.graph.state
    state.behaviour.empty_page_probability = 0.0
    cal = state.default_calendar(world.anna.id)
    first = state.create_event(world.anna.id, "Erster", at(3, 9), at(3, 10))
    second = state.create_event(world.anna.id, "Zweiter", at(3, 11), at(3, 12))
    third = state.create_event(world.anna.id, "Dritter", at(3, 13), at(3, 14))
    series = state.create_event(
        world.anna.id, "Serie", at(4, 8), at(4, 9),
        recurrence={"pattern": {"type": "daily", "interval": 1},
                    "range": {"type": "endDate", "startDate": "2031-03-04", "endDate": "2031-03-05"}})
    start, end = (datetime.fromisoformat(w) for w in WINDOW)
    round_state = state.begin_round(owner_id=world.anna.id, calendar_id=cal.id, scope="s", start=start, end=end,
                                    previous=None, immutable=True, id_for=lambda i: i.key)
    page = state.serve_page(round_state, 1)
    assert [i.key for i in page.instances] == [f"{first.key}|"]
    state.update_event(second.immutable_id, subject="Zweiter (neu)")
    state.delete_event(third.immutable_id)
    served: list[Any] = []
    while page.next_token:
        follow = state.sync_state(page.next_token, "skip")
        assert follow is not None
        page = state.serve_page(follow, 2)
        served += page.instances
    by_key = {i.key: i for i in served}
    assert by_key[f"{second.key}|"].data["subject"] == "Zweiter (neu)"
    assert f"{third.key}|" not in by_key, "deleted after the round began: no longer served"
    assert {k for k in by_key if k.startswith(series.key)} == {f"{series.key}|2031-03-04", f"{series.key}|2031-03-05"}
    assert by_key == {i.key: i for i in state.view(cal.id, start, end) if i.key in by_key}
