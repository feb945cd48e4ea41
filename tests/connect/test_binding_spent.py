"""The sign-in binding cookie goes once its sign-in has ended, at the HTTP level: the connect
start and the callback as the host calls them, with the sandbox's identity platform and
in-memory storage.

The cookie lives 15 minutes, but its flow is single use: after success, a declined consent or an
error that spends the flow it binds nothing. Each such answer clears it (same name and
attributes, empty, ``Max-Age=0``), next to any cookie the answer sets. A refusal that leaves the
flow for its own browser (another browser's answer) leaves the cookie too.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urlencode

import azure.functions as func
from azure.functions.http import HttpResponseConverter

from devtools.sandbox.server import RunningSandbox
from shared.context import Services
from shared.http.connect_bp import handle_connect_start, handle_oauth_callback
from tests.support.connect_world import MicrosoftSignIn, connect_token, http_request

ANNA = "anna.weber@praxis-sonnenschein.example"
LENA = "lena.hoffmann@praxis-sonnenschein.example"
TOBIAS = "tobias.wagner@klinik-nord.example"


def _cookies(response: func.HttpResponse) -> dict[str, str]:
    """Each Set-Cookie header of ``response`` by cookie name."""
    return {header.split("=", 1)[0]: header for header in response.headers.get_all("Set-Cookie")}


def _attributes(header: str) -> dict[str, str]:
    parts = [p.strip() for p in header.split(";")]
    return {name.lower(): value for name, _, value in (p.partition("=") for p in parts[1:])}


class Browser:
    """What one browser holds of the connect flow: its binding cookies, by name."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.jar: dict[str, str] = {}

    def keep(self, response: func.HttpResponse) -> None:
        for name, header in _cookies(response).items():
            value = header.split("=", 1)[1].split(";", 1)[0]
            if _attributes(header).get("max-age") == "0":
                self.jar.pop(name, None)
            else:
                self.jar[name] = value

    def bindings(self) -> set[str]:
        return {name for name in self.jar if name.startswith("__Host-timum-signin-")}

    async def start(self, token: str = "", **link: object) -> tuple[str, str]:
        """Open a connect link (``token``, else one signed with ``link``); returns (Microsoft's
        sign-in URL, the binding cookie's name)."""
        token = token or connect_token(**link)  # type: ignore[arg-type]
        response = await handle_connect_start(self.services, http_request("GET", "/api/connect",
                                                                          params={"token": token}))
        assert response.status_code == 302, response.get_body()[:300]
        [name] = _cookies(response)
        self.keep(response)
        return response.headers["Location"], name

    async def answer(self, params: dict[str, str]) -> func.HttpResponse:
        """Microsoft's form post to the callback, with this browser's cookies."""
        cookie = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        response = await handle_oauth_callback(self.services, http_request(
            "POST", "/api/oauth/callback", body=urlencode(params).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie}))
        self.keep(response)
        return response


def _assert_cleared(response: func.HttpResponse, name: str) -> None:
    header = _cookies(response)[name]
    assert header.startswith(f"{name}=;"), header
    # The same attributes as when it was set: a browser replaces a cookie by name, domain and path.
    assert _attributes(header) == {"path": "/", "max-age": "0", "httponly": "", "secure": "",
                                   "samesite": "None"}


async def test_a_completed_sign_in_clears_the_binding_cookie_next_to_the_chooser_session(
        live: Services, microsoft: MicrosoftSignIn) -> None:
    browser = Browser(live)
    auth_uri, name = await browser.start()
    assert browser.bindings() == {name}
    answer = microsoft.run(auth_uri, ANNA)
    done = await browser.answer(answer)
    assert done.status_code == 303 and done.headers["Location"].endswith("/api/connect/calendars")
    _assert_cleared(done, name)
    session = [h for n, h in _cookies(done).items() if n != name]
    assert len(session) == 1 and "Max-Age=1800" in session[0]   # the chooser session is still handed over
    assert browser.bindings() == set()
    # The Functions worker hands the host one cookie per Set-Cookie header: both reach the browser.
    names = sorted(_cookies(done))
    encoded = HttpResponseConverter.encode(done, expected_type=None)
    assert sorted(c.output().removeprefix("Set-Cookie: ").split("=", 1)[0] for c in encoded.value["cookies"]) == names


async def test_a_replayed_answer_finds_its_flow_spent_and_clears_the_cookie(live: Services,
                                                                           microsoft: MicrosoftSignIn) -> None:
    browser = Browser(live)
    auth_uri, name = await browser.start()
    answer = microsoft.run(auth_uri, ANNA)
    cookie = browser.jar[name]
    assert (await browser.answer(answer)).status_code == 303
    # The browser still sends the old cookie (say, the answer is posted again from its history).
    browser.jar[name] = cookie
    again = await browser.answer(answer)
    assert again.status_code == 400 and "Die Anmeldung ist abgelaufen" in again.get_body().decode()
    _assert_cleared(again, name)


async def test_a_declined_consent_clears_the_spent_cookie_and_binds_the_retry(live: Services,
                                                                              sandbox: RunningSandbox,
                                                                              microsoft: MicrosoftSignIn) -> None:
    sandbox.identity.set_admin_consent("praxis-sonnenschein.example", False)
    sandbox.identity.set_user_consent(LENA, False)
    browser = Browser(live)
    auth_uri, name = await browser.start()
    declined = await browser.answer(microsoft.run(auth_uri, LENA, decision="cancel"))
    assert declined.status_code == 400 and "Sie haben die Berechtigungen abgelehnt" in declined.get_body().decode()
    _assert_cleared(declined, name)
    # The page's "sign in again" is a new sign-in with a cookie of its own, set by the same answer.
    [retry_name] = [n for n in _cookies(declined) if n != name]
    assert browser.bindings() == {retry_name}
    retry = re.search(r'<a class="btn" href="([^"]+)"', declined.get_body().decode())
    assert retry is not None
    retry_url = html.unescape(retry.group(1))
    sandbox.identity.set_user_consent(LENA, False)
    finished = await browser.answer(microsoft.run(retry_url, LENA, decision="accept"))
    assert finished.status_code == 303
    _assert_cleared(finished, retry_name)
    assert browser.bindings() == set()


async def test_an_admin_consent_page_ends_the_sign_in_and_clears_its_cookie(live: Services, sandbox: RunningSandbox,
                                                                            microsoft: MicrosoftSignIn) -> None:
    sandbox.identity.set_admin_consent("klinik-nord.example", False)
    sandbox.identity.set_user_consent(TOBIAS, False)
    browser = Browser(live)
    auth_uri, name = await browser.start(provider="prov-nord",
                                         return_url="http://127.0.0.1:7080/timum/providers/nord")
    page = await browser.answer(microsoft.run(auth_uri, TOBIAS, leave_without_consent=True))
    assert page.status_code == 200 and "/adminconsent?" in page.get_body().decode()
    _assert_cleared(page, name)
    assert browser.bindings() == set()


async def test_an_answer_from_another_browser_leaves_the_cookie_of_the_starting_one(
        live: Services, microsoft: MicrosoftSignIn) -> None:
    starting, other = Browser(live), Browser(live)
    auth_uri, name = await starting.start()
    answer = microsoft.run(auth_uri, ANNA)
    refused = await other.answer(answer)
    assert refused.status_code == 400 and "anderen Browser" in refused.get_body().decode()
    # The flow stays for the browser that started it, and so does its cookie.
    assert refused.headers.get_all("Set-Cookie") == []
    done = await starting.answer(answer)
    assert done.status_code == 303
    _assert_cleared(done, name)
