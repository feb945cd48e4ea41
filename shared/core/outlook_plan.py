"""What one delta page of an Outlook calendar means for timum's blocked slots.

Pure: the caller passes what we last agreed on (one ``StatusRow`` per Outlook event that holds
a slot) and what Graph reports now (one ``DeltaPage``); the planner returns actions. The engine
(``shared.outlook.run``) performs them and then stores the new status rows, so the
same page planned again against the updated rows gives no action at all.

Actions:

* ``UpsertBlock`` — PUT the slot by its external id (idempotent in timum).
* ``DeleteBlock`` — delete the slot (an absent slot is not an error) and drop the status row.
* ``ForgetEvent`` — drop the status row, leave timum alone (the slot is history).
* ``ConfirmEvent`` — mark a pending status row as settled (status only).

Pending rows close the gap between a timum write and the commit of the round's delta link.
In an incremental round, a row for a *new* slot is written before its PUT and stays pending,
tagged with the round's start (``PlanContext.round_tag``), until a later round confirms it.
A fresh round writes no pending rows (``new_row_round``): its replay is a fresh round, whose
reconciliation against the slots timum lists already finds a slot that lost its row. A round that never
committed is replayed from the same start (the engine clears the stored delta link before a
fresh round, so a crashed fresh round is followed by another fresh round). Hence, at the end
of a round: a pending row with this round's tag that the round did not report belongs to an
event that no longer exists — created and deleted after the start, so Graph will never
mention it — and its slot goes; a pending row with another tag was written by a round that
committed after settling it, and is confirmed.

External ids are derived from link and event id (``slot_external_id``), never stored-then-read,
so a replay after a crash addresses the same slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from shared.core.hashing import content_hash
from shared.core.window import SyncWindow
from shared.domain import (
    MAIN_SLOT_PREFIX,
    BlockedSlot,
    BookingEventEdits,
    DeltaPage,
    LinkKey,
    OutlookEvent,
    ProviderSettings,
    TitlePrivacy,
    slot_external_id,
    slot_prefix,
    stable_id,
)

#: Content hash of a status row whose timum write was started but not answered (the slot may exist).
PENDING_HASH = ""
#: Round tag of fresh rounds (no delta link): they reconcile everything, so one tag serves all.
FRESH_ROUND = "fresh"
#: Title of a slot when the provider wants a label, or when the event must not show its subject.
OUTLOOK_LABEL = "Outlook"
#: Longest title we hand to timum; subjects can be long, a blocked slot needs only a hint.
MAX_TITLE = 200
#: Prefix of the transactionId on every event we create for a booking (``booking_transaction_id``).
OWN_TRANSACTION_PREFIX = "timum-"
#: Prefix of the slot ids of a resource's own calendar (``slot_external_id``; a block-only
#: calendar's are ``BLOCK_SLOT_PREFIX``); other prefixes belong to someone else.
SLOT_ID_PREFIX = MAIN_SLOT_PREFIX

#: Graph's free/busy statuses, each with its own blocking rule in ``ProviderSettings``.
SHOW_AS_STATUSES = ("free", "tentative", "busy", "oof", "workingElsewhere", "unknown")
_SHOW_AS = {status.lower(): status for status in SHOW_AS_STATUSES}
RULE_FIELDS = {"free": "free_blocks", "tentative": "tentative_blocks", "busy": "busy_blocks",
               "oof": "oof_blocks", "workingElsewhere": "working_elsewhere_blocks", "unknown": "unknown_blocks"}
_HIDDEN = frozenset({"private", "confidential"})
_SOURCE = "outlook"


@dataclass(frozen=True)
class StatusRow:
    """What we last wrote to timum for one Outlook event (or occurrence)."""

    event_id: str
    external_id: str
    content_hash: str
    slot_start: datetime
    slot_end: datetime
    #: tag of the round that created the row while it is unsettled ("" once confirmed)
    pending_round: str = ""

    @property
    def pending(self) -> bool:
        return bool(self.pending_round)


@dataclass(frozen=True)
class UpsertBlock:
    external_id: str
    slot: BlockedSlot
    event_id: str
    hash: str


@dataclass(frozen=True)
class DeleteBlock:
    external_id: str
    event_id: str  # "" for an orphan slot that has no status row


@dataclass(frozen=True)
class ForgetEvent:
    event_id: str


@dataclass(frozen=True)
class ConfirmEvent:
    event_id: str


Action = UpsertBlock | DeleteBlock | ForgetEvent | ConfirmEvent


@dataclass(frozen=True)
class PlanContext:
    link: LinkKey
    window: SyncWindow
    settings: ProviderSettings
    #: event ids of the Outlook events we wrote for timum bookings (the booking map)
    own_event_ids: frozenset[str] = frozenset()
    #: identity of the state this round started from (``round_tag``)
    round_tag: str = FRESH_ROUND
    #: slot source in timum (``SlotSource``): "outlook" for Graph links, "ics" for ICS imports
    source: str = _SOURCE


def round_tag(delta_link: str) -> str:
    """Tag of a round that starts from ``delta_link`` (``FRESH_ROUND`` without one)."""
    return stable_id("round", delta_link, length=16) if delta_link else FRESH_ROUND


def is_own_event(event: OutlookEvent, own_event_ids: frozenset[str]) -> bool:
    """Whether the event is one we created for a booking. Any one sign is enough:

    the booking map may lag behind the create (the row is written after Graph answered), delta
    cannot expand our extended property, but the transactionId travels with the event.
    """
    return (event.id in own_event_ids or bool(event.booking_id)
            or event.transaction_id.startswith(OWN_TRANSACTION_PREFIX))


def show_as_status(show_as: str) -> str:
    """Graph's ``showAs`` in its canonical spelling; anything we do not know counts as ``unknown``."""
    return _SHOW_AS.get(show_as.strip().lower(), "unknown")


def status_blocks(settings: ProviderSettings, status: str) -> bool:
    """The provider's rule for one canonical status (``SHOW_AS_STATUSES``)."""
    return bool(getattr(settings, RULE_FIELDS[status]))


def blocks_time(event: OutlookEvent, settings: ProviderSettings) -> bool:
    """Whether the event keeps the resource from taking bookings: the one place the provider's
    blocking rules apply (Graph sync, ICS import and the live conflict check all ask here)."""
    status = show_as_status(event.show_as)
    if event.is_all_day and status == "free" and settings.all_day_free_blocks:
        # Outlook makes all-day events free by default, which few users notice: a holiday
        # entered as an all-day event would otherwise leave the whole day bookable.
        return True
    # Unknown statuses (and any Graph may add later) follow the ``unknown`` rule, which blocks by
    # default: a missed busy event means a double booking, a spurious block only a lost slot.
    return status_blocks(settings, status)


def slot_title(event: OutlookEvent, privacy: TitlePrivacy) -> str:
    if privacy is TitlePrivacy.NONE:
        return ""
    if privacy is TitlePrivacy.LABEL or event.sensitivity.strip().lower() in _HIDDEN:
        # Private and confidential events never leave Outlook with their subject.
        return OUTLOOK_LABEL
    subject = " ".join(event.subject.split())
    return subject[:MAX_TITLE] if subject else OUTLOOK_LABEL


def slot_for(ctx: PlanContext, event: OutlookEvent) -> BlockedSlot:
    return BlockedSlot(external_id=slot_external_id(ctx.link, event.id), start=event.start, end=event.end,
                       all_day=event.is_all_day, title=slot_title(event, ctx.settings.title_privacy),
                       source=ctx.source)


def slot_hash(slot: BlockedSlot) -> str:
    return content_hash(slot)


def _unblock(row: StatusRow | None) -> Action | None:
    return None if row is None else DeleteBlock(row.external_id, row.event_id)


def plan_event(ctx: PlanContext, event: OutlookEvent, row: StatusRow | None) -> Action | None:
    """The action for one reported event, given its status row (None: we hold no slot for it)."""
    if event.type == "seriesMaster":
        # calendarView delivers each occurrence and exception as its own item; the master is
        # not a time of its own. A single event turned into a series keeps its id and becomes
        # the master, so a slot held under that id goes.
        return _unblock(row)
    if is_own_event(event, ctx.own_event_ids):
        # Our booking's own event: timum has the booking already; blocking it would echo.
        return _unblock(row)
    if event.is_cancelled:
        # The organiser cancelled the meeting; it stays in the calendar but blocks nothing.
        return _unblock(row)
    if not blocks_time(event, ctx.settings):
        # free / workingElsewhere (or tentative where the provider said tentative is free)
        return _unblock(row)
    if event.end <= event.start:
        # A zero-length event blocks no time; timum would refuse such a slot.
        return _unblock(row)
    if not ctx.window.overlaps(event.start, event.end):
        # Moved outside the mirrored window (Graph may still report it in the round).
        return _unblock(row)
    # All-day events arrive as midnight-to-midnight in the mailbox time zone and block whole days.
    slot = slot_for(ctx, event)
    digest = slot_hash(slot)
    if row is not None and row.content_hash == digest and row.external_id == slot.external_id:
        # Unchanged content (an ETag bump, a replay, a duplicate notification): nothing to write.
        return None
    return UpsertBlock(slot.external_id, slot, event.id, digest)


def plan_removed(ctx: PlanContext, event_id: str, row: StatusRow | None) -> Action | None:
    """The action for an ``@removed`` id: deleted, or moved out of the window."""
    if row is None:
        # We never held a slot (free, our own, outside the window) or it is gone already.
        return None
    if ctx.window.ended_before(row.slot_end):
        # The slot ended before the window starts: the event slid out of the window into the
        # past as days went by. Its slot is history in timum — forget the event, keep the slot.
        return ForgetEvent(event_id)
    return DeleteBlock(row.external_id, event_id)


def plan_page(ctx: PlanContext, page: DeltaPage, status: Mapping[str, StatusRow]) -> list[Action]:
    """Actions for one delta page; ``status`` must hold the rows of the page's events (others may be absent)."""
    latest: dict[str, OutlookEvent] = {}
    for event in page.events:
        # The same id twice on a page: the later item is the newer state.
        latest.pop(event.id, None)
        latest[event.id] = event
    actions: list[Action] = []
    for event in latest.values():
        action = plan_event(ctx, event, status.get(event.id))
        if action is not None:
            actions.append(action)
    for event_id in dict.fromkeys(page.removed):
        if event_id in latest:
            # Reported both ways on one page: the item carries the state; a stale removal must not
            # delete a slot the event still needs.
            continue
        action = plan_removed(ctx, event_id, status.get(event_id))
        if action is not None:
            actions.append(action)
    return actions


def _gone(ctx: PlanContext, row: StatusRow) -> Action:
    if ctx.window.ended_before(row.slot_end):
        return ForgetEvent(row.event_id)
    return DeleteBlock(row.external_id, row.event_id)


def reconcile(ctx: PlanContext, seen: Iterable[str], status: Mapping[str, StatusRow],
              timum_slots: Sequence[BlockedSlot] = ()) -> list[Action]:
    """After a full round: what to remove because Outlook no longer has it.

    ``seen`` are the ids the round reported, ``status`` the rows after the round's actions and
    ``timum_slots`` the slots timum holds for this resource (source ``outlook``), to catch slots
    that lost their status row. Slots that ended before the window are history and stay.
    """
    seen_ids = set(seen)
    actions: list[Action] = []
    for event_id in sorted(status):
        if event_id not in seen_ids:
            # The event is gone from the window: deleted while our delta state was lost, or moved away.
            actions.append(_gone(ctx, status[event_id]))
    known = {row.external_id for row in status.values()}
    for slot in sorted(timum_slots, key=lambda s: s.external_id):
        # An ICS link also owns its slots written under "outlook" before imports had a source of their own.
        if slot.source not in (ctx.source, _SOURCE) or slot.external_id in known or ctx.window.ended_before(slot.end):
            continue
        if not slot.external_id.startswith(slot_prefix(ctx.link)):
            continue  # not an id this link derives: someone else's, or another calendar's of this resource
        # An orphan: a slot of ours without a status row. No event claims it any more.
        actions.append(DeleteBlock(slot.external_id, ""))
    return actions


def settle_pending(ctx: PlanContext, seen: Iterable[str], pending: Mapping[str, StatusRow]) -> list[Action]:
    """After a round, before its commit: what the pending rows mean now (see the module docstring)."""
    seen_ids = set(seen)
    actions: list[Action] = []
    for event_id, row in sorted(pending.items()):
        if not row.pending:
            continue
        if row.pending_round != ctx.round_tag:
            # Written by a round that settled it and committed: it stands.
            actions.append(ConfirmEvent(event_id))
        elif event_id not in seen_ids:
            # Created after this round's start, written, then deleted before Graph told us: the
            # replayed round cannot report it, so nothing else would ever remove its slot.
            actions.append(_gone(ctx, row))
    return actions


def apply_to_status(status: Mapping[str, StatusRow], actions: Iterable[Action],
                    round_tag: str = FRESH_ROUND) -> dict[str, StatusRow]:
    """The status rows after ``actions`` succeeded (what the engine stores).

    A row for a new slot is pending under ``round_tag``; an updated row keeps its state.
    """
    out = dict(status)
    for action in actions:
        if isinstance(action, UpsertBlock):
            before = out.get(action.event_id)
            out[action.event_id] = StatusRow(action.event_id, action.external_id, action.hash, action.slot.start,
                                             action.slot.end, round_tag if before is None else before.pending_round)
        elif isinstance(action, ConfirmEvent):
            row = out.get(action.event_id)
            if row is not None:
                out[action.event_id] = replace(row, pending_round="")
        elif action.event_id:
            out.pop(action.event_id, None)
    return out


def new_row_round(ctx: PlanContext) -> str:
    """``pending_round`` of the status row of a slot created in this round; "" means the row is
    written settled, after the PUT, with no pending row before it.

    An incremental round tags it with the round (see the module docstring). A fresh round needs
    no pending row: one that dies is followed by another fresh round (the engine clears the delta
    link first), and that round reconciles against the slots timum lists — a slot whose row was
    never written is an orphan there and goes, or, if its event is still reported, is written
    again under the same external id. That saves two of the three row writes of every new slot
    of a first sync (intent, then result, then the next round's confirmation).
    """
    return "" if ctx.round_tag == FRESH_ROUND else ctx.round_tag


def pending_row(action: UpsertBlock, round_tag: str) -> StatusRow:
    """The row recorded before a new slot is written: the slot may exist from here on."""
    return StatusRow(action.event_id, action.external_id, PENDING_HASH, action.slot.start, action.slot.end,
                     round_tag)


# --- Outlook edits of the events our bookings own ---------------------------------------------------

@dataclass(frozen=True)
class ExpectedBookingEvent:
    """What the event of a booking looks like as we last wrote it (or would write it now)."""

    booking_id: str
    fingerprint: str      # ``visible_fingerprint`` of the draft


@dataclass(frozen=True)
class RestoreBookingEvent:
    """Write the booking's event back (``deleted``: create it again)."""

    event_id: str
    booking_id: str
    deleted: bool = False
    fingerprint: str = ""  # of what Outlook shows now (a guard against restoring the same sight twice)


@dataclass(frozen=True)
class ReportBookingEventEdit:
    """Leave Outlook as it is and tell timum that the booking's event was changed or deleted."""

    event_id: str
    booking_id: str
    deleted: bool = False
    fingerprint: str = ""  # of what Outlook shows now (the report's identity: one per distinct edit)


BookingEventAction = RestoreBookingEvent | ReportBookingEventEdit


def visible_fingerprint(subject: str, start: datetime, end: datetime, show_as: str) -> str:
    """What a person can change about a booking's event and delta reports back: subject, times
    and availability. Equal fingerprints mean the event is as we wrote it — our own write coming
    back through delta (no echo loop), or a change that touched nothing visible."""
    view = [subject[:255], start.timestamp(), end.timestamp(), show_as.lower()]
    return stable_id(*(str(v) for v in view), length=32)


def plan_booking_event_edits(page: DeltaPage, expected: Mapping[str, ExpectedBookingEvent],
                             policy: BookingEventEdits) -> list[BookingEventAction]:
    """Booking events that someone edited or deleted in Outlook, and what to do about each.

    ``expected`` names only the events of bookings that are still to be in Outlook (confirmed,
    or cancelled and kept as marked): an event reported for another booking is not ours to guard.
    """
    actions: list[BookingEventAction] = []

    def act(event_id: str, booking_id: str, deleted: bool, fingerprint: str) -> None:
        if policy is BookingEventEdits.REPORT:
            actions.append(ReportBookingEventEdit(event_id, booking_id, deleted, fingerprint))
        else:
            actions.append(RestoreBookingEvent(event_id, booking_id, deleted, fingerprint))

    for event in page.events:
        want = expected.get(event.id)
        if want is None:
            continue
        if event.is_cancelled:
            # Deleted by its organiser but still listed: as good as deleted.
            act(event.id, want.booking_id, True, "cancelled")
            continue
        seen = visible_fingerprint(event.subject, event.start, event.end, event.show_as)
        if seen != want.fingerprint:
            act(event.id, want.booking_id, False, seen)
    for event_id in page.removed:
        want = expected.get(event_id)
        if want is not None:
            # Deleted, or moved out of the window — both take the booking's time away from Outlook.
            act(event_id, want.booking_id, True, "removed")
    return actions
