"""The sandbox timum's link management as a provider clicks it — state, unlink, resync, ICS feed
and import, settings — against a stand-in of the service's management API that checks every call
the way the service does (function key, provider-scoped signature). Also: blocked-slot labels and
the sandbox home's "restore the demo data"."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from devtools.sandbox.server import RunningSandbox
from devtools.sandbox.timum.harness import TEST_SERVICE_PREFIX, RunningTimum, serve_timum
from devtools.sandbox.timum.seed import ANNA_WEBER, RAUM_1, SONNENSCHEIN
from devtools.sandbox.timum.state import Slot
from devtools.sandbox.timum.ui import slot_label
from shared.connect.links_api import check_provider_scope
from shared.errors import InvalidSignature
from shared.signing import sign_webhook

PAGE = f"/timum/providers/{SONNENSCHEIN}"
NOW = datetime.now(UTC)


@dataclass
class Call:
    method: str
    path: str           # as the function app sees it: /api/…, with the query
    body: Any


@dataclass
class StandInService:
    """The management API of the service, scripted: answers from ``links``/``settings``, or the
    problem in ``refuse`` (status, code, field) once; records every call it accepted."""

    function_key: str
    secrets: tuple[str, ...]
    links: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=lambda: {
        "titlePrivacy": "none", "tentativeBlocks": True, "customerPrivacy": "name", "cancelPolicy": "delete",
        "locale": "de"})
    refuse: tuple[int, str, str] | None = None
    calls: list[Call] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    feeds: int = 0

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        path = request.url.path.removeprefix(TEST_SERVICE_PREFIX)
        target = path + (f"?{request.url.query}" if request.url.query else "")
        provider = request.path_params["provider"]
        if request.headers.get("x-functions-key") != self.function_key:
            self.rejected.append("function key")
            return JSONResponse({"code": "unauthorized"}, status_code=401)
        try:
            check_provider_scope(method=request.method, url=f"http://service{target}", headers=request.headers,
                                 body=body, route_provider=provider, secrets=self.secrets, now=time.time())
        except InvalidSignature as exc:
            self.rejected.append(exc.code)
            return JSONResponse({"code": exc.code}, status_code=403)
        self.calls.append(Call(request.method, target, json.loads(body) if body else None))
        if self.refuse is not None:
            status, code, name = self.refuse
            self.refuse = None
            problem = {"code": code, "detail": f"refused ({code})", **({"field": name} if name else {})}
            return JSONResponse(problem, status_code=status, media_type="application/problem+json")
        rest = path.split(f"/api/providers/{provider}", 1)[1]
        if rest == "/links":
            return JSONResponse({"providerId": provider, "links": self.links})
        if rest == "/settings":
            if request.method == "PUT":
                self.settings.update(json.loads(body))
            return JSONResponse(self.settings)
        if rest.endswith("/ics-feed") and request.method == "POST":
            self.feeds += 1
            return JSONResponse({"url": f"http://service/api/ics/token-{self.feeds}"}, status_code=201)
        if rest.endswith("/resync"):
            return JSONResponse({"status": "queued"}, status_code=202)
        if rest.endswith("/ics-import"):
            return JSONResponse({"resourceId": rest.split("/")[2], "mode": "ics"}, status_code=201)
        return Response(status_code=204)

    def routes(self) -> list[BaseRoute]:
        base = TEST_SERVICE_PREFIX + "/api/providers/{provider}"
        methods = ["GET", "POST", "PUT", "DELETE"]
        return [Route(base + "/{rest:path}", self.endpoint, methods=methods)]


def linked(resource: str = ANNA_WEBER, **extra: Any) -> dict[str, Any]:
    return {"resourceId": resource, "calendarName": "Behandlungsraum 1",
            "calendarOwner": "anna.weber@praxis-sonnenschein.example", "mode": "delegated", "syncMode": "push",
            # From the clock at the call, not at import: the page counts minutes from its own now.
            "lastSyncAt": (datetime.now(UTC) - timedelta(minutes=3)).isoformat().replace("+00:00", "Z"), "health": "ok",
            "needsReconnect": False, "icsHost": None, **extra}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[RunningTimum, StandInService]]:
    from devtools.sandbox.config import SandboxConfig

    service = StandInService(SandboxConfig.service_function_key, SandboxConfig.timum_webhook_secrets)
    with serve_timum(extra_routes=service.routes(), webhook_retry_delays=()) as running:
        yield running, service


@pytest.fixture
def service(served: tuple[RunningTimum, StandInService]) -> Iterator[StandInService]:
    running, stand_in = served
    running.state.reset()
    running.sandbox.seed_demo()
    stand_in.links, stand_in.calls, stand_in.rejected, stand_in.refuse = [], [], [], None
    yield stand_in
    assert stand_in.rejected == [], "every call carries the function key and the provider's signature"


@pytest.fixture
def timum(served: tuple[RunningTimum, StandInService], service: StandInService) -> RunningTimum:
    return served[0]


@pytest.fixture
def client(timum: RunningTimum) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=timum.base_url) as c:
        yield c


def text(response: httpx.Response) -> str:
    """The page's words, as a person reads them (tags dropped, whitespace collapsed)."""
    return " ".join(unescape(re.sub(r"<[^>]+>", "", response.text)).split())


def unlinked_cards(response: httpx.Response) -> int:
    return response.text.count('link-state">Nicht verbunden</span>')


# --- state ------------------------------------------------------------------------------------------

def test_link_state_owner_and_freshness_in_plain_words(client: httpx.Client, service: StandInService) -> None:
    service.links = [linked(linkedBy="Dr. Anna Weber (anna.weber@praxis-sonnenschein.example)")]
    response = client.get(PAGE)
    page = text(response)
    assert "Outlook-Kalender „Behandlungsraum 1“, gehört anna.weber@praxis-sonnenschein.example." in page
    assert "Verbunden mit der Microsoft-Anmeldung." in page and "verbunden von" not in page, "her own calendar"
    assert "Änderungen in Outlook kommen innerhalb von Sekunden an. Zuletzt abgeglichen: vor 3 Minute(n)." in page
    assert "(Anmeldung)" not in page and "Anmeldung)" not in page
    assert unlinked_cards(response) == 1, "Behandlungsraum 1 is not in the links API"
    assert service.calls == [Call("GET", f"/api/providers/{SONNENSCHEIN}/links", None)]

    english = text(client.get(PAGE, params={"lang": "en"}))
    assert "Outlook calendar “Behandlungsraum 1”, belongs to anna.weber@praxis-sonnenschein.example." in english
    assert "Connected through a Microsoft sign-in." in english and "Last synced: 3 minute(s) ago." in english


def test_polling_app_only_and_ics_links_say_how_fresh_they_are(client: httpx.Client,
                                                               service: StandInService) -> None:
    service.links = [linked(mode="app_only", syncMode="polling", lastSyncAt=None, calendarOwner="Jonas Becker",
                            linkedBy="Dr. Anna Weber (anna.weber@praxis-sonnenschein.example)"),
                     linked(RAUM_1, mode="ics", syncMode="polling", calendarName="Praxis Weber",
                            calendarOwner="", icsHost="outlook.office365.com")]
    page = text(client.get(PAGE))
    assert ("Outlook-Kalender „Behandlungsraum 1“, gehört Jonas Becker, verbunden von Dr. Anna Weber "
            "(anna.weber@praxis-sonnenschein.example).") in page
    assert "Verbunden mit der Administrator-Freigabe der Organisation." in page
    assert page.count("Dieser Kalender wird regelmäßig abgefragt (alle paar Minuten)") == 2
    assert "Noch nicht abgeglichen – der erste Abgleich läuft." in page
    assert "Outlook-Kalender „Praxis Weber“. Verbunden über einen veröffentlichten Kalender-Link." in page
    assert "Nur lesend" in page


def test_the_links_api_wins_over_an_old_status_webhook(timum: RunningTimum, client: httpx.Client,
                                                       service: StandInService) -> None:
    _status(timum, "ok", RAUM_1)
    assert unlinked_cards(client.get(PAGE)) == 2, "the service lists no link: nothing is connected"

    service.links = [linked(health="needs_reconnect")]
    _status(timum, "needs_reconnect", ANNA_WEBER, reason="Die Anmeldung bei Microsoft ist abgelaufen.")
    page = text(client.get(PAGE))
    assert "muss erneuert werden. Die Anmeldung bei Microsoft ist abgelaufen." in page


def test_without_the_service_the_last_status_webhook_is_shown_and_unlinked_clears_it(
        timum: RunningTimum, client: httpx.Client, service: StandInService) -> None:
    saved = timum.config.service_base_url
    timum.config.service_base_url = "http://127.0.0.1:9"     # nothing listens there
    try:
        _status(timum, "ok", ANNA_WEBER, calendar="Kalender")
        page = text(client.get(PAGE))
        assert "Der Sync-Dienst ist gerade nicht erreichbar; angezeigt wird die letzte Statusmeldung." in page
        assert "Outlook-Kalender „Kalender“" in page
        _status(timum, "unlinked", ANNA_WEBER, calendar="Kalender")
        assert timum.state.resource(SONNENSCHEIN, ANNA_WEBER).link is None
        response = client.get(PAGE)
        assert unlinked_cards(response) == 2 and "Outlook-Kalender „Kalender“" not in text(response)
        settings = client.get(f"{PAGE}/settings")
        assert settings.status_code == 503 and "Der Sync-Dienst ist nicht erreichbar." in text(settings)
        unlink = client.post(f"{PAGE}/resources/{ANNA_WEBER}/unlink", data={})
        assert unlink.status_code == 503 and "Der Sync-Dienst ist nicht erreichbar." in text(unlink)
    finally:
        timum.config.service_base_url = saved


def test_an_unlinked_webhook_is_accepted_and_clears_the_state(timum: RunningTimum, client: httpx.Client) -> None:
    _status(timum, "ok", ANNA_WEBER)
    data = {"providerId": SONNENSCHEIN, "resourceId": ANNA_WEBER, "status": "unlinked", "mode": "delegated",
            "reason": "", "calendarName": "Kalender"}
    event = {"id": "evt-unlinked", "type": "link.status_changed", "occurredAt": "2026-12-01T09:00:00Z",
             "data": data}
    body = json.dumps(event).encode()
    headers = {"Timum-Signature": sign_webhook(body, [timum.config.timum_webhook_secrets[0]],
                                               timestamp=int(time.time())),
               "Timum-Delivery": "evt-unlinked", "Content-Type": "application/json"}
    response = client.post("/timum/v1/webhooks/link-status", content=body, headers=headers)
    assert response.status_code == 202
    assert timum.state.resource(SONNENSCHEIN, ANNA_WEBER).link is None
    assert timum.state.list_received_statuses()[-1].status == "unlinked"
    bad = json.dumps({**event, "id": "evt-bad", "data": {**data, "status": "gone"}}).encode()
    refused = client.post("/timum/v1/webhooks/link-status", content=bad, headers={
        **headers, "Timum-Delivery": "evt-bad",
        "Timum-Signature": sign_webhook(bad, [timum.config.timum_webhook_secrets[0]], timestamp=int(time.time()))})
    assert refused.status_code == 400 and refused.json()["field"] == "data.status"


def _status(timum: RunningTimum, status: str, resource: str, *, reason: str = "", calendar: str = "K") -> None:
    timum.state.record_link_status(f"d-{time.monotonic_ns()}", {
        "id": "x", "type": "link.status_changed", "occurredAt": "2026-12-01T08:00:00Z",
        "data": {"providerId": SONNENSCHEIN, "resourceId": resource, "status": status, "mode": "delegated",
                 "reason": reason, "calendarName": calendar}})


# --- actions ----------------------------------------------------------------------------------------

def test_unlink_with_and_without_deleting_our_outlook_events(client: httpx.Client, service: StandInService) -> None:
    service.links = [linked()]
    page = client.get(PAGE).text
    assert 'name="deleteOutlookEvents" value="true"' in page and "Verbindung trennen" in page
    done = client.post(f"{PAGE}/resources/{ANNA_WEBER}/unlink", data={"deleteOutlookEvents": "true"})
    assert done.status_code == 303
    assert done.headers["location"] == f"{PAGE}?done=unlinked_deleted#resource-{ANNA_WEBER}"
    client.post(f"{PAGE}/resources/{ANNA_WEBER}/unlink", data={"lang": "en"})
    deletes = [c.path for c in service.calls if c.method == "DELETE"]
    assert deletes == [f"/api/providers/{SONNENSCHEIN}/links/{ANNA_WEBER}?deleteOutlookEvents=true",
                       f"/api/providers/{SONNENSCHEIN}/links/{ANNA_WEBER}"]
    shown = text(client.get(PAGE, params={"done": "unlinked_deleted"}))
    assert "Die Verbindung wurde getrennt; von timum angelegte Outlook-Termine werden gelöscht." in shown


def test_unlinking_what_the_service_no_longer_has_says_so(client: httpx.Client, service: StandInService) -> None:
    service.refuse = (404, "not_found", "")
    response = client.post(f"{PAGE}/resources/{ANNA_WEBER}/unlink", data={})
    assert response.status_code == 404
    assert "Für diese Ressource gibt es keine Verbindung (mehr)." in text(response)
    assert client.post(f"{PAGE}/resources/res-nope/unlink").status_code == 404


def test_resync_is_queued(client: httpx.Client, service: StandInService) -> None:
    response = client.post(f"{PAGE}/resources/{RAUM_1}/resync", follow_redirects=True)
    assert "Ein vollständiger Abgleich wurde angestoßen." in text(response)
    assert Call("POST", f"/api/providers/{SONNENSCHEIN}/links/{RAUM_1}/resync", None) in service.calls


def test_ics_feed_link_create_rotate_revoke(timum: RunningTimum, client: httpx.Client,
                                            service: StandInService) -> None:
    before = client.get(PAGE).text
    assert "<script" not in before and "Abo-Link erzeugen" in before
    created = client.post(f"{PAGE}/resources/{RAUM_1}/ics-feed", follow_redirects=True)
    assert "Der Abo-Link wurde erzeugt." in text(created)
    assert f'id="feed-{RAUM_1}" class="feed-url mono" value="http://service/api/ics/token-1"' in created.text
    assert 'data-copy="feed-res-behandlungsraum-1"' in created.text and "<script" in created.text
    assert "Neuen Link erzeugen (der alte hört auf zu funktionieren)" in text(created)

    rotated = client.post(f"{PAGE}/resources/{RAUM_1}/ics-feed", follow_redirects=True)
    assert "token-2" in rotated.text and "token-1" not in rotated.text
    revoked = client.post(f"{PAGE}/resources/{RAUM_1}/ics-feed/revoke", follow_redirects=True)
    assert "Der Abo-Link wurde widerrufen; er funktioniert nicht mehr." in text(revoked)
    assert "token-2" not in revoked.text and timum.state.feed_url(SONNENSCHEIN, RAUM_1) is None
    assert [c.method for c in service.calls if "/ics-feed" in c.path] == ["POST", "POST", "DELETE"]


def test_ics_import_sends_the_url_and_explains_refusals(client: httpx.Client, service: StandInService) -> None:
    url = "https://outlook.office365.com/owa/calendar/abc/def/calendar.ics"
    done = client.post(f"{PAGE}/resources/{RAUM_1}/ics-import", data={"url": url}, follow_redirects=True)
    assert "Der Kalender wird eingebunden; der erste Abgleich läuft." in text(done)
    assert service.calls[0] == Call("POST", f"/api/providers/{SONNENSCHEIN}/links/{RAUM_1}/ics-import", {"url": url})

    service.calls.clear()
    empty = client.post(f"{PAGE}/resources/{RAUM_1}/ics-import", data={"url": " "})
    assert empty.status_code == 400 and "Bitte den ICS-Link eintragen." in text(empty)
    too_long = client.post(f"{PAGE}/resources/{RAUM_1}/ics-import", data={"url": "https://x/" + "a" * 3000})
    assert too_long.status_code == 400
    assert [c for c in service.calls if c.method == "POST"] == [], "nothing reaches the service"

    service.refuse = (400, "bad_request", "url")
    bad = client.post(f"{PAGE}/resources/{RAUM_1}/ics-import", data={"url": "http://intranet/cal.ics"})
    assert bad.status_code == 400 and "Dieser ICS-Link wird nicht angenommen: refused (bad_request)" in text(bad)
    service.refuse = (409, "resource_linked", "")
    taken = client.post(f"{PAGE}/resources/{RAUM_1}/ics-import", data={"url": url})
    assert taken.status_code == 409
    assert "Diese Ressource ist bereits über Microsoft mit Outlook verbunden." in text(taken)


def test_settings_show_the_services_values_and_send_only_its_fields(client: httpx.Client,
                                                                    service: StandInService) -> None:
    service.settings["cancelPolicy"] = "mark"
    page = client.get(f"{PAGE}/settings")
    assert page.status_code == 200
    assert '<input type="radio" name="cancelPolicy" value="mark" checked>' in page.text
    assert '<input type="checkbox" name="tentativeBlocks" value="true" checked>' in page.text
    assert '<a href="/timum/providers/prov-sonnenschein/settings" aria-current="page">Einstellungen</a>' in page.text

    saved = client.post(f"{PAGE}/settings", data={"titlePrivacy": "subject", "customerPrivacy": "contact",
                                                   "cancelPolicy": "delete", "locale": "en", "evil": "1"},
                        follow_redirects=True)
    assert "Die Einstellungen wurden gespeichert." in text(saved)
    put = next(c for c in service.calls if c.method == "PUT")
    assert put.body == {"titlePrivacy": "subject", "customerPrivacy": "contact", "cancelPolicy": "delete",
                        "locale": "en", "tentativeBlocks": False}
    assert '<input type="radio" name="titlePrivacy" value="subject" checked>' in saved.text

    service.refuse = (400, "bad_request", "titlePrivacy")
    refused = client.post(f"{PAGE}/settings", data={"titlePrivacy": "label"})
    assert refused.status_code == 400 and "Der Sync-Dienst hat abgelehnt: refused (bad_request)" in text(refused)
    assert '<input type="radio" name="titlePrivacy" value="label" checked>' in refused.text, "the choice stays"
    assert client.get("/timum/providers/prov-nope/settings").status_code == 404


# --- blocked slots and the sandbox pages -----------------------------------------------------------------

@pytest.mark.parametrize(("source", "title", "de", "en"), [
    ("outlook", "", "Outlook: belegt", "Outlook: busy"),
    ("outlook", "Outlook", "Outlook: belegt", "Outlook: busy"),
    ("outlook", "  Team\nrunde ", "Outlook: Team runde", "Outlook: Team runde"),
    ("ics", "", "ICS-Kalender: belegt", "ICS calendar: busy"),
])
def test_blocked_slots_say_where_they_come_from(source: str, title: str, de: str, en: str) -> None:
    slot = Slot("p", "r", "x", NOW, NOW + timedelta(hours=1), False, title, source, NOW, NOW)
    assert (slot_label(slot, "de"), slot_label(slot, "en")) == (de, en)


def test_slots_on_the_page_and_navigation(timum: RunningTimum, client: httpx.Client) -> None:
    timum.state.put_slot(SONNENSCHEIN, RAUM_1, "ev-1", start=NOW + timedelta(days=1),
                         end=NOW + timedelta(days=1, hours=1), all_day=False, title="", source="outlook")
    page = client.get(PAGE).text
    assert '<td class="slot-label">Outlook: belegt</td>' in page
    assert '<a href="/">Sandbox-Übersicht</a>' in page
    assert f'<a href="{PAGE}" aria-current="page">Physiopraxis Sonnenschein</a>' in page
    assert '<a href="/timum/" aria-current="page">Kalenderprofile</a>' in client.get("/timum/").text


def test_sandbox_home_restores_the_demo_data(sandbox: RunningSandbox) -> None:
    assert sandbox.sandbox.timum is not None and sandbox.sandbox.graph is not None
    timum, graph = sandbox.sandbox.timum.state, sandbox.sandbox.graph.state
    anna = next(u for u in sandbox.directory.users.values() if u.display_name == "Dr. Anna Weber"
                and len(graph.own_calendars(u.id)) == 3)
    room = next(c for c in graph.own_calendars(anna.id) if c.name == "Behandlungsraum 1")
    graph.create_event(anna.id, "Übrig vom Test", NOW + timedelta(days=2), NOW + timedelta(days=2, hours=1),
                       calendar_id=room.id)
    timum.create_resource(SONNENSCHEIN, "Testraum", resource_id="res-left-over")
    seeded = len(graph.calendar_events(graph.default_calendar(anna.id).id))
    with httpx.Client(base_url=sandbox.http_base) as web:
        home = web.get("/")
        assert "Demo-Daten wiederherstellen" in home.text and 'action="/_sandbox/reset-demo"' in home.text
        foreign = web.post("/_sandbox/reset-demo", headers={"Origin": "https://evil.example"})
        assert foreign.status_code == 403 and timum.resource(SONNENSCHEIN, "res-left-over")
        done = web.post("/_sandbox/reset-demo", follow_redirects=True)
    assert urlsplit(str(done.url)).query == "done=reset"
    assert "Die Sandbox zeigt wieder die Demo-Daten." in done.text
    assert [r.id for r in timum.list_resources(SONNENSCHEIN)] == [ANNA_WEBER, RAUM_1]
    assert timum.booking("bk-demo-1").version == 1
    assert graph.calendar_events(room.id) == []
    assert len(graph.calendar_events(graph.default_calendar(anna.id).id)) == seeded, "the demo events again"
