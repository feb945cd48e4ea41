"""Outlook edits of the events our bookings own: found in the delta round, restored or reported.

The event of a booking says "changes are overwritten", and timum is the source of truth for
bookings. Our own events come through delta like any other (the planner never turns them into
blocked slots); here they are compared with what we wrote. Per provider setting
(``ProviderSettings.booking_event_edits``) an edited or deleted booking event is written back at
once (``restore``, the default) or reported to timum as a conflict (``report``).

The decision is the pure ``plan_booking_event_edits``; this module gathers its input and performs
its actions. No echo loop: the comparison is with the *visible fingerprint* of the draft the booking
map says we wrote, so our own restore coming back through delta matches and does nothing. A
booking whose map row lags behind the store (a webhook still on its way to Outlook) is not guarded
in this round: the writer is about to replace the event anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta

from shared.bookings.render import draft_hash, render_event
from shared.bookings.store import BookingRepository
from shared.context import Services
from shared.core.outlook_plan import (
    ExpectedBookingEvent,
    ReportBookingEventEdit,
    RestoreBookingEvent,
    plan_booking_event_edits,
    visible_fingerprint,
)
from shared.domain import BookingStatus, DeltaPage, EventDraft, Link, ProviderSettings, stable_id
from shared.repos.sync_state import BookingEventState, BookingMapRepository, BookingMapRow
from shared.storage.base import encode_key

log = logging.getLogger(__name__)

#: ``bookingrestores`` (PK link key, RK event id): the last restore of a booking event and what
#: Outlook showed before it. Written only when a restore happens.
RESTORES = "bookingrestores"
#: The same sight of an event is restored at most once in this time.
RESTORE_MEMORY = timedelta(hours=1)


def expected_draft(row: BookingMapRow, status: BookingStatus, settings: ProviderSettings,
                   draft: EventDraft, cancelled_draft: EventDraft) -> EventDraft | None:
    """The draft the booking's event must show, or None when it is not ours to guard."""
    if not row.event_id or row.state is BookingEventState.PENDING:
        return None
    if status is BookingStatus.CONFIRMED and row.state is BookingEventState.ACTIVE:
        return draft
    if status is BookingStatus.CANCELLED and row.state is BookingEventState.CANCELLED:
        return cancelled_draft  # kept in Outlook, marked cancelled
    return None


class BookingEventGuard:
    """One delta round's view of the link's booking events (loaded on the first page that
    mentions one of them, at most once per round)."""

    def __init__(self, services: Services, link: Link, settings: ProviderSettings,
                 own_event_ids: frozenset[str]) -> None:
        self._services = services
        self._link = link
        self._settings = settings
        self._own = own_event_ids
        self._expected: dict[str, ExpectedBookingEvent] | None = None

    async def check(self, page: DeltaPage) -> int:
        """Act on the booking events of ``page`` that were edited or deleted; returns how many."""
        mentioned = [e.id for e in page.events] + list(page.removed)
        if not any(i in self._own for i in mentioned):
            return 0  # no booking event on this page: nothing to load
        expected = await self._load()
        actions = plan_booking_event_edits(page, expected, self._settings.booking_event_edits)
        for action in actions:
            if isinstance(action, RestoreBookingEvent):
                await self._restore(action)
            else:
                await self._report(action, page)
        return len(actions)

    async def _restore(self, action: RestoreBookingEvent) -> None:
        """Restore, unless this very sight of the event was restored within ``RESTORE_MEMORY``:
        should Graph ever report our restored event differently from what we wrote (a property it
        normalises, an item with only some fields), restoring again would loop every round."""
        from shared.bookings.service import restore_booking_event

        table = self._services.storage.table(RESTORES)
        pk, rk = encode_key(str(self._link.key)), encode_key(action.event_id)
        now = self._services.clock()
        last = await table.get(pk, rk)
        if (last is not None and last.get("fingerprint") == action.fingerprint
                and last["restored_at"] > now - RESTORE_MEMORY):
            log.warning("booking event still differs right after its restore; not restoring it again now")
            return
        outcome = await restore_booking_event(self._services, self._link, action.booking_id, action.event_id)
        if outcome.result in ("restored", "recreated"):
            await table.upsert({"PartitionKey": pk, "RowKey": rk, "fingerprint": action.fingerprint,
                                "restored_at": now})
        log.info("booking event edited in Outlook: %s", outcome.result)

    async def _load(self) -> Mapping[str, ExpectedBookingEvent]:
        if self._expected is not None:
            return self._expected
        key = self._link.key
        rows = {row.booking_id: row for row in await BookingMapRepository(self._services.storage).list(key)
                if row.event_id in self._own}
        stored = await BookingRepository(self._services.storage).list_for_resource(key.provider_id, key.resource_id)
        expected: dict[str, ExpectedBookingEvent] = {}
        for item in stored:
            booking = item.booking
            row = rows.get(booking.id)
            if row is None:
                continue
            draft = expected_draft(row, booking.status, self._settings, render_event(booking, self._settings),
                                   render_event(booking, self._settings, cancelled_mark=True))
            if draft is None or draft_hash(draft) != row.content_hash:
                continue  # the writer has not caught up with this booking yet: not ours to judge now
            expected[row.event_id] = ExpectedBookingEvent(
                booking.id, visible_fingerprint(draft.subject, draft.start, draft.end, draft.show_as))
        self._expected = expected
        return expected

    async def _report(self, action: ReportBookingEventEdit, page: DeltaPage) -> None:
        link = self._link
        seen = next((e for e in page.events if e.id == action.event_id), None)
        data: dict[str, object] = {"providerId": link.provider_id, "resourceId": link.resource_id,
                                   "bookingId": action.booking_id,
                                   "change": "deleted" if action.deleted else "edited"}
        if seen is not None and not action.deleted:
            data["outlookStart"] = seen.start.isoformat().replace("+00:00", "Z")
            data["outlookEnd"] = seen.end.isoformat().replace("+00:00", "Z")
        # The id names this very edit: a replayed round reports it again and timum drops it.
        delivery = stable_id(str(link.key), action.event_id, action.fingerprint, prefix="bc-", length=32)
        await self._services.timum.send_booking_conflict({"id": delivery, "data": data})
        log.info("booking event %s in Outlook reported to timum", data["change"])
