"""Parse and validate a booking webhook body (docs/timum-api.yaml) into a ``Booking``.

Every rejection names the offending field, so timum's engineers can fix their side from
the 400 alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.domain import Booking, BookingStatus, Customer
from shared.errors import BadRequest
from shared.ids import check_id

EVENT_TYPES = ("booking.created", "booking.updated", "booking.cancelled")
MAX_BODY_BYTES = 256 * 1024
MAX_DURATION = timedelta(days=31)
_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


@dataclass(frozen=True)
class BookingEvent:
    delivery_id: str
    type: str
    occurred_at: datetime
    booking: Booking


def _obj(data: Any, path: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BadRequest(f"{path} must be an object", field=path)
    return data


def _str(data: dict[str, Any], key: str, path: str, *, required: bool = True, max_len: int = 200,
         pattern: re.Pattern[str] | None = None) -> str:
    value = data.get(key)
    field = f"{path}.{key}" if path else key
    if value is None or value == "":
        if required:
            raise BadRequest(f"{field} is required", field=field)
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be a string", field=field)
    if len(value) > max_len:
        raise BadRequest(f"{field} is longer than {max_len} characters", field=field)
    if pattern is not None and not pattern.fullmatch(value):
        raise BadRequest(f"{field} has characters that are not allowed", field=field)
    return value


def _id(data: dict[str, Any], key: str, path: str) -> str:
    # The booking payload's own character set, then the rule every entry point applies (no "..").
    return check_id(_str(data, key, path, max_len=128, pattern=_ID), f"{path}.{key}" if path else key)


def _time(data: dict[str, Any], key: str, path: str) -> datetime:
    raw = _str(data, key, path, max_len=64)
    field = f"{path}.{key}"
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{field} is not an RFC 3339 date-time", field=field) from None
    if value.tzinfo is None:
        raise BadRequest(f"{field} needs a UTC offset", field=field)
    return value


def parse_booking_event(body: bytes) -> BookingEvent:
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest("body is too large", field="body")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body is not JSON", field="body") from None
    root = _obj(data, "body")
    delivery = _id(root, "id", "")
    kind = _str(root, "type", "", max_len=64)
    if kind not in EVENT_TYPES:
        raise BadRequest(f"type must be one of {', '.join(EVENT_TYPES)}", field="type")
    occurred = _time(root, "occurredAt", "")  if root.get("occurredAt") else None
    b = _obj(_obj(root.get("data"), "data").get("booking"), "data.booking")
    p = "data.booking"
    version = b.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise BadRequest(f"{p}.version must be a non-negative integer", field=f"{p}.version")
    start, end = _time(b, "start", p), _time(b, "end", p)
    if end <= start:
        raise BadRequest(f"{p}.end must be after start", field=f"{p}.end")
    if end - start > MAX_DURATION:
        raise BadRequest(f"{p}.end is more than 31 days after start", field=f"{p}.end")
    tz = _str(b, "timeZone", p, required=False, max_len=64) or "Europe/Berlin"
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadRequest(f"{p}.timeZone is not an IANA time zone", field=f"{p}.timeZone") from None
    status_raw = _str(b, "status", p, required=False, max_len=16) or "confirmed"
    try:
        status = BookingStatus(status_raw)
    except ValueError:
        raise BadRequest(f"{p}.status must be confirmed or cancelled", field=f"{p}.status") from None
    if kind == "booking.cancelled":
        status = BookingStatus.CANCELLED
    customer_raw = b.get("customer") or {}
    c = _obj(customer_raw, f"{p}.customer")
    url = _str(b, "url", p, required=False, max_len=2048)
    if url and not url.startswith(("https://", "http://")):
        raise BadRequest(f"{p}.url must be an http(s) URL", field=f"{p}.url")
    booking = Booking(
        id=_id(b, "id", p),
        provider_id=_id(b, "providerId", p),
        resource_id=_id(b, "resourceId", p),
        version=version, start=start, end=end, status=status,
        service_name=_str(b, "serviceName", p, required=False),
        time_zone=tz,
        customer=Customer(name=_str(c, "name", f"{p}.customer", required=False),
                          email=_str(c, "email", f"{p}.customer", required=False, max_len=254),
                          phone=_str(c, "phone", f"{p}.customer", required=False, max_len=64)),
        notes=_str(b, "notes", p, required=False, max_len=4000),
        url=url,
        updated_at=occurred,
    )
    return BookingEvent(delivery_id=delivery, type=kind, occurred_at=occurred or start, booking=booking)


def booking_to_json(booking: Booking) -> dict[str, Any]:
    """Compact form for queue messages and the booking store (times as RFC 3339)."""
    return {
        "id": booking.id, "providerId": booking.provider_id, "resourceId": booking.resource_id,
        "version": booking.version, "start": booking.start.isoformat(), "end": booking.end.isoformat(),
        "status": booking.status.value, "serviceName": booking.service_name, "timeZone": booking.time_zone,
        "customer": {"name": booking.customer.name, "email": booking.customer.email, "phone": booking.customer.phone},
        "notes": booking.notes, "url": booking.url,
        "updatedAt": booking.updated_at.isoformat() if booking.updated_at else "",
    }


def booking_from_json(data: dict[str, Any]) -> Booking:
    """Inverse of ``booking_to_json`` (trusted input: written by us)."""
    c = data.get("customer") or {}
    updated = data.get("updatedAt") or ""
    return Booking(
        id=data["id"], provider_id=data["providerId"], resource_id=data["resourceId"], version=int(data["version"]),
        start=datetime.fromisoformat(data["start"]), end=datetime.fromisoformat(data["end"]),
        status=BookingStatus(data["status"]), service_name=data.get("serviceName", ""),
        time_zone=data.get("timeZone", "Europe/Berlin"),
        customer=Customer(c.get("name", ""), c.get("email", ""), c.get("phone", "")),
        notes=data.get("notes", ""), url=data.get("url", ""),
        updated_at=datetime.fromisoformat(updated) if updated else None,
    )
