"""The sandbox timum as a person and as the service meet it: API authentication and injected faults,
the link-status receiver, the connect buttons, and the provider's pages in German and English."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from html import unescape
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest

from devtools.sandbox.timum.harness import RunningTimum, WebhookRecorder, serve_timum
from devtools.sandbox.timum.seed import ANNA_WEBER, KLINIK_NORD, RAUM_1, SONNENSCHEIN
from shared.errors import InvalidSignature
from shared.signing import MAX_LINK_LIFETIME, sign_webhook, verify_connect_link

BERLIN = ZoneInfo("Europe/Berlin")
API = "/timum/v1/providers"


@pytest.fixture(scope="module")
def server() -> Iterator[RunningTimum]:
    recorder = WebhookRecorder()
    with serve_timum(extra_routes=recorder.routes(), webhook_retry_delays=()) as running:
        yield running


@pytest.fixture
def timum(server: RunningTimum) -> Iterator[RunningTimum]:
    server.state.reset()
    server.sandbox.seed_demo()
    yield server
    server.state.reset()


@pytest.fixture
def client(timum: RunningTimum) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=timum.base_url) as c:
        yield c


def auth(timum: RunningTimum) -> dict[str, str]:
    return {"Authorization": f"Bearer {timum.config.timum_api_key}"}


def signed(timum: RunningTimum, event: dict[str, object], *, secret: str | None = None,
           at: float | None = None) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    header = sign_webhook(body, [secret or timum.config.timum_webhook_secrets[0]],
                          timestamp=int(time.time() if at is None else at))
    return body, {"Timum-Signature": header, "Timum-Delivery": str(event["id"]),
                  "Content-Type": "application/json"}


def status_event(event_id: str = "evt-1", status: str = "needs_reconnect") -> dict[str, object]:
    return {"id": event_id, "type": "link.status_changed", "occurredAt": "2026-12-01T08:00:00Z",
            "data": {"providerId": SONNENSCHEIN, "resourceId": ANNA_WEBER, "status": status, "mode": "delegated",
                     "reason": "Die Anmeldung bei Microsoft ist abgelaufen.", "calendarName": "Praxis <Weber>"}}


# --- API authentication and faults --------------------------------------------------------------------

@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic c2FuZGJveA==", "Bearer"])
def test_api_refuses_missing_or_wrong_keys(timum: RunningTimum, client: httpx.Client, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = client.get(f"{API}/{SONNENSCHEIN}/resources/{ANNA_WEBER}", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["code"] == "unauthorized"
    assert client.get(f"{API}/{SONNENSCHEIN}/resources/{ANNA_WEBER}", headers=auth(timum)).status_code == 200


def test_injected_429_carries_retry_after_and_retires(timum: RunningTimum, client: httpx.Client) -> None:
    rule = client.post("/_sandbox/timum/faults", json={"status": 429, "retryAfter": 3, "count": 1,
                                                       "method": "PUT"})
    assert rule.status_code == 201
    url = f"{API}/{SONNENSCHEIN}/resources/{ANNA_WEBER}/blocked-slots/ol-1"
    body = {"start": "2026-12-01T08:00:00Z", "end": "2026-12-01T09:00:00Z", "source": "outlook"}
    assert client.get(f"{API}/{SONNENSCHEIN}/resources/{ANNA_WEBER}", headers=auth(timum)).status_code == 200
    throttled = client.put(url, json=body, headers=auth(timum))
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "3"
    assert throttled.json()["code"] == "rate_limited"
    assert client.put(url, json=body, headers=auth(timum)).status_code == 201
    assert ("PUT", f"{API}/{SONNENSCHEIN}/resources/{ANNA_WEBER}/blocked-slots/ol-1", 429) in timum.state.api_calls()


def test_fault_rate_draws_from_a_seeded_generator(timum: RunningTimum, client: httpx.Client) -> None:
    def statuses() -> list[int]:
        timum.state.clear_faults()
        timum.state.seed_random(7)
        timum.state.inject_fault(500, rate=0.5)
        return [client.get(f"{API}/{SONNENSCHEIN}/resources/{RAUM_1}", headers=auth(timum)).status_code
                for _ in range(12)]

    first = statuses()
    assert set(first) == {200, 500}
    assert statuses() == first


def test_validation_errors_name_every_field(timum: RunningTimum, client: httpx.Client) -> None:
    response = client.put(f"{API}/{SONNENSCHEIN}/resources/{ANNA_WEBER}/blocked-slots/ol-1", headers=auth(timum),
                          json={"start": "2026-12-01T08:00:00", "end": "tomorrow", "source": "google", "x": 1})
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["x"]
    response = client.put(f"{API}/{SONNENSCHEIN}/resources/{ANNA_WEBER}/blocked-slots/ol-1", headers=auth(timum),
                          json={"start": "2026-12-01T08:00:00", "end": "tomorrow", "source": "google"})
    assert [e["field"] for e in response.json()["errors"]] == ["start", "end", "source"]
    assert timum.state.list_slots(SONNENSCHEIN) == []


# --- link-status webhooks from the service ------------------------------------------------------------

def test_link_status_with_valid_signature_is_stored_and_shown(timum: RunningTimum, client: httpx.Client) -> None:
    body, headers = signed(timum, status_event())
    response = client.post("/timum/v1/webhooks/link-status", content=body, headers=headers)
    assert response.status_code == 202
    [received] = timum.state.list_received_statuses()
    assert (received.resource_id, received.status, received.mode) == (ANNA_WEBER, "needs_reconnect", "delegated")
    assert timum.state.resource(SONNENSCHEIN, ANNA_WEBER).link is not None
    page = client.get(f"/timum/providers/{SONNENSCHEIN}").text
    banner = re.search(r'<div class="alert alert-warn" role="alert" data-resource="res-anna-weber">(.*?)</div>',
                       page, re.S)
    assert banner is not None
    assert "Dr. Anna Weber" in banner.group(1) and "Kalender verbinden (BETA)" in banner.group(1)
    assert "Praxis &lt;Weber&gt;" in banner.group(1)
    assert "<Weber>" not in page


def test_link_status_back_to_ok_removes_the_banner(timum: RunningTimum, client: httpx.Client) -> None:
    for event_id, status in [("evt-1", "needs_reconnect"), ("evt-2", "ok")]:
        body, headers = signed(timum, status_event(event_id, status))
        assert client.post("/timum/v1/webhooks/link-status", content=body, headers=headers).status_code == 202
    page = client.get(f"/timum/providers/{SONNENSCHEIN}").text
    assert 'class="alert alert-warn"' not in page
    assert "Verbunden" in page


def test_repeated_link_status_delivery_is_accepted_once(timum: RunningTimum, client: httpx.Client) -> None:
    body, headers = signed(timum, status_event())
    for _ in range(2):
        assert client.post("/timum/v1/webhooks/link-status", content=body, headers=headers).status_code == 202
    assert [r.duplicate for r in timum.state.list_received_statuses()] == [False, True]


@pytest.mark.parametrize("case", ["wrong_secret", "stale", "missing", "tampered"])
def test_link_status_with_bad_signature_is_refused(timum: RunningTimum, client: httpx.Client, case: str) -> None:
    body, headers = signed(timum, status_event(), secret="wrong" if case == "wrong_secret" else None,
                           at=time.time() - 600 if case == "stale" else None)
    if case == "missing":
        del headers["Timum-Signature"]
    if case == "tampered":
        body = body.replace(b"needs_reconnect", b"ok")
    response = client.post("/timum/v1/webhooks/link-status", content=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_signature"
    assert timum.state.list_received_statuses() == []


@pytest.mark.parametrize(("change", "field_name"), [
    (lambda e: e["data"].update(status="broken"), "data.status"),
    (lambda e: e["data"].update(mode="fax"), "data.mode"),
    (lambda e: e["data"].pop("resourceId"), "data.resourceId"),
    (lambda e: e.update(type="booking.created"), "type"),
])
def test_malformed_link_status_names_the_field(timum: RunningTimum, client: httpx.Client, change: object,
                                               field_name: str) -> None:
    event = status_event()
    change(event)  # type: ignore[operator]
    body, headers = signed(timum, event)
    response = client.post("/timum/v1/webhooks/link-status", content=body, headers=headers)
    assert response.status_code == 400 and response.json()["field"] == field_name


def test_link_status_needs_a_matching_delivery_header(timum: RunningTimum, client: httpx.Client) -> None:
    body, headers = signed(timum, status_event())
    headers["Timum-Delivery"] = "other"
    response = client.post("/timum/v1/webhooks/link-status", content=body, headers=headers)
    assert response.status_code == 400 and response.json()["field"] == "Timum-Delivery"


# --- connect buttons ----------------------------------------------------------------------------------

def _token(location: str) -> str:
    return parse_qs(urlsplit(location).query)["token"][0]


def test_outlook_integration_button_makes_a_link_without_resource(timum: RunningTimum,
                                                                  client: httpx.Client) -> None:
    response = client.post(f"/timum/providers/{SONNENSCHEIN}/connect", data={"lang": "de"})
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(timum.config.service_base_url + "/api/connect?token=")
    link = verify_connect_link(_token(location), timum.config.timum_connect_secrets, now=time.time(),
                               allowlist=[timum.base_url + "/timum/"])
    assert (link.provider_id, link.resource_id, link.locale) == (SONNENSCHEIN, None, "de")
    assert link.return_url == f"{timum.base_url}/timum/providers/{SONNENSCHEIN}"
    assert 0 < link.expires_at - time.time() <= MAX_LINK_LIFETIME
    assert response.headers["cache-control"] == "no-store"


def test_resource_button_makes_a_fresh_link_for_that_resource(timum: RunningTimum, client: httpx.Client) -> None:
    tokens = [_token(client.post(f"/timum/providers/{SONNENSCHEIN}/resources/{RAUM_1}/connect",
                                 data={"lang": "en"}).headers["location"]) for _ in range(2)]
    links = [verify_connect_link(t, timum.config.timum_connect_secrets, now=time.time(),
                                 allowlist=[timum.base_url + "/timum/"]) for t in tokens]
    assert {(k.resource_id, k.locale) for k in links} == {(RAUM_1, "en")}
    assert links[0].nonce != links[1].nonce
    assert links[0].return_url.endswith(f"/timum/providers/{SONNENSCHEIN}?lang=en")
    with pytest.raises(InvalidSignature):
        verify_connect_link(tokens[0], ["another-secret"], now=time.time(), allowlist=[timum.base_url + "/timum/"])


def test_connect_for_unknown_resource_is_not_found(timum: RunningTimum, client: httpx.Client) -> None:
    response = client.post(f"/timum/providers/{SONNENSCHEIN}/resources/res-nope/connect")
    assert response.status_code == 404 and "location" not in response.headers


def test_pages_show_both_buttons_as_plain_forms(timum: RunningTimum, client: httpx.Client) -> None:
    page = client.get(f"/timum/providers/{SONNENSCHEIN}").text
    assert "<script" not in page
    assert re.search(r'<h2>Integrationen</h2>\s*<div class="card">\s*<h3>Outlook Integration</h3>', page)
    assert re.search(rf'<form method="post" action="/timum/providers/{SONNENSCHEIN}/connect">', page)
    assert '<button type="submit" class="btn btn-primary" id="outlook-connect">Verbinden</button>' in page
    for rid in (ANNA_WEBER, RAUM_1):
        assert f'action="/timum/providers/{SONNENSCHEIN}/resources/{rid}/connect"' in page
    assert page.count(">Kalender verbinden (BETA)</button>") == 2
    assert 'href="/_sandbox/static/sandbox.css"' in page


# --- pages ---------------------------------------------------------------------------------------------

def test_seeded_practice_is_shown_in_german(timum: RunningTimum, client: httpx.Client) -> None:
    index = client.get("/timum/")
    assert index.status_code == 200 and '<html lang="de">' in index.text
    assert "Physiopraxis Sonnenschein" in index.text and "Klinik Nord" in index.text
    page = unescape(client.get(f"/timum/providers/{SONNENSCHEIN}").text)
    for text in ("Dr. Anna Weber", "Behandlungsraum 1", "Krankengymnastik 30 min", "Manuelle Therapie",
                 "Jürgen Schäfer", "Abgesagt", "Buchungen", "Blockierte Zeiten", "Neue Buchung"):
        assert text in page
    assert client.get(f"/timum/providers/{KLINIK_NORD}").status_code == 200


def test_english_on_request_and_kept_in_links(timum: RunningTimum, client: httpx.Client) -> None:
    page = client.get(f"/timum/providers/{SONNENSCHEIN}?lang=en").text
    assert '<html lang="en">' in page
    assert "Connect calendar (BETA)" in page and ">Connect</button>" in page and "Integrations" in page
    assert f'action="/timum/providers/{SONNENSCHEIN}/bookings?lang=en"' in page
    assert f'href="/timum/providers/{SONNENSCHEIN}"' in page  # the switch back to German


def test_book_reschedule_and_cancel_through_forms(timum: RunningTimum, client: httpx.Client) -> None:
    day = (datetime.now(BERLIN) + timedelta(days=20)).date().isoformat()
    made = client.post(f"/timum/providers/{SONNENSCHEIN}/bookings", data={
        "resourceId": RAUM_1, "serviceName": "Manuelle Therapie", "date": day, "time": "16:00", "duration": "45",
        "customerName": "Lena Weiß", "customerEmail": "lena@example.de", "lang": "en"})
    assert made.status_code == 303 and made.headers["location"].endswith("done=booking_created&lang=en")
    [booking] = [b for b in timum.state.list_bookings(SONNENSCHEIN, RAUM_1) if b.customer.name == "Lena Weiß"]
    assert booking.end - booking.start == timedelta(minutes=45)
    assert booking.start.strftime("%H:%M") == "16:00" and booking.start.tzinfo is not None
    notice = client.get(made.headers["location"]).text
    assert "The booking was created." in notice

    moved = client.post(f"/timum/providers/{SONNENSCHEIN}/bookings/{booking.id}/reschedule",
                        data={"date": day, "time": "17:30"})
    assert moved.status_code == 303
    after = timum.state.booking(booking.id)
    assert after.start.strftime("%H:%M") == "17:30" and after.version == 2

    cancelled = client.post(f"/timum/providers/{SONNENSCHEIN}/bookings/{booking.id}/cancel", data={})
    assert cancelled.status_code == 303
    assert timum.state.booking(booking.id).status == "cancelled"
    timum.state.wait_for_deliveries(3)
    assert [d.type for d in timum.state.list_deliveries()] == ["booking.created", "booking.updated",
                                                               "booking.cancelled"]


def test_booking_into_blocked_time_shows_a_german_error(timum: RunningTimum, client: httpx.Client) -> None:
    start = datetime(2026, 12, 14, 10, 0, tzinfo=BERLIN)
    timum.state.put_slot(SONNENSCHEIN, ANNA_WEBER, "ol-x", start=start, end=start + timedelta(hours=2))
    response = client.post(f"/timum/providers/{SONNENSCHEIN}/bookings", data={
        "resourceId": ANNA_WEBER, "date": "2026-12-14", "time": "11:00", "duration": "30", "customerName": "A"})
    assert response.status_code == 409
    assert "Diese Zeit ist durch den verbundenen Kalender blockiert." in response.text
    bad = client.post(f"/timum/providers/{SONNENSCHEIN}/bookings", data={
        "resourceId": ANNA_WEBER, "date": "", "time": "11:00", "customerName": "A"})
    assert bad.status_code == 400 and "Bitte Datum und Uhrzeit vollständig angeben." in bad.text
    page = client.get(f"/timum/providers/{SONNENSCHEIN}").text
    assert "Mo, 14.12.2026, 10:00–12:00" in page and "outlook" in page


def test_names_are_escaped(timum: RunningTimum, client: httpx.Client) -> None:
    timum.state.create_resource(SONNENSCHEIN, '<img src=x onerror="alert(1)">')
    page = client.get(f"/timum/providers/{SONNENSCHEIN}").text
    assert "<img src=x" not in page and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page


def test_unknown_pages_are_404(client: httpx.Client) -> None:
    assert client.get("/timum/providers/prov-nope").status_code == 404
    assert client.get(f"/timum/providers/{SONNENSCHEIN}/bookings/bk-nope").status_code == 404


def test_booking_page_is_where_the_booking_url_points(timum: RunningTimum, client: httpx.Client) -> None:
    booking = timum.state.booking("bk-demo-1")
    page = client.get(urlsplit(booking.url).path)
    assert page.status_code == 200
    assert "Jürgen Schäfer" in unescape(page.text) and "Krankengymnastik 30 min" in page.text


def test_seed_is_repeatable(timum: RunningTimum) -> None:
    timum.sandbox.seed_demo()
    assert [r.name for r in timum.state.list_resources(SONNENSCHEIN)] == ["Dr. Anna Weber", "Behandlungsraum 1"]
    assert len(timum.state.list_bookings(SONNENSCHEIN)) == 4
    assert timum.state.list_deliveries() == []
