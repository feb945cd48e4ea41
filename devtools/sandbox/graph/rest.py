"""The Graph REST surface under ``/v1.0``: users, mailbox settings, calendars and groups,
events, calendarView and its delta, subscriptions, and ``$batch``.

Every endpoint runs through ``GraphApi._endpoint``: bearer token check (401), the per-app,
per-mailbox concurrency limit (429 MailboxConcurrency), injected faults, then the handler; any
``GraphError`` becomes Graph's error body with ``innerError`` ids and date.

Shared calendars: a calendar keeps one id. The owner B (and app-only callers) address it as
``/users/{B}/calendars/{id}``; a user A it is shared with may use either
``/users/{A}/calendars/{id}`` (it is listed among A's calendars once accepted) or
``/users/{B}/calendars/{id}``, both needing ``Calendars.Read(Write).Shared``.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from devtools.sandbox.directory import AccessClaims, Directory, SandboxUser, TokenError
from devtools.sandbox.graph import render
from devtools.sandbox.graph.delivery import Dispatcher
from devtools.sandbox.graph.model import (
    Calendar,
    Event,
    GraphError,
    Instance,
    Subscription,
    graph_instant,
    parse_datetime,
)
from devtools.sandbox.graph.state import GraphState, SyncState
from devtools.sandbox.graph.timezones import UnknownTimeZone, zone

JSON_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
READ_OWN = frozenset({"Calendars.Read", "Calendars.ReadWrite", "Calendars.ReadBasic"})
WRITE_OWN = frozenset({"Calendars.ReadWrite"})
READ_SHARED = frozenset({"Calendars.Read.Shared", "Calendars.ReadWrite.Shared"})
WRITE_SHARED = frozenset({"Calendars.ReadWrite.Shared"})
APP_READ = frozenset({"Calendars.Read", "Calendars.ReadWrite", "Calendars.ReadBasic.All"})
APP_WRITE = frozenset({"Calendars.ReadWrite"})
MAILBOX_SETTINGS = frozenset({"MailboxSettings.Read", "MailboxSettings.ReadWrite"})
APP_USER_READ = frozenset({"User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"})
CHANGE_TYPES = {"created", "updated", "deleted"}
DELTA_FORBIDDEN = ("$select", "$expand", "$filter", "$orderby", "$search", "$top", "$skip", "$count")
_PREFER_TZ = re.compile(r'outlook\.timezone\s*=\s*"([^"]*)"', re.I)
_PREFER_PAGE = re.compile(r"odata\.maxpagesize\s*=\s*(\d+)", re.I)
_PREFER_ID = re.compile(r'IdType\s*=\s*"?ImmutableId"?', re.I)
_EXPAND = re.compile(r"^singleValueExtendedProperties(?:\(\s*\$filter\s*=\s*(.+)\))?$", re.I)
_QUOTED_ID = re.compile(r"\bid\s+eq\s+'((?:[^']|'')*)'", re.I)
_ANY = re.compile(r"^singleValueExtendedProperties/any\(\s*(\w+)\s*:\s*(.+)\)$", re.I)
_RESOURCE = re.compile(r"^/?(?:me|users/(?P<user>[^/]+))/(?:calendars/(?P<cal>[^/]+)/events|calendar/events|events)$",
                       re.I)
_MAILBOX_WIDE = re.compile(r"^/?(?:me|users/[^/]+)/events$", re.I)
_BATCH_HEADERS = {"content-type": "Content-Type", "retry-after": "Retry-After", "location": "Location",
                  "preference-applied": "Preference-Applied", "etag": "ETag"}
ACCESS_DENIED = "Access is denied. Check credentials and try again."
NOT_FOUND = "The specified object was not found in the store."


@dataclass
class Ctx:
    request: Request
    claims: AccessClaims
    request_id: str
    client_request_id: str
    immutable: bool = False
    view_zone: str | None = None
    max_page_size: int | None = None
    applied: list[str] = field(default_factory=list)
    mailbox: SandboxUser | None = None

    @property
    def base(self) -> str:
        url = self.request.url
        return f"{url.scheme}://{url.netloc}/v1.0"

    @property
    def query(self) -> dict[str, str]:
        # OData system query options and calendarView parameters are case-insensitive.
        return {k.lower(): v for k, v in self.request.query_params.items()}

    def raw_query_key(self, lower: str) -> str:
        return next((k for k in self.request.query_params if k.lower() == lower), lower)


def graph_json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status_code=status, headers=headers,
                    media_type=JSON_TYPE)


def _error_body(err: GraphError, request_id: str, client_request_id: str) -> dict[str, Any]:
    inner: dict[str, Any] = {"date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                             "request-id": request_id, "client-request-id": client_request_id}
    if err.inner_code:
        inner = {"code": err.inner_code, **inner}
    return {"error": {"code": err.code, "message": err.message, "innerError": inner}}


def _denied() -> GraphError:
    return GraphError(403, "ErrorAccessDenied", ACCESS_DENIED)


def _not_found() -> GraphError:
    return GraphError(404, "ErrorItemNotFound", NOT_FOUND)


def _window(ctx: Ctx) -> tuple[datetime, datetime]:
    q = ctx.query
    if "startdatetime" not in q or "enddatetime" not in q:
        raise GraphError(400, "ErrorInvalidParameter", "This request requires a time window specified by the query "
                         "string parameters StartDateTime and EndDateTime.")
    out = []
    for name in ("startdatetime", "enddatetime"):
        try:
            value = parse_datetime(q[name])
        except ValueError as exc:
            raise GraphError(400, "ErrorInvalidParameter",
                             f"The value '{q[name]}' of parameter '{name}' is invalid.") from exc
        out.append(value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC))
    if out[1] < out[0]:
        raise GraphError(400, "ErrorInvalidParameter", "The parameter 'EndDateTime' must be after 'StartDateTime'.")
    return out[0], out[1]


class GraphApi:
    def __init__(self, state: GraphState, directory: Directory, dispatcher: Dispatcher) -> None:
        self.state = state
        self.directory = directory
        self.dispatcher = dispatcher
        self._inner: Starlette | None = None

    # --- plumbing ---------------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = []

        def add(path: str, handler: Callable[[Ctx], Awaitable[Response]], methods: list[str], *,
                mailbox: bool = True, both: bool = True) -> None:
            variants = [path]
            if both and path.startswith("/users/{user}"):
                variants.append("/me" + path[len("/users/{user}"):])
            for p in variants:
                routes.append(Route("/v1.0" + p, self._endpoint(handler, mailbox=mailbox), methods=methods))

        add("/users/{user}", self.get_user, ["GET"], mailbox=True)
        add("/users/{user}/mailboxSettings", self.get_mailbox_settings, ["GET"])
        add("/users/{user}/calendars", self.list_calendars, ["GET"])
        add("/users/{user}/calendar", self.get_default_calendar, ["GET"])
        add("/users/{user}/calendars/{cal}", self.get_calendar, ["GET"])
        add("/users/{user}/calendarGroups", self.list_groups, ["GET"])
        add("/users/{user}/calendarGroups/{group}/calendars", self.group_calendars, ["GET"])
        for prefix in ("/users/{user}/calendars/{cal}", "/users/{user}/calendar", "/users/{user}"):
            add(prefix + "/events", self.events_collection, ["GET", "POST"])
            add(prefix + "/events/{event}", self.event_item, ["GET", "PATCH", "DELETE"])
            add(prefix + "/events/{event}/instances", self.event_instances, ["GET"])
            add(prefix + "/calendarView", self.calendar_view, ["GET"])
            add(prefix + "/calendarView/delta", self.delta, ["GET"])
            add(prefix + "/calendarView/delta()", self.delta, ["GET"])
        from devtools.sandbox.graph.directory_api import handlers

        directory_handlers = handlers(self)
        add("/users", directory_handlers["users"], ["GET"], mailbox=False, both=False)
        add("/places/microsoft.graph.room", directory_handlers["rooms"], ["GET"], mailbox=False, both=False)
        add("/subscriptions", self.subscriptions_collection, ["GET", "POST"], mailbox=False)
        add("/subscriptions/{sub}", self.subscription_item, ["GET", "PATCH", "DELETE"], mailbox=False)
        add("/subscriptions/{sub}/reauthorize", self.reauthorize, ["POST"], mailbox=False)
        self._inner = Starlette(routes=list(routes))
        routes.append(Route("/v1.0/$batch", self.batch, methods=["POST"]))
        return routes

    def _authenticate(self, request: Request) -> AccessClaims:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header or not token.strip():
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        if scheme.lower() != "bearer":
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure.")
        try:
            return self.directory.verify_access_token(token.strip())
        except TokenError as exc:
            if exc.reason == "claims_challenge":
                challenge = self.directory.claims_challenge_for(token.strip()) or ""
                raise GraphError(401, "InvalidAuthenticationToken", "Continuous access evaluation resulted in "
                                 "challenge with result: InteractionRequired and code: TokenIssuedBeforeRevocation",
                                 headers={"WWW-Authenticate": _cae_challenge(challenge)}) from exc
            if exc.reason == "revoked":
                raise GraphError(401, "InvalidAuthenticationToken", "Access token has been revoked.") from exc
            if exc.reason == "expired":
                raise GraphError(401, "InvalidAuthenticationToken",
                                 "Lifetime validation failed, the token is expired.") from exc
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure.") from exc

    def _preferences(self, ctx: Ctx) -> None:
        prefer = ", ".join(ctx.request.headers.getlist("prefer"))
        if _PREFER_ID.search(prefer):
            ctx.immutable = True
            ctx.applied.append('IdType="ImmutableId"')
        m = _PREFER_TZ.search(prefer)
        if m:
            try:
                zone(m.group(1))
            except UnknownTimeZone as exc:
                raise GraphError(400, "TimeZoneNotSupportedException",
                                 f"A valid TimeZone value must be specified. The following TimeZone value is not "
                                 f"supported: '{m.group(1)}'.") from exc
            ctx.view_zone = m.group(1)
            ctx.applied.append(f'outlook.timezone="{m.group(1)}"')
        m = _PREFER_PAGE.search(prefer)
        if m:
            ctx.max_page_size = int(m.group(1))

    def _path_user(self, ctx: Ctx, param: str) -> SandboxUser:
        if param == "me":
            if ctx.claims.app_only:
                raise GraphError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
            user = self.directory.user(ctx.claims.user_id or "")
        else:
            user = self.directory.user(param)
        if user is None or user.tenant_id != ctx.claims.tenant_id:
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{param}' is invalid.")
        self.state.user(user.id)
        return user

    def _endpoint(self, handler: Callable[[Ctx], Awaitable[Response]], *,
                  mailbox: bool) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            request_id = str(uuid.uuid4())
            client_request_id = request.headers.get("client-request-id") or request_id
            applied: list[str] = []
            try:
                ctx = Ctx(request, self._authenticate(request), request_id, client_request_id)
                applied = ctx.applied
                self._preferences(ctx)
                slot: tuple[str, str] | None = None
                if mailbox:
                    path_user = request.path_params.get("user", "me")
                    ctx.mailbox = self._path_user(ctx, path_user)
                    from devtools.sandbox.graph.directory_api import check_app_scope

                    check_app_scope(ctx, self, ctx.mailbox)
                    slot = (ctx.claims.client_id, ctx.mailbox.id)
                    if not self.state.enter(*slot):
                        retry = self.state.behaviour.concurrency_retry_after
                        raise GraphError(429, "ApplicationThrottled",
                                         "Application is over its MailboxConcurrency limit.",
                                         headers={"Retry-After": _seconds(retry)})
                try:
                    await self._inject_fault(request)
                    response = await handler(ctx)
                finally:
                    if slot is not None:
                        self.state.leave(*slot)
            except GraphError as err:
                response = graph_json(_error_body(err, request_id, client_request_id), err.status, err.headers)
                if err.status == 401 and "www-authenticate" not in response.headers:
                    response.headers["WWW-Authenticate"] = ('Bearer realm="", authorization_uri="https://login.'
                                                            'microsoftonline.com/common/oauth2/authorize", '
                                                            'client_id="00000003-0000-0000-c000-000000000000"')
            response.headers["request-id"] = request_id
            response.headers["client-request-id"] = client_request_id
            if applied and response.status_code < 400:
                response.headers["Preference-Applied"] = ", ".join(applied)
            return response

        return run

    async def _inject_fault(self, request: Request) -> None:
        rule = self.state.pick_fault(request.method, request.url.path)
        if rule is None:
            return
        retry_after = (_http_date(rule.retry_after) if rule.retry_after_date else _seconds(rule.retry_after))
        if rule.kind == "429":
            raise GraphError(429, "TooManyRequests", "Too many requests.", headers={"Retry-After": retry_after})
        if rule.kind == "503":
            raise GraphError(503, "ServiceUnavailable", "Service unavailable.", headers={"Retry-After": retry_after})
        if rule.kind.endswith("-400"):
            # The sync-state code only in innerError, under a generic top-level code.
            raise GraphError(400, "BadRequest", "The sync state is not valid for this request.",
                             inner_code=rule.kind.removesuffix("-400"))
        if rule.kind == "504":
            raise GraphError(504, "GatewayTimeout", "The request timed out.")
        released = await self.dispatcher.hold(rule.delay)
        if rule.kind == "timeout" and not released:
            raise GraphError(504, "GatewayTimeout", "The request timed out.")

    # --- access checks -------------------------------------------------------------------------
    def _require(self, ctx: Ctx, delegated: frozenset[str], app: frozenset[str]) -> None:
        granted = ctx.claims.roles if ctx.claims.app_only else ctx.claims.scopes
        if not granted & (app if ctx.claims.app_only else delegated):
            raise _denied()

    def _calendar(self, ctx: Ctx, cal_id: str | None, *, write: bool) -> tuple[Calendar, bool]:
        """The calendar addressed under the path's mailbox, checked for the caller; and canEdit."""
        mailbox = ctx.mailbox
        assert mailbox is not None
        if cal_id is None:
            cal = self.state.default_calendar(mailbox.id)
        else:
            try:
                cal = self.state.calendar(cal_id)
            except KeyError:
                raise _not_found() from None
        if ctx.claims.app_only:
            self._require(ctx, frozenset(), APP_WRITE if write else APP_READ)
            if cal.owner_id != mailbox.id:
                raise _not_found()
            return cal, True
        me = ctx.claims.user_id
        if cal.owner_id == mailbox.id and mailbox.id == me:
            self._require(ctx, WRITE_OWN if write else READ_OWN, frozenset())
            return cal, True
        if cal.owner_id == mailbox.id:
            share = self.state.share_of(cal.id, me or "")
            self._require(ctx, WRITE_SHARED if write else READ_SHARED, frozenset())
            if share is None or (write and not share.can_edit):
                raise _denied()
            return cal, share.can_edit
        share = self.state.share_of(cal.id, mailbox.id)
        if mailbox.id != me or share is None or not share.accepted:
            raise _not_found()
        self._require(ctx, WRITE_SHARED if write else READ_SHARED, frozenset())
        if write and not share.can_edit:
            raise _denied()
        return cal, share.can_edit

    def _path_calendar(self, ctx: Ctx) -> str | None:
        """The calendar id in the path; None for the default calendar (``/calendar`` or ``/events``)."""
        return ctx.request.path_params.get("cal")

    def _event(self, ctx: Ctx, *, write: bool) -> tuple[Event, str | None, Calendar]:
        ext = ctx.request.path_params["event"]
        try:
            ev, occ = self.state.resolve(ext)
        except KeyError:
            raise _not_found() from None
        path = ctx.request.url.path
        if "/calendars/" in path or "/calendar/" in path:
            cal, _ = self._calendar(ctx, self._path_calendar(ctx), write=write)
            if cal.id != ev.calendar_id:
                raise _not_found()
        else:
            cal, _ = self._calendar(ctx, ev.calendar_id, write=write)
        return ev, occ, cal

    # --- rendering helpers ----------------------------------------------------------------------
    def _organizer(self, cal: Calendar) -> SandboxUser | None:
        return self.directory.user(cal.owner_id)

    def _event_json(self, ctx: Ctx, inst: Instance, *, view_zone: str | None, expand: list[str] | None,
                    select: list[str] | None = None) -> dict[str, Any]:
        cal = self.state.calendars[inst.event.calendar_id]
        master = None
        if inst.type in ("occurrence", "exception"):
            master = render.event_id(self.state.instance(inst.event, None), ctx.immutable)
        body = render.event_json(inst, organizer=self._organizer(cal), immutable=ctx.immutable, view_zone=view_zone,
                                 expand_props=expand, series_master_id=master)
        level = self.state.behaviour.custom_zone_labels
        if level and not inst.event.is_all_day:
            render.label_custom_zone(body, inst, originals_too=level >= 2)
        return render.select(body, select)

    def _expand(self, ctx: Ctx) -> list[str] | None:
        raw = ctx.query.get("$expand")
        if raw is None:
            return None
        m = _EXPAND.match(raw.strip())
        if m is None:
            raise GraphError(400, "BadRequest", f"Parsing OData Select and Expand failed: Could not find a property "
                             f"named '{raw.split('(')[0]}' on type 'microsoft.graph.event'.")
        return [i.replace("''", "'") for i in _QUOTED_ID.findall(m.group(1) or "")]

    def _select(self, ctx: Ctx) -> list[str] | None:
        raw = ctx.query.get("$select")
        return [s.strip() for s in raw.split(",") if s.strip()] if raw else None

    def _ext_filter(self, ctx: Ctx) -> tuple[str, str | None] | None:
        raw = ctx.query.get("$filter")
        if raw is None:
            return None
        m = _ANY.match(raw.strip())
        if m is None:
            raise GraphError(400, "ErrorInvalidUrlQueryFilter", "The query filter contains one or more invalid nodes.")
        var, cond = m.group(1), m.group(2)
        pid = re.search(rf"\b{var}/id\s+eq\s+'((?:[^']|'')*)'", cond, re.I)
        val = re.search(rf"\b{var}/value\s+eq\s+'((?:[^']|'')*)'", cond, re.I)
        if pid is None:
            raise GraphError(400, "ErrorInvalidUrlQueryFilter", "The query filter contains one or more invalid nodes.")
        return pid.group(1).replace("''", "'"), val.group(1).replace("''", "'") if val else None

    def _collection(self, ctx: Ctx, context: str, value: list[Any], next_link: str | None) -> Response:
        """One page of a collection, with the link to the next page where there is one."""
        body: dict[str, Any] = {"@odata.context": self._context(ctx, context), "value": value}
        if next_link:
            body["@odata.nextLink"] = next_link
        return graph_json(body)

    def _page(self, ctx: Ctx, items: list[Any]) -> tuple[list[Any], str | None]:
        q = ctx.query
        try:
            top = int(q.get("$top", "10"))
            skip = int(q.get("$skip", "0"))
        except ValueError as exc:
            raise GraphError(400, "BadRequest", "Invalid $top or $skip value.") from exc
        top = max(1, min(top, 1000))
        page = items[skip:skip + top]
        if skip + top >= len(items):
            return page, None
        params = {k: v for k, v in ctx.request.query_params.items() if k.lower() not in ("$skip", "$top")}
        params["$top"] = str(top)
        params["$skip"] = str(skip + top)
        path = ctx.request.url.path[len("/v1.0"):]
        query = urlencode(params, safe="$,()/:'", quote_via=quote)
        return page, f"{ctx.base}{path}?{query}"

    def _context(self, ctx: Ctx, suffix: str) -> str:
        return f"{ctx.base}/$metadata#{suffix}"

    # --- users, settings, calendars ---------------------------------------------------------------
    async def get_user(self, ctx: Ctx) -> Response:
        assert ctx.mailbox is not None
        if ctx.claims.app_only and not ctx.claims.roles & APP_USER_READ:
            # Reading a user without a signed-in user takes User.Read.All (Get user, permissions).
            raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
        body = {"@odata.context": self._context(ctx, "users/$entity"), **render.user_json(ctx.mailbox)}
        return graph_json(body)

    async def get_mailbox_settings(self, ctx: Ctx) -> Response:
        assert ctx.mailbox is not None
        if ctx.claims.app_only:
            self._require(ctx, frozenset(), MAILBOX_SETTINGS)
        else:
            self._require(ctx, MAILBOX_SETTINGS, frozenset())
            if ctx.mailbox.id != ctx.claims.user_id:
                raise _denied()
        body = {"@odata.context": self._context(ctx, f"users('{ctx.mailbox.id}')/mailboxSettings"),
                **render.mailbox_settings_json(ctx.mailbox, custom_zone=self.state.behaviour.custom_mailbox_zone)}
        return graph_json(body)

    def _calendar_json(self, cal: Calendar, *, can_edit: bool, own: bool) -> dict[str, Any]:
        owner = self.directory.user(cal.owner_id)
        assert owner is not None
        return render.calendar_json(cal, owner, can_edit=can_edit, can_share=own)

    def _visible_calendars(self, ctx: Ctx, group: str | None = None) -> list[dict[str, Any]]:
        mailbox = ctx.mailbox
        assert mailbox is not None
        if ctx.claims.app_only:
            self._require(ctx, frozenset(), APP_READ)
            return [self._calendar_json(c, can_edit=True, own=True) for c in self.state.own_calendars(mailbox.id)]
        me = ctx.claims.user_id
        out: list[dict[str, Any]] = []
        if mailbox.id == me:
            self._require(ctx, READ_OWN | READ_SHARED, frozenset())
            if group in (None, "my"):
                out += [self._calendar_json(c, can_edit=True, own=True) for c in self.state.own_calendars(me)]
            if group in (None, "other"):
                out += [self._calendar_json(c, can_edit=s.can_edit, own=False)
                        for c, s in self.state.shared_with(me)]
            return out
        self._require(ctx, READ_SHARED, frozenset())
        for cal in self.state.own_calendars(mailbox.id):
            share = self.state.share_of(cal.id, me or "")
            if share is not None:
                out.append(self._calendar_json(cal, can_edit=share.can_edit, own=False))
        if not out:
            raise _denied()
        return out

    async def list_calendars(self, ctx: Ctx) -> Response:
        assert ctx.mailbox is not None
        items, next_link = self._page(ctx, self._visible_calendars(ctx))
        return self._collection(ctx, f"users('{ctx.mailbox.id}')/calendars", items, next_link)

    async def get_default_calendar(self, ctx: Ctx) -> Response:
        cal, can_edit = self._calendar(ctx, None, write=False)
        body = {"@odata.context": self._context(ctx, "users/calendar/$entity"),
                **self._calendar_json(cal, can_edit=can_edit, own=True)}
        return graph_json(body)

    async def get_calendar(self, ctx: Ctx) -> Response:
        cal, can_edit = self._calendar(ctx, ctx.request.path_params["cal"], write=False)
        own = ctx.claims.app_only or cal.owner_id == ctx.claims.user_id
        body = {"@odata.context": self._context(ctx, "users/calendars/$entity"),
                **self._calendar_json(cal, can_edit=can_edit, own=own)}
        return graph_json(body)

    def _groups(self, user: SandboxUser) -> list[dict[str, Any]]:
        import base64

        def gid(kind: str) -> str:
            return "AAMkADgrp" + base64.urlsafe_b64encode(f"{user.id}|{kind}".encode()).decode()

        return [{"id": gid("my"), "name": "Meine Kalender", "classId": "0006f0b7-0000-0000-c000-000000000046",
                 "changeKey": "ENN8o7vHsk2gFcmR3DMq5gAAAAACSA=="},
                {"id": gid("other"), "name": "Weitere Kalender", "classId": "0006f0b8-0000-0000-c000-000000000046",
                 "changeKey": "ENN8o7vHsk2gFcmR3DMq5gAAAAACSQ=="}]

    async def list_groups(self, ctx: Ctx) -> Response:
        assert ctx.mailbox is not None
        if ctx.claims.app_only:
            self._require(ctx, frozenset(), APP_READ)
        else:
            self._require(ctx, READ_OWN | READ_SHARED, frozenset())
            if ctx.mailbox.id != ctx.claims.user_id:
                raise _denied()
        body = {"@odata.context": self._context(ctx, f"users('{ctx.mailbox.id}')/calendarGroups"),
                "value": self._groups(ctx.mailbox)}
        return graph_json(body)

    async def group_calendars(self, ctx: Ctx) -> Response:
        assert ctx.mailbox is not None
        groups = {g["id"]: kind for g, kind in zip(self._groups(ctx.mailbox), ("my", "other"), strict=True)}
        kind = groups.get(ctx.request.path_params["group"])
        if kind is None:
            raise _not_found()
        if not ctx.claims.app_only and ctx.mailbox.id != ctx.claims.user_id:
            raise _denied()
        items = self._visible_calendars(ctx, group=kind)
        if ctx.claims.app_only and kind == "other":
            items = []
        body = {"@odata.context": self._context(ctx, "users/calendarGroups/calendars"), "value": items}
        return graph_json(body)

    # --- events -----------------------------------------------------------------------------------
    async def _json_body(self, ctx: Ctx) -> Any:
        raw = await ctx.request.body()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise GraphError(400, "BadRequest", "Unable to read JSON request payload. Please ensure Content-Type "
                             "header is set and payload is of valid JSON format.") from exc

    async def events_collection(self, ctx: Ctx) -> Response:
        if ctx.request.method == "POST":
            return await self.create_event(ctx)
        cal, _ = self._calendar(ctx, self._path_calendar(ctx), write=False)
        expand = self._expand(ctx)
        wanted = self._ext_filter(ctx)
        events = self.state.calendar_events(cal.id)
        if wanted is not None:
            pid, pval = wanted
            events = [e for e in events if pid.lower() in e.ext_props
                      and (pval is None or e.ext_props[pid.lower()][1] == pval)]
        items, next_link = self._page(ctx, events)
        value = [self._event_json(ctx, self.state.instance(e, None), view_zone=ctx.view_zone, expand=expand,
                                  select=self._select(ctx)) for e in items]
        return self._collection(ctx, "users/events", value, next_link)

    async def create_event(self, ctx: Ctx) -> Response:
        cal, _ = self._calendar(ctx, self._path_calendar(ctx), write=True)
        fields = render.event_fields(await self._json_body(ctx), partial=False)
        tx = fields.get("transaction_id")
        existing = self.state.find_by_transaction(cal.owner_id, tx) if tx else None
        # The same transactionId twice is one event: the retry of a POST whose answer got lost.
        ev = existing or self.state.add_event(cal.id, fields)
        inst = self.state.instance(ev, None)
        body = {"@odata.context": self._context(ctx, f"users('{cal.owner_id}')/calendars('{cal.id}')/events/$entity"),
                **self._event_json(ctx, inst, view_zone=ctx.view_zone or ev.tz, expand=None)}
        return graph_json(body, 201)

    async def event_item(self, ctx: Ctx) -> Response:
        method = ctx.request.method
        ev, occ, _ = self._event(ctx, write=method != "GET")
        if method == "GET":
            inst = self.state.instance(ev, occ)
            body = {"@odata.context": self._context(ctx, "users/events/$entity"),
                    **self._event_json(ctx, inst, view_zone=ctx.view_zone, expand=self._expand(ctx),
                                       select=self._select(ctx))}
            return graph_json(body)
        if method == "DELETE":
            if occ is not None:
                self.state.cancel_occurrence_of(ev, occ)
            else:
                self.state.remove_event(ev)
            return Response(status_code=204)
        fields = render.event_fields(await self._json_body(ctx), partial=True)
        if occ is not None:
            if "recurrence" in fields or "is_all_day" in fields:
                raise GraphError(400, "ErrorInvalidRequest", "The recurrence of an occurrence cannot be changed.")
            inst = self.state.update_occurrence(ev, occ, fields)
        else:
            self.state.update_fields(ev, fields)
            inst = self.state.instance(ev, None)
        body = {"@odata.context": self._context(ctx, "users/events/$entity"),
                **self._event_json(ctx, inst, view_zone=ctx.view_zone or ev.tz, expand=None)}
        return graph_json(body)

    async def event_instances(self, ctx: Ctx) -> Response:
        ev, occ, _ = self._event(ctx, write=False)
        if occ is not None or ev.recurrence is None:
            raise GraphError(400, "ErrorInvalidRequest", "The specified event is not a series master.")
        start, end = _window(ctx)
        items, next_link = self._page(ctx, self.state.instances_of(ev, start, end))
        value = [self._event_json(ctx, i, view_zone=ctx.view_zone, expand=None, select=self._select(ctx))
                 for i in items]
        return self._collection(ctx, "users/events/instances", value, next_link)

    async def calendar_view(self, ctx: Ctx) -> Response:
        cal, _ = self._calendar(ctx, self._path_calendar(ctx), write=False)
        start, end = _window(ctx)
        items, next_link = self._page(ctx, self.state.view(cal.id, start, end))
        expand = self._expand(ctx)
        value = [self._event_json(ctx, i, view_zone=ctx.view_zone, expand=expand, select=self._select(ctx))
                 for i in items]
        return self._collection(ctx, "users/calendarView", value, next_link)

    # --- delta --------------------------------------------------------------------------------------
    async def delta(self, ctx: Ctx) -> Response:
        q = ctx.query
        for name in DELTA_FORBIDDEN:
            if name in q:
                raise GraphError(400, "ErrorInvalidUrlQuery", "The following parameters are not supported with "
                                 f"change tracking over the 'CalendarView' resource: '{ctx.raw_query_key(name)}'.")
        cal, _ = self._calendar(ctx, self._path_calendar(ctx), write=False)
        path = ctx.request.url.path[len("/v1.0"):]
        scope, _, _ = path.rpartition("/delta")
        suffix = path[len(scope):]
        behaviour = self.state.behaviour
        size = ctx.max_page_size or behaviour.default_page_size
        size = max(1, min(size, behaviour.max_page_size))
        ctx.applied.append(f"odata.maxpagesize={size}")

        def gone() -> GraphError:
            return GraphError(410, "syncStateNotFound", "The sync state generation is not found. The delta token is "
                              "expired and data must be synchronized again.",
                              headers={"Location": f"{ctx.base}{scope}{suffix}?$deltatoken="})

        def id_for(inst: Instance) -> str:
            return render.event_id(inst, ctx.immutable)

        assert ctx.mailbox is not None
        round_state: SyncState | None
        if "$skiptoken" in q:
            round_state = self.state.sync_state(q["$skiptoken"], "skip")
            if round_state is None or round_state.calendar_id != cal.id:
                raise gone()
        elif "$deltatoken" in q:
            previous = self.state.sync_state(q["$deltatoken"], "delta")
            if previous is None or previous.calendar_id != cal.id:
                raise gone()
            round_state = self.state.begin_round(owner_id=cal.owner_id, calendar_id=cal.id, scope=scope,
                                                 start=previous.start, end=previous.end, previous=previous,
                                                 immutable=ctx.immutable, id_for=id_for)
        else:
            start, end = _window(ctx)
            round_state = self.state.begin_round(owner_id=cal.owner_id, calendar_id=cal.id, scope=scope, start=start,
                                                 end=end, previous=None, immutable=ctx.immutable, id_for=id_for)
        page = self.state.serve_page(round_state, size)
        partial = behaviour.partial_delta_items and round_state.incremental
        value: list[dict[str, Any]] = []
        for inst in page.instances:
            item = self._event_json(ctx, inst, view_zone=ctx.view_zone, expand=None)
            if partial:
                item = render.partial_item(item)
            value.append({"@odata.type": "#microsoft.graph.event", **item})
        reason = "changed" if behaviour.removed_reason_changed else "deleted"
        for removed in page.removed:
            value.append({"@odata.type": "#microsoft.graph.event", "id": removed, "@removed": {"reason": reason}})
        body: dict[str, Any] = {"@odata.context": self._context(ctx, "Collection(event)")}
        if page.next_token:
            body["@odata.nextLink"] = f"{ctx.base}{scope}{suffix}?$skiptoken={page.next_token}"
        else:
            body["@odata.deltaLink"] = f"{ctx.base}{scope}{suffix}?$deltatoken={page.delta_token}"
        body["value"] = value
        return graph_json(body)

    # --- subscriptions ------------------------------------------------------------------------------
    def _subscription_target(self, ctx: Ctx, resource: str) -> tuple[SandboxUser, Calendar]:
        m = _RESOURCE.match(resource.strip())
        if m is None:
            raise GraphError(400, "InvalidRequest", f"Resource '{resource}' is not supported for change notifications.")
        param = m.group("user") or "me"
        user = self._path_user(ctx, param)
        forbidden = GraphError(403, "ExtensionError", "Operation: Create; Exception: [Status Code: Forbidden; "
                               "Reason: Forbidden]")
        if ctx.claims.app_only:
            if not ctx.claims.roles & APP_READ:
                raise forbidden
            from devtools.sandbox.graph.directory_api import check_app_scope

            check_app_scope(ctx, self, user)
        else:
            # Delegated permissions cannot watch anyone else's calendar, shared or not.
            if not ctx.claims.scopes & READ_OWN or user.id != ctx.claims.user_id:
                raise forbidden
        cal_id = m.group("cal")
        if cal_id is None:
            return user, self.state.default_calendar(user.id)
        if self.state.behaviour.refuse_calendar_subscriptions:
            raise GraphError(400, "ExtensionError", f"Operation: Create; Exception: [Status Code: BadRequest; Reason: "
                             f"Resource '{resource}' is not supported for change notifications.]")
        try:
            cal = self.state.calendar(cal_id)
        except KeyError:
            raise GraphError(404, "ExtensionError", "Operation: Create; Exception: [Status Code: NotFound; Reason: "
                             "The specified object was not found in the store.]") from None
        if cal.owner_id != user.id:
            if self.state.share_of(cal.id, user.id) is not None:
                raise forbidden
            raise GraphError(404, "ExtensionError", "Operation: Create; Exception: [Status Code: NotFound; Reason: "
                             "The specified object was not found in the store.]")
        return user, cal

    def _expiration(self, raw: Any) -> datetime:
        if not isinstance(raw, str):
            raise GraphError(400, "InvalidRequest", "expirationDateTime is required.")
        try:
            value = parse_datetime(raw)
        except ValueError as exc:
            raise GraphError(400, "InvalidRequest", f"Invalid expirationDateTime '{raw}'.") from exc
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        now = datetime.now(UTC)
        if value <= now:
            raise GraphError(400, "InvalidRequest", "Subscription expiration must be in the future.")
        limit = self.state.behaviour.max_event_subscription_minutes
        if value - now > timedelta(minutes=limit):
            raise GraphError(400, "InvalidRequest",
                             f"Subscription expiration can only be {limit} minutes in the future.")
        # Shorter lifetimes than 45 minutes are rounded up, as Graph documents.
        return max(value, now + timedelta(minutes=45))

    def _url(self, raw: Any, name: str) -> str:
        if not isinstance(raw, str) or not raw:
            raise GraphError(400, "InvalidRequest", f"{name} is required.")
        parts = urlsplit(raw)
        # Graph refuses every non-https URL. The stand-in lets plain http through to a loopback
        # address only (the local Functions host), unless told to be as strict as Graph.
        loopback = (parts.hostname or "").lower() in ("127.0.0.1", "::1", "localhost")
        strict = self.state.behaviour.require_https_notification_url
        if not parts.netloc or not (parts.scheme == "https" or (parts.scheme == "http" and loopback and not strict)):
            raise GraphError(400, "InvalidRequest", f"Invalid {name}: an absolute https URL is required.")
        return raw

    def _owned_subscription(self, ctx: Ctx) -> Subscription:
        sub = self.state.subscription(ctx.request.path_params["sub"])
        if (sub is None or sub.application_id != ctx.claims.client_id
                or (not ctx.claims.app_only and sub.creator_id != ctx.claims.user_id)):
            raise GraphError(404, "ResourceNotFound", "The object was not found.")
        return sub

    def _sub_body(self, ctx: Ctx, sub: Subscription) -> dict[str, Any]:
        return {"@odata.context": self._context(ctx, "subscriptions/$entity"), **render.subscription_json(sub)}

    async def subscriptions_collection(self, ctx: Ctx) -> Response:
        if ctx.request.method == "GET":
            subs = [s for s in self.state.list_subscriptions() if s.application_id == ctx.claims.client_id
                    and (ctx.claims.app_only or s.creator_id == ctx.claims.user_id)]
            return graph_json({"@odata.context": self._context(ctx, "subscriptions"),
                               "value": [render.subscription_json(s) for s in subs]})
        body = await self._json_body(ctx)
        if not isinstance(body, dict):
            raise GraphError(400, "InvalidRequest", "A subscription object is required.")
        change_type = body.get("changeType")
        if not isinstance(change_type, str) or not change_type or not set(change_type.split(",")) <= CHANGE_TYPES:
            raise GraphError(400, "InvalidRequest", "changeType must be a combination of created, updated, deleted.")
        resource = body.get("resource")
        if not isinstance(resource, str):
            raise GraphError(400, "InvalidRequest", "resource is required.")
        client_state = body.get("clientState")
        if client_state is not None and (not isinstance(client_state, str) or len(client_state) > 128):
            raise GraphError(400, "InvalidRequest", "clientState must be a string of at most 128 characters.")
        notification_url = self._url(body.get("notificationUrl"), "notificationUrl")
        lifecycle = body.get("lifecycleNotificationUrl")
        lifecycle_url = self._url(lifecycle, "lifecycleNotificationUrl") if lifecycle is not None else None
        expiration = self._expiration(body.get("expirationDateTime"))
        user, cal = self._subscription_target(ctx, resource)
        await self.dispatcher.validate(notification_url)
        if lifecycle_url:
            await self.dispatcher.validate(lifecycle_url)
        creator = ctx.claims.user_id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{ctx.claims.client_id}"))
        # /users/{id}/events and /me/events watch every event of the mailbox (Outlook change
        # notifications overview: "changes to all events in a user's mailbox"): calendar "".
        mailbox_wide = _MAILBOX_WIDE.match(resource.strip()) is not None
        sub = Subscription(id=str(uuid.uuid4()), resource=resource, change_type=change_type,
                           notification_url=notification_url, lifecycle_url=lifecycle_url,
                           client_state=client_state, expiration=expiration,
                           application_id=ctx.claims.client_id, creator_id=creator, tenant_id=user.tenant_id,
                           mailbox_id=user.id, calendar_id="" if mailbox_wide else cal.id, immutable_ids=ctx.immutable,
                           app_only=ctx.claims.app_only)
        self.state.add_subscription(sub)
        return graph_json(self._sub_body(ctx, sub), 201)

    async def subscription_item(self, ctx: Ctx) -> Response:
        sub = self._owned_subscription(ctx)
        if ctx.request.method == "GET":
            return graph_json(self._sub_body(ctx, sub))
        if ctx.request.method == "DELETE":
            self.state.remove_subscription(sub.id)
            return Response(status_code=204)
        body = await self._json_body(ctx)
        if not isinstance(body, dict):
            raise GraphError(400, "InvalidRequest", "A subscription object is required.")
        if "lifecycleNotificationUrl" in body and body["lifecycleNotificationUrl"] != sub.lifecycle_url:
            raise GraphError(400, "InvalidRequest", "lifecycleNotificationUrl cannot be changed on an existing "
                             "subscription. Create a new subscription instead.")
        expiration = self._expiration(body["expirationDateTime"]) if "expirationDateTime" in body else None
        new_url = None
        if "notificationUrl" in body and body["notificationUrl"] != sub.notification_url:
            new_url = self._url(body["notificationUrl"], "notificationUrl")
            await self.dispatcher.validate(new_url)
        try:
            sub = self.state.change_subscription(sub.id, expiration=expiration, notification_url=new_url)
        except KeyError:
            raise GraphError(404, "ResourceNotFound", "The object was not found.") from None
        return graph_json(self._sub_body(ctx, sub))

    async def reauthorize(self, ctx: Ctx) -> Response:
        sub = self._owned_subscription(ctx)
        granted = ctx.claims.roles if ctx.claims.app_only else ctx.claims.scopes
        if not granted & (APP_READ if ctx.claims.app_only else READ_OWN):
            raise _denied()
        try:
            self.state.change_subscription(sub.id, reauthorized=True)
        except KeyError:
            raise GraphError(404, "ResourceNotFound", "The object was not found.") from None
        return Response(status_code=204)

    # --- $batch -----------------------------------------------------------------------------------------
    async def batch(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        client_request_id = request.headers.get("client-request-id") or request_id
        try:
            self._authenticate(request)
            payload = json.loads(await request.body() or b"null")
            requests = self._batch_requests(payload)
        except GraphError as err:
            return graph_json(_error_body(err, request_id, client_request_id), err.status, err.headers)
        except json.JSONDecodeError:
            bad = GraphError(400, "BadRequest", "Invalid batch payload format.")
            return graph_json(_error_body(bad, request_id, client_request_id), 400)
        assert self._inner is not None
        outer_auth = request.headers.get("authorization", "")
        done: dict[str, asyncio.Event] = {r["id"].lower(): asyncio.Event() for r in requests}
        results: dict[str, dict[str, Any]] = {}
        # Outlook runs at most four requests of one batch at a time.
        gate = asyncio.Semaphore(4)
        base = f"{request.url.scheme}://{request.url.netloc}"
        transport = httpx.ASGITransport(app=self._inner)
        async with httpx.AsyncClient(transport=transport, base_url=base) as client:
            async def run(item: dict[str, Any]) -> None:
                key = item["id"].lower()
                try:
                    deps = [d.lower() for d in item.get("dependsOn") or []]
                    for dep in deps:
                        await done[dep].wait()
                    if any(results[d]["status"] >= 400 for d in deps):
                        err = GraphError(424, "FailedDependency", "The request depends on a request that failed.")
                        results[key] = {"id": item["id"], "status": 424,
                                        "headers": {"Content-Type": "application/json"},
                                        "body": _error_body(err, request_id, client_request_id)}
                        return
                    async with gate:
                        results[key] = await self._batch_one(client, item, outer_auth, client_request_id)
                finally:
                    done[key].set()

            await asyncio.gather(*(run(r) for r in requests))
        responses = [results[r["id"].lower()] for r in requests]
        return graph_json({"responses": responses}, 200, {"request-id": request_id,
                                                          "client-request-id": client_request_id})

    def _batch_requests(self, payload: Any) -> list[dict[str, Any]]:
        if not isinstance(payload, dict) or not isinstance(payload.get("requests"), list):
            raise GraphError(400, "BadRequest", "Invalid batch payload format.")
        requests: list[dict[str, Any]] = payload["requests"]
        if len(requests) > 20:
            raise GraphError(400, "BadRequest", "Exceeded maximum number of requests in a JSON batch (20).")
        seen: set[str] = set()
        for r in requests:
            if (not isinstance(r, dict) or not isinstance(r.get("id"), str) or not isinstance(r.get("method"), str)
                    or not isinstance(r.get("url"), str)):
                raise GraphError(400, "BadRequest", "Each batch request needs id, method and url.")
            if r["id"].lower() in seen:
                raise GraphError(400, "BadRequest", f"Batch request id '{r['id']}' is not unique.")
            for dep in r.get("dependsOn") or []:
                if not isinstance(dep, str) or dep.lower() not in seen:
                    raise GraphError(400, "BadRequest", f"dependsOn '{dep}' does not name an earlier request.")
            headers = r.get("headers") or {}
            if "body" in r and not any(k.lower() == "content-type" for k in headers):
                raise GraphError(400, "BadRequest", "Content-Type header is required when a body is present.")
            seen.add(r["id"].lower())
        return requests

    async def _batch_one(self, client: httpx.AsyncClient, item: dict[str, Any], auth: str,
                         client_request_id: str) -> dict[str, Any]:
        url = item["url"]
        if url.lower().startswith("http"):
            return {"id": item["id"], "status": 400, "headers": {"Content-Type": "application/json"},
                    "body": {"error": {"code": "BadRequest", "message": "Batch request URLs must be relative."}}}
        headers = {str(k): str(v) for k, v in (item.get("headers") or {}).items()}
        headers["Authorization"] = auth
        headers.setdefault("client-request-id", client_request_id)
        body = item.get("body")
        content = json.dumps(body).encode() if body is not None else None
        resp = await client.request(item["method"].upper(), "/v1.0/" + url.lstrip("/"), headers=headers,
                                    content=content)
        out_headers = {_BATCH_HEADERS[k.lower()]: v for k, v in resp.headers.items() if k.lower() in _BATCH_HEADERS}
        result: dict[str, Any] = {"id": item["id"], "status": resp.status_code, "headers": out_headers}
        if resp.content:
            try:
                result["body"] = resp.json()
            except ValueError:
                result["body"] = resp.text
        return result


def _http_date(seconds: float) -> str:
    """A Retry-After as an HTTP date (RFC 9110 allows it beside delta-seconds)."""
    return email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=math.ceil(seconds)), usegmt=True)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def iso_z(moment: datetime) -> str:
    return graph_instant(moment)


def _cae_challenge(claims: str) -> str:
    """The ``WWW-Authenticate`` value of a Continuous Access Evaluation 401."""
    return ('Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
            f'client_id="00000003-0000-0000-c000-000000000000", error="insufficient_claims", claims="{claims}"')
