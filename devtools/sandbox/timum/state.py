"""Everything the sandbox timum knows: providers, resources, bookings, blocked slots, the booking
webhooks it sends and the link-status webhooks it receives, and the faults it injects.

One lock guards it all: the HTTP handlers run on the server's event loop while tests drive the same
state from their own thread. Readers get copies, so a test never sees a record change under it.
"""

from __future__ import annotations

import copy
import itertools
import json
import random
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from devtools.sandbox.config import SandboxConfig
from shared.domain import Booking, BookingStatus, Customer
from shared.signing import MAX_PROVIDER_NAME, ConnectLink, sign_connect_link

T = TypeVar("T")

BOOKING_EVENT_TYPES = ("booking.created", "booking.updated", "booking.cancelled")
SLOT_SOURCES = ("outlook", "ics")
#: ``unlinked``: the service removed the link (timum then shows the resource as not connected)
LINK_STATUSES = ("ok", "needs_reconnect", "error", "unlinked")
LINK_MODES = ("delegated", "app_only", "ics")
#: how the sandbox signs booking webhooks — anything but "valid" is for testing the service's refusal
SIGNATURE_MODES = ("valid", "all_secrets", "wrong_secret", "stale", "missing")


class SandboxError(Exception):
    """A request the sandbox timum refuses. ``key`` selects the translated message in the UI."""

    def __init__(self, message: str, *, field: str | None = None, key: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.key = key


class InvalidInput(SandboxError):
    pass


class UnknownItem(SandboxError):
    """The provider, resource, booking or slot does not exist; ``kind`` says which."""

    def __init__(self, kind: str, item_id: str) -> None:
        super().__init__(f"{kind.replace('_', ' ')} '{item_id}' does not exist", key=f"unknown_{kind}")
        self.kind = kind


class ConflictError(SandboxError):
    pass


def now_utc() -> datetime:
    return datetime.now(UTC)


def iso_utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_datetime(raw: object, name: str) -> datetime:
    """RFC 3339 with an explicit offset; a local time without one is ambiguous and refused."""
    if not isinstance(raw, str) or not raw:
        raise InvalidInput(f"{name}: expected an RFC 3339 date-time", field=name, key="bad_time")
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(f"{name}: '{raw[:40]}' is not an RFC 3339 date-time", field=name, key="bad_time") from None
    if value.tzinfo is None:
        raise InvalidInput(f"{name}: the date-time needs an offset such as Z or +01:00", field=name, key="bad_time")
    return value


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"timeZone: '{name[:60]}' is not an IANA time zone", field="timeZone",
                           key="bad_zone") from None


@dataclass
class Provider:
    id: str
    name: str
    time_zone: str = "Europe/Berlin"


@dataclass
class LinkState:
    """What the service last reported about a resource's calendar link."""

    status: str
    mode: str
    reason: str
    calendar_name: str
    updated_at: datetime


@dataclass
class Resource:
    id: str
    provider_id: str
    name: str
    time_zone: str = "Europe/Berlin"
    archived: bool = False
    link: LinkState | None = None
    #: the service said the calendars lag behind (``stale``): online booking pauses until ``fresh``
    stale: bool = False
    #: Outlook events overlapping bookings, by the service's conflict id (``conflict`` / ``resolved``)
    conflicts: dict[str, dict[str, str]] = field(default_factory=dict)
    #: per conflict id: the highest generation heard, and the highest one resolved
    conflict_generations: dict[str, int] = field(default_factory=dict)
    resolved_generations: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "timeZone": self.time_zone, "archived": self.archived}


@dataclass
class Slot:
    provider_id: str
    resource_id: str
    external_id: str
    start: datetime
    end: datetime
    all_day: bool
    title: str
    source: str
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"externalId": self.external_id, "resourceId": self.resource_id, "start": iso_utc(self.start),
                "end": iso_utc(self.end), "allDay": self.all_day, "title": self.title, "source": self.source,
                "createdAt": iso_utc(self.created_at), "updatedAt": iso_utc(self.updated_at)}


@dataclass
class SandboxBooking:
    id: str
    provider_id: str
    resource_id: str
    version: int
    start: datetime
    end: datetime
    time_zone: str
    status: str
    service_name: str
    customer: Customer
    notes: str
    url: str
    created_at: datetime
    updated_at: datetime

    @property
    def cancelled(self) -> bool:
        return self.status == BookingStatus.CANCELLED.value

    def to_json(self) -> dict[str, Any]:
        tz = ZoneInfo(self.time_zone)
        return {
            "id": self.id, "providerId": self.provider_id, "resourceId": self.resource_id, "version": self.version,
            "start": self.start.astimezone(tz).isoformat(), "end": self.end.astimezone(tz).isoformat(),
            "timeZone": self.time_zone, "status": self.status, "serviceName": self.service_name,
            "customer": {"name": self.customer.name, "email": self.customer.email, "phone": self.customer.phone},
            "notes": self.notes, "url": self.url, "updatedAt": iso_utc(self.updated_at),
        }

    def to_domain(self) -> Booking:
        return Booking(id=self.id, provider_id=self.provider_id, resource_id=self.resource_id, version=self.version,
                       start=self.start, end=self.end, status=BookingStatus(self.status),
                       service_name=self.service_name, time_zone=self.time_zone, customer=self.customer,
                       notes=self.notes, url=self.url, updated_at=self.updated_at)


@dataclass
class Attempt:
    at: float
    status: int | None          # None: no HTTP answer (timeout, refused connection)
    duration: float
    error: str = ""


@dataclass
class Delivery:
    """One booking webhook; a resent duplicate is a new record with the same delivery id and body."""

    seq: int
    delivery_id: str
    type: str
    booking_id: str
    version: int
    body: bytes
    duplicate_of: int | None = None
    attempts: list[Attempt] = field(default_factory=list)
    outcome: str = "pending"    # pending | delivered | failed
    held: bool = False

    @property
    def status(self) -> int | None:
        """HTTP status of the last attempt."""
        return self.attempts[-1].status if self.attempts else None

    @property
    def duration(self) -> float | None:
        return self.attempts[-1].duration if self.attempts else None

    @property
    def payload(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "deliveryId": self.delivery_id, "type": self.type, "bookingId": self.booking_id,
                "version": self.version, "duplicateOf": self.duplicate_of, "outcome": self.outcome,
                "held": self.held, "status": self.status, "duration": self.duration,
                "attempts": [{"at": a.at, "status": a.status, "duration": a.duration, "error": a.error}
                             for a in self.attempts],
                "payload": self.payload}


@dataclass
class ReceivedStatus:
    delivery_id: str
    received_at: datetime
    provider_id: str
    resource_id: str
    status: str
    mode: str
    reason: str
    calendar_name: str
    occurred_at: str
    payload: dict[str, Any]
    duplicate: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"deliveryId": self.delivery_id, "receivedAt": iso_utc(self.received_at),
                "providerId": self.provider_id, "resourceId": self.resource_id, "status": self.status,
                "mode": self.mode, "reason": self.reason, "calendarName": self.calendar_name,
                "occurredAt": self.occurred_at, "duplicate": self.duplicate}


@dataclass
class FaultRule:
    """Answer matching API calls with ``status`` (and/or after ``delay`` seconds) instead of serving them.

    ``rate`` is the chance per matching call (drawn from a seeded generator, so runs repeat);
    ``count`` limits how many calls the rule hits before it retires.
    """

    status: int | None = 503
    rate: float = 1.0
    count: int | None = None
    retry_after: float | str | None = None
    method: str | None = None
    path_contains: str | None = None
    delay: float = 0.0
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        return not (self.path_contains and self.path_contains not in path)

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "rate": self.rate, "count": self.count, "retryAfter": self.retry_after,
                "method": self.method, "pathContains": self.path_contains, "delay": self.delay, "hits": self.hits}


class TimumState:
    """The sandbox timum's data and its Python control surface. Thread-safe."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self.providers: dict[str, Provider] = {}
        self.resources: dict[tuple[str, str], Resource] = {}
        self.bookings: dict[str, SandboxBooking] = {}
        self.slots: dict[tuple[str, str, str], Slot] = {}
        self.deliveries: list[Delivery] = []
        self.received_statuses: list[ReceivedStatus] = []
        #: ``booking.outlook_conflict`` reports from the service, once per delivery id
        self.received_conflicts: list[dict[str, Any]] = []
        self.faults: list[FaultRule] = []
        #: ICS feed URLs the service issued, per (provider, resource): the service shows a URL once
        #: and keeps only its hash, so timum keeps it to show the provider again
        self.feeds: dict[tuple[str, str], str] = {}
        self.api_log: deque[tuple[str, str, int]] = deque(maxlen=2000)
        self.webhook_url = config.service_base_url.rstrip("/") + "/api/timum/bookings"
        self.signature_mode = "valid"
        self._rng = random.Random(0)
        # Never reset: the sender may still hold numbers of deliveries from before a reset.
        self._seq = itertools.count(1)
        self._paused = False
        self._listener: Callable[[Delivery], None] | None = None

    # --- reading ---------------------------------------------------------------------------------
    def _copy(self, value: T) -> T:
        with self._lock:
            return copy.deepcopy(value)

    def provider(self, provider_id: str) -> Provider:
        with self._lock:
            found = self.providers.get(provider_id)
            if found is None:
                raise UnknownItem("provider", provider_id)
            return copy.deepcopy(found)

    def list_providers(self) -> list[Provider]:
        with self._lock:
            return [copy.deepcopy(p) for p in self.providers.values()]

    def resource(self, provider_id: str, resource_id: str) -> Resource:
        with self._lock:
            self.provider(provider_id)
            found = self.resources.get((provider_id, resource_id))
            if found is None:
                raise UnknownItem("resource", resource_id)
            return copy.deepcopy(found)

    def list_resources(self, provider_id: str) -> list[Resource]:
        with self._lock:
            return [copy.deepcopy(r) for (pid, _), r in self.resources.items() if pid == provider_id]

    def booking(self, booking_id: str) -> SandboxBooking:
        with self._lock:
            found = self.bookings.get(booking_id)
            if found is None:
                raise UnknownItem("booking", booking_id)
            return copy.deepcopy(found)

    def list_bookings(self, provider_id: str, resource_id: str | None = None, *, start: datetime | None = None,
                      end: datetime | None = None) -> list[SandboxBooking]:
        """Bookings overlapping ``[start, end)`` (all when open), ordered by start then id."""
        with self._lock:
            found = [b for b in self.bookings.values()
                     if b.provider_id == provider_id and (resource_id is None or b.resource_id == resource_id)
                     and (start is None or b.end > start) and (end is None or b.start < end)]
            return [copy.deepcopy(b) for b in sorted(found, key=lambda b: (b.start, b.id))]

    def list_slots(self, provider_id: str, resource_id: str | None = None, source: str | None = None) -> list[Slot]:
        with self._lock:
            found = [s for s in self.slots.values()
                     if s.provider_id == provider_id and (resource_id is None or s.resource_id == resource_id)
                     and (source is None or s.source == source)]
            return [copy.deepcopy(s) for s in sorted(found, key=lambda s: (s.start, s.external_id))]

    def slot_page(self, provider_id: str, resource_id: str, source: str | None, start: int,
                  limit: int) -> tuple[list[Slot], bool]:
        """One page of ``list_slots`` and whether more follow: only the page is copied, so listing a
        resource with 10,000 slots page by page does not copy all of them for every page."""
        with self._lock:
            found = sorted((s for s in self.slots.values() if s.provider_id == provider_id
                            and s.resource_id == resource_id and (source is None or s.source == source)),
                           key=lambda s: (s.start, s.external_id))
            return [copy.deepcopy(s) for s in found[start:start + limit]], start + limit < len(found)

    def list_deliveries(self) -> list[Delivery]:
        return self._copy(self.deliveries)

    def delivery(self, seq: int) -> Delivery:
        with self._lock:
            found = next((d for d in self.deliveries if d.seq == seq), None)
            if found is None:
                raise UnknownItem("delivery", str(seq))
            return copy.deepcopy(found)

    def list_received_statuses(self) -> list[ReceivedStatus]:
        return self._copy(self.received_statuses)

    def api_calls(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every API call served, oldest first."""
        with self._lock:
            return list(self.api_log)

    # --- set-up ----------------------------------------------------------------------------------
    def add_provider(self, provider_id: str, name: str, *, time_zone: str = "Europe/Berlin") -> Provider:
        zone(time_zone)
        with self._lock:
            provider = Provider(provider_id, name, time_zone)
            self.providers[provider_id] = provider
            self._changed.notify_all()
            return copy.deepcopy(provider)

    def create_resource(self, provider_id: str, name: str, *, time_zone: str | None = None,
                        resource_id: str | None = None) -> Resource:
        name = name.strip() if isinstance(name, str) else ""
        if not name:
            raise InvalidInput("name: must not be empty", field="name", key="name_required")
        if len(name) > 200:
            raise InvalidInput("name: at most 200 characters", field="name", key="name_too_long")
        with self._lock:
            provider = self.provider(provider_id)
            tz = time_zone or provider.time_zone
            zone(tz)
            resource = Resource(resource_id or "res-" + secrets.token_hex(5), provider_id, name, tz)
            self.resources[(provider_id, resource.id)] = resource
            self._changed.notify_all()
            return copy.deepcopy(resource)

    def archive_resource(self, provider_id: str, resource_id: str, archived: bool = True) -> None:
        with self._lock:
            self.resource(provider_id, resource_id)
            self.resources[(provider_id, resource_id)].archived = archived

    def delete_resource(self, provider_id: str, resource_id: str) -> None:
        """Remove a resource with its slots and bookings, as if the provider deleted it in timum."""
        with self._lock:
            self.resource(provider_id, resource_id)
            del self.resources[(provider_id, resource_id)]
            for key in [k for k in self.slots if k[:2] == (provider_id, resource_id)]:
                del self.slots[key]
            for bid in [b.id for b in self.bookings.values()
                        if (b.provider_id, b.resource_id) == (provider_id, resource_id)]:
                del self.bookings[bid]
            self.feeds.pop((provider_id, resource_id), None)
            self._changed.notify_all()

    def reset(self) -> None:
        """Forget everything (the config stays); the server keeps running."""
        with self._lock:
            self.providers.clear()
            self.resources.clear()
            self.bookings.clear()
            self.slots.clear()
            self.deliveries.clear()
            self.received_statuses.clear()
            self.received_conflicts.clear()
            self.faults.clear()
            self.feeds.clear()
            self.api_log.clear()
            self.signature_mode = "valid"
            self._paused = False
            self._changed.notify_all()

    # --- blocked slots (API) -------------------------------------------------------------------
    def put_slot(self, provider_id: str, resource_id: str, external_id: str, *, start: datetime, end: datetime,
                 all_day: bool = False, title: str = "", source: str = "outlook") -> tuple[Slot, bool]:
        """Create or replace; return the slot and whether it was created."""
        if end <= start:
            raise InvalidInput("end: must be after start", field="end", key="end_before_start")
        if source not in SLOT_SOURCES:
            raise InvalidInput(f"source: must be one of {', '.join(SLOT_SOURCES)}", field="source")
        if len(title) > 255:
            raise InvalidInput("title: at most 255 characters", field="title")
        with self._lock:
            resource = self.resource(provider_id, resource_id)
            if resource.archived:
                raise ConflictError(f"resource '{resource_id}' is archived and takes no new blocked slots",
                                    key="resource_archived")
            key = (provider_id, resource_id, external_id)
            existing = self.slots.get(key)
            stamp = now_utc()
            slot = Slot(provider_id, resource_id, external_id, start.astimezone(UTC), end.astimezone(UTC), all_day,
                        title, source, existing.created_at if existing else stamp, stamp)
            self.slots[key] = slot
            self._changed.notify_all()
            return copy.deepcopy(slot), existing is None

    def delete_slot(self, provider_id: str, resource_id: str, external_id: str) -> None:
        with self._lock:
            self.resource(provider_id, resource_id)
            if self.slots.pop((provider_id, resource_id, external_id), None) is None:
                raise UnknownItem("blocked_slot", external_id)
            self._changed.notify_all()

    # --- bookings (what a customer or the provider does in timum) ----------------------------------
    def _check_free(self, booking: SandboxBooking) -> None:
        for slot in self.slots.values():
            if ((slot.provider_id, slot.resource_id) == (booking.provider_id, booking.resource_id)
                    and slot.start < booking.end and booking.start < slot.end):
                raise ConflictError("the time is blocked by the connected calendar", key="slot_conflict")
        for other in self.bookings.values():
            if (other.id != booking.id and not other.cancelled
                    and (other.provider_id, other.resource_id) == (booking.provider_id, booking.resource_id)
                    and other.start < booking.end and booking.start < other.end):
                raise ConflictError("the time overlaps another booking", key="booking_conflict")

    def make_booking(self, provider_id: str, resource_id: str, start: datetime, end: datetime | None = None, *,
                     duration: timedelta | None = None, service_name: str = "Krankengymnastik 30 min",
                     customer: Customer | None = None, notes: str = "", booking_id: str | None = None,
                     force: bool = False, emit: bool = True) -> SandboxBooking:
        """Book a time. Refused when it overlaps a blocked slot or a booking unless ``force``;
        ``emit=False`` (seeding) sends no webhook."""
        if start.tzinfo is None:
            raise InvalidInput("start: needs a time zone", field="start", key="bad_time")
        end = end if end is not None else start + (duration or timedelta(minutes=30))
        if end <= start:
            raise InvalidInput("end: must be after start", field="end", key="end_before_start")
        with self._lock:
            resource = self.resource(provider_id, resource_id)
            if resource.archived:
                raise ConflictError(f"resource '{resource_id}' is archived", key="resource_archived")
            bid = booking_id or "bk_" + secrets.token_hex(6)
            if bid in self.bookings:
                raise ConflictError(f"booking '{bid}' already exists")
            stamp = now_utc()
            tz = ZoneInfo(resource.time_zone)
            booking = SandboxBooking(
                id=bid, provider_id=provider_id, resource_id=resource_id, version=1, start=start.astimezone(tz),
                end=end.astimezone(tz), time_zone=resource.time_zone, status=BookingStatus.CONFIRMED.value,
                service_name=service_name, customer=customer or Customer(), notes=notes,
                url=f"{self.config.http_base}/timum/providers/{provider_id}/bookings/{bid}",
                created_at=stamp, updated_at=stamp)
            if not force:
                self._check_free(booking)
            self.bookings[bid] = booking
            delivery = self._record_event("booking.created", booking) if emit else None
            self._changed.notify_all()
            result = copy.deepcopy(booking)
        self._hand_over(delivery)
        return result

    def _change(self, booking_id: str, apply: Callable[[SandboxBooking], None], event: str, *,
                force: bool = False, emit: bool = True) -> SandboxBooking:
        with self._lock:
            current = self.bookings.get(booking_id)
            if current is None:
                raise UnknownItem("booking", booking_id)
            if current.cancelled:
                raise ConflictError(f"booking '{booking_id}' is cancelled", key="booking_cancelled")
            changed = copy.deepcopy(current)
            apply(changed)
            if changed.end <= changed.start:
                raise InvalidInput("end: must be after start", field="end", key="end_before_start")
            if not force and not changed.cancelled:
                self._check_free(changed)
            changed.version = current.version + 1
            changed.updated_at = now_utc()
            self.bookings[booking_id] = changed
            delivery = self._record_event(event, changed) if emit else None
            self._changed.notify_all()
            result = copy.deepcopy(changed)
        self._hand_over(delivery)
        return result

    def reschedule_booking(self, booking_id: str, start: datetime, end: datetime | None = None, *,
                           resource_id: str | None = None, force: bool = False) -> SandboxBooking:
        """Move a booking (keeping its length unless ``end`` is given), optionally to another resource."""
        if start.tzinfo is None or (end is not None and end.tzinfo is None):
            raise InvalidInput("start: needs a time zone", field="start", key="bad_time")

        def apply(b: SandboxBooking) -> None:
            if resource_id and resource_id != b.resource_id:
                target = self.resource(b.provider_id, resource_id)
                b.resource_id, b.time_zone = target.id, target.time_zone
            tz = ZoneInfo(b.time_zone)
            new_end = end if end is not None else start + (b.end - b.start)
            b.start, b.end = start.astimezone(tz), new_end.astimezone(tz)

        return self._change(booking_id, apply, "booking.updated", force=force)

    def update_booking(self, booking_id: str, *, service_name: str | None = None, notes: str | None = None,
                       customer: Customer | None = None) -> SandboxBooking:
        def apply(b: SandboxBooking) -> None:
            if service_name is not None:
                b.service_name = service_name
            if notes is not None:
                b.notes = notes
            if customer is not None:
                b.customer = customer

        return self._change(booking_id, apply, "booking.updated", force=True)

    def cancel_booking(self, booking_id: str, *, emit: bool = True) -> SandboxBooking:
        def apply(b: SandboxBooking) -> None:
            b.status = BookingStatus.CANCELLED.value

        return self._change(booking_id, apply, "booking.cancelled", emit=emit)

    # --- booking webhooks --------------------------------------------------------------------------
    def _record_event(self, event_type: str, booking: SandboxBooking) -> Delivery:
        delivery_id = "dlv_" + uuid.uuid4().hex
        body = json.dumps({"id": delivery_id, "type": event_type, "occurredAt": iso_utc(booking.updated_at),
                           "data": {"booking": booking.to_json()}},
                          separators=(",", ":"), ensure_ascii=False).encode()
        delivery = Delivery(next(self._seq), delivery_id, event_type, booking.id, booking.version, body,
                            held=self._paused)
        self.deliveries.append(delivery)
        return delivery

    def _hand_over(self, delivery: Delivery | None) -> None:
        # Outside the lock: the listener schedules work on the server's loop.
        listener = self._listener
        if delivery is not None and not delivery.held and listener is not None:
            listener(delivery)

    def set_delivery_listener(self, listener: Callable[[Delivery], None] | None) -> list[Delivery]:
        """The sender registers here; returns the deliveries still waiting to be sent."""
        with self._lock:
            self._listener = listener
            return [d for d in self.deliveries if d.outcome == "pending" and not d.held]

    def resend_delivery(self, seq: int) -> Delivery:
        """Send a past webhook again — same delivery id and body — as a duplicate would arrive."""
        with self._lock:
            original = next((d for d in self.deliveries if d.seq == seq), None)
            if original is None:
                raise UnknownItem("delivery", str(seq))
            duplicate = Delivery(next(self._seq), original.delivery_id, original.type, original.booking_id,
                                 original.version, original.body, duplicate_of=seq, held=self._paused)
            self.deliveries.append(duplicate)
            result = copy.deepcopy(duplicate)
        self._hand_over(duplicate)
        return result

    def pause_deliveries(self) -> None:
        """Hold new booking webhooks until ``resume_deliveries`` — to send them out of order."""
        with self._lock:
            self._paused = True

    def resume_deliveries(self, *, reverse: bool = False) -> list[int]:
        """Release held webhooks, newest first if ``reverse``; returns their sequence numbers in send order."""
        with self._lock:
            self._paused = False
            held = [d for d in self.deliveries if d.held]
            if reverse:
                held.reverse()
            for d in held:
                d.held = False
        for d in held:
            self._hand_over(d)
        return [d.seq for d in held]

    def set_signature_mode(self, mode: str) -> None:
        if mode not in SIGNATURE_MODES:
            raise InvalidInput(f"signature mode must be one of {', '.join(SIGNATURE_MODES)}", field="mode")
        with self._lock:
            self.signature_mode = mode

    def record_attempt(self, seq: int, attempt: Attempt, *, final: bool, delivered: bool) -> None:
        with self._lock:
            delivery = next((d for d in self.deliveries if d.seq == seq), None)
            if delivery is None:  # the state was reset while the attempt was under way
                return
            delivery.attempts.append(attempt)
            if final:
                delivery.outcome = "delivered" if delivered else "failed"
            self._changed.notify_all()

    def wait_until(self, predicate: Callable[[TimumState], bool], *, timeout: float = 10.0) -> None:
        """Block the calling thread until ``predicate(state)`` holds; ``TimeoutError`` otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the sandbox timum did not reach the expected state in time")
                self._changed.wait(left)

    def wait_for_deliveries(self, count: int, *, timeout: float = 10.0) -> list[Delivery]:
        """Wait until at least ``count`` webhooks have a final outcome; return all deliveries."""
        self.wait_until(lambda s: sum(d.outcome != "pending" for d in s.deliveries) >= count, timeout=timeout)
        return self.list_deliveries()

    # --- link-status webhooks (received) -----------------------------------------------------------
    def record_link_status(self, delivery_id: str, payload: dict[str, Any]) -> ReceivedStatus:
        data = payload["data"]
        with self._lock:
            duplicate = any(r.delivery_id == delivery_id for r in self.received_statuses)
            received = ReceivedStatus(
                delivery_id=delivery_id, received_at=now_utc(), provider_id=data["providerId"],
                resource_id=data["resourceId"], status=data["status"], mode=data["mode"],
                reason=str(data.get("reason") or ""), calendar_name=str(data.get("calendarName") or ""),
                occurred_at=str(payload.get("occurredAt") or ""), payload=copy.deepcopy(payload), duplicate=duplicate)
            self.received_statuses.append(received)
            resource = self.resources.get((received.provider_id, received.resource_id))
            kind = data.get("kind")
            own_calendar = not data.get("calendarRole")
            if resource is not None and not duplicate and kind:
                self._apply_notice(resource, str(kind), data)
            elif resource is not None and not duplicate and own_calendar and received.status == "unlinked":
                resource.link = None
            elif resource is not None and not duplicate and own_calendar:
                # (a block-only calendar's status is its own, not the resource's calendar link's)
                resource.link = LinkState(received.status, received.mode, received.reason, received.calendar_name,
                                          received.received_at)
            self._changed.notify_all()
            return copy.deepcopy(received)

    def record_booking_conflict(self, delivery_id: str, payload: dict[str, Any]) -> bool:
        """A ``booking.outlook_conflict`` report: the Outlook event of a booking was edited or
        deleted there. Kept once per delivery id; True if new."""
        with self._lock:
            if any(c["id"] == delivery_id for c in self.received_conflicts):
                return False
            self.received_conflicts.append(copy.deepcopy(payload))
            self._changed.notify_all()
            return True

    def list_booking_conflicts(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self.received_conflicts)

    @staticmethod
    def _apply_notice(resource: Resource, kind: str, data: dict[str, Any]) -> None:
        """What timum does with the service's notices: pause on ``stale``, list conflicts."""
        if kind in ("stale", "fresh"):
            resource.stale = kind == "stale"
        elif kind in ("conflict", "resolved") and data.get("conflictId"):
            # By generation, as timum's API asks: notices of one conflict may arrive out of order.
            cid = str(data["conflictId"])
            generation = int(data.get("generation") or 0)
            if generation < resource.conflict_generations.get(cid, 0):
                return  # a late notice of an earlier opening
            resource.conflict_generations[cid] = generation
            if kind == "conflict":
                if generation > resource.resolved_generations.get(cid, -1):
                    resource.conflicts[cid] = {name: str(data.get(name) or "")
                                               for name in ("bookingId", "start", "end")}
            else:
                resource.resolved_generations[cid] = generation
                resource.conflicts.pop(cid, None)

    def wait_for_statuses(self, count: int, *, timeout: float = 10.0) -> list[ReceivedStatus]:
        self.wait_until(lambda s: len(s.received_statuses) >= count, timeout=timeout)
        return self.list_received_statuses()

    # --- ICS feed URLs ---------------------------------------------------------------------------
    def keep_feed_url(self, provider_id: str, resource_id: str, url: str | None) -> None:
        """Remember the feed URL the service issued (``None``: revoked)."""
        with self._lock:
            self.resource(provider_id, resource_id)
            if url is None:
                self.feeds.pop((provider_id, resource_id), None)
            else:
                self.feeds[(provider_id, resource_id)] = url
            self._changed.notify_all()

    def feed_url(self, provider_id: str, resource_id: str) -> str | None:
        with self._lock:
            return self.feeds.get((provider_id, resource_id))

    # --- fault injection ---------------------------------------------------------------------------
    def inject_fault(self, status: int | None = 503, *, rate: float = 1.0, count: int | None = None,
                     retry_after: float | str | None = None, method: str | None = None,
                     path_contains: str | None = None, delay: float = 0.0) -> FaultRule:
        """Make API calls fail (429, 5xx, …) or answer slowly; see ``FaultRule``."""
        if status is not None and not 400 <= status <= 599:
            raise InvalidInput("status: must be a 4xx or 5xx code", field="status")
        if status is None and delay <= 0:
            raise InvalidInput("a fault needs a status or a delay", field="status")
        if not 0.0 <= rate <= 1.0:
            raise InvalidInput("rate: must lie between 0 and 1", field="rate")
        rule = FaultRule(status, rate, count, retry_after, method, path_contains, delay)
        with self._lock:
            self.faults.append(rule)
            return copy.deepcopy(rule)

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def seed_random(self, seed: int) -> None:
        with self._lock:
            self._rng = random.Random(seed)

    def draw_fault(self, method: str, path: str) -> FaultRule | None:
        with self._lock:
            for rule in self.faults:
                if not rule.matches(method, path) or (rule.count is not None and rule.hits >= rule.count):
                    continue
                if rule.rate >= 1.0 or self._rng.random() < rule.rate:
                    rule.hits += 1
                    return copy.deepcopy(rule)
            return None

    def log_api_call(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.api_log.append((method, path, status))
            self._changed.notify_all()

    # --- connect links ------------------------------------------------------------------------------
    def provider_page_url(self, provider_id: str, *, locale: str = "de") -> str:
        url = f"{self.config.http_base}/timum/providers/{provider_id}"
        return url + "?lang=en" if locale == "en" else url

    def connect_url(self, provider_id: str, resource_id: str | None = None, *, locale: str = "de",
                    lifetime: int = 600, now: float | None = None, scope: str = "") -> str:
        """The link behind "Verbinden" (no resource) or "Kalender verbinden (BETA)" (a resource), made as
        real timum makes it: fresh nonce, ten minutes, return to the provider's page."""
        provider = self.provider(provider_id)
        if resource_id is not None:
            self.resource(provider_id, resource_id)
        issued = int(time.time() if now is None else now)
        token = sign_connect_link(ConnectLink(provider_id=provider_id, resource_id=resource_id, locale=locale,
                                              return_url=self.provider_page_url(provider_id, locale=locale),
                                              expires_at=issued + lifetime, nonce=secrets.token_urlsafe(24),
                                              scope=scope, provider_name=provider.name[:MAX_PROVIDER_NAME]),
                                  self.config.timum_connect_secrets[0])
        return f"{self.config.service_base_url.rstrip('/')}/api/connect?token={token}"

    # --- summary -----------------------------------------------------------------------------------
    def snapshot(self, provider_ids: Iterable[str] | None = None) -> dict[str, Any]:
        """JSON view of providers with their resources, bookings and slots (control API, debugging)."""
        with self._lock:
            wanted = list(provider_ids) if provider_ids is not None else list(self.providers)
            out: list[dict[str, Any]] = []
            for pid in wanted:
                provider = self.providers.get(pid)
                if provider is None:
                    continue
                resources = []
                for res in self.list_resources(pid):
                    item = res.to_json()
                    item["link"] = (None if res.link is None else
                                    {"status": res.link.status, "mode": res.link.mode, "reason": res.link.reason,
                                     "calendarName": res.link.calendar_name,
                                     "updatedAt": iso_utc(res.link.updated_at)})
                    item["bookings"] = [b.to_json() for b in self.list_bookings(pid, res.id)]
                    item["blockedSlots"] = [s.to_json() for s in self.list_slots(pid, res.id)]
                    resources.append(item)
                out.append({"id": pid, "name": provider.name, "timeZone": provider.time_zone,
                            "resources": resources})
            return {"providers": out}
