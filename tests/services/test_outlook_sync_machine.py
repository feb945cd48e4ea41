"""The Outlook → timum engine as a state machine over the Graph and timum twins.

Rules play the user in Outlook (create, move, delete, free/busy, cancel, series and their
exceptions, unchanged saves), create our own booking events, let days pass, and deliver sync
messages — duplicated, concurrent, full or not — with failures injected: Graph 429, timum 429
and 5xx, a crash at a chosen storage write or right after a timum write, lost delta state.
After every quiet point (sync until a run succeeds): timum's slots are exactly the blocking
events of the window, one per event, and a second sync writes nothing.

Profiles: ``ci`` (default; derandomized) and ``deep`` (``HYPOTHESIS_PROFILE=deep``).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Coroutine
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from shared.adapters.graph_memory import Recurrence
from shared.core.window import sync_window
from shared.domain import EventDraft, ProviderSettings, booking_transaction_id, slot_external_id
from shared.errors import Throttled, TransientError
from shared.messages import SYNC_QUEUE, SyncMessage
from shared.repos.links import ProviderSettingsRepository
from shared.repos.sync_state import BookingEventState, BookingMapRepository, BookingMapRow
from shared.storage.memory import MemoryQueue
from shared.sync.worker import run_sync
from tests.support.outlook_world import KEY, MAILBOX, NOW, PROVIDER, SimulatedCrash, TripwireStorage, World, make_world

settings.register_profile("ci", max_examples=50, stateful_step_count=30, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("deep", max_examples=1000, stateful_step_count=80, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])

T = TypeVar("T")
SHOW_AS = ["busy", "busy", "free", "tentative", "oof", "workingElsewhere", "unknown"]
EXPECTED_FAILURES = (SimulatedCrash, Throttled, TransientError)
_pick = st.integers(min_value=0, max_value=10_000)


class OutlookSyncMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.storage = TripwireStorage()
        self.w: World = self.run(make_world(self.storage, seed=3, page_size=2))
        self.timed: list[str] = []       # single timed events (movable)
        self.others: list[str] = []      # all-day events and series
        self.series: list[str] = []
        self.bookings = 0
        self.days_passed = 0
        self.tentative_blocks = True

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.loop.close()

    # --- set-up ---------------------------------------------------------------------------------
    @initialize(tentative_blocks=st.booleans())
    def provider_settings(self, tentative_blocks: bool) -> None:
        self.tentative_blocks = tentative_blocks
        self.run(ProviderSettingsRepository(self.storage).save(
            ProviderSettings(PROVIDER, tentative_blocks=tentative_blocks)))

    # --- the user in Outlook ------------------------------------------------------------------
    @rule(day=st.integers(-2, 40), hour=st.integers(0, 23), minutes=st.sampled_from([30, 60, 90]),
          show_as=st.sampled_from(SHOW_AS), private=st.booleans())
    def create(self, day: int, hour: int, minutes: int, show_as: str, private: bool) -> None:
        start = NOW.replace(hour=0) + timedelta(days=day, hours=hour)
        self.timed.append(self.w.add(subject=f"Termin {len(self.timed)}", start=start,
                                     end=start + timedelta(minutes=minutes), show_as=show_as,
                                     sensitivity="private" if private else "normal"))

    @rule(day=st.integers(-2, 40), length=st.integers(1, 3), show_as=st.sampled_from(SHOW_AS))
    def create_all_day(self, day: int, length: int, show_as: str) -> None:
        first = date(2026, 11, 23) + timedelta(days=day)
        self.others.append(self.w.add(subject="Urlaub", start=first, end=first + timedelta(days=length),
                                      all_day=True, show_as=show_as))

    @rule(day=st.integers(-3, 20), hour=st.integers(6, 18), weekly=st.booleans(), count=st.integers(2, 5))
    def create_series(self, day: int, hour: int, weekly: bool, count: int) -> None:
        start = NOW.replace(hour=0) + timedelta(days=day, hours=hour)
        rule_ = Recurrence("weekly" if weekly else "daily", count=count)
        series = self.w.add(subject="Serie", start=start, end=start + timedelta(hours=1), recurrence=rule_)
        self.others.append(series)
        self.series.append(series)

    @precondition(lambda self: self.timed)
    @rule(pick=_pick, hours=st.integers(-30, 30))
    def move(self, pick: int, hours: int) -> None:
        event = self._event(self.timed, pick)
        if event is not None:
            self.w.graph.edit_event(event.id, start=event.start + timedelta(hours=hours),
                                    end=event.end + timedelta(hours=hours))

    @precondition(lambda self: self.timed)
    @rule(pick=_pick)
    def move_beyond_the_horizon(self, pick: int) -> None:
        event = self._event(self.timed, pick)
        if event is not None:
            self.w.graph.edit_event(event.id, start=event.start + timedelta(days=800),
                                    end=event.end + timedelta(days=800))

    @precondition(lambda self: self.timed or self.others)
    @rule(pick=_pick)
    def delete(self, pick: int) -> None:
        ids = self.timed + self.others
        self.w.graph.user_delete(ids[pick % len(ids)])

    @precondition(lambda self: self.timed or self.others)
    @rule(pick=_pick, show_as=st.sampled_from(SHOW_AS))
    def change_show_as(self, pick: int, show_as: str) -> None:
        event = self._event(self.timed + self.others, pick)
        if event is not None:
            self.w.graph.edit_event(event.id, show_as=show_as)

    @precondition(lambda self: self.timed or self.others)
    @rule(pick=_pick)
    def cancel_meeting(self, pick: int) -> None:
        event = self._event(self.timed + self.others, pick)
        if event is not None:
            self.w.graph.cancel_meeting(event.id)

    @precondition(lambda self: self.timed or self.others)
    @rule(pick=_pick)
    def save_unchanged(self, pick: int) -> None:
        event = self._event(self.timed + self.others, pick)
        if event is not None:
            self.w.graph.edit_event(event.id)

    @precondition(lambda self: self.series)
    @rule(pick=_pick, index=st.integers(0, 4), hours=st.integers(-5, 5), drop=st.booleans())
    def change_one_occurrence(self, pick: int, index: int, hours: int, drop: bool) -> None:
        series = self.series[pick % len(self.series)]
        if series not in self.w.graph.events:
            return
        occurrences = self.w.graph.occurrence_ids(series, NOW - timedelta(days=10), NOW + timedelta(days=60))
        if not occurrences:
            return
        target = occurrences[index % len(occurrences)]
        if drop:
            self.w.graph.user_delete(target)
            return
        item = next(i for i in self.w.graph.calendar_view(MAILBOX, self.w.calendar, NOW - timedelta(days=10),
                                                          NOW + timedelta(days=60)) if i.id == target)
        self.w.graph.modify_occurrence(target, start=item.start + timedelta(hours=hours),
                                       end=item.end + timedelta(hours=hours))

    @rule(day=st.integers(0, 30), hour=st.integers(7, 18), in_map=st.booleans())
    def our_booking_event(self, day: int, hour: int, in_map: bool) -> None:
        self.bookings += 1
        booking_id = f"bk-{self.bookings}"
        start = NOW.replace(hour=0) + timedelta(days=day, hours=hour)
        draft = EventDraft(subject="Buchung", body_html="", start=start, end=start + timedelta(minutes=45),
                           time_zone="Europe/Berlin", booking_id=booking_id)
        transaction = booking_transaction_id(booking_id)
        event_id = self.run(self.w.graph.create_event(MAILBOX, self.w.calendar, draft, transaction_id=transaction))
        if in_map:
            self.run(BookingMapRepository(self.storage).put(KEY, BookingMapRow(
                booking_id, event_id, 1, "h", transaction, BookingEventState.ACTIVE)))

    @precondition(lambda self: self.days_passed < 3)
    @rule()
    def a_day_passes(self) -> None:
        self.days_passed += 1
        self.w.clock.advance(days=1)

    # --- messages and failures ------------------------------------------------------------------
    @rule(messages=st.lists(st.tuples(st.booleans(), st.sampled_from(["w1", "w2", "w3"])), min_size=1, max_size=4),
          concurrent=st.booleans())
    def deliver(self, messages: list[tuple[bool, str]], concurrent: bool) -> None:
        calls = [run_sync(self.w.services, SyncMessage(str(KEY), full=full), worker_id=worker)
                 for full, worker in messages]
        if concurrent:
            async def together() -> list[Any]:
                return await asyncio.gather(*calls, return_exceptions=True)

            results = self.run(together())
            assert not [r for r in results if isinstance(r, BaseException) and not isinstance(r, EXPECTED_FAILURES)]
        else:
            for call in calls:
                self.run(call)

    @rule()
    def graph_throttles(self) -> None:
        self.w.graph.fail_next(Throttled("429", retry_after=2.0), op="delta")
        try:
            self.run(self.w.sync())
        except Throttled as exc:
            assert exc.retry_after == 2.0
        else:
            raise AssertionError("a throttled delta call must surface as Throttled")

    @rule(op=st.sampled_from(["put_blocked_slot", "delete_blocked_slot", "list_blocked_slots"]),
          throttled=st.booleans(), full=st.booleans())
    def timum_fails(self, op: str, throttled: bool, full: bool) -> None:
        error = Throttled("timum 429", retry_after=1.0) if throttled else TransientError("timum 503")
        self.w.timum.fail_next(error, op=op)
        try:
            self.run(self.w.sync(full=full))
        except TransientError as exc:
            assert exc.retry_after is not None
        finally:
            self.w.timum.clear_failures()

    @rule(table=st.sampled_from(["eventmap", "links"]), after=st.integers(0, 4), full=st.booleans())
    def crash_at_a_storage_write(self, table: str, after: int, full: bool) -> None:
        self.storage.arm(table, after=after)
        try:
            self.run(self.w.sync(full=full))
        except SimulatedCrash:
            pass
        finally:
            self.storage.disarm()

    @rule(after=st.integers(0, 3))
    def crash_after_a_timum_write(self, after: int) -> None:
        self.w.timum.crash_after = after
        try:
            self.run(self.w.sync())
        except SimulatedCrash:
            pass
        finally:
            self.w.timum.clear_failures()

    @rule(day=st.integers(0, 20), where=st.sampled_from(["timum", "eventmap", "links"]), after=st.integers(0, 2),
          undo=st.sampled_from(["delete", "free", "move"]))
    def crash_while_writing_then_user_changes_it(self, day: int, where: str, after: int, undo: str) -> None:
        """The sharpest interleaving: a new slot is written, the run dies before its delta link is
        committed, and the user changes the event again before the next run."""
        start = NOW.replace(hour=10) + timedelta(days=day)
        event_id = self.w.add(subject="Neu", start=start, end=start + timedelta(hours=1))
        self.timed.append(event_id)
        if where == "timum":
            self.w.timum.crash_after = after
        else:
            self.storage.arm(where, after=after)
        try:
            self.run(self.w.sync())
        except SimulatedCrash:
            pass
        finally:
            self.storage.disarm()
            self.w.timum.clear_failures()
        if undo == "delete":
            self.w.graph.user_delete(event_id)
        elif undo == "free":
            self.w.graph.edit_event(event_id, show_as="free")
        else:
            far = start + timedelta(days=900)
            self.w.graph.edit_event(event_id, start=far, end=far + timedelta(hours=1))

    @rule()
    def graph_loses_delta_state(self) -> None:
        self.w.graph.lose_state()

    # --- quiet point ----------------------------------------------------------------------------
    @rule()
    def quiet_point(self) -> None:
        queue = self.storage.queue(SYNC_QUEUE)
        assert isinstance(queue, MemoryQueue)
        for raw in queue.drain():
            self.run(run_sync(self.w.services, SyncMessage.parse(json.loads(raw)), worker_id="requeued"))
        outcome = self.run(self.w.sync(worker="quiet"))
        assert outcome.status == "ok", outcome
        self._check_converged()
        writes = self.w.timum.writes()
        again = self.run(self.w.sync(worker="quiet"))
        assert (again.status, again.upserts, again.deletes) == ("ok", 0, 0)
        assert self.w.timum.writes() == writes, "a sync without changes wrote to timum"
        self._check_converged()
        assert self.w.graph.closed == self.w.provider.handed_out, "a Graph port was left open"

    def _check_converged(self) -> None:
        window = sync_window(self.w.clock(), past_days=1, future_days=365)
        expected: dict[str, tuple[datetime, datetime]] = {}
        for item in self.w.graph.calendar_view(MAILBOX, self.w.calendar, window.start, window.end):
            if item.transaction_id.startswith("timum-") or item.is_cancelled or item.end <= item.start:
                continue
            if item.show_as in ("free", "workingElsewhere") or (item.show_as == "tentative"
                                                                 and not self.tentative_blocks):
                continue
            expected[slot_external_id(KEY, item.id)] = (item.start.astimezone(UTC), item.end.astimezone(UTC))
        actual = {k: (s.start, s.end) for k, s in self.w.slots().items() if s.end > window.start}
        assert actual == expected
        rows = self.run(self.w.status_rows())
        assert {row.external_id for row in rows.values()} == set(expected)
        assert all(row.external_id == slot_external_id(KEY, event_id) for event_id, row in rows.items())

    def _event(self, ids: list[str], pick: int) -> Any:
        if not ids:
            return None
        return self.w.graph.events.get(ids[pick % len(ids)])


TestOutlookSyncMachine = OutlookSyncMachine.TestCase
_profile = os.environ.get("HYPOTHESIS_PROFILE", "ci")
TestOutlookSyncMachine.settings = settings.get_profile(_profile if _profile in ("ci", "deep") else "ci")
