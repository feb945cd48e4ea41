"""JSON control API of the sandbox timum under ``/_sandbox/timum/…`` — the same powers as the Python
``TimumState`` for tests and scripts in other processes (browser tests, the local host, benchmarks).

    GET    /_sandbox/timum/state                      providers, resources, bookings, slots
    POST   /_sandbox/timum/reset                      forget everything ({"seed": true} seeds the demo)
    POST   /_sandbox/timum/providers                  {id, name, timeZone?}
    POST   /_sandbox/timum/resources                  {providerId, name, timeZone?, id?}
    POST   /_sandbox/timum/bookings                   {providerId, resourceId, start, end? | durationMinutes?,
                                                       serviceName?, customer?, notes?, force?}
    POST   /_sandbox/timum/bookings/{id}/reschedule   {start, end?, resourceId?, force?}
    POST   /_sandbox/timum/bookings/{id}/cancel
    POST   /_sandbox/timum/faults                     {status?, rate?, count?, retryAfter?, method?,
                                                       pathContains?, delay?}
    DELETE /_sandbox/timum/faults
    GET    /_sandbox/timum/deliveries                 booking webhooks sent, with each attempt's status
    POST   /_sandbox/timum/deliveries/{seq}/resend    send a past webhook again (duplicate)
    POST   /_sandbox/timum/deliveries/pause           hold new webhooks …
    POST   /_sandbox/timum/deliveries/resume          … and release them ({"reverse": true}: newest first)
    POST   /_sandbox/timum/signature-mode             {mode: valid|all_secrets|wrong_secret|stale|missing}
    GET    /_sandbox/timum/link-status                link-status webhooks received from the service
    POST   /_sandbox/timum/connect-link               {providerId, resourceId?, locale?} → {url}
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from devtools.sandbox.timum.state import (
    ConflictError,
    InvalidInput,
    SandboxError,
    TimumState,
    UnknownItem,
    parse_datetime,
)
from shared.domain import Customer

PREFIX = "/_sandbox/timum"


def _error(exc: SandboxError) -> JSONResponse:
    status = 404 if isinstance(exc, UnknownItem) else 409 if isinstance(exc, ConflictError) else 400
    return JSONResponse({"error": exc.message, "field": exc.field}, status_code=status)


class TimumControl:
    def __init__(self, state: TimumState, seed: Callable[[], None]) -> None:
        self.state = state
        self.seed = seed

    @staticmethod
    def endpoint(handler: Callable[[Request, dict[str, Any]], Awaitable[Any]]) -> Callable[[Request],
                                                                                         Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            raw = await request.body()
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError:
                return JSONResponse({"error": "the body is not valid JSON", "field": None}, status_code=400)
            if not isinstance(body, dict):
                return JSONResponse({"error": "the body must be a JSON object", "field": None}, status_code=400)
            try:
                result = await handler(request, body)
            except SandboxError as exc:
                return _error(exc)
            except (KeyError, TypeError, ValueError) as exc:
                return JSONResponse({"error": f"missing or malformed field: {exc}", "field": None}, status_code=400)
            if isinstance(result, Response):
                return result
            return JSONResponse(result)

        return wrapped

    async def state_view(self, request: Request, body: dict[str, Any]) -> Any:
        return self.state.snapshot()

    async def reset(self, request: Request, body: dict[str, Any]) -> Any:
        self.state.reset()
        if body.get("seed"):
            self.seed()
        return {"ok": True}

    async def add_provider(self, request: Request, body: dict[str, Any]) -> Any:
        provider = self.state.add_provider(str(body["id"]), str(body["name"]),
                                           time_zone=str(body.get("timeZone") or "Europe/Berlin"))
        return JSONResponse({"id": provider.id, "name": provider.name, "timeZone": provider.time_zone},
                            status_code=201)

    async def add_resource(self, request: Request, body: dict[str, Any]) -> Any:
        resource = self.state.create_resource(str(body["providerId"]), str(body["name"]),
                                              time_zone=body.get("timeZone"), resource_id=body.get("id"))
        return JSONResponse(resource.to_json(), status_code=201)

    async def make_booking(self, request: Request, body: dict[str, Any]) -> Any:
        start = parse_datetime(body.get("start"), "start")
        end = parse_datetime(body["end"], "end") if body.get("end") else None
        minutes = body.get("durationMinutes")
        customer = body.get("customer") or {}
        booking = self.state.make_booking(
            str(body["providerId"]), str(body["resourceId"]), start, end,
            duration=timedelta(minutes=int(minutes)) if minutes else None,
            service_name=str(body.get("serviceName") or "Krankengymnastik 30 min"),
            customer=Customer(str(customer.get("name", "")), str(customer.get("email", "")),
                              str(customer.get("phone", ""))),
            notes=str(body.get("notes") or ""), booking_id=body.get("id"), force=bool(body.get("force")))
        return JSONResponse(booking.to_json(), status_code=201)

    async def reschedule(self, request: Request, body: dict[str, Any]) -> Any:
        start = parse_datetime(body.get("start"), "start")
        end = parse_datetime(body["end"], "end") if body.get("end") else None
        booking = self.state.reschedule_booking(request.path_params["bookingId"], start, end,
                                                resource_id=body.get("resourceId"), force=bool(body.get("force")))
        return booking.to_json()

    async def cancel(self, request: Request, body: dict[str, Any]) -> Any:
        return self.state.cancel_booking(request.path_params["bookingId"]).to_json()

    async def add_fault(self, request: Request, body: dict[str, Any]) -> Any:
        status = body.get("status", 503)
        rule = self.state.inject_fault(
            None if status is None else int(status), rate=float(body.get("rate", 1.0)),
            count=None if body.get("count") is None else int(body["count"]), retry_after=body.get("retryAfter"),
            method=body.get("method"), path_contains=body.get("pathContains"), delay=float(body.get("delay", 0.0)))
        return JSONResponse(rule.to_json(), status_code=201)

    async def clear_faults(self, request: Request, body: dict[str, Any]) -> Any:
        self.state.clear_faults()
        return {"ok": True}

    async def deliveries(self, request: Request, body: dict[str, Any]) -> Any:
        return {"items": [d.to_json() for d in self.state.list_deliveries()]}

    async def resend(self, request: Request, body: dict[str, Any]) -> Any:
        try:
            seq = int(request.path_params["seq"])
        except ValueError:
            raise InvalidInput("seq: a whole number", field="seq") from None
        return JSONResponse(self.state.resend_delivery(seq).to_json(), status_code=201)

    async def pause(self, request: Request, body: dict[str, Any]) -> Any:
        self.state.pause_deliveries()
        return {"ok": True}

    async def resume(self, request: Request, body: dict[str, Any]) -> Any:
        return {"released": self.state.resume_deliveries(reverse=bool(body.get("reverse")))}

    async def signature_mode(self, request: Request, body: dict[str, Any]) -> Any:
        self.state.set_signature_mode(str(body.get("mode")))
        return {"mode": self.state.signature_mode}

    async def link_statuses(self, request: Request, body: dict[str, Any]) -> Any:
        return {"items": [s.to_json() for s in self.state.list_received_statuses()]}

    async def connect_link(self, request: Request, body: dict[str, Any]) -> Any:
        locale = str(body.get("locale") or "de")
        if locale not in ("de", "en"):
            raise InvalidInput("locale: de or en", field="locale")
        return {"url": self.state.connect_url(str(body["providerId"]), body.get("resourceId"), locale=locale)}

    def routes(self) -> list[BaseRoute]:
        e = self.endpoint
        return [
            Route(f"{PREFIX}/state", e(self.state_view), methods=["GET"]),
            Route(f"{PREFIX}/reset", e(self.reset), methods=["POST"]),
            Route(f"{PREFIX}/providers", e(self.add_provider), methods=["POST"]),
            Route(f"{PREFIX}/resources", e(self.add_resource), methods=["POST"]),
            Route(f"{PREFIX}/bookings", e(self.make_booking), methods=["POST"]),
            Route(f"{PREFIX}/bookings/{{bookingId}}/reschedule", e(self.reschedule), methods=["POST"]),
            Route(f"{PREFIX}/bookings/{{bookingId}}/cancel", e(self.cancel), methods=["POST"]),
            Route(f"{PREFIX}/faults", e(self.add_fault), methods=["POST"]),
            Route(f"{PREFIX}/faults", e(self.clear_faults), methods=["DELETE"]),
            Route(f"{PREFIX}/deliveries", e(self.deliveries), methods=["GET"]),
            Route(f"{PREFIX}/deliveries/pause", e(self.pause), methods=["POST"]),
            Route(f"{PREFIX}/deliveries/resume", e(self.resume), methods=["POST"]),
            Route(f"{PREFIX}/deliveries/{{seq}}/resend", e(self.resend), methods=["POST"]),
            Route(f"{PREFIX}/signature-mode", e(self.signature_mode), methods=["POST"]),
            Route(f"{PREFIX}/link-status", e(self.link_statuses), methods=["GET"]),
            Route(f"{PREFIX}/connect-link", e(self.connect_link), methods=["POST"]),
        ]
