"""The event writer: apply the newest known state of a booking to the linked Outlook calendar.

Always applies the *stored* newest version (not the message's), and one invocation at a time
per booking: messages of one booking arrive in the same batch (duplicates, reordered
webhooks) and would otherwise race — a create deduplicated by its transactionId keeps the
content of whichever POST came first, and a PATCH with older content can land last while the
booking map records the newer one. An invocation that finds the booking's lease held only
marks it dirty; the holder then applies the stored newest version once more (the same scheme
as the delta worker's link lease). Every Graph write is
idempotent: creates carry a transactionId (a retried POST yields the same event), and the
booking-map row is written PENDING before the create, ACTIVE after — a crash in between
replays into the same event (and writes this version's content over it: the first attempt may
have carried an older one). A PENDING row met by a cancellation is settled by looking the event
up by its tag. Before a PATCH or DELETE the row forgets the content it recorded, so a crash
right after Graph applied the write cannot leave a row that calls a later version "unchanged".
Events written here are in the booking map, which the Outlook → timum direction reads so they
never come back as blocked slots.

The booking lease's owner is the queue message, so the host's retry of a message whose
invocation failed holding the lease takes it back at once rather than giving way to it.

If the user deleted our event in Outlook, the next change of that booking re-creates it
(with a fresh transactionId, so it does not collapse into the deleted one).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from shared.bookings.plan import (
    BookingAction,
    CreateEvent,
    DeleteEvent,
    MapState,
    Nothing,
    UpdateEvent,
    plan_booking,
    recreate_transaction_id,
)
from shared.bookings.render import draft_hash, render_event
from shared.bookings.store import BookingRepository, Location, StoredBooking
from shared.context import Services
from shared.domain import Booking, BookingStatus, EventDraft, Link, LinkHealth, LinkKey, LinkMode
from shared.errors import AuthError, NotFound, RemoteGone, TransientError
from shared.messages import (
    BOOKING_QUEUE,
    Backfill,
    BookingChange,
    BookingMessage,
    ReplayLink,
    RestoreEvent,
    parse_booking_message,
)
from shared.ports import GraphCalendarPort
from shared.repos.links import LeaseRepository, LinkRepository, ProviderSettingsRepository
from shared.repos.sync_state import BookingEventState, BookingMapRepository, BookingMapRow

log = logging.getLogger(__name__)

#: Runs of one invocation while other messages of the booking keep marking its lease dirty.
MAX_RUNS_PER_INVOCATION = 5
#: A writer that died holding a booking's lease blocks it this long; its retry comes later anyway.
LEASE_TTL = timedelta(minutes=2)


@dataclass(frozen=True)
class WriteOutcome:
    result: str        # created | updated | recreated | deleted | unchanged | stale | no_link | ...
    event_id: str = ""


def _state(row: BookingMapRow | None) -> MapState | None:
    if row is None or row.state is BookingEventState.PENDING:
        # A PENDING row means our create may or may not have happened: creating again with the
        # same transactionId is the safe replay.
        return None
    return MapState(row.event_id, row.version, row.content_hash)


async def _create(graph: GraphCalendarPort, maps: BookingMapRepository, link: Link, booking: Booking,
                  draft: EventDraft, digest: str, transaction_id: str, *, replay: bool = False) -> str:
    """Create the booking's event. ``replay``: the transactionId is a PENDING row's, whose POST may
    have landed already — Graph then answers with that event as it was created, with the content
    of that earlier attempt (an older version, maybe), so it is written over with this draft
    before the row says ACTIVE. A crash before that leaves the row PENDING, to be replayed again."""
    await maps.put(link.key, BookingMapRow(booking.id, "", booking.version, digest, transaction_id,
                                           BookingEventState.PENDING))
    event_id = await graph.create_event(link.mailbox_id, link.calendar_id, draft, transaction_id=transaction_id)
    if replay:
        try:
            await graph.update_event(link.mailbox_id, event_id, draft)
        except NotFound:
            # The earlier attempt's event, deleted in Outlook since: a new one, as for any deletion.
            return await _create(graph, maps, link, booking, draft, digest, recreate_transaction_id(booking))
    await maps.put(link.key, BookingMapRow(booking.id, event_id, booking.version, digest, transaction_id,
                                           BookingEventState.ACTIVE))
    return event_id


async def _settle_pending(services: Services, link: Link, row: BookingMapRow) -> BookingMapRow:
    """What a PENDING row stands for, looked up in Outlook: the create it records may or may not
    have reached Graph before the worker died. A confirmed booking needs no look-up (creating
    again with the row's transactionId lands on the same event), but a cancelled one must not
    create: it must find the event to remove, or know there is none. The answer is returned as an
    ACTIVE row (saved by whatever the plan writes next), so a replay does not ask again."""
    graph = await services.graph.for_link(link)
    try:
        found = await graph.find_event_by_booking(link.mailbox_id, link.calendar_id, row.booking_id)
    finally:
        await graph.close()
    return BookingMapRow(row.booking_id, found or "", row.version, row.content_hash if found else "",
                         row.transaction_id, BookingEventState.ACTIVE)


async def write_booking(services: Services, link: Link, booking: Booking) -> WriteOutcome:
    """Bring the Outlook event of ``booking`` in line with it. Raises the tree's errors."""
    maps = BookingMapRepository(services.storage)
    settings = await ProviderSettingsRepository(services.storage).get(link.provider_id)
    row = await maps.get(link.key, booking.id)
    if row is not None and row.state is BookingEventState.PENDING and booking.version < row.version:
        return WriteOutcome("stale")
    if row is not None and row.state is BookingEventState.PENDING and booking.status is BookingStatus.CANCELLED:
        row = await _settle_pending(services, link, row)
    draft = render_event(booking, settings)
    digest = draft_hash(draft)
    cancel_draft = render_event(booking, settings, cancelled_mark=True)
    action = plan_booking(booking, _state(row), draft, digest, settings.cancel_policy, cancel_draft)
    if isinstance(action, Nothing):
        if action.reason != "stale" and row is not None and row.version < booking.version:
            await maps.put(link.key, BookingMapRow(booking.id, row.event_id, booking.version, row.content_hash,
                                                   row.transaction_id, row.state))
        elif action.reason == "cancelled without event" and row is None:
            await maps.put(link.key, BookingMapRow(booking.id, "", booking.version, "", "",
                                                   BookingEventState.ACTIVE))
        return WriteOutcome(action.reason.replace(" ", "_"), row.event_id if row else "")

    graph = await services.graph.for_link(link)
    try:
        return await _apply(graph, maps, link, booking, row, action, draft, digest)
    finally:
        # Each port holds an HTTP client (and app-only credentials a session of their own):
        # an invocation that leaves them open leaks sockets for the life of the worker.
        await graph.close()


async def _apply(graph: GraphCalendarPort, maps: BookingMapRepository, link: Link, booking: Booking,
                 row: BookingMapRow | None, action: BookingAction, draft: EventDraft, digest: str) -> WriteOutcome:
    if isinstance(action, CreateEvent):
        replay = row is not None and row.state is BookingEventState.PENDING and bool(row.transaction_id)
        transaction_id = row.transaction_id if row is not None and replay else action.transaction_id
        if row is None and booking.version > 1:
            # No map row although timum has changed this booking before: our map was lost
            # (reinstall, relink). Find the event by its tag instead of creating a second one.
            found = await graph.find_event_by_booking(link.mailbox_id, link.calendar_id, booking.id)
            if found:
                action = UpdateEvent(found, draft)
        if isinstance(action, CreateEvent):
            event_id = await _create(graph, maps, link, booking, draft, digest, transaction_id, replay=replay)
            return WriteOutcome("created", event_id)

    # The event is about to change: until the write is recorded, the row must not claim the old
    # content, or a crash right after Graph applied the write would leave a row that calls a later
    # version with that old content "unchanged" while the event shows something else (or is gone).
    await _forget_content(maps, link, row)

    if isinstance(action, UpdateEvent):
        marked = action.draft is not draft
        try:
            await graph.update_event(link.mailbox_id, action.event_id, action.draft)
        except NotFound:
            if marked:
                # Cancelled and already deleted by the user: nothing left to mark.
                await maps.put(link.key, BookingMapRow(booking.id, "", booking.version, "", "",
                                                       BookingEventState.ACTIVE))
                return WriteOutcome("deleted")
            event_id = await _create(graph, maps, link, booking, draft, digest, recreate_transaction_id(booking))
            return WriteOutcome("recreated", event_id)
        state = BookingEventState.CANCELLED if marked else BookingEventState.ACTIVE
        await maps.put(link.key, BookingMapRow(booking.id, action.event_id, booking.version,
                                               draft_hash(action.draft), row.transaction_id if row else "", state))
        return WriteOutcome("updated", action.event_id)

    assert isinstance(action, DeleteEvent)
    await graph.delete_event(link.mailbox_id, action.event_id)
    await maps.put(link.key, BookingMapRow(booking.id, "", booking.version, "", "", BookingEventState.ACTIVE))
    return WriteOutcome("deleted")


async def _forget_content(maps: BookingMapRepository, link: Link, row: BookingMapRow | None) -> None:
    if row is not None and row.content_hash and row.state is not BookingEventState.PENDING:
        await maps.put(link.key, BookingMapRow(row.booking_id, row.event_id, row.version, "", row.transaction_id,
                                               row.state))


async def _usable_link(services: Services, key: LinkKey) -> Link | None:
    link = await LinkRepository(services.storage).get(key)
    if link is None or link.mode is LinkMode.ICS:
        return None
    return link


async def _guarded(services: Services, link: Link, booking: Booking) -> WriteOutcome:
    """``write_booking`` with the link-level consequences of errors applied (``health_for``)."""
    from shared.connect.status import Remote, health_for, set_health

    try:
        outcome = await write_booking(services, link, booking)
    except (AuthError, RemoteGone, NotFound) as exc:
        verdict = health_for(exc, Remote.GRAPH)
        assert verdict is not None
        # No retry: without access every retry fails the same way (a 401 reaches here only after
        # the adapter got a fresh token and Graph refused that one too). The booking stays in the
        # store and is written when the link is reconnected (the link set-up replays the store).
        await set_health(services, link, verdict.health, verdict.reason)
        return WriteOutcome("needs_reconnect" if verdict.health is LinkHealth.NEEDS_RECONNECT else "link_error")
    if link.health is not LinkHealth.OK:
        await set_health(services, link, LinkHealth.OK)
    return outcome


def _lease_key(provider_id: str, booking_id: str) -> LinkKey:
    # In the leases table next to the links' own ("provider|resource"); a booking's key has a
    # third part, so the two never meet. By booking, not resource: a booking may change resource.
    return LinkKey(provider_id, f"booking|{booking_id}")


async def _apply_stored(services: Services, provider_id: str, resource_id: str, booking_id: str,
                        fallback: Booking | None = None) -> WriteOutcome:
    """Write the newest stored version of one booking to its link's calendar, and remove the
    event it left behind in the calendar of a resource it moved away from."""
    store = BookingRepository(services.storage)
    where = await store.locate(provider_id, booking_id)
    stored = await _newest(services, provider_id, resource_id, booking_id, where)
    booking = stored.booking if stored is not None else fallback
    if booking is None:
        return WriteOutcome("unknown_booking")
    outcome = await _write_current(services, booking)
    for old in where.moved_from if where is not None else ():
        if await _remove_left_event(services, LinkKey(provider_id, old), booking):
            await store.clear_moved(provider_id, booking_id, old)
    return outcome


async def _newest(services: Services, provider_id: str, resource_id: str, booking_id: str,
                  where: Location | None = None) -> StoredBooking | None:
    """The booking's newest stored version, wherever it lives now (it may have changed resource
    since the message that started this invocation)."""
    store = BookingRepository(services.storage)
    where = where or await store.locate(provider_id, booking_id)
    return await store.get(provider_id, where.resource_id if where is not None else resource_id, booking_id)


async def _write_current(services: Services, booking: Booking) -> WriteOutcome:
    link = await _usable_link(services, LinkKey(booking.provider_id, booking.resource_id))
    if link is None:
        # Recorded in the store (the ICS feed serves it); nothing to write to Outlook.
        return WriteOutcome("no_link")
    if link.health is LinkHealth.NEEDS_RECONNECT:
        return WriteOutcome("needs_reconnect")
    return await _guarded(services, link, booking)


async def _remove_left_event(services: Services, key: LinkKey, booking: Booking) -> bool:
    """Delete the Outlook event a booking left in the calendar of a resource it moved away from.
    True when nothing of it is left there (or cannot ever be: no link); False to try again with
    the booking's next message (the link needs a reconnect, or Graph failed for now)."""
    link = await _usable_link(services, key)
    if link is None:
        return True
    maps = BookingMapRepository(services.storage)
    row = await maps.get(link.key, booking.id)
    if row is None or (not row.event_id and row.state is not BookingEventState.PENDING):
        return True
    if row.version > booking.version:
        # That event was written for a newer version than the one we hold as newest: the booking
        # came back to this resource, and the delivery that brought it (it stored that version
        # but died before the index said so) is still to be retried. It is not ours to delete.
        return False
    if link.health is LinkHealth.NEEDS_RECONNECT:
        return False
    # Deleted whatever the provider's cancel policy says: the appointment did not end, it moved
    # to another calendar, so a "cancelled" mark here would tell the old calendar's owner a lie.
    try:
        graph = await services.graph.for_link(link)
    except AuthError as exc:
        log.warning("cannot remove a moved booking's event from %s: %s", key, exc.code)
        return False
    try:
        event_id = row.event_id or await graph.find_event_by_booking(link.mailbox_id, link.calendar_id, booking.id)
        if event_id:
            await _forget_content(maps, link, row)
            with contextlib.suppress(NotFound):
                await graph.delete_event(link.mailbox_id, event_id)
        # An empty row at the booking's version: should it come back here, it is created afresh.
        await maps.put(link.key, BookingMapRow(booking.id, "", max(booking.version, row.version), "", "",
                                               BookingEventState.ACTIVE))
    except TransientError:
        # Retried with this very message (the host's retry reapplies the stored newest version,
        # idempotently): waiting for the booking's next message could leave the old event for good.
        raise
    except (AuthError, RemoteGone) as exc:
        log.warning("cannot remove a moved booking's event from %s now: %s", key, exc.code)
        return False
    finally:
        await graph.close()
    return True


async def _serialized(services: Services, provider_id: str, resource_id: str, booking_id: str,
                      fallback: Booking | None = None, *, owner: str = "") -> WriteOutcome:
    """``_apply_stored`` under the booking's lease; ``coalesced`` when another invocation holds it
    (that one runs again and applies what was stored meanwhile)."""
    leases = LeaseRepository(services.storage, ttl=LEASE_TTL)
    owner = owner or uuid.uuid4().hex
    outcomes: list[WriteOutcome] = []

    async def apply() -> bool:
        outcomes.append(await _apply_stored(services, provider_id, resource_id, booking_id, fallback))
        return True

    async def hand_on() -> None:
        # Still dirty after the cap: hand the rest to a fresh message rather than run on.
        stored = await _newest(services, provider_id, resource_id, booking_id)
        if stored is not None:
            await services.storage.queue(BOOKING_QUEUE).send(BookingChange(stored.booking).to_json())

    # The owner is the queue message: two messages (of one process or two) exclude each other,
    # while the host's retry of this very message takes its lease back at once. That matters when
    # the holder failed and could not let go: the retry comes within seconds (visibilityTimeout),
    # the lease lasts minutes, and a retry under a new owner would give way to the dead lease and
    # complete — leaving what it and the deliveries that gave way to it stored unwritten.
    if not await leases.run_coalesced(_lease_key(provider_id, booking_id), owner, apply,
                                      clock=services.clock, max_runs=MAX_RUNS_PER_INVOCATION, on_cap=hand_on):
        return WriteOutcome("coalesced")
    return outcomes[-1]


async def apply_booking_message(services: Services, message: BookingMessage | dict[str, Any], *,
                                delivery: str = "") -> WriteOutcome:
    """Queue worker entry: a booking change from the webhook, a replay of a link's bookings, a
    restore that met a held lease, or a backfill. A raw body is parsed first (``BadRequest``).
    ``delivery``: the queue message's id, the same on each retry of it (the booking lease's
    owner); without one, the invocation is its own owner."""
    if isinstance(message, dict):
        message = parse_booking_message(message)
    if isinstance(message, ReplayLink):
        return await replay_link_bookings(services, message.key)
    if isinstance(message, RestoreEvent):
        return await retry_restore(services, message)
    if isinstance(message, Backfill):
        # A new ICS feed: its resource may have no link, so only the store is brought up to date.
        from shared.bookings.backfill import backfill_resource

        return WriteOutcome(f"backfilled:{await backfill_resource(services, message.key)}")
    incoming = message.booking
    # Stored before the lease is tried: a holder that sees our dirty mark finds this version.
    await BookingRepository(services.storage).upsert_if_newer(incoming)
    return await _serialized(services, incoming.provider_id, incoming.resource_id, incoming.id, incoming,
                             owner=f"message-{delivery}" if delivery else "")


async def replay_link_bookings(services: Services, key: LinkKey) -> WriteOutcome:
    """Backfill the resource's bookings from timum, then write every stored booking of it (after
    linking or reconnecting). Idempotent."""
    from shared.bookings.backfill import backfill_resource

    if await _usable_link(services, key) is None:
        return WriteOutcome("no_link")
    await backfill_resource(services, key)
    written = 0
    here = await BookingRepository(services.storage).list_for_resource(key.provider_id, key.resource_id)
    # Events of bookings that moved to another resource while this link could not be written to
    # (it needed a reconnect): their cleanup waits in the index, run it under their lease too.
    mapped = {row.booking_id for row in await BookingMapRepository(services.storage).list(key)
              if row.event_id or row.state is BookingEventState.PENDING}
    gone = sorted(mapped - {stored.booking.id for stored in here})
    for booking_id in [stored.booking.id for stored in here] + gone:
        # Each booking under its lease, like its webhook messages: they may arrive meanwhile.
        outcome = await _serialized(services, key.provider_id, key.resource_id, booking_id)
        if outcome.result in ("needs_reconnect", "link_error"):
            return outcome
        written += outcome.result in ("created", "updated", "recreated", "deleted")
    return WriteOutcome(f"replayed:{written}")



#: Delay before a restore that met the booking's held lease is tried again.
RESTORE_RETRY_SECONDS = 5


async def restore_booking_event(services: Services, link: Link, booking_id: str, event_id: str) -> WriteOutcome:
    """Write the booking's event back after someone edited or deleted it in Outlook (provider
    setting ``restore``). Under the booking's lease, like every write of its event; a held lease
    hands the restore to the booking queue, since the holder sees no change of its own to write."""
    leases = LeaseRepository(services.storage, ttl=LEASE_TTL)
    key = _lease_key(link.provider_id, booking_id)
    owner = uuid.uuid4().hex
    if not await leases.acquire(key, owner, now=services.clock()):
        await services.storage.queue(BOOKING_QUEUE).send(
            RestoreEvent(link.key, booking_id, event_id).to_json(), delay_seconds=RESTORE_RETRY_SECONDS)
        return WriteOutcome("restore_queued")
    try:
        return await _restore(services, link, booking_id, event_id)
    finally:
        with contextlib.suppress(Exception):
            await leases.let_go(key, owner, now=services.clock())


async def _restore(services: Services, link: Link, booking_id: str, event_id: str) -> WriteOutcome:
    from shared.bookings.outlook_edits import expected_draft

    maps = BookingMapRepository(services.storage)
    row = await maps.get(link.key, booking_id)
    if row is None or row.event_id != event_id:
        return WriteOutcome("stale")  # the writer replaced or removed the event meanwhile
    stored = await BookingRepository(services.storage).get(link.provider_id, link.resource_id, booking_id)
    if stored is None:
        return WriteOutcome("stale")
    booking = stored.booking
    settings = await ProviderSettingsRepository(services.storage).get(link.provider_id)
    draft = expected_draft(row, booking.status, settings, render_event(booking, settings),
                           render_event(booking, settings, cancelled_mark=True))
    if draft is None:
        return WriteOutcome("stale")
    digest = draft_hash(draft)
    graph = await services.graph.for_link(link)
    try:
        try:
            await graph.update_event(link.mailbox_id, event_id, draft)
        except NotFound:
            # Deleted in Outlook: a new event, with a fresh transactionId (the old one would
            # collapse into the deleted event).
            new_id = await _create(graph, maps, link, booking, draft, digest, recreate_transaction_id(booking))
            return WriteOutcome("recreated", new_id)
    finally:
        await graph.close()
    await maps.put(link.key, BookingMapRow(booking.id, event_id, booking.version, digest, row.transaction_id,
                                           row.state))
    return WriteOutcome("restored", event_id)


async def retry_restore(services: Services, message: RestoreEvent) -> WriteOutcome:
    """The booking queue's restore message (a restore that met a held lease)."""
    link = await _usable_link(services, message.key)
    if link is None:
        return WriteOutcome("no_link")
    return await restore_booking_event(services, link, message.booking_id, message.event_id)
