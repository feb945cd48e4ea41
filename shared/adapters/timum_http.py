"""timum's API over HTTP, as ``docs/timum-api.yaml`` defines it — the real ``TimumPort``.

The injected ``httpx.AsyncClient`` is the only I/O; tests give it an ``httpx.MockTransport`` or point
the adapter at the sandbox timum. Every failure leaves as a ``shared.errors`` class:

    429, or 503 with Retry-After   → Throttled(retry_after=seconds)
    other 5xx, timeouts, network   → TransientError
    401 / 403                      → AuthError (the API key or the webhook secret is wrong)
    404 on a resource's slots      → RemoteGone (the resource was deleted in timum)
    404 when creating a resource   → NotFound (no such provider)
    404 on DELETE of a slot        → success (already gone)
    409                            → Conflict (the resource is archived)
    400 / 422                      → BadRequest, with the field timum named

The API key travels only in the Authorization header of API calls — never to the status webhook URL,
never into a message or log line.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import quote

import httpx

from shared.adapters import slot_batch
from shared.domain import BlockedSlot, Booking, BookingStatus, Customer
from shared.errors import (
    AuthError,
    BadRequest,
    Conflict,
    NotFound,
    RemoteGone,
    SyncError,
    Throttled,
    TransientError,
)
from shared.ports import SlotWrite, TimumPort
from shared.signing import SIGNATURE_HEADER, sign_webhook

log = logging.getLogger(__name__)

LINK_STATUSES = ("ok", "needs_reconnect", "error", "unlinked")
LINK_MODES = ("delegated", "app_only", "ics")
SLOT_SOURCES = ("outlook", "ics")
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
#: a page size the API allows; the adapter follows cursors until the end
PAGE_SIZE = 500
#: what the API accepts as a slot's external id; checked here too because a "/" would change the path
EXTERNAL_ID = re.compile(r"^[A-Za-z0-9._:~-]{1,128}$")
#: guards against a cursor that never ends
MAX_PAGES = 1000
#: base URLs of timums that answered that they have no ``writeBlockedSlots`` (this process only)
_NO_BATCH: set[str] = set()


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds (maybe fractional) or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _iso(value: datetime, field: str) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise BadRequest(f"{field}: needs a time zone", field=field)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _require_id(value: str, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 128:
        raise BadRequest(f"{field}: must be 1 to 128 characters", field=field)
    return value


def _seg(value: str) -> str:
    return quote(value, safe="")


def _datetime(raw: Any, field: str) -> datetime:
    if not isinstance(raw, str):
        raise BadRequest(f"{field}: expected an RFC 3339 date-time", field=field)
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{field}: not an RFC 3339 date-time", field=field) from None
    if value.tzinfo is None:
        raise BadRequest(f"{field}: the date-time needs an offset", field=field)
    return value


def _str(data: Mapping[str, Any], key: str, prefix: str, *, required: bool = True) -> str:
    value = data.get(key, None if required else "")
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise BadRequest(f"{prefix}{key}: required, a non-empty string" if required
                         else f"{prefix}{key}: must be a string", field=f"{prefix}{key}")
    return value


def parse_booking(data: Any, *, prefix: str = "") -> Booking:
    """A booking as timum sends it (webhook ``data.booking`` or a list item) → ``Booking``.

    Raises ``BadRequest`` naming the first bad field (with ``prefix``, e.g. ``data.booking.``).
    """
    if not isinstance(data, Mapping):
        raise BadRequest(f"{prefix.rstrip('.') or 'booking'}: must be an object", field=prefix.rstrip(".") or None)
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BadRequest(f"{prefix}version: required, a whole number from 1", field=f"{prefix}version")
    start = _datetime(data.get("start"), f"{prefix}start")
    end = _datetime(data.get("end"), f"{prefix}end")
    if end < start:
        raise BadRequest(f"{prefix}end: before start", field=f"{prefix}end")
    status = data.get("status")
    if status not in (BookingStatus.CONFIRMED.value, BookingStatus.CANCELLED.value):
        raise BadRequest(f"{prefix}status: must be confirmed or cancelled", field=f"{prefix}status")
    customer_raw = data.get("customer") or {}
    if not isinstance(customer_raw, Mapping):
        raise BadRequest(f"{prefix}customer: must be an object", field=f"{prefix}customer")
    cprefix = f"{prefix}customer."
    customer = Customer(name=_str(customer_raw, "name", cprefix, required=False),
                        email=_str(customer_raw, "email", cprefix, required=False),
                        phone=_str(customer_raw, "phone", cprefix, required=False))
    updated_raw = data.get("updatedAt")
    return Booking(
        id=_str(data, "id", prefix), provider_id=_str(data, "providerId", prefix),
        resource_id=_str(data, "resourceId", prefix), version=version, start=start, end=end,
        status=BookingStatus(status), service_name=_str(data, "serviceName", prefix, required=False),
        time_zone=_str(data, "timeZone", prefix), customer=customer, notes=_str(data, "notes", prefix, required=False),
        url=_str(data, "url", prefix, required=False),
        updated_at=_datetime(updated_raw, f"{prefix}updatedAt") if updated_raw else None)


def link_status_body(payload: Mapping[str, Any], *, now: float) -> dict[str, Any]:
    """The complete ``link.status_changed`` event for ``payload`` — either the whole event or only its
    ``data`` — with ``id``, ``type`` and ``occurredAt`` filled in when missing. Raises ``BadRequest``."""
    if payload.get("type") == ORG_STATUS_EVENT:
        return org_status_body(payload, now=now)
    if "data" in payload:
        envelope = dict(payload)
        data_raw = payload["data"]
    else:
        envelope, data_raw = {}, payload
    if not isinstance(data_raw, Mapping):
        raise BadRequest("data: must be an object", field="data")
    data = dict(data_raw)
    for key in ("providerId", "resourceId"):
        _str(data, key, "data.")
    if data.get("status") not in LINK_STATUSES:
        raise BadRequest(f"data.status: must be one of {', '.join(LINK_STATUSES)}", field="data.status")
    if data.get("mode") not in LINK_MODES:
        raise BadRequest(f"data.mode: must be one of {', '.join(LINK_MODES)}", field="data.mode")
    for key in ("reason", "calendarName"):
        data[key] = _str(data, key, "data.", required=False)
    if envelope.get("type", "link.status_changed") != "link.status_changed":
        raise BadRequest("type: must be link.status_changed", field="type")
    event_id = envelope.get("id") or str(uuid.uuid4())
    if not isinstance(event_id, str) or len(event_id) > 128:
        raise BadRequest("id: must be a string of at most 128 characters", field="id")
    occurred = envelope.get("occurredAt") or datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
    return {"id": event_id, "type": "link.status_changed", "occurredAt": occurred, "data": data}


CONFLICT_EVENT = "booking.outlook_conflict"
CONFLICT_CHANGES = ("edited", "deleted")
#: one event for every link of a provider in one Microsoft 365 tenant (consent withdrawn, app deleted)
ORG_STATUS_EVENT = "organisation.status_changed"


def _event_data(payload: Mapping[str, Any]) -> dict[str, Any]:
    data_raw = payload.get("data")
    if not isinstance(data_raw, Mapping):
        raise BadRequest("data: must be an object", field="data")
    return dict(data_raw)


def booking_conflict_body(payload: Mapping[str, Any], *, now: float) -> dict[str, Any]:
    """The complete ``booking.outlook_conflict`` event (``id`` required: it names the edit, so a
    repeated report is dropped by timum). Raises ``BadRequest``."""
    data = _event_data(payload)
    for key in ("providerId", "resourceId", "bookingId"):
        _str(data, key, "data.")
    if data.get("change") not in CONFLICT_CHANGES:
        raise BadRequest(f"data.change: must be one of {', '.join(CONFLICT_CHANGES)}", field="data.change")
    for key in ("outlookStart", "outlookEnd", "outlookSubject"):
        if key in data and data[key] is not None and not isinstance(data[key], str):
            raise BadRequest(f"data.{key}: must be a string", field=f"data.{key}")
    event_id = payload.get("id")
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= 128:
        raise BadRequest("id: required, at most 128 characters", field="id")
    occurred = payload.get("occurredAt") or datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
    return {"id": event_id, "type": CONFLICT_EVENT, "occurredAt": occurred, "data": data}


def org_status_body(payload: Mapping[str, Any], *, now: float) -> dict[str, Any]:
    """The complete ``organisation.status_changed`` event (``docs/timum-api.yaml``). Raises ``BadRequest``."""
    data = _event_data(payload)
    _str(data, "providerId", "data.")
    if data.get("status") not in LINK_STATUSES:
        raise BadRequest(f"data.status: must be one of {', '.join(LINK_STATUSES)}", field="data.status")
    data["reason"] = _str(data, "reason", "data.", required=False)
    ids = data.get("resourceIds")
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids) or len(ids) > 5_000:
        raise BadRequest("data.resourceIds: must be a list of resource ids", field="data.resourceIds")
    event_id = payload.get("id") or str(uuid.uuid4())
    if not isinstance(event_id, str) or len(event_id) > 128:
        raise BadRequest("id: must be a string of at most 128 characters", field="id")
    occurred = payload.get("occurredAt") or datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
    return {"id": event_id, "type": ORG_STATUS_EVENT, "occurredAt": occurred, "data": data}


def _problem(response: httpx.Response) -> tuple[str, str | None, str]:
    """(detail, field, code) from a problem+json answer; tolerant of anything else."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        return f"HTTP {response.status_code}", None, ""
    detail = str(body.get("detail") or body.get("title") or f"HTTP {response.status_code}")[:300]
    field = body.get("field")
    if not field and isinstance(body.get("errors"), list) and body["errors"]:
        first = body["errors"][0]
        field = first.get("field") if isinstance(first, dict) else None
    return detail, (str(field) if field else None), str(body.get("code") or "")


class TimumHttpAdapter(TimumPort):
    def __init__(self, base_url: str, api_key: str, webhook_secrets: Sequence[str], status_webhook_url: str, *,
                 client: httpx.AsyncClient | None = None, clock: Callable[[], float] = time.time,
                 page_size: int = PAGE_SIZE) -> None:
        if not 1 <= page_size <= 500:
            raise ValueError("page_size must lie between 1 and 500 (the API's limit)")
        self._base = base_url.rstrip("/")
        self._api_key = api_key
        self._secrets = tuple(webhook_secrets)
        self._status_url = status_webhook_url.strip()
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=DEFAULT_TIMEOUT)
        self._clock = clock
        self._page_size = page_size

    def __repr__(self) -> str:
        return f"TimumHttpAdapter(base_url={self._base!r})"

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    # --- plumbing ---------------------------------------------------------------------------------
    def _resource_path(self, provider_id: str, resource_id: str) -> str:
        return (f"/v1/providers/{_seg(_require_id(provider_id, 'providerId'))}"
                f"/resources/{_seg(_require_id(resource_id, 'resourceId'))}")

    async def _send(self, method: str, url: str, what: str, *, headers: Mapping[str, str],
                    json_body: Any = None, content: bytes | None = None,
                    params: Mapping[str, str | int] | None = None) -> httpx.Response:
        try:
            response = await self._client.request(method, url, headers=dict(headers), json=json_body,
                                                  content=content, params=params)
        except httpx.TimeoutException as exc:
            raise TransientError(f"timum did not answer in time ({what})", code="timum_timeout") from exc
        except httpx.TransportError as exc:
            raise TransientError(f"timum could not be reached ({what}): {type(exc).__name__}",
                                 code="timum_unreachable") from exc
        log.debug("timum %s %s → %s", method, what, response.status_code)
        return response

    async def _api(self, method: str, path: str, what: str, *, json_body: Any = None,
                   params: Mapping[str, str | int] | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        return await self._send(method, self._base + path, what, headers=headers, json_body=json_body, params=params)

    def _fail(self, response: httpx.Response, what: str, *, not_found: type[SyncError] = NotFound) -> NoReturn:
        status = response.status_code
        detail, field, code = _problem(response)
        message = f"timum refused {what}: {detail}"
        if status == 429 or (status == 503 and response.headers.get("Retry-After")):
            retry_after = parse_retry_after(response.headers.get("Retry-After"), now=self._clock())
            raise Throttled(f"timum asks to slow down ({what})", retry_after=retry_after)
        if status >= 500:
            raise TransientError(f"timum failed on {what}: HTTP {status}", code="timum_unavailable")
        if status in (401, 403):
            raise AuthError(f"timum refused our credentials on {what} (HTTP {status})", code="timum_auth")
        if status == 404:
            raise not_found(message, code=code or None)
        if status == 409:
            raise Conflict(message, code=code or None)
        if status in (400, 422):
            raise BadRequest(message, field=field, code=code or None)
        raise BadRequest(f"timum answered {what} with unexpected HTTP {status}", code="timum_unexpected")

    @staticmethod
    def _json(response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except (ValueError, UnicodeDecodeError) as exc:
            raise TransientError(f"timum answered {what} with malformed JSON", code="timum_bad_response") from exc

    # --- resources -----------------------------------------------------------------------------
    async def create_resource(self, provider_id: str, name: str) -> str:
        path = f"/v1/providers/{_seg(_require_id(provider_id, 'providerId'))}/resources"
        response = await self._api("POST", path, "creating a resource", json_body={"name": name})
        if response.status_code not in (200, 201):
            self._fail(response, "creating a resource")
        body = self._json(response, "creating a resource")
        if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not body["id"]:
            raise TransientError("timum answered without a resource id", code="timum_bad_response")
        return str(body["id"])

    async def get_resource(self, provider_id: str, resource_id: str) -> dict[str, Any] | None:
        response = await self._api("GET", self._resource_path(provider_id, resource_id), "reading a resource")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            self._fail(response, "reading a resource")
        body = self._json(response, "reading a resource")
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise TransientError("timum answered with a malformed resource", code="timum_bad_response")
        return {"id": body["id"], "name": str(body.get("name") or ""),
                "timeZone": str(body.get("timeZone") or "Europe/Berlin"), "archived": bool(body.get("archived"))}

    async def list_resources(self, provider_id: str) -> list[dict[str, Any]]:
        from shared.ports import MAX_LISTED_RESOURCES

        path = f"/v1/providers/{_seg(_require_id(provider_id, 'providerId'))}/resources"
        items: list[Any] = []
        cursor: str | None = None
        # listResources pages like every list of timum's API (``items`` + ``nextCursor``); bounded
        # by MAX_LISTED_RESOURCES so a huge provider costs a few requests, not hundreds.
        while len(items) < MAX_LISTED_RESOURCES:
            query = f"?limit=500&cursor={quote(cursor, safe='')}" if cursor else "?limit=500"
            response = await self._api("GET", path + query, "listing resources")
            if response.status_code in (404, 405) and not items and cursor is None:
                # Where timum lacks listResources, the pages simply offer no existing resource.
                return []
            if response.status_code != 200:
                self._fail(response, "listing resources")
            body = self._json(response, "listing resources")
            page = (body.get("items") if "items" in body else body.get("value")) if isinstance(body, dict) else body
            if not isinstance(page, list):
                raise TransientError("timum answered with a malformed resource list", code="timum_bad_response")
            items += page
            cursor = body.get("nextCursor") if isinstance(body, dict) else None
            if not isinstance(cursor, str) or not cursor:
                break
        return [{"id": r["id"], "name": str(r.get("name") or "")} for r in items[:MAX_LISTED_RESOURCES]
                if isinstance(r, dict) and isinstance(r.get("id"), str) and not r.get("archived")]

    # --- blocked slots -------------------------------------------------------------------------
    async def put_blocked_slot(self, provider_id: str, resource_id: str, slot: BlockedSlot) -> None:
        if not EXTERNAL_ID.match(slot.external_id):
            raise BadRequest("externalId: 1 to 128 characters of A-Z, a-z, 0-9 and . _ : ~ -", field="externalId")
        path = f"{self._resource_path(provider_id, resource_id)}/blocked-slots/{_seg(slot.external_id)}"
        body = {"start": _iso(slot.start, "start"), "end": _iso(slot.end, "end"), "allDay": slot.all_day,
                "title": slot.title, "source": slot.source}
        response = await self._api("PUT", path, "writing a blocked slot", json_body=body)
        if not response.is_success:
            self._fail(response, "writing a blocked slot", not_found=RemoteGone)

    async def delete_blocked_slot(self, provider_id: str, resource_id: str, external_id: str) -> None:
        path = f"{self._resource_path(provider_id, resource_id)}/blocked-slots/{_seg(external_id)}"
        response = await self._api("DELETE", path, "deleting a blocked slot")
        # 404: the slot (or its whole resource) is gone already — the goal of the call is met.
        if not response.is_success and response.status_code != 404:
            self._fail(response, "deleting a blocked slot")

    async def write_blocked_slots(self, provider_id: str, resource_id: str,
                                  writes: Sequence[SlotWrite]) -> list[SyncError | None]:
        """``writeBlockedSlots`` in requests of ``MAX_SLOT_BATCH``; the single calls where this timum
        does not offer it (remembered per base URL for the life of the process)."""
        from shared.ports import MAX_SLOT_BATCH

        path = f"{self._resource_path(provider_id, resource_id)}/blocked-slots/batch"
        if self._base in _NO_BATCH:
            return await slot_batch.write_one_by_one(self, provider_id, resource_id, writes)
        results: list[SyncError | None] = [None] * len(writes)
        items: dict[int, dict[str, Any]] = {}
        for n, write in enumerate(writes):
            # What the single PUT refuses before sending, the batch refuses for that item alone.
            if not EXTERNAL_ID.match(slot_batch.external_id(write)):
                results[n] = BadRequest("externalId: 1 to 128 characters of A-Z, a-z, 0-9 and . _ : ~ -",
                                        field="externalId")
                continue
            if isinstance(write, BlockedSlot):
                try:
                    _iso(write.start, "start"), _iso(write.end, "end")
                except BadRequest as exc:
                    results[n] = exc
                    continue
            items[n] = slot_batch.encode(write)
        sendable = [n for n in range(len(writes)) if n in items]
        # Requests overlap only when no slot is written twice: two writes to one slot land in order.
        distinct = len({slot_batch.external_id(writes[n]) for n in sendable}) == len(sendable)
        gate = asyncio.Semaphore(slot_batch.BATCH_CONCURRENCY if distinct else 1)

        async def send_singles(chunk: list[int]) -> None:
            singles = await slot_batch.write_one_by_one(self, provider_id, resource_id, [writes[n] for n in chunk])
            for n, result in zip(chunk, singles, strict=True):
                results[n] = result

        async def send(group: list[int]) -> None:
            chunk = [sendable[i] for i in group]
            async with gate:
                if self._base in _NO_BATCH:
                    await send_singles(chunk)
                    return
                try:
                    outcome = await self._send_batch(path, [writes[n] for n in chunk], [items[n] for n in chunk])
                except SyncError as exc:
                    for n in chunk:
                        # A deleted resource has no slots left: deleting from it is done.
                        gone_delete = isinstance(exc, RemoteGone) and not isinstance(writes[n], BlockedSlot)
                        results[n] = None if gone_delete else exc
                    return
                if outcome is None:  # no batch operation here: this chunk, and all later ones, one by one
                    _NO_BATCH.add(self._base)
                    log.info("timum at %s has no blocked-slot batch operation; writing slots one by one",
                             self._base)
                    await send_singles(chunk)
                    return
                for n, result in zip(chunk, outcome, strict=True):
                    results[n] = result

        groups = slot_batch.chunks([writes[n] for n in sendable], MAX_SLOT_BATCH)
        await slot_batch.gather_all(send(group) for group in groups)
        return results

    async def _send_batch(self, path: str, writes: Sequence[SlotWrite],
                          items: list[dict[str, Any]]) -> list[SyncError | None] | None:
        """One ``writeBlockedSlots`` request: a result per write, or None when timum lacks the operation."""
        what = "writing blocked slots"
        response = await self._api("POST", path, what, json_body={"items": items})
        if response.status_code in slot_batch.UNSUPPORTED_STATUSES:
            _detail, _field, code = _problem(response)
            if response.status_code != 404 or code not in slot_batch.GONE_CODES:
                return None
        if response.status_code != 200:
            self._fail(response, what, not_found=RemoteGone)
        body = self._json(response, what)
        raw = body.get("results") if isinstance(body, dict) else None
        if not isinstance(raw, list) or len(raw) != len(writes):
            raise TransientError(f"timum answered {what} without one result per item", code="timum_bad_response")
        by_index = {r.get("index"): r for r in raw if isinstance(r, dict)}
        return [slot_batch.item_error(write, by_index.get(i)) for i, write in enumerate(writes)]

    async def _pages(self, path: str, what: str, params: dict[str, str | int]) -> list[Any]:
        items: list[Any] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            query: dict[str, str | int] = {**params, "limit": self._page_size}
            if cursor:
                query["cursor"] = cursor
            response = await self._api("GET", path, what, params=query)
            if response.status_code != 200:
                self._fail(response, what, not_found=RemoteGone)
            body = self._json(response, what)
            if not isinstance(body, dict) or not isinstance(body.get("items"), list):
                raise TransientError(f"timum answered {what} without items", code="timum_bad_response")
            items.extend(body["items"])
            cursor = body.get("nextCursor")
            if not cursor:
                return items
            if not isinstance(cursor, str) or cursor in seen:
                raise TransientError(f"timum's paging for {what} does not advance", code="timum_bad_response")
            seen.add(cursor)
        raise TransientError(f"timum's paging for {what} did not end", code="timum_bad_response")

    async def list_blocked_slots(self, provider_id: str, resource_id: str,
                                 source: str | None = None) -> list[BlockedSlot]:
        params: dict[str, str | int] = {} if source is None else {"source": source}
        what = "listing blocked slots"
        raw = await self._pages(f"{self._resource_path(provider_id, resource_id)}/blocked-slots", what, params)
        try:
            return [BlockedSlot(external_id=str(item["externalId"]), start=_datetime(item["start"], "start"),
                                end=_datetime(item["end"], "end"), all_day=bool(item.get("allDay", False)),
                                title=str(item.get("title") or ""), source=str(item.get("source") or "outlook"))
                    for item in raw]
        except (KeyError, TypeError, BadRequest) as exc:
            raise TransientError(f"timum answered {what} with a malformed slot", code="timum_bad_response") from exc

    # --- bookings (first import after connecting) ------------------------------------------------
    async def list_bookings(self, provider_id: str, resource_id: str, *, start: datetime,
                            end: datetime) -> list[Booking]:
        """Bookings overlapping ``[start, end)``, confirmed and cancelled (``GET …/bookings``)."""
        what = "listing bookings"
        params: dict[str, str | int] = {"from": _iso(start, "start"), "to": _iso(end, "end")}
        raw = await self._pages(f"{self._resource_path(provider_id, resource_id)}/bookings", what, params)
        try:
            return [parse_booking(item) for item in raw]
        except BadRequest as exc:
            raise TransientError(f"timum answered {what} with a malformed booking", code="timum_bad_response") from exc

    # --- link-status webhook -------------------------------------------------------------------
    async def send_link_status(self, payload: Mapping[str, Any]) -> None:
        if not self._status_url:
            return
        if not self._secrets:
            raise BadRequest("no webhook secret to sign the link status with", code="config")
        now = self._clock()
        await self._post_signed(link_status_body(payload, now=now), now, "the link-status webhook")

    async def send_booking_conflict(self, payload: Mapping[str, Any]) -> None:
        if not self._status_url:
            return
        if not self._secrets:
            raise BadRequest("no webhook secret to sign the conflict report with", code="config")
        now = self._clock()
        await self._post_signed(booking_conflict_body(payload, now=now), now, "the booking conflict report")

    async def _post_signed(self, event: Mapping[str, Any], now: float, what: str) -> None:
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "Timum-Delivery": str(event["id"]),
                   SIGNATURE_HEADER: sign_webhook(body, self._secrets[:1], timestamp=int(now))}
        response = await self._send("POST", self._status_url, what, headers=headers, content=body)
        if not 200 <= response.status_code < 300:
            self._fail(response, what)
