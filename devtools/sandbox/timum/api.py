"""The sandbox timum's API under ``/timum/v1/…``, exactly as ``docs/timum-api.yaml`` defines it:
resources, blocked slots, bookings, and the receiver of the service's link-status webhooks.

Injected faults answer before authentication, as a gateway's rate limiter would.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from devtools.sandbox.timum.state import (
    LINK_MODES,
    LINK_STATUSES,
    SLOT_SOURCES,
    ConflictError,
    FaultRule,
    InvalidInput,
    SandboxError,
    TimumState,
    UnknownItem,
    parse_datetime,
)
from shared.adapters.timum_http import ORG_STATUS_EVENT
from shared.errors import InvalidSignature
from shared.signing import SIGNATURE_HEADER, verify_webhook

PREFIX = "/timum/v1"
EXTERNAL_ID = re.compile(r"^[A-Za-z0-9._:~-]{1,128}$")
MAX_BODY = 64 * 1024
#: ``writeBlockedSlots``: at most this many items, in at most this many bytes
MAX_BATCH_ITEMS = 100
MAX_BATCH_BODY = 256 * 1024

_TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 409: "Conflict",
           422: "Validation failed", 429: "Too many requests", 500: "Internal server error",
           503: "Service unavailable"}
_FAULT_CODES = {429: "rate_limited", 500: "internal", 503: "unavailable", 401: "unauthorized", 403: "forbidden",
                404: "not_found", 409: "resource_archived", 422: "validation_failed", 400: "bad_request"}

Handler = Callable[[Request], Awaitable[Response]]


class ApiProblem(Exception):
    def __init__(self, status: int, code: str, detail: str, *, field: str | None = None,
                 errors: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.field = status, code, detail, field
        self.errors = errors
        self.headers = headers or {}


def _problem_json(status: int, code: str, detail: str, *, field: str | None = None,
                  errors: list[dict[str, str]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": f"urn:problem-type:timum:{code}", "title": _TITLES.get(status, "Error"),
                            "status": status, "detail": detail, "code": code}
    if field:
        body["field"] = field
    if errors:
        body["errors"] = errors
    return body


def problem(status: int, code: str, detail: str, *, field: str | None = None,
            errors: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(_problem_json(status, code, detail, field=field, errors=errors)), status_code=status,
                    media_type="application/problem+json", headers=headers)


def _from_sandbox_error(exc: SandboxError) -> ApiProblem:
    if isinstance(exc, UnknownItem):
        return ApiProblem(404, f"{exc.kind}_not_found", exc.message)
    if isinstance(exc, ConflictError):
        return ApiProblem(409, exc.key or "conflict", exc.message)
    field = exc.field or ""
    return ApiProblem(422, "validation_failed", exc.message, field=field or None,
                      errors=[{"field": field, "message": exc.message}])


def _retry_after_text(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _fault_response(rule: FaultRule) -> Response:
    assert rule.status is not None
    headers = {}
    if rule.retry_after is not None:
        headers["Retry-After"] = _retry_after_text(rule.retry_after)
    if rule.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return problem(rule.status, _FAULT_CODES.get(rule.status, "internal"), "injected by the sandbox",
                   headers=headers)


def _slot_values(body: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The fields of a slot write (``BlockedSlotWrite``), and every invalid one."""
    errors: list[dict[str, str]] = []
    values: dict[str, Any] = {}
    for name in ("start", "end"):
        try:
            values[name] = parse_datetime(body.get(name), name)
        except InvalidInput as exc:
            errors.append({"field": name, "message": exc.message})
    values["allDay"] = body.get("allDay", False)
    if not isinstance(values["allDay"], bool):
        errors.append({"field": "allDay", "message": "allDay: must be true or false"})
    values["title"] = body.get("title", "")
    if not isinstance(values["title"], str):
        errors.append({"field": "title", "message": "title: must be a string"})
    values["source"] = body.get("source")
    if values["source"] not in SLOT_SOURCES:
        errors.append({"field": "source", "message": f"source: must be one of {', '.join(SLOT_SOURCES)}"})
    return values, errors


class TimumApi:
    def __init__(self, state: TimumState) -> None:
        #: ``organisation.status_changed`` events as received (one per provider and revocation)
        self.org_events: list[dict[str, Any]] = []
        self.state = state
        self.api_key = state.config.timum_api_key
        self.webhook_secrets = tuple(state.config.timum_webhook_secrets)

    # --- plumbing ---------------------------------------------------------------------------------
    def endpoint(self, handler: Handler, *, authenticated: bool = True) -> Handler:
        async def wrapped(request: Request) -> Response:
            path = request.url.path
            response: Response
            rule = self.state.draw_fault(request.method, path)
            if rule is not None and rule.delay > 0:
                await asyncio.sleep(rule.delay)
            if rule is not None and rule.status is not None:
                response = _fault_response(rule)
            elif authenticated and not self._authorised(request):
                response = problem(401, "unauthorized", "The API key is missing or not valid.",
                                   headers={"WWW-Authenticate": "Bearer"})
            else:
                try:
                    response = await handler(request)
                except ApiProblem as exc:
                    response = problem(exc.status, exc.code, exc.detail, field=exc.field, errors=exc.errors,
                                       headers=exc.headers)
                except SandboxError as exc:
                    mapped = _from_sandbox_error(exc)
                    response = problem(mapped.status, mapped.code, mapped.detail, field=mapped.field,
                                       errors=mapped.errors)
            self.state.log_api_call(request.method, path, response.status_code)
            return response

        return wrapped

    def _authorised(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode())

    @staticmethod
    async def _json_object(request: Request, max_bytes: int = MAX_BODY) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > max_bytes:
            raise ApiProblem(400, "bad_request", "the body is too large")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiProblem(400, "bad_request", "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiProblem(400, "bad_request", "the body must be a JSON object")
        return body

    @staticmethod
    def _unknown_fields(body: dict[str, Any], allowed: set[str]) -> None:
        extra = sorted(set(body) - allowed)
        if extra:
            raise ApiProblem(422, "validation_failed", f"{extra[0]}: unknown field", field=extra[0],
                             errors=[{"field": f, "message": "unknown field"} for f in extra])

    @staticmethod
    def _paging(request: Request) -> tuple[int, int]:
        raw_limit = request.query_params.get("limit", "100")
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = 0
        if not 1 <= limit <= 500:
            raise ApiProblem(400, "bad_request", "limit: must be a whole number from 1 to 500", field="limit")
        cursor = request.query_params.get("cursor")
        if not cursor:
            return 0, limit
        try:
            kind, _, offset = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition(":")
            start = int(offset)
            if kind != "o" or start < 0:
                raise ValueError(cursor)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise ApiProblem(400, "bad_request", "cursor: not a cursor this API issued", field="cursor") from None
        return start, limit

    @staticmethod
    def _page(items: list[dict[str, Any]], start: int, limit: int) -> dict[str, Any]:
        end = start + limit
        next_cursor = (base64.urlsafe_b64encode(f"o:{end}".encode()).decode().rstrip("=")
                       if end < len(items) else None)
        return {"items": items[start:end], "nextCursor": next_cursor}

    # --- resources -----------------------------------------------------------------------------
    async def create_resource(self, request: Request) -> Response:
        pid = request.path_params["providerId"]
        body = await self._json_object(request)
        self._unknown_fields(body, {"name", "timeZone"})
        name, tz = body.get("name"), body.get("timeZone")
        if not isinstance(name, str):
            raise InvalidInput("name: required, a string", field="name")
        if tz is not None and not isinstance(tz, str):
            raise InvalidInput("timeZone: must be a string", field="timeZone")
        resource = self.state.create_resource(pid, name, time_zone=tz)
        location = f"{request.url.path.rstrip('/')}/{resource.id}"
        return JSONResponse(resource.to_json(), status_code=201, headers={"Location": location})

    async def list_resources(self, request: Request) -> Response:
        """``listResources``: the provider's resources, paged like every list of this API."""
        pid = request.path_params["providerId"]
        start, limit = self._paging(request)
        self.state.provider(pid)
        items = [r.to_json() for r in sorted(self.state.list_resources(pid), key=lambda r: r.id)]
        return JSONResponse(self._page(items, start, limit))

    async def get_resource(self, request: Request) -> Response:
        resource = self.state.resource(request.path_params["providerId"], request.path_params["resourceId"])
        return JSONResponse(resource.to_json())

    # --- blocked slots -------------------------------------------------------------------------
    async def put_slot(self, request: Request) -> Response:
        pid, rid, ext = (request.path_params[k] for k in ("providerId", "resourceId", "externalId"))
        if not EXTERNAL_ID.match(ext):
            raise ApiProblem(400, "bad_request", "externalId: 1–128 characters of A–Z, a–z, 0–9 and . _ : ~ -",
                             field="externalId")
        body = await self._json_object(request)
        self._unknown_fields(body, {"start", "end", "allDay", "title", "source"})
        values, errors = _slot_values(body)
        if errors:
            raise ApiProblem(422, "validation_failed", "; ".join(e["message"] for e in errors),
                             field=errors[0]["field"], errors=errors)
        slot, created = self.state.put_slot(pid, rid, ext, start=values["start"], end=values["end"],
                                            all_day=values["allDay"], title=values["title"],
                                            source=values["source"])
        return JSONResponse(slot.to_json(), status_code=201 if created else 200)

    async def write_slots(self, request: Request) -> Response:
        """``writeBlockedSlots``: every item applied on its own, one result each."""
        pid, rid = request.path_params["providerId"], request.path_params["resourceId"]
        body = await self._json_object(request, MAX_BATCH_BODY)
        extra = sorted(set(body) - {"items"})
        if extra:
            raise ApiProblem(400, "bad_request", f"{extra[0]}: unknown field", field=extra[0])
        items = body.get("items")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH_ITEMS:
            raise ApiProblem(400, "bad_request", f"items: a list of 1 to {MAX_BATCH_ITEMS} writes", field="items")
        seen: set[str] = set()
        for item in items:
            ext = item.get("externalId") if isinstance(item, dict) else None
            if isinstance(ext, str) and ext in seen:
                raise ApiProblem(400, "bad_request", f"items: external id {ext!r} appears more than once",
                                 field="items")
            if isinstance(ext, str):
                seen.add(ext)
        self.state.resource(pid, rid)  # a missing provider or resource fails the whole request
        results = [self._write_one(pid, rid, n, item) for n, item in enumerate(items)]
        return JSONResponse({"results": results})

    def _write_one(self, pid: str, rid: str, index: int, item: Any) -> dict[str, Any]:
        ext = item.get("externalId") if isinstance(item, dict) else None
        result: dict[str, Any] = {"index": index, "externalId": ext if isinstance(ext, str) else "", "status": 422}

        def invalid(field: str, message: str, errors: list[dict[str, str]] | None = None) -> dict[str, Any]:
            result["error"] = _problem_json(422, "validation_failed", message, field=field,
                                            errors=errors or [{"field": field, "message": message}])
            return result

        if not isinstance(item, dict):
            return invalid("items", "an item must be an object")
        op = item.get("op")
        if op not in ("upsert", "delete"):
            return invalid("op", "op: must be upsert or delete")
        if not isinstance(ext, str) or not EXTERNAL_ID.match(ext):
            return invalid("externalId", "externalId: 1–128 characters of A–Z, a–z, 0–9 and . _ : ~ -")
        allowed = {"op", "externalId"} | ({"start", "end", "allDay", "title", "source"} if op == "upsert" else set())
        extra = sorted(set(item) - allowed)
        if extra:
            return invalid(extra[0], f"{extra[0]}: unknown field")
        try:
            if op == "delete":
                try:
                    self.state.delete_slot(pid, rid, ext)
                    result["status"] = 204
                except UnknownItem as exc:
                    result["status"] = 404
                    result["error"] = _problem_json(404, "blocked_slot_not_found", exc.message)
                return result
            values, errors = _slot_values(item)
            if errors:
                return invalid(errors[0]["field"], "; ".join(e["message"] for e in errors), errors)
            slot, created = self.state.put_slot(pid, rid, ext, start=values["start"], end=values["end"],
                                                all_day=values["allDay"], title=values["title"],
                                                source=values["source"])
        except SandboxError as exc:
            mapped = _from_sandbox_error(exc)
            result["status"] = mapped.status
            result["error"] = _problem_json(mapped.status, mapped.code, mapped.detail, field=mapped.field,
                                            errors=mapped.errors)
            return result
        result["status"] = 201 if created else 200
        result["slot"] = slot.to_json()
        return result

    async def delete_slot(self, request: Request) -> Response:
        pid, rid, ext = (request.path_params[k] for k in ("providerId", "resourceId", "externalId"))
        self.state.delete_slot(pid, rid, ext)
        return Response(status_code=204)

    async def list_slots(self, request: Request) -> Response:
        pid, rid = request.path_params["providerId"], request.path_params["resourceId"]
        source = request.query_params.get("source")
        if source is not None and source not in SLOT_SOURCES:
            raise ApiProblem(400, "bad_request", f"source: must be one of {', '.join(SLOT_SOURCES)}", field="source")
        start, limit = self._paging(request)
        self.state.resource(pid, rid)
        slots, more = self.state.slot_page(pid, rid, source, start, limit)
        next_cursor = base64.urlsafe_b64encode(f"o:{start + limit}".encode()).decode().rstrip("=") if more else None
        return JSONResponse({"items": [s.to_json() for s in slots], "nextCursor": next_cursor})

    # --- bookings ------------------------------------------------------------------------------
    async def list_bookings(self, request: Request) -> Response:
        pid, rid = request.path_params["providerId"], request.path_params["resourceId"]
        window: dict[str, datetime] = {}
        for name in ("from", "to"):
            try:
                window[name] = parse_datetime(request.query_params.get(name), name)
            except InvalidInput as exc:
                raise ApiProblem(400, "bad_request", exc.message, field=name) from None
        if window["to"] <= window["from"]:
            raise ApiProblem(400, "bad_request", "to: must be after from", field="to")
        start, limit = self._paging(request)
        self.state.resource(pid, rid)
        items = [b.to_json() for b in self.state.list_bookings(pid, rid, start=window["from"], end=window["to"])]
        return JSONResponse(self._page(items, start, limit))

    # --- link-status webhooks from the service -------------------------------------------------------
    async def link_status(self, request: Request) -> Response:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise ApiProblem(400, "bad_request", "the body is too large")
        try:
            verify_webhook(raw, request.headers.get(SIGNATURE_HEADER), self.webhook_secrets, now=time.time())
        except InvalidSignature as exc:
            raise ApiProblem(401, "invalid_signature", exc.message) from None
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiProblem(400, "bad_request", "the body is not valid JSON") from None
        if isinstance(payload, dict) and payload.get("type") == ORG_STATUS_EVENT:
            return self._organisation_status(request, payload)
        if isinstance(payload, dict) and payload.get("type") == "booking.outlook_conflict":
            delivery_id = self._check_booking_conflict(payload)
            if request.headers.get("Timum-Delivery") != delivery_id:
                raise ApiProblem(400, "bad_request", "Timum-Delivery: must be present and equal the body's id",
                                 field="Timum-Delivery")
            self.state.record_booking_conflict(delivery_id, payload)
            return Response(status_code=202)
        delivery_id = self._check_link_status(payload)
        header_id = request.headers.get("Timum-Delivery")
        if header_id != delivery_id:
            raise ApiProblem(400, "bad_request", "Timum-Delivery: must be present and equal the body's id",
                             field="Timum-Delivery")
        self.state.record_link_status(delivery_id, payload)
        return Response(status_code=202)

    def _organisation_status(self, request: Request, payload: dict[str, Any]) -> Response:
        """One event for every listed resource of a provider (an organisation's consent was
        withdrawn): recorded as each resource's link status, and kept whole in ``org_events``."""
        delivery_id = payload.get("id")
        if not isinstance(delivery_id, str) or not 1 <= len(delivery_id) <= 128:
            raise ApiProblem(400, "bad_request", "id: required, 1–128 characters", field="id")
        if request.headers.get("Timum-Delivery") != delivery_id:
            raise ApiProblem(400, "bad_request", "Timum-Delivery: must be present and equal the body's id",
                             field="Timum-Delivery")
        data = payload.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("providerId"), str) or not data["providerId"]:
            raise ApiProblem(400, "bad_request", "data.providerId: required", field="data.providerId")
        if data.get("status") not in LINK_STATUSES:
            raise ApiProblem(400, "bad_request", f"data.status: must be one of {', '.join(LINK_STATUSES)}",
                             field="data.status")
        ids = data.get("resourceIds")
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
            raise ApiProblem(400, "bad_request", "data.resourceIds: a list of resource ids", field="data.resourceIds")
        self.org_events.append(copy.deepcopy(payload))
        for rid in ids:
            self.state.record_link_status(f"{delivery_id}:{rid}", {
                "occurredAt": payload.get("occurredAt"),
                "data": {"providerId": data["providerId"], "resourceId": rid, "status": data["status"],
                         "mode": "app_only", "reason": str(data.get("reason") or "")}})
        return Response(status_code=202)

    @staticmethod
    def _check_link_status(payload: Any) -> str:
        def bad(field: str, message: str) -> ApiProblem:
            return ApiProblem(400, "bad_request", f"{field}: {message}", field=field)

        if not isinstance(payload, dict):
            raise bad("body", "must be a JSON object")
        delivery_id = payload.get("id")
        if not isinstance(delivery_id, str) or not 1 <= len(delivery_id) <= 128:
            raise bad("id", "required, 1–128 characters")
        if payload.get("type") != "link.status_changed":
            raise bad("type", "must be link.status_changed")
        occurred = payload.get("occurredAt")
        try:
            parse_datetime(occurred, "occurredAt")
        except InvalidInput:
            raise bad("occurredAt", "required, an RFC 3339 date-time") from None
        data = payload.get("data")
        if not isinstance(data, dict):
            raise bad("data", "required, an object")
        for name in ("providerId", "resourceId"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise bad(f"data.{name}", "required, a non-empty string")
        if data.get("status") not in LINK_STATUSES:
            raise bad("data.status", f"must be one of {', '.join(LINK_STATUSES)}")
        if data.get("mode") not in LINK_MODES:
            raise bad("data.mode", f"must be one of {', '.join(LINK_MODES)}")
        for name in ("reason", "calendarName"):
            if name in data and not isinstance(data[name], str):
                raise bad(f"data.{name}", "must be a string")
        return delivery_id

    @staticmethod
    def _check_booking_conflict(payload: dict[str, Any]) -> str:
        def bad(field: str, message: str) -> ApiProblem:
            return ApiProblem(400, "bad_request", f"{field}: {message}", field=field)

        delivery_id = payload.get("id")
        if not isinstance(delivery_id, str) or not 1 <= len(delivery_id) <= 128:
            raise bad("id", "required, 1–128 characters")
        try:
            parse_datetime(payload.get("occurredAt"), "occurredAt")
        except InvalidInput:
            raise bad("occurredAt", "required, an RFC 3339 date-time") from None
        data = payload.get("data")
        if not isinstance(data, dict):
            raise bad("data", "required, an object")
        for name in ("providerId", "resourceId", "bookingId"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise bad(f"data.{name}", "required, a non-empty string")
        if data.get("change") not in ("edited", "deleted"):
            raise bad("data.change", "must be one of edited, deleted")
        return delivery_id

    # --- routes -------------------------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        base = f"{PREFIX}/providers/{{providerId}}/resources"
        res = f"{base}/{{resourceId}}"
        return [
            Route(base, self.endpoint(self.create_resource), methods=["POST"]),
            Route(base, self.endpoint(self.list_resources), methods=["GET"]),
            Route(res, self.endpoint(self.get_resource), methods=["GET"]),
            Route(f"{res}/blocked-slots", self.endpoint(self.list_slots), methods=["GET"]),
            Route(f"{res}/blocked-slots/{{externalId}}", self.endpoint(self.put_slot), methods=["PUT"]),
            Route(f"{res}/blocked-slots/{{externalId}}", self.endpoint(self.delete_slot), methods=["DELETE"]),
            Route(f"{res}/blocked-slots/batch", self.endpoint(self.write_slots), methods=["POST"]),
            Route(f"{res}/bookings", self.endpoint(self.list_bookings), methods=["GET"]),
            Route(f"{PREFIX}/webhooks/link-status", self.endpoint(self.link_status, authenticated=False),
                  methods=["POST"]),
        ]
