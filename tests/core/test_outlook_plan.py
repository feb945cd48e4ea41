"""Every branch of the Outlook → timum planner, table-driven, plus its idempotence."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.core.outlook_plan import (
    FRESH_ROUND,
    MAX_TITLE,
    OUTLOOK_LABEL,
    PENDING_HASH,
    SLOT_ID_PREFIX,
    ConfirmEvent,
    DeleteBlock,
    ForgetEvent,
    PlanContext,
    StatusRow,
    UpsertBlock,
    apply_to_status,
    new_row_round,
    pending_row,
    plan_event,
    plan_page,
    plan_removed,
    reconcile,
    round_tag,
    settle_pending,
    slot_for,
    slot_hash,
    slot_title,
)
from shared.core.window import SyncWindow
from shared.domain import (
    BlockedSlot,
    DeltaPage,
    LinkKey,
    OutlookEvent,
    ProviderSettings,
    TitlePrivacy,
    booking_transaction_id,
    slot_external_id,
)

LINK = LinkKey("prov-1", "res-1")
WINDOW = SyncWindow(datetime(2026, 11, 22, tzinfo=UTC), datetime(2027, 11, 23, tzinfo=UTC))
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
BERLIN = ZoneInfo("Europe/Berlin")


def ctx(**provider: object) -> PlanContext:
    return PlanContext(LINK, WINDOW, ProviderSettings("prov-1", **provider),  # type: ignore[arg-type]
                       own_event_ids=frozenset({"own-by-map"}))


def ev(event_id: str = "AAMk/e1=", **fields: object) -> OutlookEvent:
    base: dict[str, object] = {"id": event_id, "start": T0, "end": T0 + HOUR, "subject": "Zahnarzt"}
    base.update(fields)
    return OutlookEvent(**base)  # type: ignore[arg-type]


def current_row(c: PlanContext, event: OutlookEvent) -> StatusRow:
    """The row we would hold after having written ``event`` as it is now."""
    slot = slot_for(c, event)
    return StatusRow(event.id, slot.external_id, slot_hash(slot), slot.start, slot.end)


def stale_row(event: OutlookEvent, *, end: datetime | None = None) -> StatusRow:
    return StatusRow(event.id, slot_external_id(LINK, event.id), "old-hash", T0 - HOUR, end or T0)


# (case, event, row: none | same | stale, provider settings, expected action kind)
EVENT_CASES = [
    ("busy, new", ev(), "none", {}, UpsertBlock),
    ("busy, unchanged: an etag bump or replay writes nothing", ev(), "same", {}, None),
    ("busy, moved", ev(), "stale", {}, UpsertBlock),
    ("out of office blocks", ev(show_as="oof"), "none", {}, UpsertBlock),
    ("unknown blocks (the safe side)", ev(show_as="unknown"), "none", {}, UpsertBlock),
    ("future showAs values block", ev(show_as="somethingNew"), "none", {}, UpsertBlock),
    ("free, new: nothing", ev(show_as="free"), "none", {}, None),
    ("free, held: unblock", ev(show_as="free"), "stale", {}, DeleteBlock),
    ("workingElsewhere does not block", ev(show_as="workingElsewhere"), "stale", {}, DeleteBlock),
    ("showAs compared without case", ev(show_as="FREE"), "stale", {}, DeleteBlock),
    ("tentative blocks by default", ev(show_as="tentative"), "none", {}, UpsertBlock),
    ("tentative, provider says free", ev(show_as="tentative"), "none", {"tentative_blocks": False}, None),
    ("tentative, provider says free, held", ev(show_as="tentative"), "stale", {"tentative_blocks": False},
     DeleteBlock),
    ("cancelled meeting, new", ev(is_cancelled=True), "none", {}, None),
    ("cancelled meeting, held", ev(is_cancelled=True), "stale", {}, DeleteBlock),
    ("series master, new: ignored", ev(type="seriesMaster"), "none", {}, None),
    ("single event turned into a series: its slot goes", ev(type="seriesMaster"), "stale", {}, DeleteBlock),
    ("occurrence is its own slot", ev("AAMk/e1=.occ1", type="occurrence", series_master_id="AAMk/e1="), "none",
     {}, UpsertBlock),
    ("exception is its own slot", ev("AAMk/e1=.occ2", type="exception", series_master_id="AAMk/e1="), "none",
     {}, UpsertBlock),
    ("our event by booking map", ev("own-by-map"), "none", {}, None),
    ("our event by booking map, held before the map knew it", ev("own-by-map"), "stale", {}, DeleteBlock),
    ("our event by transactionId", ev(transaction_id=booking_transaction_id("bk-1")), "none", {}, None),
    ("our event by extended property", ev(booking_id="bk-1"), "stale", {}, DeleteBlock),
    ("someone else's transactionId", ev(transaction_id="outlook-web-123"), "none", {}, UpsertBlock),
    ("zero length blocks nothing", ev(end=T0), "none", {}, None),
    ("zero length, held", ev(end=T0), "stale", {}, DeleteBlock),
    ("moved into the past, outside the window", ev(start=datetime(2026, 10, 1, tzinfo=UTC),
                                                  end=datetime(2026, 10, 1, 1, tzinfo=UTC)), "stale", {}, DeleteBlock),
    ("moved beyond the horizon", ev(start=datetime(2028, 1, 1, tzinfo=UTC), end=datetime(2028, 1, 1, 1, tzinfo=UTC)),
     "stale", {}, DeleteBlock),
    ("outside the window, never held", ev(start=datetime(2028, 1, 1, tzinfo=UTC),
                                          end=datetime(2028, 1, 1, 1, tzinfo=UTC)), "none", {}, None),
    ("overlapping the window start blocks", ev(start=datetime(2026, 11, 21, 23, tzinfo=UTC),
                                               end=datetime(2026, 11, 22, 1, tzinfo=UTC)), "none", {}, UpsertBlock),
    ("all-day blocks the whole day", ev(start=datetime(2026, 11, 25, tzinfo=BERLIN),
                                        end=datetime(2026, 11, 26, tzinfo=BERLIN), is_all_day=True), "none", {},
     UpsertBlock),
    ("title privacy change rewrites the slot", ev(), "same-with-other-title", {"title_privacy": TitlePrivacy.LABEL},
     UpsertBlock),
]


@pytest.mark.parametrize(("event", "row_kind", "provider", "expected"),
                         [case[1:] for case in EVENT_CASES], ids=[case[0] for case in EVENT_CASES])
def test_plan_event(event: OutlookEvent, row_kind: str, provider: dict[str, object],
                    expected: type | None) -> None:
    c = ctx(**provider)
    row = {"none": None, "same": current_row(c, event), "stale": stale_row(event),
           "same-with-other-title": current_row(ctx(), event)}[row_kind]
    action = plan_event(c, event, row)
    if expected is None:
        assert action is None
        return
    assert isinstance(action, expected)
    assert action.external_id == slot_external_id(LINK, event.id)
    assert action.external_id.startswith(SLOT_ID_PREFIX)
    if isinstance(action, UpsertBlock):
        assert action.event_id == event.id
        assert (action.slot.start, action.slot.end) == (event.start, event.end)
        assert action.slot.all_day is event.is_all_day
        assert action.slot.source == "outlook"
        assert action.hash == slot_hash(action.slot)
    if isinstance(action, DeleteBlock):
        assert row is not None and action.event_id == event.id


def test_all_day_slot_is_midnight_to_midnight_in_the_mailbox_zone() -> None:
    event = ev(start=datetime(2026, 11, 25, tzinfo=BERLIN), end=datetime(2026, 11, 27, tzinfo=BERLIN), is_all_day=True)
    action = plan_event(ctx(), event, None)
    assert isinstance(action, UpsertBlock)
    assert action.slot.all_day
    assert action.slot.start.astimezone(UTC) == datetime(2026, 11, 24, 23, tzinfo=UTC)
    assert action.slot.end - action.slot.start == timedelta(days=2)


TITLE_CASES = [
    (TitlePrivacy.NONE, ev(), ""),
    (TitlePrivacy.LABEL, ev(), OUTLOOK_LABEL),
    (TitlePrivacy.SUBJECT, ev(), "Zahnarzt"),
    (TitlePrivacy.SUBJECT, ev(subject="  Team \n Meeting  "), "Team Meeting"),
    (TitlePrivacy.SUBJECT, ev(subject=""), OUTLOOK_LABEL),
    (TitlePrivacy.SUBJECT, ev(sensitivity="private"), OUTLOOK_LABEL),
    (TitlePrivacy.SUBJECT, ev(sensitivity="confidential"), OUTLOOK_LABEL),
    (TitlePrivacy.SUBJECT, ev(sensitivity="personal"), "Zahnarzt"),
    (TitlePrivacy.LABEL, ev(sensitivity="private"), OUTLOOK_LABEL),
    (TitlePrivacy.NONE, ev(sensitivity="private"), ""),
]


@pytest.mark.parametrize(("privacy", "event", "title"), TITLE_CASES)
def test_titles_never_leak_private_subjects(privacy: TitlePrivacy, event: OutlookEvent, title: str) -> None:
    assert slot_title(event, privacy) == title
    action = plan_event(ctx(title_privacy=privacy), event, None)
    assert isinstance(action, UpsertBlock) and action.slot.title == title


def test_long_subjects_are_cut() -> None:
    assert len(slot_title(ev(subject="x" * 1000), TitlePrivacy.SUBJECT)) == MAX_TITLE


REMOVED_CASES = [
    ("never held: nothing", None, None),
    ("held in the window: delete", T0 + HOUR, DeleteBlock),
    ("slid out into the past: forget, keep the slot as history", datetime(2026, 11, 21, 10, tzinfo=UTC), ForgetEvent),
    ("ended exactly at the window start: history", WINDOW.start, ForgetEvent),
    ("still running at the window start: delete", WINDOW.start + timedelta(minutes=1), DeleteBlock),
]


@pytest.mark.parametrize(("slot_end", "expected"), [c[1:] for c in REMOVED_CASES], ids=[c[0] for c in REMOVED_CASES])
def test_plan_removed(slot_end: datetime | None, expected: type | None) -> None:
    event = ev()
    row = None if slot_end is None else stale_row(event, end=slot_end)
    action = plan_removed(ctx(), event.id, row)
    if expected is None:
        assert action is None
    else:
        assert isinstance(action, expected) and action.event_id == event.id


def test_page_with_duplicates_and_conflicting_removal() -> None:
    first, second = ev("a", subject="v1"), ev("a", subject="v2", start=T0 + HOUR, end=T0 + 2 * HOUR)
    held_b = stale_row(ev("b"))
    page = DeltaPage(events=[first, ev("b", show_as="free"), second], removed=["a", "c", "c"])
    actions = plan_page(ctx(), page, {"b": held_b})
    # 'a' twice: the later state wins, in its later place; its removal on the same page is
    # ignored; 'c' was never held.
    assert actions == [DeleteBlock(held_b.external_id, "b"),
                       UpsertBlock(slot_external_id(LINK, "a"), slot_for(ctx(), second), "a",
                                   slot_hash(slot_for(ctx(), second)))]


def test_same_page_twice_plans_nothing_the_second_time() -> None:
    c = ctx()
    status = {"gone": stale_row(ev("gone")), "moved": stale_row(ev("moved")),
              "old": stale_row(ev("old"), end=datetime(2026, 11, 1, tzinfo=UTC))}
    page = DeltaPage(events=[ev("new"), ev("moved"), ev("free", show_as="free")], removed=["gone", "old"])
    actions = plan_page(c, page, status)
    assert {type(a) for a in actions} == {UpsertBlock, DeleteBlock, ForgetEvent}
    after = apply_to_status(status, actions)
    assert set(after) == {"new", "moved"}
    assert plan_page(c, page, after) == []


def test_reconcile_after_a_full_round() -> None:
    c = ctx()
    kept, gone = current_row(c, ev("kept")), stale_row(ev("gone"))
    history = stale_row(ev("history"), end=datetime(2026, 11, 20, tzinfo=UTC))
    orphan = BlockedSlot(slot_external_id(LINK, "lost-row"), T0, T0 + HOUR)
    old_orphan = BlockedSlot(slot_external_id(LINK, "old"), T0 - timedelta(days=30), T0 - timedelta(days=30) + HOUR)
    foreign = BlockedSlot("ics-123", T0, T0 + HOUR, source="outlook")
    ics = BlockedSlot(slot_external_id(LINK, "ics"), T0, T0 + HOUR, source="ics")
    listed = [orphan, old_orphan, foreign, ics, BlockedSlot(kept.external_id, T0, T0 + HOUR)]
    actions = reconcile(c, {"kept"}, {"kept": kept, "gone": gone, "history": history}, listed)
    assert actions == [DeleteBlock(gone.external_id, "gone"), ForgetEvent("history"),
                       DeleteBlock(orphan.external_id, "")]
    assert reconcile(c, {"kept"}, apply_to_status({"kept": kept, "gone": gone, "history": history}, actions),
                     [s for s in listed if s.external_id != orphan.external_id]) == []


def test_settle_pending_rows() -> None:
    c = replace(ctx(), round_tag=round_tag("https://graph/delta?$deltatoken=1"))
    mine = c.round_tag

    def row(event_id: str, tag: str, *, start: datetime = T0, content_hash: str = "h") -> StatusRow:
        return StatusRow(event_id, slot_external_id(LINK, event_id), content_hash, start, start + HOUR, tag)

    pending = {
        "gone": row("gone", mine),                                  # this round's, not reported: delete
        "gone-unwritten": row("gone-unwritten", mine, content_hash=PENDING_HASH),
        "seen": row("seen", mine),                                  # this round's, reported: wait
        "old": row("old", mine, start=T0 - timedelta(days=9)),      # this round's, history: forget
        "committed": row("committed", FRESH_ROUND),                 # another round's: it committed
        "confirmed": row("confirmed", ""),
    }
    assert pending["gone"].pending and not pending["confirmed"].pending
    actions = settle_pending(c, {"seen", "committed"}, pending)
    assert actions == [ConfirmEvent("committed"), DeleteBlock(pending["gone"].external_id, "gone"),
                       DeleteBlock(pending["gone-unwritten"].external_id, "gone-unwritten"), ForgetEvent("old")]
    after = apply_to_status(pending, actions, mine)
    assert set(after) == {"seen", "committed", "confirmed"}
    assert not after["committed"].pending and after["seen"].pending
    assert settle_pending(c, {"seen"}, {k: v for k, v in after.items() if v.pending}) == []


def test_round_tags() -> None:
    assert round_tag("") == FRESH_ROUND
    assert round_tag("link-a") == round_tag("link-a") != round_tag("link-b")


def test_only_incremental_rounds_write_new_rows_pending() -> None:
    incremental = replace(ctx(), round_tag=round_tag("https://graph/delta?$deltatoken=1"))
    assert new_row_round(incremental) == incremental.round_tag
    fresh = replace(ctx(), round_tag=FRESH_ROUND)
    assert new_row_round(fresh) == ""
    upsert = plan_event(fresh, ev(), None)
    assert isinstance(upsert, UpsertBlock)
    assert not apply_to_status({}, [upsert], new_row_round(fresh))[upsert.event_id].pending


def test_new_rows_are_pending_under_the_round_and_updates_keep_their_state() -> None:
    c = ctx()
    event = ev()
    upsert = plan_event(c, event, None)
    assert isinstance(upsert, UpsertBlock)
    intent = pending_row(upsert, "r1")
    assert intent.pending and intent.content_hash == PENDING_HASH
    assert (intent.slot_start, intent.slot_end) == (event.start, event.end)
    assert plan_event(c, event, intent) == upsert  # an unanswered write is never taken as done
    written = apply_to_status({}, [upsert], "r1")[event.id]
    assert written.pending_round == "r1" and written.content_hash == upsert.hash
    confirmed = replace(written, pending_round="")
    moved = plan_event(c, replace(event, end=event.end + HOUR), confirmed)
    assert isinstance(moved, UpsertBlock)
    assert not apply_to_status({event.id: confirmed}, [moved], "r2")[event.id].pending


_ids = st.sampled_from(["a", "b", "c", "d", "own-by-map"])
_events = st.builds(
    lambda i, h, d, show, cancelled, kind: ev(i, start=T0 + timedelta(hours=h), end=T0 + timedelta(hours=h + d),
                                              show_as=show, is_cancelled=cancelled, type=kind),
    _ids, st.integers(-24 * 40, 24 * 400), st.integers(0, 30),
    st.sampled_from(["busy", "free", "tentative", "oof", "workingElsewhere"]), st.booleans(),
    st.sampled_from(["singleInstance", "occurrence", "seriesMaster"]))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.lists(_events, max_size=6), st.lists(_ids, max_size=3)), min_size=1, max_size=5),
       st.booleans())
def test_any_sequence_of_pages_is_idempotent(pages: list[tuple[list[OutlookEvent], list[str]]],
                                             tentative_blocks: bool) -> None:
    c = replace(ctx(), settings=ProviderSettings("prov-1", tentative_blocks=tentative_blocks))
    status: dict[str, StatusRow] = {}
    for events, removed in pages:
        page = DeltaPage(events=events, removed=removed)
        status = apply_to_status(status, plan_page(c, page, status))
        assert plan_page(c, page, status) == []
        assert "own-by-map" not in status
        for row in status.values():
            assert row.external_id == slot_external_id(LINK, row.event_id)
