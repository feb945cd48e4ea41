"""In-memory twin of ``TimumPort``: resources and blocked slots in dicts, with the same semantics as
timum's API (``tests/contract/test_timum_port.py`` holds both to one suite), plus what tests of the
sync engine need — injected failures, a call log, and the link-status webhooks it was sent.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.adapters import slot_batch
from shared.adapters.timum_http import EXTERNAL_ID, SLOT_SOURCES, booking_conflict_body, link_status_body
from shared.domain import BlockedSlot, Booking
from shared.errors import AuthError, BadRequest, Conflict, NotFound, RemoteGone, SyncError
from shared.ports import SlotWrite, TimumPort


@dataclass
class _Failure:
    error: SyncError
    op: str | None
    times: int


def _require_id(value: str, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 128:
        raise BadRequest(f"{field}: must be 1 to 128 characters", field=field)
    return value


def _utc(value: datetime, field: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise BadRequest(f"{field}: needs a time zone", field=field)
    return value.astimezone(UTC)


class MemoryTimum(TimumPort):
    """``providers=None`` accepts any provider id; a collection makes others unknown (``NotFound``)."""

    def __init__(self, *, providers: Iterable[str] | None = None, status_webhooks: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        self.providers: set[str] | None = None if providers is None else set(providers)
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        self.slots: dict[tuple[str, str], dict[str, BlockedSlot]] = {}
        self.bookings: dict[tuple[str, str], dict[str, Booking]] = {}
        #: events as ``send_link_status`` would have POSTed them (None: no status URL configured)
        self.status_webhooks: list[dict[str, Any]] = []
        self.booking_conflicts: list[dict[str, Any]] = []
        self.status_webhooks_enabled = status_webhooks
        #: (operation, provider, resource, external id or "") of every call that reached the twin
        self.calls: list[tuple[str, str, str, str]] = []
        #: False makes every call fail as timum does for a wrong API key
        self.api_key_valid = True
        self._failures: list[_Failure] = []
        self._clock = clock

    # --- set-up and inspection (not part of the port) ----------------------------------------------
    def add_provider(self, provider_id: str) -> None:
        if self.providers is not None:
            self.providers.add(provider_id)

    def add_resource(self, provider_id: str, name: str, *, resource_id: str | None = None,
                     time_zone: str = "Europe/Berlin") -> str:
        self.add_provider(provider_id)
        rid = resource_id or "res-" + secrets.token_hex(5)
        self.resources[(provider_id, rid)] = {"id": rid, "name": name, "timeZone": time_zone, "archived": False}
        return rid

    def remove_resource(self, provider_id: str, resource_id: str) -> None:
        """As if the provider deleted the resource in timum: later writes get ``RemoteGone``."""
        self.resources.pop((provider_id, resource_id), None)
        self.slots.pop((provider_id, resource_id), None)
        self.bookings.pop((provider_id, resource_id), None)

    def archive_resource(self, provider_id: str, resource_id: str, archived: bool = True) -> None:
        self.resources[(provider_id, resource_id)]["archived"] = archived

    def add_booking(self, booking: Booking) -> None:
        self.bookings.setdefault((booking.provider_id, booking.resource_id), {})[booking.id] = booking

    def fail_next(self, error: SyncError, *, op: str | None = None, times: int = 1) -> None:
        """Raise ``error`` on the next ``times`` calls (of operation ``op``, or any) instead of serving them."""
        self._failures.append(_Failure(error, op, times))

    def slot_count(self) -> int:
        return sum(len(v) for v in self.slots.values())

    def writes(self) -> int:
        """Calls that change timum (for "a second sync writes nothing")."""
        return sum(op in ("put_blocked_slot", "delete_blocked_slot", "create_resource") for op, *_ in self.calls)

    # --- plumbing ---------------------------------------------------------------------------------
    def _enter(self, op: str, provider_id: str = "", resource_id: str = "", external_id: str = "") -> None:
        for failure in self._failures:
            if failure.op is None or failure.op == op:
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                raise failure.error
        if not self.api_key_valid:
            raise AuthError("timum refused our credentials (HTTP 401)", code="timum_auth")
        self.calls.append((op, provider_id, resource_id, external_id))

    def _known_provider(self, provider_id: str) -> bool:
        return self.providers is None or provider_id in self.providers

    def _resource(self, provider_id: str, resource_id: str) -> dict[str, Any]:
        found = self.resources.get((provider_id, resource_id))
        if found is None:
            raise RemoteGone(f"timum refused: resource '{resource_id}' does not exist", code="resource_not_found")
        return found

    # --- the port ---------------------------------------------------------------------------------
    async def create_resource(self, provider_id: str, name: str) -> str:
        _require_id(provider_id, "providerId")
        self._enter("create_resource", provider_id)
        # timum checks the body before it looks the provider up; so does the twin.
        clean = name.strip() if isinstance(name, str) else ""
        if not clean:
            raise BadRequest("timum refused creating a resource: name must not be empty", field="name",
                             code="validation_failed")
        if len(clean) > 200:
            raise BadRequest("timum refused creating a resource: name is too long", field="name",
                             code="validation_failed")
        if not self._known_provider(provider_id):
            raise NotFound(f"timum refused: provider '{provider_id}' does not exist", code="provider_not_found")
        return self.add_resource(provider_id, clean)

    async def get_resource(self, provider_id: str, resource_id: str) -> dict[str, Any] | None:
        _require_id(provider_id, "providerId")
        _require_id(resource_id, "resourceId")
        self._enter("get_resource", provider_id, resource_id)
        found = self.resources.get((provider_id, resource_id))
        return None if found is None else dict(found)

    async def list_resources(self, provider_id: str) -> list[dict[str, Any]]:
        _require_id(provider_id, "providerId")
        self._enter("list_resources", provider_id)
        return [{"id": r["id"], "name": r["name"]} for (pid, _), r in self.resources.items()
                if pid == provider_id and not r["archived"]][:500]

    async def put_blocked_slot(self, provider_id: str, resource_id: str, slot: BlockedSlot) -> None:
        _require_id(provider_id, "providerId")
        _require_id(resource_id, "resourceId")
        start, end = _utc(slot.start, "start"), _utc(slot.end, "end")
        if not EXTERNAL_ID.match(slot.external_id):
            raise BadRequest("externalId: 1 to 128 characters of A-Z, a-z, 0-9 and . _ : ~ -", field="externalId")
        self._enter("put_blocked_slot", provider_id, resource_id, slot.external_id)
        problems = []
        if end <= start:
            problems.append(("end", "must be after start"))
        if slot.source not in SLOT_SOURCES:
            problems.append(("source", f"must be one of {', '.join(SLOT_SOURCES)}"))
        if len(slot.title) > 255:
            problems.append(("title", "at most 255 characters"))
        if problems:
            field, message = problems[0]
            raise BadRequest(f"timum refused writing a blocked slot: {field}: {message}", field=field,
                             code="validation_failed")
        resource = self._resource(provider_id, resource_id)
        if resource["archived"]:
            raise Conflict(f"timum refused writing a blocked slot: resource '{resource_id}' is archived",
                           code="resource_archived")
        self.slots.setdefault((provider_id, resource_id), {})[slot.external_id] = BlockedSlot(
            external_id=slot.external_id, start=start, end=end, all_day=slot.all_day, title=slot.title,
            source=slot.source)

    async def delete_blocked_slot(self, provider_id: str, resource_id: str, external_id: str) -> None:
        _require_id(provider_id, "providerId")
        _require_id(resource_id, "resourceId")
        self._enter("delete_blocked_slot", provider_id, resource_id, external_id)
        self.slots.get((provider_id, resource_id), {}).pop(external_id, None)

    async def write_blocked_slots(self, provider_id: str, resource_id: str,
                                  writes: Sequence[SlotWrite]) -> list[SyncError | None]:
        """As timum's ``writeBlockedSlots``: one exchange per ``MAX_SLOT_BATCH`` writes (an injected
        failure of any operation fails a whole exchange, as a gateway's would), each write then as its
        single call — so failures injected for ``put_blocked_slot`` / ``delete_blocked_slot`` hit
        single items, and ``calls`` lists every slot written."""
        from shared.ports import MAX_SLOT_BATCH

        _require_id(provider_id, "providerId")
        _require_id(resource_id, "resourceId")
        results: list[SyncError | None] = [None] * len(writes)
        for chunk in slot_batch.chunks(writes, MAX_SLOT_BATCH):
            try:
                self._enter("write_blocked_slots", provider_id, resource_id)
            except SyncError as exc:
                for n in chunk:
                    results[n] = exc
                continue
            for n in chunk:
                write = writes[n]
                try:
                    if isinstance(write, BlockedSlot):
                        await self.put_blocked_slot(provider_id, resource_id, write)
                    else:
                        await self.delete_blocked_slot(provider_id, resource_id, write)
                except SyncError as exc:
                    results[n] = exc
        return results

    async def list_blocked_slots(self, provider_id: str, resource_id: str,
                                 source: str | None = None) -> list[BlockedSlot]:
        _require_id(provider_id, "providerId")
        _require_id(resource_id, "resourceId")
        self._enter("list_blocked_slots", provider_id, resource_id)
        if source is not None and source not in SLOT_SOURCES:
            raise BadRequest(f"timum refused listing blocked slots: source must be one of {', '.join(SLOT_SOURCES)}",
                             field="source", code="bad_request")
        self._resource(provider_id, resource_id)
        found = [s for s in self.slots.get((provider_id, resource_id), {}).values()
                 if source is None or s.source == source]
        return sorted(found, key=lambda s: (s.start, s.external_id))

    async def list_bookings(self, provider_id: str, resource_id: str, *, start: datetime,
                            end: datetime) -> list[Booking]:
        _require_id(provider_id, "providerId")
        _require_id(resource_id, "resourceId")
        lo, hi = _utc(start, "start"), _utc(end, "end")
        self._enter("list_bookings", provider_id, resource_id)
        if hi <= lo:
            raise BadRequest("timum refused listing bookings: to must be after from", field="to", code="bad_request")
        self._resource(provider_id, resource_id)
        found = [b for b in self.bookings.get((provider_id, resource_id), {}).values() if b.end > lo and b.start < hi]
        return sorted(found, key=lambda b: (b.start, b.id))

    async def send_link_status(self, payload: Mapping[str, Any]) -> None:
        if not self.status_webhooks_enabled:
            return
        event = link_status_body(payload, now=self._clock())
        self._enter("send_link_status", str(event["data"]["providerId"]), str(event["data"].get("resourceId", "")))
        self.status_webhooks.append(event)

    async def send_booking_conflict(self, payload: Mapping[str, Any]) -> None:
        if not self.status_webhooks_enabled:
            return
        event = booking_conflict_body(payload, now=self._clock())
        self._enter("send_booking_conflict", str(event["data"]["providerId"]), str(event["data"]["resourceId"]))
        if all(e["id"] != event["id"] for e in self.booking_conflicts):  # timum drops repeated deliveries
            self.booking_conflicts.append(event)
