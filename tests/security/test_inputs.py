"""Attacks with malformed input: ids that address other rows or paths, oversized bodies, a CSRF
value the old comparison could not handle. Each must end in a clear 4xx and change nothing."""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote

import httpx
import pytest

from devtools.connect_walker import ConnectWalker as _ConnectWalker
from devtools.connect_walker import _forms
from devtools.stack import Stack, StackError
from shared.messages import BOOKING_QUEUE
from tests.support.stack_requests import ANNA, links_api, signed_booking


def _booking(**overrides: object) -> dict[str, object]:
    booking: dict[str, object] = {"id": f"bk-{uuid.uuid4().hex[:8]}", "providerId": "sec-p", "resourceId": "sec-r",
                                  "version": 1, "start": "2030-01-01T09:00:00Z", "end": "2030-01-01T10:00:00Z",
                                  "status": "confirmed", "serviceName": "Beratung"}
    booking.update(overrides)
    return booking


# --- ids ----------------------------------------------------------------------------------------

BAD_RESOURCES = ["a|b", "a..b", "r\u202e1", "r\u2028x"]


@pytest.mark.parametrize("resource", BAD_RESOURCES)
@pytest.mark.parametrize(("method", "suffix"), [("DELETE", ""), ("POST", "/resync"), ("POST", "/ics-feed"),
                                                ("DELETE", "/ics-feed"), ("POST", "/ics-import")])
def test_links_and_ics_api_refuse_bad_resource_ids(stack: Stack, client: httpx.Client, resource: str, method: str,
                                                   suffix: str) -> None:
    body = json.dumps({"url": "https://calendar.example/x.ics"}).encode() if suffix == "/ics-import" else b""
    answer = links_api(stack, client, method, f"providers/sec-p/links/{quote(resource, safe='')}{suffix}",
                       provider="sec-p", body=body, content_type="application/json" if body else None)
    assert answer.status_code == 400, answer.text
    problem = answer.json()
    assert problem["code"] == "invalid_id" and problem["field"] == "resource"
    assert stack.link("sec-p", resource) is None


def test_links_api_refuses_a_bad_provider_id(stack: Stack, client: httpx.Client) -> None:
    answer = links_api(stack, client, "GET", "providers/sec..p/links", provider="sec..p")
    assert answer.status_code == 400
    assert answer.json()["field"] == "provider"


@pytest.mark.parametrize(("field", "value"), [("id", "bk..1"), ("id", "bk-1\n"), ("resourceId", "sec..r"),
                                              ("providerId", "sec-p\n")])
def test_booking_webhook_refuses_bad_ids_and_enqueues_nothing(stack: Stack, client: httpx.Client, field: str,
                                                              value: str) -> None:
    depth = stack.queue_depth(BOOKING_QUEUE)
    body, headers = signed_booking(stack, _booking(**{field: value}))
    answer = client.post(stack.api_url("timum/bookings"), content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == f"data.booking.{field}"
    assert stack.queue_depth(BOOKING_QUEUE) <= depth


def test_booking_webhook_refuses_a_bad_delivery_id(stack: Stack, client: httpx.Client) -> None:
    body, headers = signed_booking(stack, _booking(), delivery="d..1")
    answer = client.post(stack.api_url("timum/bookings"), content=body, headers=headers)
    assert answer.status_code == 400 and answer.json()["field"] == "id"


@pytest.mark.parametrize(("provider", "resource"), [("sec|p", "r1"), ("sec-p", "r|1"), ("sec-p", "r..1"),
                                                    ("sec-p\u2028", "r1")])
def test_connect_links_with_bad_ids_are_refused(stack: Stack, client: httpx.Client, provider: str,
                                                resource: str) -> None:
    """Even a correctly signed connect link may not name an id that breaks a link key."""
    import secrets
    import time

    from shared.signing import ConnectLink, sign_connect_link

    allowed = stack.settings.timum_return_url_allowlist[0]
    link = ConnectLink(provider_id=provider, resource_id=resource, locale="de", return_url=allowed,
                       expires_at=int(time.time()) + 300, nonce=secrets.token_urlsafe(24))
    token = sign_connect_link(link, stack.settings.timum_connect_secrets[0])
    answer = client.get(stack.api_url("connect"), params={"token": token})
    assert answer.status_code == 400, answer.text[:300]
    assert "text/html" in answer.headers["Content-Type"]
    assert "location" not in answer.headers  # no sign-in started


# --- body size ----------------------------------------------------------------------------------

def test_booking_webhook_refuses_an_oversized_body_before_reading_it(stack: Stack, client: httpx.Client) -> None:
    body, headers = signed_booking(stack, _booking(notes="x" * (2 * 1024 * 1024)))
    answer = client.post(stack.api_url("timum/bookings"), content=body, headers=headers)
    assert answer.status_code == 413


# --- CSRF ---------------------------------------------------------------------------------------

class _ChooserReached(Exception):
    def __init__(self, action: str, fields: list[tuple[str, str]]) -> None:
        super().__init__(action)
        self.action = action
        self.fields = fields


class _ToChooser(_ConnectWalker):
    """Walks the connect flow like a browser and stops at the calendar chooser's form."""

    def _act(self, page: httpx.Response) -> httpx.Response:
        for form in _forms(page.text).forms:
            action = str(page.url.join(form["action"] or str(page.url)))
            if action.split("?")[0].endswith("/api/connect/calendars"):
                raise _ChooserReached(action, list(form["fields"]))
        return super()._act(page)


@pytest.mark.parametrize("csrf", ["é", "\u2603" * 64, "ä" * 64])
def test_a_non_ascii_csrf_value_is_refused_not_a_crash(stack: Stack, csrf: str) -> None:
    provider, resource = "sec-csrf", f"r-{uuid.uuid4().hex[:6]}"
    person = stack.user(ANNA)
    calendar = stack.calendar(person.id, "Sicherheit")
    stack.ensure_resource(provider, resource, "Sicherheit")
    with stack.http(follow_redirects=False) as browser:
        try:
            _ToChooser(browser, person.id, calendar.name).walk(stack.timum.connect_url(provider, resource))
        except _ChooserReached as reached:
            fields = [(k, csrf if k == "csrf" else v) for k, v in reached.fields]
            answer = browser.post(reached.action, data={**dict(fields), "calendar": calendar.id, "action": "link"})
        else:  # pragma: no cover - the flow always shows the chooser
            raise StackError("the connect flow did not reach the chooser")
    assert answer.status_code == 403, answer.text[:300]
    assert "text/html" in answer.headers["Content-Type"]
    assert stack.link(provider, resource) is None
