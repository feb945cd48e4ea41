"""Every error page of the connect flow has a way back (to timum, or to start again), and anonymous
input never turns a refusal into a crash."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from shared.connect import flow
from shared.connect.outcomes import ErrorPage, Redirect
from shared.context import Services
from shared.http.connect_bp import handle_calendars, handle_oauth_callback, render_error
from shared.i18n import MESSAGES
from tests.support.connect_world import RETURN_BASE, MemoryWorld, connect_token, http_request, open_session

ERROR_CODES = sorted(k.removeprefix("error.") for k in MESSAGES["de"] if k.startswith("error.")
                     and k not in ("error.title", "error.reference"))


@pytest.mark.parametrize("code", ERROR_CODES)
def test_every_error_page_links_back_to_timum(world: MemoryWorld, code: str) -> None:
    for locale in ("de", "en"):
        body = render_error(world.services, ErrorPage(code, locale, status=400)).get_body().decode()
        # without a verified return address: timum's home
        assert re.search(rf'<a class="btn" href="{re.escape(RETURN_BASE)}">', body), (code, locale)
    page = render_error(world.services, ErrorPage(code, "de", return_url=RETURN_BASE + "providers/prov-1"))
    assert f'href="{RETURN_BASE}providers/prov-1"' in page.get_body().decode()


async def test_unknown_sign_in_answer_and_missing_session_pages_have_a_way_back(world: MemoryWorld) -> None:
    answer = await handle_oauth_callback(world.services, http_request(
        "POST", "/api/oauth/callback", body=b"state=nope&code=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"}))
    assert answer.status_code == 400 and f'href="{RETURN_BASE}"' in answer.get_body().decode()
    chooser = await handle_calendars(world.services, http_request("GET", "/api/connect/calendars"))
    assert chooser.status_code == 400 and f'href="{RETURN_BASE}"' in chooser.get_body().decode()


async def test_a_non_ascii_csrf_value_is_refused_not_a_crash(world: MemoryWorld) -> None:
    sid = await open_session(world.services)
    form = urlencode({"csrf": "ä" * 64, "calendar": "x", "action": "link"}).encode()
    response = await handle_calendars(world.services, http_request(
        "POST", "/api/connect/calendars", body=form,
        headers={"Cookie": f"timum-connect={sid}", "Content-Type": "application/x-www-form-urlencoded"}))
    assert response.status_code == 403
    assert "Das Formular ist abgelaufen" in response.get_body().decode()


async def test_a_forged_error_name_does_not_reach_the_log_as_a_line(live: Services,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    started = await flow.start(live, connect_token())
    assert isinstance(started, Redirect) and started.binding is not None
    state = parse_qs(urlsplit(started.location).query)["state"][0]
    caplog.set_level("INFO")
    outcome = await flow.callback(live, {"state": state, "error": "evil\r\nINFO forged line",
                                         "error_description": "AADSTS50000: x"}, binding=started.binding.value)
    assert isinstance(outcome, ErrorPage) and outcome.code == "sign_in_failed"
    assert "forged" not in caplog.text and "sign-in came back with unrecognised" in caplog.text
