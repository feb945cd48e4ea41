"""Outlook edits of a booking's event: found in the delta round and, per provider setting,
restored at once (default) or reported to timum — without echo loops."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.core.outlook_plan import (
    ExpectedBookingEvent,
    ReportBookingEventEdit,
    RestoreBookingEvent,
    plan_booking_event_edits,
    visible_fingerprint,
)
from shared.domain import BookingEventEdits, DeltaPage, OutlookEvent, ProviderSettings
from shared.messages import SyncMessage, SyncReason
from shared.repos.links import ProviderSettingsRepository
from shared.repos.sync_state import BookingMapRepository
from shared.sync.worker import run_sync
from tests.support.booking_world import KEY, START, World, booking


async def _sync(world: World, *, full: bool = False) -> None:
    outcome = await run_sync(world.services, SyncMessage(str(KEY), SyncReason.NOTIFICATION, full=full),
                             worker_id="w")
    assert outcome.status == "ok", outcome


async def _booked(world: World) -> str:
    assert await world.send(booking(1)) == "created"
    await _sync(world, full=True)  # the first round sees our own event: nothing to do
    [event] = world.ours()
    return str(event.id)  # type: ignore[attr-defined]


def _event(world: World, event_id: str) -> object:
    return world.graph.events[event_id]


async def test_moved_booking_event_is_restored_once_without_echo(world: World) -> None:
    event_id = await _booked(world)
    world.graph.edit_event(event_id, start=START + timedelta(hours=3), end=START + timedelta(hours=4))
    await _sync(world)
    restored = _event(world, event_id)
    assert (restored.start, restored.end) == (START, START + timedelta(minutes=30))  # type: ignore[attr-defined]
    assert world.timum.slot_count() == 0  # never a blocked slot of our own booking
    # Our restore comes back through delta: it matches what we wrote and writes nothing.
    before = sum(world.graph.requests.values())
    await _sync(world)
    writes = sum(n for op, n in world.graph.requests.items() if op in ("update_event", "create_event"))
    assert sum(world.graph.requests.values()) - before == 1  # the delta call only
    assert writes == 2  # the create and the one restore


async def test_renamed_booking_event_is_restored(world: World) -> None:
    event_id = await _booked(world)
    world.graph.edit_event(event_id, subject="Privat", show_as="free")
    await _sync(world)
    restored = _event(world, event_id)
    assert restored.subject == "Krankengymnastik 30 min – Jörg Müller"  # type: ignore[attr-defined]
    assert restored.show_as == "busy"  # type: ignore[attr-defined]


async def test_deleted_booking_event_is_recreated(world: World) -> None:
    event_id = await _booked(world)
    world.graph.user_delete(event_id)
    await _sync(world)
    [again] = world.ours()
    assert again.id != event_id and again.start == START  # type: ignore[attr-defined]
    row = await BookingMapRepository(world.services.storage).get(KEY, "bk-1")
    assert row is not None and row.event_id == again.id  # type: ignore[attr-defined]
    await _sync(world)
    assert len(world.ours()) == 1


async def test_report_policy_leaves_outlook_and_tells_timum_once(world: World) -> None:
    await ProviderSettingsRepository(world.services.storage).save(
        ProviderSettings(KEY.provider_id, booking_event_edits=BookingEventEdits.REPORT))
    event_id = await _booked(world)
    moved = START + timedelta(hours=3)
    world.graph.edit_event(event_id, start=moved, end=moved + timedelta(minutes=30))
    await _sync(world)
    assert _event(world, event_id).start == moved  # type: ignore[attr-defined]
    [report] = world.timum.booking_conflicts
    assert report["type"] == "booking.outlook_conflict"
    assert report["data"]["bookingId"] == "bk-1" and report["data"]["change"] == "edited"
    assert report["data"]["outlookStart"] == moved.isoformat().replace("+00:00", "Z")
    await _sync(world, full=True)  # a fresh round sees the same edit: the same delivery id
    assert len(world.timum.booking_conflicts) == 1
    world.graph.user_delete(event_id)
    await _sync(world)
    assert [r["data"]["change"] for r in world.timum.booking_conflicts] == ["edited", "deleted"]
    assert world.ours() == []


async def test_pending_webhook_is_not_fought(world: World) -> None:
    """A booking stored newer than its event (the writer still to run) is left to the writer."""
    event_id = await _booked(world)
    from shared.bookings.store import BookingRepository

    await BookingRepository(world.services.storage).upsert_if_newer(booking(2, minutes=60))
    world.graph.edit_event(event_id, subject="Umbenannt")
    await _sync(world)
    assert _event(world, event_id).subject == "Umbenannt"  # type: ignore[attr-defined]
    assert await world.send(booking(2, minutes=60)) in ("updated", "stale")


# --- the pure decision ---------------------------------------------------------------------------------

T = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def _page(*events: OutlookEvent, removed: tuple[str, ...] = ()) -> DeltaPage:
    return DeltaPage(list(events), list(removed), delta_link="d")


def test_plan_ignores_unchanged_and_foreign_events() -> None:
    want = {"e1": ExpectedBookingEvent("b1", visible_fingerprint("S", T, T + timedelta(hours=1), "busy"))}
    same = OutlookEvent("e1", T, T + timedelta(hours=1), subject="S", show_as="busy")
    foreign = OutlookEvent("e9", T, T + timedelta(hours=2), subject="Mittag")
    assert plan_booking_event_edits(_page(same, foreign, removed=("e8",)), want, BookingEventEdits.RESTORE) == []


def test_plan_restores_or_reports_edits_and_deletions() -> None:
    want = {"e1": ExpectedBookingEvent("b1", visible_fingerprint("S", T, T + timedelta(hours=1), "busy")),
            "e2": ExpectedBookingEvent("b2", "x")}
    moved = OutlookEvent("e1", T + timedelta(hours=1), T + timedelta(hours=2), subject="S")
    page = _page(moved, removed=("e2",))
    assert [(a.event_id, a.booking_id, a.deleted) for a in plan_booking_event_edits(
        page, want, BookingEventEdits.RESTORE) if isinstance(a, RestoreBookingEvent)] == [
        ("e1", "b1", False), ("e2", "b2", True)]
    reported = plan_booking_event_edits(page, want, BookingEventEdits.REPORT)
    assert [(type(a), a.booking_id, a.deleted) for a in reported] == [
        (ReportBookingEventEdit, "b1", False), (ReportBookingEventEdit, "b2", True)]


async def test_an_event_that_keeps_differing_is_restored_once_per_sight(world: World) -> None:
    """Should Graph report our restored event other than we wrote it, the guard must not loop."""
    event_id = await _booked(world)
    world.graph.edit_event(event_id, subject="Privat")
    original = world.graph.update_event

    async def lossy_update(mailbox_id: str, eid: str, draft: object) -> None:
        await original(mailbox_id, eid, draft)  # type: ignore[arg-type]
        world.graph.edit_event(eid, subject="Privat")  # what Graph then reports back

    world.graph.update_event = lossy_update  # type: ignore[method-assign]
    for _ in range(3):
        await _sync(world)
    assert world.graph.requests.get("update_event", 0) == 1


async def test_teardown_forgets_the_restores(world: World) -> None:
    from shared.bookings.outlook_edits import RESTORES
    from shared.connect.teardown import unlink
    from shared.repos.links import LinkRepository
    from shared.services.subscriptions import teardown

    event_id = await _booked(world)
    world.graph.edit_event(event_id, subject="Privat")
    await _sync(world)
    assert await world.services.storage.table(RESTORES).query()
    await unlink(world.services, await LinkRepository(world.services.storage).require(KEY))
    await teardown(world.services, KEY)
    assert await world.services.storage.table(RESTORES).query() == []
