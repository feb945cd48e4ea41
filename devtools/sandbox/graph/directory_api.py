"""The directory part of the Graph stand-in: ``GET /users`` (a tenant's people and resource
mailboxes, paged, filtered, searched) and ``GET /places/microsoft.graph.room``.

Modelled after Graph's documented behaviour, which the organisation mapping page relies on:

* ``$top`` (1–999, default 100) and ``@odata.nextLink`` with an opaque ``$skiptoken``; the query
  parameters live inside the link.
* ``$filter`` supports ``startswith(displayName|mail|userPrincipalName|givenName|surname,'…')``
  joined by ``or``, and ``accountEnabled eq true|false`` / ``userType eq '…'`` joined by ``and``.
  Anything else answers 400 ``Request_UnsupportedQuery``.
* ``$search="displayName:…"`` (substring match on words) needs the header
  ``ConsistencyLevel: eventual``, else 400 — an advanced query, as in Entra.
* Listing users needs ``User.Read.All`` (application) or ``User.ReadBasic.All`` / ``User.Read.All``
  (delegated); rooms need ``Place.Read.All``. Otherwise 403 ``Authorization_RequestDenied``.
* Rooms are mailboxes too: they appear in ``/users`` (disabled accounts) and in ``/places``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from starlette.responses import Response

from devtools.sandbox.directory import SandboxUser
from devtools.sandbox.graph.model import GraphError

if TYPE_CHECKING:
    from devtools.sandbox.graph.rest import Ctx, GraphApi

APP_USERS = frozenset({"User.Read.All", "User.ReadWrite.All", "Directory.Read.All"})
DELEGATED_USERS = frozenset({"User.ReadBasic.All", "User.Read.All", "Directory.Read.All"})
PLACES = frozenset({"Place.Read.All"})
#: Exchange's answer when an application access policy / RBAC for Applications leaves a mailbox out
RAOP_MESSAGE = "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy settings."
_STARTSWITH = re.compile(r"^startswith\(\s*(displayName|mail|userPrincipalName|givenName|surname)\s*,\s*"
                         r"'((?:[^']|'')*)'\s*\)$", re.I)
_EQ = re.compile(r"^(accountEnabled|userType)\s+eq\s+(true|false|'(?:[^']|'')*')$", re.I)
_SEARCH = re.compile(r'^"(displayName|mail):([^"]*)"$', re.I)
_SELECTABLE = ("id", "displayName", "mail", "userPrincipalName", "givenName", "surname", "userType",
               "accountEnabled", "jobTitle")


def _unsupported(detail: str) -> GraphError:
    return GraphError(400, "Request_UnsupportedQuery", detail)


def _user_json(user: SandboxUser) -> dict[str, Any]:
    given, _, surname = user.display_name.rpartition(" ")
    return {"id": user.id, "displayName": user.display_name, "mail": user.mail,
            "userPrincipalName": user.user_principal_name, "givenName": given or user.display_name,
            "surname": surname, "userType": user.user_type, "accountEnabled": user.account_enabled,
            "jobTitle": None}


def _prop(user: SandboxUser, name: str) -> str:
    return str(_user_json(user).get(name) or "")


def _filter(expr: str) -> Callable[[SandboxUser], bool]:
    """Parse the supported subset of OData ``$filter`` for users."""
    ands = [part.strip() for part in re.split(r"\s+and\s+", expr.strip(), flags=re.I) if part.strip()]
    if not ands or len(expr) > 2_000:
        raise _unsupported("Unsupported or invalid query filter clause specified.")
    tests: list[Callable[[SandboxUser], bool]] = []
    for part in ands:
        inner = part[1:-1].strip() if part.startswith("(") and part.endswith(")") else part
        ors = [p.strip() for p in re.split(r"\s+or\s+", inner, flags=re.I)]
        prefixes: list[tuple[str, str]] = []
        for item in ors:
            m = _STARTSWITH.match(item)
            if m:
                prefixes.append((m.group(1), m.group(2).replace("''", "'").casefold()))
                continue
            eq = _EQ.match(item)
            if eq and len(ors) == 1:
                name, raw = eq.group(1), eq.group(2)
                if name.lower() == "accountenabled":
                    if raw.lower() not in ("true", "false"):
                        raise _unsupported("accountEnabled compares with true or false.")
                    wanted_bool = raw.lower() == "true"
                    tests.append(lambda u, w=wanted_bool: u.account_enabled is w)
                else:
                    wanted = raw.strip("'").replace("''", "'")
                    tests.append(lambda u, w=wanted: u.user_type == w)
                break
            raise _unsupported(f"Unsupported or invalid query filter clause specified for property '{item[:60]}'.")
        if prefixes:
            tests.append(lambda u, ps=tuple(prefixes): any(
                _prop(u, {"displayname": "displayName", "mail": "mail", "userprincipalname": "userPrincipalName",
                          "givenname": "givenName", "surname": "surname"}[n.lower()]).casefold().startswith(v)
                for n, v in ps))
    return lambda u: all(t(u) for t in tests)


def _search(expr: str) -> Callable[[SandboxUser], bool]:
    m = _SEARCH.match(expr.strip())
    if not m:
        raise GraphError(400, "Request_UnsupportedQuery", "Unsupported $search clause; use \"property:value\".")
    prop, words = m.group(1), m.group(2).casefold().split()

    def test(user: SandboxUser) -> bool:
        value = _prop(user, "displayName" if prop.lower() == "displayname" else "mail").casefold()
        tokens = re.split(r"[\s@._-]+", value)
        # Entra's $search matches the start of any word (tokenised), not arbitrary substrings.
        return all(any(t.startswith(w) for t in tokens) for w in words)

    return test


def _skiptoken(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def _offset(token: str) -> int:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        offset = int(data["o"])
    except (ValueError, KeyError, TypeError) as exc:
        raise GraphError(400, "Directory_ExpiredPageToken", "The specified page token value has expired and can "
                         "no longer be included in your request.") from exc
    if offset < 0:
        raise GraphError(400, "Directory_ExpiredPageToken", "The specified page token is invalid.")
    return offset


def _require(ctx: Ctx, delegated: frozenset[str], app: frozenset[str]) -> None:
    granted = ctx.claims.roles if ctx.claims.app_only else ctx.claims.scopes
    if not granted & (app if ctx.claims.app_only else delegated):
        raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")


def _require_eventual(ctx: Ctx, message: str) -> None:
    """$search and $count are advanced queries: Entra answers them only with ConsistencyLevel: eventual."""
    if ctx.request.headers.get("consistencylevel", "").lower() != "eventual":
        raise GraphError(400, "Request_UnsupportedQuery", message)


def _matching_users(ctx: Ctx, users: list[SandboxUser]) -> list[SandboxUser]:
    """The users that pass ``$filter`` and ``$search``, in Entra's listing order."""
    q = ctx.query
    if "$filter" in q:
        users = [u for u in users if _filter(q["$filter"])(u)]
    if "$search" in q:
        _require_eventual(ctx, "Request with $search query parameter only works through MSGraph with a special "
                          "request header: 'ConsistencyLevel: eventual'")
        users = [u for u in users if _search(q["$search"])(u)]
    return sorted(users, key=lambda u: (u.display_name.casefold(), u.id))


def _page_size(q: Mapping[str, str]) -> int:
    try:
        top = int(q.get("$top", "100"))
    except ValueError as exc:
        raise GraphError(400, "Request_BadRequest", "Invalid value for $top.") from exc
    if not 1 <= top <= 999:
        raise GraphError(400, "Request_BadRequest", f"Invalid page size specified: '{top}'. Must be between 1 "
                         "and 999 inclusive.")
    return top


def _selection(q: Mapping[str, str]) -> list[str]:
    select = [s.strip() for s in q.get("$select", "").split(",") if s.strip()]
    unknown = [s for s in select if s not in _SELECTABLE]
    if unknown:
        raise GraphError(400, "Request_BadRequest", f"Could not find a property named '{unknown[0]}' on type "
                         "'microsoft.graph.user'.")
    return select


def handlers(api: GraphApi) -> dict[str, Callable[[Ctx], Awaitable[Response]]]:
    from devtools.sandbox.graph.rest import graph_json

    async def list_users(ctx: Ctx) -> Response:
        _require(ctx, DELEGATED_USERS, APP_USERS)
        q = ctx.query
        users = _matching_users(ctx, list(api.directory.tenant_users(ctx.claims.tenant_id)))
        top = _page_size(q)
        start = _offset(q["$skiptoken"]) if "$skiptoken" in q else 0
        page = users[start:start + top]
        select = _selection(q)
        items = []
        for user in page:
            full = _user_json(user)
            items.append({k: full[k] for k in (["id", *select] if select else full)})
        body: dict[str, Any] = {"@odata.context": f"{ctx.base}/$metadata#users", "value": items}
        if q.get("$count", "").lower() == "true":
            _require_eventual(ctx, "$count requires 'ConsistencyLevel: eventual'.")
            body["@odata.count"] = len(users)
        if start + top < len(users):
            params = {k: v for k, v in ctx.request.query_params.items() if k.lower() != "$skiptoken"}
            params["$skiptoken"] = _skiptoken(start + top)
            query = urlencode(params, safe="$,()/:'", quote_via=quote)
            body["@odata.nextLink"] = f"{ctx.base}/users?{query}"
        return graph_json(body)

    async def list_rooms(ctx: Ctx) -> Response:
        _require(ctx, PLACES, PLACES)
        rooms = sorted((u for u in api.directory.tenant_users(ctx.claims.tenant_id) if u.mailbox_kind == "room"),
                       key=lambda u: (u.display_name.casefold(), u.id))
        try:
            top = int(ctx.query.get("$top", "100"))
            start = _offset(ctx.query["$skiptoken"]) if "$skiptoken" in ctx.query else 0
        except ValueError as exc:
            raise GraphError(400, "BadRequest", "Invalid $top.") from exc
        top = max(1, min(top, 999))
        page = rooms[start:start + top]
        items = [{"id": r.id, "emailAddress": r.mail, "displayName": r.display_name, "capacity": None,
                  "bookingType": "standard", "building": None, "floorNumber": None, "isWheelChairAccessible": False}
                 for r in page]
        body: dict[str, Any] = {"@odata.context": f"{ctx.base}/$metadata#places/microsoft.graph.room",
                                "value": items}
        if start + top < len(rooms):
            body["@odata.nextLink"] = (f"{ctx.base}/places/microsoft.graph.room?$top={top}"
                                       f"&$skiptoken={_skiptoken(start + top)}")
        return graph_json(body)

    return {"users": list_users, "rooms": list_rooms}


def check_app_scope(ctx: Ctx, api: GraphApi, mailbox: SandboxUser) -> None:
    """App-only access to a mailbox outside the app's scope: Exchange's 403."""
    if ctx.claims.app_only and not api.directory.in_app_scope(ctx.claims.tenant_id, ctx.claims.client_id,
                                                              mailbox.id):
        raise GraphError(403, "ErrorAccessDenied", RAOP_MESSAGE)
