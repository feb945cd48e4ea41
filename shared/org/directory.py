"""A tenant's people, rooms and their calendars, read app-only for the mapping page.

``OrgDirectoryPort`` is what the mapping page needs; ``GraphOrgDirectory`` reads Microsoft Graph
with the application's client-credentials token (azure-identity, as every app-only link);
``MemoryOrgDirectory`` is its twin for service tests. Both pass the same checks
(``tests/org/test_directory_sandbox.py::test_the_graph_directory_and_its_twin_agree``).

Why plain JSON over httpx and not msgraph-sdk's models: a page of the mapping screen is one
``GET /users`` plus one ``$batch`` per 20 mailboxes (each ``GET /users/{id}/calendars``), and
msgraph-sdk's batch support does not return per-item errors in a form the page can use — a
mailbox outside the administrator's scope must show as such on its row, not fail the page.

Graph facts this relies on (learn.microsoft.com, "List users", "Use query parameters",
"Advanced query capabilities", "JSON batching", "Limiting application permissions to specific
Exchange Online mailboxes"): ``$top`` ≤ 999 with ``@odata.nextLink``; ``startswith`` on
``displayName``/``mail`` is a standard filter; ``$batch`` takes ≤ 20 requests and Outlook runs at
most 4 at once; a mailbox outside an application access policy answers 403 ``ErrorAccessDenied``.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from shared.config import Settings
from shared.domain import CalendarInfo
from shared.errors import AuthError, BadRequest, ConsentRequired, Throttled, TransientError

#: people per mapping page
PAGE_SIZE = 25
BATCH_LIMIT = 20
#: rooms are few; reading them once per tenant for a few minutes spares every page a request
ROOM_CACHE_SECONDS = 300.0
_USER_FIELDS = "id,displayName,mail,userPrincipalName,userType,accountEnabled"


@dataclass(frozen=True)
class Mailbox:
    id: str
    name: str
    address: str
    kind: str                   # "person" | "room" | "equipment"


@dataclass(frozen=True)
class MailboxCalendars:
    """One mailbox's calendars, or why they cannot be read: ``out_of_scope`` (the administrator's
    application access policy leaves the mailbox out), ``no_mailbox``, ``unavailable``."""

    mailbox: Mailbox
    calendars: tuple[CalendarInfo, ...] = ()
    problem: str = ""


@dataclass(frozen=True)
class DirectoryPage:
    mailboxes: tuple[Mailbox, ...]
    next_cursor: str = ""


def search_filter(text: str) -> str:
    """``startswith`` on name or address — a standard (not advanced) query, so no ConsistencyLevel."""
    quoted = text.replace("'", "''")
    return f"startswith(displayName,'{quoted}') or startswith(mail,'{quoted}')"


class OrgDirectoryPort(ABC):
    @abstractmethod
    async def people(self, *, search: str = "", cursor: str = "", top: int = PAGE_SIZE) -> DirectoryPage:
        """A page of the tenant's mailboxes (people, rooms, equipment), by name; ``cursor`` is the
        previous page's ``next_cursor``."""

    @abstractmethod
    async def calendars(self, mailboxes: Iterable[Mailbox]) -> list[MailboxCalendars]:
        """Each mailbox's own calendars, in the given order; a mailbox that cannot be read says why."""

    async def close(self) -> None:  # noqa: B027 - twins hold nothing to release
        """Release the HTTP client."""


# --- the real one -------------------------------------------------------------------------------

_room_cache: dict[str, tuple[float, frozenset[str]]] = {}


class GraphOrgDirectory(OrgDirectoryPort):
    def __init__(self, settings: Settings, tenant_id: str, *, credential: Any | None = None,
                 client: Any | None = None) -> None:
        import httpx

        from shared.connect.credentials import AppOnlyCredential

        self._base = settings.graph_base_url.rstrip("/")
        self._tenant = tenant_id
        self._credential = credential or AppOnlyCredential(settings, tenant_id)
        self._owns_credential = credential is None
        self._client = client or httpx.AsyncClient(verify=_tls(settings.verify), timeout=15.0)
        self._owns_client = client is None
        #: Graph requests made (the bench reports them)
        self.requests = 0

    async def _headers(self) -> dict[str, str]:
        token = await self._credential.get_token("https://graph.microsoft.com/.default")
        return {"Authorization": f"Bearer {token.token}", "Accept": "application/json"}

    async def _get(self, url: str) -> dict[str, Any]:
        return await self._send("GET", url)

    async def _send(self, method: str, url: str, body: Any = None) -> dict[str, Any]:
        import httpx

        headers = await self._headers()
        for attempt in range(3):
            self.requests += 1
            try:
                response = await self._client.request(method, url, headers=headers, json=body)
            except httpx.HTTPError as exc:
                raise TransientError("Graph is unreachable", code="graph_unreachable") from exc
            if response.status_code == 429 or response.status_code in (503, 504):
                wait = _retry_after(response.headers.get("Retry-After"))
                if attempt < 2 and wait <= 2.0:
                    await asyncio.sleep(wait)
                    continue
                raise Throttled("Graph is throttling", retry_after=wait)
            if response.status_code in (401, 403):
                code = _error_code(response)
                if code in ("Authorization_RequestDenied", "ErrorAccessDenied"):
                    raise ConsentRequired(f"Graph refused the directory read ({code})", tenant_id=self._tenant)
                raise AuthError(f"Graph refused the token ({response.status_code})")
            if response.status_code >= 500:
                raise TransientError(f"Graph answered {response.status_code}")
            if response.status_code >= 400:
                raise BadRequest(f"Graph refused the query ({_error_code(response)})", code="graph_query")
            data: dict[str, Any] = response.json()
            return data
        raise TransientError("Graph kept throttling")  # pragma: no cover - the loop returns or raises

    async def _rooms(self) -> frozenset[str]:
        cached = _room_cache.get(self._tenant)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        addresses: set[str] = set()
        url = f"{self._base}/places/microsoft.graph.room?$top=100"
        try:
            for _ in range(50):  # at most 5,000 rooms: bounded cost
                data = await self._get(url)
                addresses.update(str(r.get("emailAddress") or "").lower() for r in data.get("value") or [])
                url = str(data.get("@odata.nextLink") or "")
                if not url or not self._own(url):
                    break
        except ConsentRequired:
            # Place.Read.All not granted: rooms still appear among the mailboxes, as resources.
            return frozenset()
        found = frozenset(a for a in addresses if a)
        _room_cache[self._tenant] = (time.monotonic() + ROOM_CACHE_SECONDS, found)
        return found

    def _own(self, url: str) -> bool:
        """Only follow links back to Graph's own ``/users`` and ``/places`` (never another host:
        the link carries our token)."""
        base = urlsplit(self._base)
        parts = urlsplit(url)
        same_host = (parts.scheme, parts.netloc) == (base.scheme, base.netloc)
        return same_host and (parts.path == base.path + "/users" or parts.path.startswith(base.path + "/places/"))

    def valid_cursor(self, cursor: str) -> bool:
        base = urlsplit(self._base)
        parts = urlsplit(cursor)
        return (len(cursor) <= 4096 and (parts.scheme, parts.netloc) == (base.scheme, base.netloc)
                and parts.path == base.path + "/users" and not parts.fragment)

    async def people(self, *, search: str = "", cursor: str = "", top: int = PAGE_SIZE) -> DirectoryPage:
        if cursor:
            if not self.valid_cursor(cursor):
                raise BadRequest("not a page of this directory", code="cursor")
            url = cursor
        else:
            url = f"{self._base}/users?$top={max(1, min(top, 999))}&$select={_USER_FIELDS}"
            if search.strip():
                url += "&$filter=" + quote(search_filter(search.strip()[:100]), safe="(),'")
        rooms, data = await asyncio.gather(self._rooms(), self._get(url))
        out: list[Mailbox] = []
        for item in data.get("value") or []:
            address = str(item.get("mail") or "")
            if not address:
                continue  # no mailbox, no calendar
            kind = "room" if address.lower() in rooms else (
                "person" if item.get("accountEnabled", True) else "equipment")
            out.append(Mailbox(str(item["id"]), str(item.get("displayName") or address), address, kind))
        next_link = str(data.get("@odata.nextLink") or "")
        return DirectoryPage(tuple(out), next_link if next_link and self.valid_cursor(next_link) else "")

    async def calendars(self, mailboxes: Iterable[Mailbox]) -> list[MailboxCalendars]:
        boxes = list(mailboxes)
        chunks = [boxes[i:i + BATCH_LIMIT] for i in range(0, len(boxes), BATCH_LIMIT)]
        results = await asyncio.gather(*(self._batch(chunk) for chunk in chunks))
        return [item for chunk in results for item in chunk]

    async def _batch(self, boxes: list[Mailbox]) -> list[MailboxCalendars]:
        if not boxes:
            return []
        requests = [{"id": str(i), "method": "GET",
                     "url": f"/users/{quote(box.id, safe='')}/calendars?$top=50"
                            "&$select=id,name,canEdit,isDefaultCalendar,owner"}
                    for i, box in enumerate(boxes)]
        data = await self._send("POST", f"{self._base}/$batch", {"requests": requests})
        answers = {str(r.get("id")): r for r in data.get("responses") or []}
        out: list[MailboxCalendars] = []
        for i, box in enumerate(boxes):
            answer = answers.get(str(i)) or {}
            status = int(answer.get("status") or 0)
            body = answer.get("body") or {}
            if status == 200:
                out.append(MailboxCalendars(box, tuple(_calendar(box, c) for c in body.get("value") or [])))
            elif status == 403 and _body_code(body) == "ErrorAccessDenied":
                out.append(MailboxCalendars(box, problem="out_of_scope"))
            elif status == 404:
                out.append(MailboxCalendars(box, problem="no_mailbox"))
            else:
                out.append(MailboxCalendars(box, problem="unavailable"))
        return out

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()
        if self._owns_credential:
            await self._credential.close()


def _tls(verify: str | bool) -> Any:
    """A CA bundle path (the sandbox's) is trusted besides the public CAs; httpx takes a context."""
    if not isinstance(verify, str) or not verify:
        return verify if isinstance(verify, bool) else True
    import ssl

    import certifi

    context = ssl.create_default_context(cafile=certifi.where())
    context.load_verify_locations(cafile=verify)
    return context


def _calendar(box: Mailbox, raw: dict[str, Any]) -> CalendarInfo:
    owner = raw.get("owner") or {}
    return CalendarInfo(id=str(raw["id"]), name=str(raw.get("name") or ""),
                        owner_name=str(owner.get("name") or box.name), owner_address=str(owner.get("address") or
                                                                                          box.address),
                        can_edit=bool(raw.get("canEdit", True)), is_default=bool(raw.get("isDefaultCalendar")),
                        is_shared=False, mailbox_id=box.id)


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value or 1))
    except ValueError:
        return 1.0


def _body_code(body: Any) -> str:
    return str(((body or {}).get("error") or {}).get("code") or "") if isinstance(body, dict) else ""


def _error_code(response: Any) -> str:
    try:
        return _body_code(response.json())
    except ValueError:
        return ""


# --- the twin -------------------------------------------------------------------------------------

@dataclass
class MemoryOrgDirectory(OrgDirectoryPort):
    """In-memory tenant: mailboxes with calendars; ``out_of_scope`` ids answer as Exchange would."""

    mailboxes: list[Mailbox] = field(default_factory=list)
    calendars_by_mailbox: dict[str, list[CalendarInfo]] = field(default_factory=dict)
    out_of_scope: set[str] = field(default_factory=set)
    consent: bool = True
    requests: int = 0

    def add(self, name: str, address: str, *, kind: str = "person", calendars: Iterable[str] = ("Kalender",),
            box_id: str | None = None) -> Mailbox:
        box = Mailbox(box_id or f"id-{address}", name, address, kind)
        self.mailboxes.append(box)
        self.calendars_by_mailbox[box.id] = [
            CalendarInfo(id=f"cal-{address}-{i}", name=n, owner_name=name, owner_address=address, can_edit=True,
                         is_default=i == 0, is_shared=False, mailbox_id=box.id) for i, n in enumerate(calendars)]
        return box

    def _check(self) -> None:
        self.requests += 1
        if not self.consent:
            raise ConsentRequired("no application permission", tenant_id="memory")

    async def people(self, *, search: str = "", cursor: str = "", top: int = PAGE_SIZE) -> DirectoryPage:
        self._check()
        wanted = search.strip().casefold()
        found = sorted((b for b in self.mailboxes if not wanted or b.name.casefold().startswith(wanted)
                        or b.address.casefold().startswith(wanted)), key=lambda b: (b.name.casefold(), b.id))
        if cursor and not cursor.startswith("mem:"):
            raise BadRequest("not a page of this directory", code="cursor")
        start = int(cursor[4:]) if cursor else 0
        page = found[start:start + top]
        more = start + top < len(found)
        return DirectoryPage(tuple(page), f"mem:{start + top}" if more else "")

    async def calendars(self, mailboxes: Iterable[Mailbox]) -> list[MailboxCalendars]:
        self._check()
        out = []
        for box in mailboxes:
            if box.id in self.out_of_scope:
                out.append(MailboxCalendars(box, problem="out_of_scope"))
            elif box.id not in self.calendars_by_mailbox:
                out.append(MailboxCalendars(box, problem="no_mailbox"))
            else:
                out.append(MailboxCalendars(box, tuple(self.calendars_by_mailbox[box.id])))
        return out
