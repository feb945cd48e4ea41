"""Many blocked-slot writes at once (``TimumPort.write_blocked_slots``): how they are cut into
requests of timum's ``writeBlockedSlots``, what goes on the wire, how each item's result maps to
``shared.errors``, and the single calls a timum without that operation gets instead.

One slot's failure stays that slot's: every write has its own result, so a page of 100 events with
one slot timum refuses still writes the 99 others (and the engine records those 99).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import TYPE_CHECKING, Any

from shared.domain import BlockedSlot
from shared.errors import BadRequest, Conflict, RemoteGone, SyncError, Throttled, TransientError

if TYPE_CHECKING:
    from shared.ports import SlotWrite, TimumPort

#: single calls in flight when timum has no batch operation (what the engine used before batches)
SINGLE_CALL_CONCURRENCY = 8
#: batch requests in flight for one ``write_blocked_slots`` call
BATCH_CONCURRENCY = 2
#: 404 codes that mean the resource (or provider) is gone — any other 404 means "no such operation"
GONE_CODES = frozenset({"resource_not_found", "provider_not_found"})
#: answers of a timum that does not offer ``writeBlockedSlots``
UNSUPPORTED_STATUSES = frozenset({404, 405, 501})


def external_id(write: SlotWrite) -> str:
    return write.external_id if isinstance(write, BlockedSlot) else write


def chunks(writes: Sequence[SlotWrite], size: int) -> list[list[int]]:
    """Indices of ``writes`` cut into requests of at most ``size``, keeping their order; a repeated
    external id starts a new request (timum refuses one id twice in a request, and the two writes
    must land in order)."""
    out: list[list[int]] = []
    current: list[int] = []
    ids: set[str] = set()
    for n, write in enumerate(writes):
        ext = external_id(write)
        if len(current) >= size or ext in ids:
            out.append(current)
            current, ids = [], set()
        current.append(n)
        ids.add(ext)
    if current:
        out.append(current)
    return out


def _iso(value: Any) -> str:
    return str(value.astimezone(UTC).isoformat().replace("+00:00", "Z"))


def encode(write: SlotWrite) -> dict[str, Any]:
    """One item of ``BlockedSlotBatch``."""
    if not isinstance(write, BlockedSlot):
        return {"op": "delete", "externalId": write}
    return {"op": "upsert", "externalId": write.external_id, "start": _iso(write.start), "end": _iso(write.end),
            "allDay": write.all_day, "title": write.title, "source": write.source}


def item_error(write: SlotWrite, result: Any) -> SyncError | None:
    """The outcome of one ``BlockedSlotBatchResult``; a malformed one counts as a failed write."""
    if not isinstance(result, Mapping) or not isinstance(result.get("status"), int):
        return TransientError("timum answered a slot write with a malformed result", code="timum_bad_response")
    status: int = result["status"]
    upsert = isinstance(write, BlockedSlot)
    if status in (200, 201, 204) or (status == 404 and not upsert):
        return None
    error = result.get("error") if isinstance(result.get("error"), Mapping) else {}
    assert isinstance(error, Mapping)
    detail = str(error.get("detail") or f"HTTP {status}")[:300]
    code = str(error.get("code") or "") or None
    field = error.get("field")
    message = f"timum refused writing blocked slot {external_id(write)!r}: {detail}"
    if status == 404:
        return RemoteGone(message, code=code)
    if status == 409:
        return Conflict(message, code=code)
    if status in (400, 422):
        return BadRequest(message, field=str(field) if field else None, code=code)
    if status == 429:
        return Throttled(f"timum asks to slow down (writing blocked slot {external_id(write)!r})")
    if status >= 500:
        return TransientError(f"timum failed on writing blocked slot {external_id(write)!r}: HTTP {status}",
                              code="timum_unavailable")
    return BadRequest(f"timum answered a slot write with unexpected HTTP {status}", code="timum_unexpected")


async def write_one_by_one(port: TimumPort, provider_id: str, resource_id: str,
                           writes: Sequence[SlotWrite]) -> list[SyncError | None]:
    """The single calls, ``SINGLE_CALL_CONCURRENCY`` at a time; a repeated external id waits for
    the earlier write to the same slot."""
    results: list[SyncError | None] = [None] * len(writes)
    gate = asyncio.Semaphore(SINGLE_CALL_CONCURRENCY)

    async def one(n: int) -> None:
        write = writes[n]
        async with gate:
            try:
                if isinstance(write, BlockedSlot):
                    await port.put_blocked_slot(provider_id, resource_id, write)
                else:
                    await port.delete_blocked_slot(provider_id, resource_id, write)
            except SyncError as exc:
                results[n] = exc

    for group in chunks(writes, len(writes) or 1):
        await gather_all(one(n) for n in group)
    return results


async def gather_all(calls: Any) -> None:
    """Run every call to its end before the first non-``SyncError`` failure propagates, as the
    engine's bounded gather did: no write is left running unobserved."""
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
    if failure is not None:
        raise failure
