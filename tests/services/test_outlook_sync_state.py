"""The sync-state repositories on both storage implementations (Graph ids contain '/' and '=')."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.core.outlook_plan import PENDING_HASH, StatusRow
from shared.domain import LinkKey, slot_external_id
from shared.repos.sync_state import BookingEventState, BookingMapRepository, BookingMapRow, EventMapRepository
from shared.storage.base import StoragePort

LINK = LinkKey("prov-1", "res/1")
OTHER = LinkKey("prov-1", "res-2")
T = datetime(2026, 11, 24, 9, tzinfo=UTC)


def row(event_id: str, *, content_hash: str = "h", pending_round: str = "") -> StatusRow:
    return StatusRow(event_id, slot_external_id(LINK, event_id), content_hash, T, T + timedelta(hours=1),
                     pending_round)


async def test_event_map_roundtrip_and_access_paths(storage: StoragePort) -> None:
    repo = EventMapRepository(storage)
    confirmed, written, intent = (row("AAMk/a=="), row("AAMk+b/c=", pending_round="r1"),
                                  row("AAMk/d.20261124T090000Z", content_hash=PENDING_HASH, pending_round="r1"))
    await repo.put_many(LINK, [confirmed, written, intent])
    await repo.put(OTHER, row("elsewhere"))
    assert await repo.load(LINK) == {r.event_id: r for r in (confirmed, written, intent)}
    assert await repo.get(LINK, "AAMk/a==") == confirmed
    assert await repo.get(LINK, "missing") is None
    assert await repo.get_many(LINK, ["missing", intent.event_id, confirmed.event_id, intent.event_id]) == {
        intent.event_id: intent, confirmed.event_id: confirmed}
    assert set(await repo.pending(LINK)) == {written.event_id, intent.event_id}
    await repo.delete_many(LINK, [written.event_id, "missing"])
    assert set(await repo.load(LINK)) == {confirmed.event_id, intent.event_id}
    assert await repo.clear(LINK) == 2
    assert await repo.load(LINK) == {}
    assert set(await repo.load(OTHER)) == {"elsewhere"}


async def test_booking_map(storage: StoragePort) -> None:
    repo = BookingMapRepository(storage)
    active = BookingMapRow("bk/1", "AAMk/e1=", 3, "hash", "timum-abc", BookingEventState.ACTIVE)
    pending = BookingMapRow("bk-2", "", 1, "", "timum-def", BookingEventState.PENDING)
    cancelled = BookingMapRow("bk-3", "AAMk/e3=", 2, "h3", "timum-ghi", BookingEventState.CANCELLED)
    for r in (active, pending, cancelled):
        await repo.put(LINK, r)
    assert await repo.get(LINK, "bk/1") == active
    assert await repo.get(OTHER, "bk/1") is None
    by_id = {r.booking_id: r for r in await repo.list(LINK)}
    assert by_id == {"bk/1": active, "bk-2": pending, "bk-3": cancelled}
    assert await repo.event_ids(LINK) == frozenset({"AAMk/e1=", "AAMk/e3="})
    await repo.delete(LINK, "bk-3")
    assert await repo.event_ids(LINK) == frozenset({"AAMk/e1="})
    assert await repo.clear(LINK) == 2 and await repo.list(LINK) == []
