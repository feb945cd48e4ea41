"""JSON control API of the Graph stand-in under ``/_sandbox/graph/…`` (HTTP listener), for
scripts, the bench and tests in other processes: change mailboxes as their users would, share
and publish calendars, fire lifecycle notifications, inject faults, forget delta state, read
delivery records and tune behaviour. Never exposes client states or tokens.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from devtools.sandbox.graph.model import Delivery, FaultRule, Share, Subscription
from devtools.sandbox.graph.recurrence import RecurrenceError
from devtools.sandbox.graph.state import EventIds, GraphState

PREFIX = "/_sandbox/graph"


class BadInput(ValueError):
    pass


def parse_when(value: Any, *, all_day: bool) -> date | datetime:
    """ISO date for all-day events, ISO date-time otherwise (naive = mailbox wall time)."""
    if not isinstance(value, str):
        raise BadInput("start and end must be ISO strings")
    try:
        if all_day:
            return date.fromisoformat(value[:10])
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadInput(f"not an ISO date/time: {value!r}") from exc


def ids_json(ids: EventIds) -> dict[str, str]:
    return {"id": ids.id, "immutableId": ids.immutable_id}


def delivery_json(d: Delivery) -> dict[str, Any]:
    return {"id": d.id, "at": d.at.isoformat(), "kind": d.kind, "target": d.target,
            "subscriptionIds": d.subscription_ids, "changeTypes": d.change_types, "count": d.count,
            "attempt": d.attempt, "status": d.status, "outcome": d.outcome, "durationMs": d.duration_ms}


def subscription_summary(s: Subscription) -> dict[str, Any]:
    return {"id": s.id, "resource": s.resource, "changeType": s.change_type, "mailboxId": s.mailbox_id,
            "calendarId": s.calendar_id, "expirationDateTime": s.expiration.isoformat(), "appOnly": s.app_only,
            "hasLifecycleUrl": bool(s.lifecycle_url), "immutableIds": s.immutable_ids,
            "applicationId": s.application_id}


def fault_json(rule: FaultRule) -> dict[str, Any]:
    return rule.as_json()


_EVENT_KEYS = {"subject": "subject", "showAs": "show_as", "sensitivity": "sensitivity", "body": "body",
               "location": "location", "isCancelled": "is_cancelled", "categories": "categories",
               "recurrence": "recurrence", "importance": "importance"}


def _event_kwargs(body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    all_day = bool(body.get("allDay", False))
    kw: dict[str, Any] = {}
    for key, name in _EVENT_KEYS.items():
        if key in body:
            kw[name] = body[key]
    if "start" in body:
        kw["start"] = parse_when(body["start"], all_day=all_day)
    if "end" in body:
        kw["end"] = parse_when(body["end"], all_day=all_day)
    if creating or "allDay" in body:
        kw["all_day"] = all_day
    if "timeZone" in body:
        kw["time_zone"] = body["timeZone"]
    return kw


def _setting(key: str, current: Any, value: Any) -> Any:
    """A behaviour value of the right type (numbers may come as int or float; None where allowed)."""
    if isinstance(current, bool) or isinstance(value, bool):
        if not (isinstance(current, bool) and isinstance(value, bool)):
            raise BadInput(f"{key} has the wrong type")
        return value
    if value is None and current is None:
        return None
    if not isinstance(value, int | float):
        raise BadInput(f"{key} must be a number")
    if value < 0:
        raise BadInput(f"{key} must not be negative")
    return int(value) if isinstance(current, int) else float(value)


Handler = Callable[[Request], Awaitable[Any]]


def _endpoint(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Run a handler and turn its result (or a bad-input / unknown-id error) into a JSON response."""
    async def run(request: Request) -> Response:
        try:
            result = await fn(request)
        except KeyError as exc:
            return JSONResponse({"error": f"not found: {exc.args[0] if exc.args else ''}"}, 404)
        except (BadInput, ValueError, TypeError, RecurrenceError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        if isinstance(result, Response):
            return result
        return JSONResponse(result)
    return run


def _by_method(**handlers: Handler) -> Handler:
    """One path, one handler per HTTP method (the route's ``methods`` already refused the rest)."""
    async def run(request: Request) -> Any:
        # Starlette lets HEAD through wherever GET is allowed.
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)
    return run


async def _body_of(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadInput("body must be JSON") from exc
    if not isinstance(data, dict):
        raise BadInput("body must be a JSON object")
    return data


def _share_json(s: Share) -> dict[str, Any]:
    return {"calendarId": s.calendar_id, "userId": s.user_id, "canEdit": s.can_edit, "accepted": s.accepted}


class _Control:
    """The control API's handlers over one Graph state."""

    def __init__(self, state: GraphState) -> None:
        self.state = state

    async def overview(self, request: Request) -> Any:
        state = self.state
        users = []
        for user in list(state.directory.users.values()):
            users.append({"id": user.id, "displayName": user.display_name, "mail": user.mail,
                          "timeZone": user.time_zone,
                          "calendars": [{"id": c.id, "name": c.name, "isDefault": c.is_default}
                                        for c in state.own_calendars(user.id)],
                          "sharedWithMe": [{"id": c.id, "name": c.name, "ownerId": c.owner_id,
                                            "canEdit": s.can_edit, "accepted": s.accepted}
                                           for c, s in state.shared_with(user.id, accepted_only=False)]})
        return {"users": users, "subscriptions": [subscription_summary(s) for s in state.list_subscriptions()],
                "faults": [fault_json(f) for f in state.faults], "behaviour": state.behaviour.as_json(),
                "syncStates": len(state.sync_states)}

    async def list_calendars(self, request: Request) -> Any:
        return [{"id": c.id, "name": c.name, "isDefault": c.is_default}
                for c in self.state.own_calendars(request.path_params["user"])]

    async def create_calendar(self, request: Request) -> Any:
        body = await _body_of(request)
        cal = self.state.create_calendar(request.path_params["user"], str(body.get("name", "")),
                                         color=str(body.get("color", "auto")))
        return JSONResponse({"id": cal.id, "name": cal.name}, 201)

    async def create_event(self, request: Request) -> Any:
        body = await _body_of(request)
        kw = _event_kwargs(body, creating=True)
        if "start" not in kw or "end" not in kw:
            raise BadInput("start and end are required")
        subject = str(kw.pop("subject", ""))
        ids = self.state.create_event(request.path_params["user"], subject, kw.pop("start"), kw.pop("end"),
                                      calendar_id=body.get("calendarId"), **kw)
        return JSONResponse(ids_json(ids), 201)

    async def change_event(self, request: Request) -> Any:
        event_id = request.path_params["event"]
        body = await _body_of(request)
        ids: EventIds | None = None
        if "calendarId" in body:
            ids = self.state.move_event_to_calendar(event_id, str(body["calendarId"]))
            event_id = ids.immutable_id
        kw = _event_kwargs(body, creating=False)
        if kw:
            ids = self.state.update_event(event_id, **kw)
        if ids is None:
            raise BadInput("nothing to change")
        return ids_json(ids)

    async def delete_event(self, request: Request) -> Any:
        self.state.delete_event(request.path_params["event"])
        return Response(status_code=204)

    async def share(self, request: Request) -> Any:
        body = await _body_of(request)
        s = self.state.share_calendar(request.path_params["cal"], str(body.get("with", "")),
                                      can_edit=bool(body.get("canEdit", True)),
                                      accept=bool(body.get("accept", False)))
        return _share_json(s)

    async def accept(self, request: Request) -> Any:
        body = await _body_of(request)
        return _share_json(self.state.accept_share(request.path_params["cal"], str(body.get("user", ""))))

    async def publish(self, request: Request) -> Any:
        body = await _body_of(request)
        pub = self.state.publish_calendar(request.path_params["cal"], str(body.get("detail", "full")))
        base = f"{request.url.scheme}://{request.url.netloc}"
        return {"url": f"{base}/outlook/published/{pub.token}/calendar.ics", "detail": pub.detail}

    async def unpublish(self, request: Request) -> Any:
        self.state.unpublish_calendar(request.path_params["cal"])
        return Response(status_code=204)

    async def subscriptions(self, request: Request) -> Any:
        return [subscription_summary(s) for s in self.state.list_subscriptions()]

    async def lifecycle(self, request: Request) -> Any:
        body = await _body_of(request)
        self.state.trigger_lifecycle(request.path_params["sub"], str(body.get("event", "")))
        return Response(status_code=202)

    async def deliveries(self, request: Request) -> Any:
        return [delivery_json(d) for d in self.state.list_deliveries()]

    async def list_faults(self, request: Request) -> Any:
        return [fault_json(f) for f in self.state.faults]

    async def add_fault(self, request: Request) -> Any:
        body = await _body_of(request)
        count = body.get("count")
        rule = self.state.add_fault(str(body.get("kind", "")), path=str(body.get("path", ".*")),
                                    method=body.get("method"), rate=float(body.get("rate", 1.0)),
                                    count=int(count) if count is not None else None,
                                    retry_after=float(body.get("retryAfter", 1.0)),
                                    delay=float(body.get("delay", 5.0)),
                                    retry_after_date=bool(body.get("retryAfterAsDate", False)))
        return JSONResponse(fault_json(rule), 201)

    async def clear_faults(self, request: Request) -> Any:
        self.state.clear_faults()
        return Response(status_code=204)

    async def remove_fault(self, request: Request) -> Any:
        self.state.remove_fault(int(request.path_params["rule"]))
        return Response(status_code=204)

    async def release(self, request: Request) -> Any:
        self.state.release_held()
        return Response(status_code=204)

    async def lose_state(self, request: Request) -> Any:
        body = await _body_of(request)
        return {"forgotten": self.state.lose_delta_state(body.get("user"))}

    async def behaviour(self, request: Request) -> Any:
        return self.state.behaviour.as_json()

    async def tune(self, request: Request) -> Any:
        body = await _body_of(request)
        current = self.state.behaviour.as_json()
        for key, value in body.items():
            if key not in current:
                raise BadInput(f"unknown behaviour setting {key!r}")
            setattr(self.state.behaviour, key, _setting(key, current[key], value))
        return self.state.behaviour.as_json()


def control_routes(state: GraphState) -> list[BaseRoute]:
    c = _Control(state)
    table: list[tuple[str, dict[str, Handler]]] = [
        ("/state", {"GET": c.overview}),
        ("/users/{user}/calendars", {"GET": c.list_calendars, "POST": c.create_calendar}),
        ("/users/{user}/events", {"POST": c.create_event}),
        ("/events/{event}", {"PATCH": c.change_event, "DELETE": c.delete_event}),
        ("/calendars/{cal}/share", {"POST": c.share}),
        ("/calendars/{cal}/accept", {"POST": c.accept}),
        ("/calendars/{cal}/publish", {"POST": c.publish, "DELETE": c.unpublish}),
        ("/subscriptions", {"GET": c.subscriptions}),
        ("/subscriptions/{sub}/lifecycle", {"POST": c.lifecycle}),
        ("/deliveries", {"GET": c.deliveries}),
        ("/faults", {"GET": c.list_faults, "POST": c.add_fault, "DELETE": c.clear_faults}),
        ("/faults/{rule:int}", {"DELETE": c.remove_fault}),
        ("/faults/release", {"POST": c.release}),
        ("/delta/lose-state", {"POST": c.lose_state}),
        ("/behaviour", {"GET": c.behaviour, "PATCH": c.tune}),
    ]
    return [Route(PREFIX + path, _endpoint(_by_method(**handlers)), methods=list(handlers))
            for path, handlers in table]
