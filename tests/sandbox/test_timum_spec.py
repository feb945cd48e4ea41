"""``docs/timum-api.yaml`` is valid OpenAPI 3.1, names every path the adapter calls and the sandbox
serves, and what the sandbox and the adapter put on the wire matches its schemas."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from devtools.sandbox.config import SandboxConfig
from devtools.sandbox.timum import TimumSandbox
from devtools.sandbox.timum.harness import RunningTimum, WebhookRecorder, serve_timum
from devtools.sandbox.timum.seed import ANNA_WEBER, SONNENSCHEIN
from shared.adapters.timum_http import TimumHttpAdapter
from shared.domain import BlockedSlot
from tests.support.timum_spec import check, load_spec

METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return load_spec()


def template_regex(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")


def spec_operation(spec: dict[str, Any], method: str, raw_path: str) -> tuple[str, dict[str, Any]] | None:
    for path, item in spec["paths"].items():
        if template_regex(path).match(raw_path) and method.lower() in item:
            return path, item[method.lower()]
    return None


def deref(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def response_schema_pointer(spec: dict[str, Any], operation: dict[str, Any], status: int) -> str | None:
    response = operation["responses"].get(str(status))
    assert response is not None, f"status {status} is not documented"
    ref = response.get("$ref", "")
    response = deref(spec, response)
    content = response.get("content") or {}
    if not content:
        return None
    media = "application/json" if "application/json" in content else "application/problem+json"
    schema = content[media]["schema"]
    if "$ref" in schema:
        return str(schema["$ref"]).lstrip("#")
    return f"{ref.lstrip('#')}/content/{media.replace('/', '~1')}/schema"


# --- the document -----------------------------------------------------------------------------------------

def test_spec_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_every_operation_documents_its_errors(spec: dict[str, Any]) -> None:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            codes = set(operation["responses"])
            assert {"429", "500", "503"} <= codes, (method, path)
            if operation.get("security", spec["security"]):
                assert "401" in codes, (method, path)


def test_webhooks_and_connect_link_are_described(spec: dict[str, Any]) -> None:
    assert set(spec["webhooks"]) == {"booking", "connect"}
    booking = spec["webhooks"]["booking"]["post"]
    names = {deref(spec, p)["name"] for p in booking["parameters"]}
    assert names == {"Timum-Signature", "Timum-Delivery"}
    assert {"202", "400", "401"} <= set(booking["responses"])
    text = spec["info"]["description"]
    for fact in ("HMAC-SHA256", "300 seconds", "15 minutes", "single-use", "base64url", "TIMUM_RETURN_URL_ALLOWLIST"):
        assert fact in text
    connect = spec["webhooks"]["connect"]["get"]["description"]
    assert "Integrationen → Outlook Integration → Verbinden" in connect and "Kalender verbinden (BETA)" in connect


# --- the sandbox serves exactly the documented API ----------------------------------------------------------

def test_sandbox_serves_exactly_the_documented_paths(spec: dict[str, Any]) -> None:
    sandbox = TimumSandbox(SandboxConfig())
    served: set[tuple[str, str]] = set()
    for route in sandbox.http_routes:
        if isinstance(route, Route) and route.path.startswith("/timum/v1/"):
            for method in route.methods or ():
                if method != "HEAD":
                    served.add((method.lower(), route.path.removeprefix("/timum")))
    documented = {(m, p) for p, item in spec["paths"].items() for m in item if m in METHODS}
    assert served == documented


@pytest.fixture(scope="module")
def running() -> Iterator[RunningTimum]:
    recorder = WebhookRecorder()
    with serve_timum(extra_routes=recorder.routes(), webhook_retry_delays=(), seed=True) as server:
        yield server


def test_sandbox_answers_match_the_schemas(spec: dict[str, Any], running: RunningTimum) -> None:
    headers = {"Authorization": f"Bearer {running.config.timum_api_key}"}
    res = f"/timum/v1/providers/{SONNENSCHEIN}/resources/{ANNA_WEBER}"
    slot = {"start": "2026-12-01T08:00:00Z", "end": "2026-12-01T09:00:00Z", "allDay": False, "title": "",
            "source": "outlook"}
    calls: list[tuple[str, str, dict[str, Any] | None, dict[str, str] | None]] = [
        ("POST", f"/timum/v1/providers/{SONNENSCHEIN}/resources", {"name": "Raum 2"}, None),
        ("POST", "/timum/v1/providers/prov-nope/resources", {"name": "Raum 2"}, None),
        ("POST", f"/timum/v1/providers/{SONNENSCHEIN}/resources", {"name": ""}, None),
        ("GET", res, None, None),
        ("GET", f"/timum/v1/providers/{SONNENSCHEIN}/resources/res-nope", None, None),
        ("PUT", f"{res}/blocked-slots/ol-1", slot, None),
        ("PUT", f"{res}/blocked-slots/ol-1", slot, None),
        ("PUT", f"{res}/blocked-slots/ol-2", {**slot, "source": "ics"}, None),
        ("PUT", f"{res}/blocked-slots/ol-3", {**slot, "end": "2026-12-01T07:00:00Z"}, None),
        ("GET", f"{res}/blocked-slots", None, {"limit": "1"}),
        ("GET", f"{res}/blocked-slots", None, {"source": "bogus"}),
        ("GET", f"{res}/bookings", None, {"from": "2020-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}),
        ("DELETE", f"{res}/blocked-slots/ol-1", None, None),
        ("DELETE", f"{res}/blocked-slots/ol-1", None, None),
        ("POST", f"{res}/blocked-slots/batch", {"items": [
            {"op": "upsert", "externalId": "ol-4", **slot}, {"op": "upsert", "externalId": "ol-4b", **slot},
            {"op": "upsert", "externalId": "ol-5", **slot, "end": "2026-12-01T07:00:00Z"},
            {"op": "delete", "externalId": "ol-6"}, {"op": "nope"}]}, None),
        ("POST", f"{res}/blocked-slots/batch", {"items": [{"op": "upsert", "externalId": "ol-4", **slot},
                                                          {"op": "delete", "externalId": "ol-4"}]}, None),
        ("POST", f"{res}/blocked-slots/batch", {"items": []}, None),
        ("POST", f"{res}/blocked-slots/batch", {"items": [{"op": "delete", "externalId": "ol-9"}], "x": 1}, None),
        ("POST", f"/timum/v1/providers/{SONNENSCHEIN}/resources/res-nope/blocked-slots/batch",
         {"items": [{"op": "delete", "externalId": "ol-4"}]}, None),
    ]
    seen: set[int] = set()
    with httpx.Client(base_url=running.base_url, headers=headers) as client:
        for method, path, body, params in calls:
            response = client.request(method, path, json=body, params=params)
            seen.add(response.status_code)
            found = spec_operation(spec, method, path.removeprefix("/timum"))
            assert found is not None, (method, path)
            pointer = response_schema_pointer(spec, found[1], response.status_code)
            if pointer is None:
                assert response.content == b""
            else:
                check(spec, pointer, response.json())
        unauthorised = client.get(res, headers={"Authorization": "Bearer nope"})
        pointer = response_schema_pointer(spec, spec["paths"]["/v1/providers/{providerId}/resources/{resourceId}"]
                                          ["get"], 401)
        assert pointer is not None
        check(spec, pointer, unauthorised.json())
        running.state.inject_fault(429, count=1, retry_after=2)
        throttled = client.get(res)
        assert throttled.status_code == 429
        check(spec, "/components/schemas/Problem", throttled.json())
    assert {200, 201, 204, 400, 404, 422} <= seen


def test_booking_webhooks_match_the_schema(spec: dict[str, Any], running: RunningTimum) -> None:
    booking = running.state.make_booking(SONNENSCHEIN, ANNA_WEBER, datetime(2026, 12, 7, 15, 0, tzinfo=UTC),
                                         force=True)
    running.state.reschedule_booking(booking.id, datetime(2026, 12, 7, 16, 0, tzinfo=UTC), force=True)
    running.state.cancel_booking(booking.id)
    deliveries = [d for d in running.state.wait_for_deliveries(3) if d.booking_id == booking.id]
    assert len(deliveries) == 3
    for delivery in deliveries:
        check(spec, "/components/schemas/BookingEvent", json.loads(delivery.body))
    assert [b.to_json() for b in running.state.list_bookings(SONNENSCHEIN)]
    for item in running.state.list_bookings(SONNENSCHEIN):
        check(spec, "/components/schemas/Booking", item.to_json())


def test_connect_link_payload_matches_the_schema(spec: dict[str, Any], running: RunningTimum) -> None:
    for resource, scope in ((None, ""), (ANNA_WEBER, ""), (None, "org")):
        url = running.state.connect_url(SONNENSCHEIN, resource, locale="en", scope=scope)
        payload = url.split("token=", 1)[1].split(".")[0]
        decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        check(spec, "/components/schemas/ConnectLinkPayload", decoded)


# --- the adapter calls only documented operations and sends documented bodies -----------------------------

async def test_adapter_calls_only_documented_operations(spec: dict[str, Any]) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if request.method == "POST" and request.url.path.endswith("/resources"):
            return httpx.Response(201, json={"id": "res-1", "name": "Raum", "timeZone": "Europe/Berlin"})
        if request.method == "POST" and request.url.path.endswith("/blocked-slots/batch"):
            items = json.loads(request.content)["items"]
            return httpx.Response(200, json={"results": [
                {"index": n, "externalId": item["externalId"], "status": 204 if item["op"] == "delete" else 201}
                for n, item in enumerate(items)]})
        if request.method == "GET" and request.url.path.endswith(("/blocked-slots", "/bookings", "/resources")):
            return httpx.Response(200, json={"items": [], "nextCursor": None})
        if request.method == "GET":
            return httpx.Response(200, json={"id": "res-1", "name": "Raum", "timeZone": "Europe/Berlin"})
        return httpx.Response({"DELETE": 204, "PUT": 201}.get(request.method, 202))

    base = "https://timum.example/timum"
    adapter = TimumHttpAdapter(base, "key", ["secret"], base + "/v1/webhooks/link-status",
                               client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    start = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    await adapter.create_resource("prov-1", "Raum")
    await adapter.get_resource("prov-1", "res-1")
    await adapter.list_resources("prov-1")
    await adapter.put_blocked_slot("prov-1", "res-1", BlockedSlot("ol-1", start, start + timedelta(hours=1)))
    await adapter.delete_blocked_slot("prov-1", "res-1", "ol-1")
    assert await adapter.write_blocked_slots("prov-1", "res-1", [
        BlockedSlot("ol-2", start, start + timedelta(hours=1), title="Termin", source="ics"), "ol-1"]) == [None, None]
    await adapter.list_blocked_slots("prov-1", "res-1", source="outlook")
    await adapter.list_bookings("prov-1", "res-1", start=start, end=start + timedelta(days=30))
    await adapter.send_link_status({"providerId": "prov-1", "resourceId": "res-1", "status": "ok",
                                    "mode": "app_only", "calendarName": "Raum 1"})
    await adapter.close()

    used: set[tuple[str, str]] = set()
    for request in calls:
        path = request.url.path.removeprefix("/timum")
        found = spec_operation(spec, request.method, path)
        assert found is not None, (request.method, path)
        template, operation = found
        used.add((request.method.lower(), template))
        documented_query = {deref(spec, p)["name"] for p in operation.get("parameters", [])
                            if deref(spec, p)["in"] == "query"}
        assert set(request.url.params) <= documented_query, (path, dict(request.url.params))
        if request.content:
            body_schema = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].lstrip("#")
            check(spec, body_schema, json.loads(request.content))
        if template == "/v1/webhooks/link-status":
            header = request.headers["Timum-Signature"]
            assert re.fullmatch(deref(spec, operation["parameters"][0])["schema"]["pattern"], header)
            assert abs(int(header.split(",")[0][2:]) - time.time()) < 5
    documented = {(m, p) for p, item in spec["paths"].items() for m in item if m in METHODS}
    assert used == documented
