"""Everything the Graph stand-in knows, behind one lock: mailboxes and their calendars, shares,
events (series with exceptions and deleted occurrences), delta sync states, subscriptions, the
outbox of notifications, delivery records, fault rules and published calendars.

The REST layer, the Outlook UI, the control API and tests all change the world through the
methods here, so every change is seen the same way by calendar views, delta rounds and
subscriptions. Methods are synchronous and thread-safe: tests call them from their own thread
while the server runs on another.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from devtools.sandbox.directory import Directory, SandboxUser
from devtools.sandbox.graph import recurrence as rec
from devtools.sandbox.graph.model import (
    FAULT_KINDS,
    OVERRIDABLE,
    Behaviour,
    Calendar,
    Delivery,
    Event,
    FaultRule,
    GraphError,
    Instance,
    Override,
    Share,
    Subscription,
    default_id,
    immutable_id,
    parse_event_id,
)
from devtools.sandbox.graph.timezones import UnknownTimeZone, from_local, to_local, zone

SHOW_AS = ("free", "tentative", "busy", "oof", "workingElsewhere", "unknown")
SENSITIVITY = ("normal", "personal", "private", "confidential")
IMPORTANCE = ("low", "normal", "high")
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")
DEFAULT_CALENDAR_NAME = "Kalender"


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(18).replace("-", "A").replace("_", "B") + "AAA="


@dataclass(frozen=True)
class EventIds:
    """Both id formats of an event (or of one occurrence of a series)."""

    id: str
    immutable_id: str
    key: str
    occurrence: str | None = None

    def occurrence_id(self, original_date: date | str, *, immutable: bool = True, calendar_id: str = "") -> str:
        day = original_date if isinstance(original_date, str) else original_date.isoformat()
        return immutable_id(self.key, day) if immutable else default_id(calendar_id, self.key, day)


@dataclass
class SyncState:
    token: str
    kind: str                                     # skip | delta
    created: float
    owner_id: str
    calendar_id: str
    scope: str                                    # request path up to calendarView, for the links
    start: datetime
    end: datetime
    baseline: dict[str, tuple[str, str]]          # instance key → (changeKey, id as sent)
    remaining: list[tuple[str, str]] = field(default_factory=list)   # (upsert, key) | (removed, sent id)
    empty_served: bool = False
    incremental: bool = False                     # a round that followed a delta link


@dataclass
class DeltaPage:
    instances: list[Instance]
    removed: list[str]
    next_token: str | None
    delta_token: str | None


@dataclass
class OutboxItem:
    url: str
    payload: dict[str, Any]
    kind: str                                     # change | lifecycle
    subscription_id: str
    change_type: str


@dataclass
class Publication:
    token: str
    calendar_id: str
    detail: str                                   # availability | limited | full
    created: datetime


class GraphState:
    def __init__(self, directory: Directory, behaviour: Behaviour | None = None, *, seed: int | None = None) -> None:
        import random

        self.directory = directory
        self.behaviour = behaviour or Behaviour()
        self.rng = random.Random(seed)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self.calendars: dict[str, Calendar] = {}
        self._own: dict[str, list[str]] = {}
        self.shares: dict[tuple[str, str], Share] = {}
        self.events: dict[str, Event] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.sync_states: OrderedDict[str, SyncState] = OrderedDict()
        self.outbox: list[OutboxItem] = []
        self.deliveries: deque[Delivery] = deque(maxlen=2000)
        self._delivery_seq = 0
        self.faults: list[FaultRule] = []
        self._fault_seq = 0
        self.publications: dict[str, Publication] = {}
        self.inflight: dict[tuple[str, str], int] = {}
        #: called (without arguments) whenever the outbox gains items; set by the dispatcher
        self.wake: Callable[[], None] | None = None
        #: called when slow/timeout faults should let their held requests go
        self.release_hook: Callable[[], None] | None = None

    # --- mailboxes and calendars ---------------------------------------------------------
    def user(self, id_or_upn: str) -> SandboxUser:
        user = self.directory.user(id_or_upn)
        if user is None:
            raise KeyError(f"unknown user {id_or_upn!r}")
        self._ensure_mailbox(user)
        return user

    def _ensure_mailbox(self, user: SandboxUser) -> None:
        with self._lock:
            if user.id not in self._own:
                cal = Calendar(_new_id("AAMkADcal"), user.id, DEFAULT_CALENDAR_NAME, is_default=True)
                self.calendars[cal.id] = cal
                self._own[user.id] = [cal.id]

    def own_calendars(self, user_id: str) -> list[Calendar]:
        user = self.user(user_id)
        with self._lock:
            return [self.calendars[c] for c in self._own[user.id]]

    def default_calendar(self, user_id: str) -> Calendar:
        return next(c for c in self.own_calendars(user_id) if c.is_default)

    def shared_with(self, user_id: str, *, accepted_only: bool = True) -> list[tuple[Calendar, Share]]:
        user = self.user(user_id)
        with self._lock:
            return [(self.calendars[s.calendar_id], s) for s in self.shares.values()
                    if s.user_id == user.id and (s.accepted or not accepted_only) and s.calendar_id in self.calendars]

    def share_of(self, calendar_id: str, user_id: str) -> Share | None:
        with self._lock:
            return self.shares.get((calendar_id, user_id))

    def calendar(self, calendar_id: str) -> Calendar:
        with self._lock:
            cal = self.calendars.get(calendar_id)
            if cal is None:
                raise KeyError(f"unknown calendar {calendar_id!r}")
            return cal

    def create_calendar(self, user_id: str, name: str, *, color: str = "auto", hex_color: str = "") -> Calendar:
        user = self.user(user_id)
        name = name.strip()
        if not name:
            raise ValueError("a calendar needs a name")
        with self._lock:
            if any(self.calendars[c].name.lower() == name.lower() for c in self._own[user.id]):
                raise ValueError(f"a calendar named {name!r} already exists")
            cal = Calendar(_new_id("AAMkADcal"), user.id, name, color=color, hex_color=hex_color)
            self.calendars[cal.id] = cal
            self._own[user.id].append(cal.id)
            return cal

    def share_calendar(self, calendar_id: str, with_user: str, *, can_edit: bool = True,
                       accept: bool = False) -> Share:
        """Share a calendar (Outlook's "Freigeben"); the recipient sees it once accepted."""
        sharee = self.user(with_user)
        with self._lock:
            cal = self.calendar(calendar_id)
            if cal.owner_id == sharee.id:
                raise ValueError("a calendar cannot be shared with its owner")
            share = Share(cal.id, sharee.id, can_edit=can_edit, accepted=accept)
            old = self.shares.get((cal.id, sharee.id))
            if old is not None and old.accepted:
                share.accepted = True
            self.shares[(cal.id, sharee.id)] = share
            return share

    def accept_share(self, calendar_id: str, user_id: str) -> Share:
        user = self.user(user_id)
        with self._lock:
            share = self.shares.get((calendar_id, user.id))
            if share is None:
                raise KeyError("no such invitation")
            share.accepted = True
            return share

    def unshare_calendar(self, calendar_id: str, user_id: str) -> None:
        user = self.user(user_id)
        with self._lock:
            self.shares.pop((calendar_id, user.id), None)

    # --- events: look-up ------------------------------------------------------------------
    def resolve(self, ext_id: str) -> tuple[Event, str | None]:
        """The event (and occurrence date) behind an id of either format; KeyError if gone."""
        parsed = parse_event_id(ext_id)
        with self._lock:
            if parsed is None or parsed.key not in self.events:
                raise KeyError(ext_id)
            ev = self.events[parsed.key]
            # A default id carries the folder it was minted in: after a move it no longer resolves.
            if parsed.calendar_id is not None and parsed.calendar_id != ev.calendar_id:
                raise KeyError(ext_id)
            if parsed.occurrence is not None:
                if ev.recurrence is None or parsed.occurrence in ev.cancelled:
                    raise KeyError(ext_id)
                if not self._is_occurrence_date(ev, parsed.occurrence):
                    raise KeyError(ext_id)
            return ev, parsed.occurrence

    def _is_occurrence_date(self, ev: Event, day: str) -> bool:
        assert ev.recurrence is not None
        target = date.fromisoformat(day)
        return any(d == target for d in rec.occurrence_dates(ev.recurrence, target))

    def ids(self, ev: Event, occurrence: str | None = None) -> EventIds:
        return EventIds(default_id(ev.calendar_id, ev.key, occurrence), immutable_id(ev.key, occurrence),
                        ev.key, occurrence)

    def owner_zone(self, ev: Event) -> str:
        cal = self.calendars[ev.calendar_id]
        user = self.directory.user(cal.owner_id)
        return user.time_zone if user else "UTC"

    def find_by_transaction(self, owner_id: str, transaction_id: str) -> Event | None:
        with self._lock:
            for ev in self.events.values():
                if ev.transaction_id == transaction_id and self.calendars[ev.calendar_id].owner_id == owner_id:
                    return ev
            return None

    # --- events: expansion ----------------------------------------------------------------
    def _utc(self, ev: Event, wall: datetime, tz: str) -> datetime:
        # All-day events float: they cover the owner's local days wherever the viewer is.
        return from_local(wall, self.owner_zone(ev) if ev.is_all_day else tz)

    def instance(self, ev: Event, occurrence: str | None) -> Instance:
        data = {f: getattr(ev, f) for f in ("subject", "body", "body_type", "start_local", "end_local", "show_as",
                                             "categories", "location", "is_cancelled", "importance")}
        if occurrence is None:
            kind = "seriesMaster" if ev.recurrence else "singleInstance"
            return Instance(ev, None, kind, data, self._utc(ev, ev.start_local, ev.tz),
                            self._utc(ev, ev.end_local, ev.end_tz))
        day = date.fromisoformat(occurrence)
        start = datetime.combine(day, ev.start_local.time())
        data["start_local"] = start
        data["end_local"] = start + (ev.end_local - ev.start_local)
        original = self._utc(ev, start, ev.tz)
        kind = "occurrence"
        override = ev.exceptions.get(occurrence)
        if override is not None:
            data.update(override.fields)
            kind = "exception"
        return Instance(ev, occurrence, kind, data, self._utc(ev, data["start_local"], ev.tz),
                        self._utc(ev, data["end_local"], ev.end_tz), original)

    def _series_instances(self, ev: Event, until: datetime) -> Iterable[Instance]:
        assert ev.recurrence is not None
        horizon = (to_local(until, self.owner_zone(ev) if ev.is_all_day else ev.tz) + timedelta(days=1)).date()
        seen: set[str] = set()
        for day in rec.occurrence_dates(ev.recurrence, horizon):
            iso = day.isoformat()
            seen.add(iso)
            if iso not in ev.cancelled:
                yield self.instance(ev, iso)
        # Exceptions moved far from their original date are still part of the view.
        for iso in ev.exceptions:
            if iso not in seen and iso not in ev.cancelled:
                yield self.instance(ev, iso)

    def view(self, calendar_id: str, start: datetime, end: datetime, *,
             event_keys: Iterable[str] | None = None) -> list[Instance]:
        """calendarView: single events, occurrences and exceptions overlapping [start, end).

        ``event_keys`` limits it to those events (the same answer for them, without expanding the
        whole calendar: a delta page needs the current state of its own items only)."""
        with self._lock:
            out: list[Instance] = []
            pool = (self.events.values() if event_keys is None
                    else [self.events[k] for k in dict.fromkeys(event_keys) if k in self.events])
            for ev in pool:
                if ev.calendar_id != calendar_id:
                    continue
                candidates = self._series_instances(ev, end) if ev.recurrence else [self.instance(ev, None)]
                for inst in candidates:
                    if inst.start_utc < end and (inst.end_utc > start or (inst.end_utc == inst.start_utc == start)):
                        out.append(inst)
            out.sort(key=lambda i: (i.start_utc, i.event.key, i.occurrence or ""))
            return out

    def instances_of(self, ev: Event, start: datetime, end: datetime) -> list[Instance]:
        with self._lock:
            if ev.recurrence is None:
                return []
            return [i for i in self._series_instances(ev, end) if i.start_utc < end and i.end_utc > start]

    def calendar_events(self, calendar_id: str) -> list[Event]:
        with self._lock:
            return sorted((e for e in self.events.values() if e.calendar_id == calendar_id),
                          key=lambda e: (e.created, e.key))

    # --- events: validation ---------------------------------------------------------------
    def _check(self, ev: Event) -> None:
        try:
            zone(ev.tz)
            zone(ev.end_tz)
        except UnknownTimeZone as exc:
            raise GraphError(400, "TimeZoneNotSupportedException",
                             f"A valid TimeZone value must be specified. The following TimeZone value is not "
                             f"supported: '{exc.args[0]}'.") from exc
        if ev.show_as not in SHOW_AS:
            raise GraphError(400, "RequestBodyRead", f"Requested value '{ev.show_as}' was not found.")
        if ev.sensitivity not in SENSITIVITY:
            raise GraphError(400, "RequestBodyRead", f"Requested value '{ev.sensitivity}' was not found.")
        if ev.importance not in IMPORTANCE:
            raise GraphError(400, "RequestBodyRead", f"Requested value '{ev.importance}' was not found.")
        if self._utc(ev, ev.end_local, ev.end_tz) < self._utc(ev, ev.start_local, ev.tz):
            raise GraphError(400, "ErrorInvalidRequest", "The end time of the event is before its start time.")
        if ev.is_all_day:
            midnight = datetime.min.time()
            if ev.start_local.time() != midnight or ev.end_local.time() != midnight or ev.end_local <= ev.start_local:
                raise GraphError(400, "ErrorInvalidRequest",
                                 "Your request can't be completed. If isAllDay is set to true, start and end must be "
                                 "at midnight and at least one day apart.")
        if ev.recurrence is not None:
            if not ev.recurrence["range"]["recurrenceTimeZone"]:
                ev.recurrence["range"]["recurrenceTimeZone"] = ev.tz
            first = date.fromisoformat(ev.recurrence["range"]["startDate"])
            if next(iter(rec.occurrence_dates(ev.recurrence, first + timedelta(days=800))), None) is None:
                raise GraphError(400, "ErrorInvalidRequest", "The recurrence pattern yields no occurrence.")

    # --- events: changes (all go through here) ------------------------------------------
    def add_event(self, calendar_id: str, fields: dict[str, Any]) -> Event:
        with self._lock:
            cal = self.calendar(calendar_id)
            now = datetime.now(UTC)
            key = uuid.uuid4().hex[:20]
            ev = Event(key=key, calendar_id=cal.id, subject=fields.get("subject", ""),
                       start_local=fields["start_local"], end_local=fields["end_local"], tz=fields["tz"],
                       end_tz=fields.get("end_tz", fields["tz"]), created=now, last_modified=now,
                       ical_uid="040000008200E00074C5B7101A82E008" + uuid.uuid4().hex.upper())
            self._apply(ev, fields)
            self._align_series_start(ev)
            self._check(ev)
            self.events[key] = ev
            self._notify(ev.calendar_id, ev, "created")
            return ev

    def _apply(self, ev: Event, fields: dict[str, Any]) -> None:
        for name, value in fields.items():
            if name == "ext_props":
                for pid, pval in value:
                    ev.ext_props[pid.lower()] = (pid, pval)
            elif name != "key":
                setattr(ev, name, value)

    def _align_series_start(self, ev: Event) -> None:
        if ev.recurrence is None:
            return
        first = date.fromisoformat(ev.recurrence["range"]["startDate"])
        dates = list(rec.occurrence_dates(ev.recurrence, first + timedelta(days=800)))
        if dates and dates[0] != ev.start_local.date():
            shift = datetime.combine(dates[0], ev.start_local.time()) - ev.start_local
            ev.start_local += shift
            ev.end_local += shift

    def update_fields(self, ev: Event, fields: dict[str, Any]) -> Event:
        with self._lock:
            snapshot = {k: getattr(ev, k) for k in ev.__dataclass_fields__ if k not in ("exceptions", "cancelled")}
            snapshot["ext_props"] = dict(ev.ext_props)
            series_shape = ("start_local", "end_local", "tz", "end_tz", "recurrence", "is_all_day")
            reshaped = any(k in fields and fields[k] != getattr(ev, k) for k in series_shape)
            self._apply(ev, fields)
            self._align_series_start(ev)
            try:
                self._check(ev)
            except GraphError:
                ext = snapshot.pop("ext_props")
                for k, v in snapshot.items():
                    setattr(ev, k, v)
                ev.ext_props = ext
                raise
            if reshaped and ev.recurrence is not None:
                # Changing a series' times or pattern discards its exceptions, as Outlook warns.
                ev.exceptions.clear()
                ev.cancelled.clear()
            self._touch(ev)
            self._notify(ev.calendar_id, ev, "updated")
            return ev

    def update_occurrence(self, ev: Event, occurrence: str, fields: dict[str, Any]) -> Instance:
        with self._lock:
            allowed = {k: v for k, v in fields.items() if k in OVERRIDABLE}
            now = datetime.now(UTC)
            override = ev.exceptions.get(occurrence)
            if override is None:
                override = Override({}, now, now)
                ev.exceptions[occurrence] = override
            else:
                override.version += 1
                override.last_modified = now
            override.fields.update(allowed)
            inst = self.instance(ev, occurrence)
            if inst.end_utc < inst.start_utc:
                del ev.exceptions[occurrence]
                raise GraphError(400, "ErrorInvalidRequest", "The end time of the event is before its start time.")
            self._touch(ev, bump=False)
            self._notify(ev.calendar_id, ev, "updated")
            return inst

    def cancel_occurrence_of(self, ev: Event, occurrence: str) -> None:
        with self._lock:
            ev.cancelled.add(occurrence)
            ev.exceptions.pop(occurrence, None)
            self._touch(ev, bump=False)
            self._notify(ev.calendar_id, ev, "updated")

    def remove_event(self, ev: Event) -> None:
        with self._lock:
            self.events.pop(ev.key, None)
            self._notify(ev.calendar_id, ev, "deleted")

    def relocate(self, ev: Event, calendar_id: str) -> Event:
        with self._lock:
            target = self.calendar(calendar_id)
            if target.id == ev.calendar_id:
                return ev
            old = ev.calendar_id
            self._notify(old, ev, "deleted")
            ev.calendar_id = target.id
            self._touch(ev)
            self._notify(target.id, ev, "created")
            return ev

    def _touch(self, ev: Event, *, bump: bool = True) -> None:
        # Occurrence edits leave the series' own changeKey alone, so untouched occurrences are not resent.
        if bump:
            ev.version += 1
        ev.last_modified = datetime.now(UTC)

    # --- events: Python API for tests and the UI -----------------------------------------
    def _fields_from_python(self, user: SandboxUser, *, start: date | datetime | None = None,
                            end: date | datetime | None = None, all_day: bool | None = None,
                            time_zone: str | None = None, **kw: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        tz = time_zone or user.time_zone
        for name, value in (("start_local", start), ("end_local", end)):
            if value is None:
                continue
            if isinstance(value, datetime):
                if value.tzinfo is not None:
                    value = to_local(value, tz)
            else:
                value = datetime.combine(value, datetime.min.time())
            fields[name] = value
            fields["tz" if name == "start_local" else "end_tz"] = tz
        if all_day is not None:
            fields["is_all_day"] = all_day
        mapping = {"subject": "subject", "body": "body", "show_as": "show_as", "sensitivity": "sensitivity",
                   "importance": "importance", "location": "location", "is_cancelled": "is_cancelled",
                   "transaction_id": "transaction_id"}
        for k, v in kw.items():
            if k in mapping:
                fields[mapping[k]] = v
            elif k == "categories":
                fields["categories"] = list(v)
            elif k == "recurrence":
                fields["recurrence"] = rec.normalise(v) if v is not None else None
            elif k == "extended_properties":
                fields["ext_props"] = list((v or {}).items())
            else:
                raise TypeError(f"unknown event field {k!r}")
        return fields

    def create_event(self, user: str, subject: str, start: date | datetime, end: date | datetime, *,
                     calendar_id: str | None = None, all_day: bool = False, time_zone: str | None = None,
                     **kw: Any) -> EventIds:
        """Create an event as the user would in Outlook. ``start``/``end``: aware datetimes, or
        dates for all-day events. ``recurrence``: Graph's patternedRecurrence dict."""
        owner = self.user(user)
        cal = self.calendar(calendar_id) if calendar_id else self.default_calendar(owner.id)
        fields = self._fields_from_python(owner, start=start, end=end, all_day=all_day, time_zone=time_zone,
                                          subject=subject, **kw)
        try:
            ev = self.add_event(cal.id, fields)
        except GraphError as exc:
            raise ValueError(exc.message) from exc
        return self.ids(ev)

    def update_event(self, event_id: str, **changes: Any) -> EventIds:
        """Change an event (or one occurrence, given an occurrence id) as the user would."""
        ev, occ = self.resolve(event_id)
        owner = self.user(self.calendars[ev.calendar_id].owner_id)
        fields = self._fields_from_python(owner, **changes)
        try:
            if occ is not None:
                self.update_occurrence(ev, occ, fields)
            else:
                self.update_fields(ev, fields)
        except GraphError as exc:
            raise ValueError(exc.message) from exc
        return self.ids(ev, occ)

    def move_event(self, event_id: str, start: date | datetime, end: date | datetime) -> EventIds:
        return self.update_event(event_id, start=start, end=end)

    def move_event_to_calendar(self, event_id: str, calendar_id: str) -> EventIds:
        ev, occ = self.resolve(event_id)
        if occ is not None:
            raise ValueError("an occurrence cannot move on its own; move the series")
        return self.ids(self.relocate(ev, calendar_id))

    def delete_event(self, event_id: str) -> None:
        """Delete an event; an occurrence id deletes just that occurrence."""
        ev, occ = self.resolve(event_id)
        if occ is not None:
            self.cancel_occurrence_of(ev, occ)
        else:
            self.remove_event(ev)

    def cancel_occurrence(self, series_id: str, original_date: date) -> None:
        ev, _ = self.resolve(series_id)
        if ev.recurrence is None or not self._is_occurrence_date(ev, original_date.isoformat()):
            raise ValueError("no such occurrence")
        self.cancel_occurrence_of(ev, original_date.isoformat())

    def modify_occurrence(self, series_id: str, original_date: date, **changes: Any) -> EventIds:
        ev, _ = self.resolve(series_id)
        if ev.recurrence is None or not self._is_occurrence_date(ev, original_date.isoformat()):
            raise ValueError("no such occurrence")
        return self.update_event(immutable_id(ev.key, original_date.isoformat()), **changes)

    def event(self, event_id: str) -> Event:
        return self.resolve(event_id)[0]

    # --- delta -----------------------------------------------------------------------------
    def _store_state(self, state: SyncState) -> str:
        self.sync_states[state.token] = state
        while len(self.sync_states) > self.behaviour.max_sync_states:
            self.sync_states.popitem(last=False)
        return state.token

    def sync_state(self, token: str, kind: str) -> SyncState | None:
        with self._lock:
            state = self.sync_states.get(token)
            if state is None or state.kind != kind:
                return None
            max_age = self.behaviour.delta_token_max_age
            if max_age is not None and time.time() - state.created > max_age:
                del self.sync_states[token]
                return None
            return state

    def begin_round(self, *, owner_id: str, calendar_id: str, scope: str, start: datetime, end: datetime,
                    previous: SyncState | None, immutable: bool, id_for: Callable[[Instance], str]) -> SyncState:
        """Diff the window against what the client was last sent; return the round's first state."""
        with self._lock:
            current = {i.key: i for i in self.view(calendar_id, start, end)}
            before = previous.baseline if previous else {}
            items: list[tuple[str, str]] = []
            for key, inst in current.items():
                seen = before.get(key)
                if seen is None or seen[0] != inst.change_key:
                    items.append(("upsert", key))
            for key, (_, sent) in before.items():
                if key not in current:
                    items.append(("removed", sent))
            unchanged = [k for k in current if k in before and before[k][0] == current[k].change_key]
            if previous is not None and unchanged and self.rng.random() < self.behaviour.replay_probability:
                # Delta may replay a change the client already has.
                items.append(("upsert", self.rng.choice(unchanged)))
            baseline = {k: (i.change_key, id_for(i)) for k, i in current.items()}
            return SyncState(token="", kind="skip", created=time.time(), owner_id=owner_id, calendar_id=calendar_id,
                             scope=scope, start=start, end=end, baseline=baseline, remaining=items,
                             incremental=previous is not None)

    def serve_page(self, state: SyncState, page_size: int) -> DeltaPage:
        with self._lock:
            def follow(remaining: list[tuple[str, str]], kind: str, empty_served: bool) -> str:
                token = secrets.token_urlsafe(24)
                return self._store_state(SyncState(
                    token=token, kind=kind, created=time.time(), owner_id=state.owner_id,
                    calendar_id=state.calendar_id, scope=state.scope, start=state.start, end=state.end,
                    baseline=state.baseline, remaining=remaining, empty_served=empty_served,
                    incremental=state.incremental and kind == "skip"))

            if state.remaining and not state.empty_served and self.rng.random() < self.behaviour.empty_page_probability:
                # Graph may answer a page with no items and a nextLink; clients must keep following.
                return DeltaPage([], [], follow(state.remaining, "skip", True), None)
            page, rest = state.remaining[:page_size], state.remaining[page_size:]
            # Each item as it is now (Graph serves current state, not the state at the round's
            # start); only the page's own events are expanded, so a page costs its size, not the
            # calendar's.
            keys = [key.rpartition("|")[0] for kind, key in page if kind == "upsert"]
            current = {i.key: i for i in self.view(state.calendar_id, state.start, state.end, event_keys=keys)}
            instances = [current[key] for kind, key in page if kind == "upsert" and key in current]
            removed = [sent for kind, sent in page if kind == "removed"]
            if rest:
                return DeltaPage(instances, removed, follow(rest, "skip", False), None)
            return DeltaPage(instances, removed, None, follow([], "delta", False))

    def lose_delta_state(self, user: str | None = None) -> int:
        """Forget delta tokens (all, or those of one mailbox): their next use answers 410."""
        with self._lock:
            owner = self.user(user).id if user else None
            doomed = [t for t, s in self.sync_states.items() if owner is None or s.owner_id == owner]
            for token in doomed:
                del self.sync_states[token]
            return len(doomed)

    # --- subscriptions and notifications ------------------------------------------------
    def add_subscription(self, sub: Subscription) -> Subscription:
        with self._lock:
            live = sum(1 for s in self.subscriptions.values() if s.mailbox_id == sub.mailbox_id)
            if live >= self.behaviour.max_subscriptions_per_mailbox:
                raise GraphError(403, "ExtensionError",
                                 "Operation: Create; Exception: [Status Code: Forbidden; Reason: The number of "
                                 "subscriptions for this mailbox has reached its limit.]")
            self.subscriptions[sub.id] = sub
            return sub

    def subscription(self, sub_id: str) -> Subscription | None:
        with self._lock:
            sub = self.subscriptions.get(sub_id)
            if sub is not None and sub.expiration <= datetime.now(UTC):
                del self.subscriptions[sub_id]
                return None
            return sub

    def remove_subscription(self, sub_id: str) -> Subscription | None:
        with self._lock:
            return self.subscriptions.pop(sub_id, None)

    def change_subscription(self, sub_id: str, *, expiration: datetime | None = None,
                            notification_url: str | None = None, reauthorized: bool = False) -> Subscription:
        """Renew (which also reauthorizes), re-point or reauthorize a subscription."""
        with self._lock:
            sub = self.subscriptions.get(sub_id)
            if sub is None:
                raise KeyError(sub_id)
            if expiration is not None:
                sub.expiration = expiration
            if notification_url is not None:
                sub.notification_url = notification_url
            if expiration is not None or reauthorized:
                sub.reauthorization_sent = False
            return sub

    def list_subscriptions(self) -> list[Subscription]:
        with self._lock:
            return sorted(self.subscriptions.values(), key=lambda s: s.created)

    def _notify(self, calendar_id: str, ev: Event, change_type: str) -> None:
        now = datetime.now(UTC)
        queued = False
        for sub in list(self.subscriptions.values()):
            if change_type not in sub.change_type.split(","):
                continue
            # "" watches every calendar of the mailbox (/users/{id}/events).
            watched = (sub.calendar_id == calendar_id
                       or (not sub.calendar_id and self._owns(sub.mailbox_id, calendar_id)))
            if not watched:
                continue
            if sub.expiration <= now:
                continue
            ext = immutable_id(ev.key) if sub.immutable_ids else default_id(calendar_id, ev.key)
            resource = f"Users/{sub.mailbox_id}/Events/{ext}"
            data: dict[str, Any] = {"@odata.type": "#Microsoft.Graph.Event", "@odata.id": resource, "id": ext}
            if change_type != "deleted":
                data["@odata.etag"] = f'W/"{ev.change_key}"'
            item = {"subscriptionId": sub.id,
                    "subscriptionExpirationDateTime": sub.expiration.isoformat().replace("+00:00", "Z"),
                    "changeType": change_type, "resource": resource, "resourceData": data,
                    "clientState": sub.client_state, "tenantId": sub.tenant_id}
            self.outbox.append(OutboxItem(sub.notification_url, item, "change", sub.id, change_type))
            if self.rng.random() < self.behaviour.duplicate_probability:
                # Exactly-once is not promised: a create often arrives as created + updated.
                twin = dict(item)
                if change_type == "created" and "updated" in sub.change_type.split(","):
                    twin["changeType"] = "updated"
                self.outbox.append(OutboxItem(sub.notification_url, twin, "change", sub.id,
                                              str(twin["changeType"])))
            queued = True
        if queued and self.wake is not None:
            self.wake()

    def _owns(self, mailbox_id: str, calendar_id: str) -> bool:
        cal = self.calendars.get(calendar_id)
        return cal is not None and cal.owner_id == mailbox_id

    def trigger_lifecycle(self, subscription_id: str, lifecycle_event: str) -> None:
        """Send a lifecycle notification now; ``subscriptionRemoved`` also removes the subscription."""
        if lifecycle_event not in LIFECYCLE_EVENTS:
            raise ValueError(f"lifecycle event must be one of {', '.join(LIFECYCLE_EVENTS)}")
        with self._lock:
            sub = self.subscriptions.get(subscription_id)
            if sub is None:
                raise KeyError("no such subscription")
            if not sub.lifecycle_url:
                raise ValueError("the subscription has no lifecycleNotificationUrl")
            self._queue_lifecycle(sub, lifecycle_event)
            if lifecycle_event == "subscriptionRemoved":
                del self.subscriptions[sub.id]
        if self.wake is not None:
            self.wake()

    def _queue_lifecycle(self, sub: Subscription, lifecycle_event: str) -> None:
        assert sub.lifecycle_url
        item = {"subscriptionId": sub.id,
                "subscriptionExpirationDateTime": sub.expiration.isoformat().replace("+00:00", "Z"),
                "tenantId": sub.tenant_id, "clientState": sub.client_state, "lifecycleEvent": lifecycle_event}
        self.outbox.append(OutboxItem(sub.lifecycle_url, item, "lifecycle", sub.id, lifecycle_event))

    def housekeeping(self) -> None:
        """Drop expired subscriptions; warn those close to expiry (reauthorizationRequired)."""
        now = datetime.now(UTC)
        lead = timedelta(seconds=self.behaviour.reauthorization_lead)
        queued = False
        with self._lock:
            for sub in list(self.subscriptions.values()):
                if sub.expiration <= now:
                    del self.subscriptions[sub.id]
                elif sub.lifecycle_url and not sub.reauthorization_sent and sub.expiration - now <= lead:
                    sub.reauthorization_sent = True
                    self._queue_lifecycle(sub, "reauthorizationRequired")
                    queued = True
        if queued and self.wake is not None:
            self.wake()

    def take_outbox(self) -> list[OutboxItem]:
        with self._lock:
            items, self.outbox = self.outbox, []
            return items

    def record_delivery(self, **kw: Any) -> Delivery:
        with self._lock:
            self._delivery_seq += 1
            record = Delivery(id=self._delivery_seq, at=datetime.now(UTC), **kw)
            self.deliveries.append(record)
            self._changed.notify_all()
            return record

    def list_deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)

    def wait_for_deliveries(self, predicate: Callable[[list[Delivery]], bool], timeout: float = 15.0) -> list[Delivery]:
        """Block until ``predicate(deliveries)`` holds (tests call this via ``asyncio.to_thread``)."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(list(self.deliveries)), timeout):
                raise TimeoutError("expected deliveries did not happen in time")
            return list(self.deliveries)

    # --- limits and faults ----------------------------------------------------------------
    def enter(self, client_id: str, mailbox_id: str) -> bool:
        with self._lock:
            key = (client_id, mailbox_id)
            if self.inflight.get(key, 0) >= self.behaviour.max_concurrency:
                return False
            self.inflight[key] = self.inflight.get(key, 0) + 1
            self._changed.notify_all()
            return True

    def leave(self, client_id: str, mailbox_id: str) -> None:
        with self._lock:
            key = (client_id, mailbox_id)
            self.inflight[key] = max(0, self.inflight.get(key, 0) - 1)
            self._changed.notify_all()

    def wait_inflight(self, mailbox: str, count: int, timeout: float = 10.0) -> None:
        """Block until ``count`` requests for the mailbox are being served (for concurrency tests)."""
        user = self.user(mailbox)
        with self._changed:
            if not self._changed.wait_for(
                    lambda: sum(n for (_, m), n in self.inflight.items() if m == user.id) >= count, timeout):
                raise TimeoutError("requests did not arrive in time")

    def add_fault(self, kind: str, *, path: str = ".*", method: str | None = None, rate: float = 1.0,
                  count: int | None = None, retry_after: float = 1.0, delay: float = 5.0,
                  retry_after_date: bool = False) -> FaultRule:
        import re

        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        if count is not None and count < 1:
            raise ValueError("count must be positive")
        re.compile(path)
        with self._lock:
            self._fault_seq += 1
            rule = FaultRule(self._fault_seq, kind, path, method.upper() if method else None, rate, count,
                             retry_after, delay, retry_after_date=retry_after_date)
            self.faults.append(rule)
            return rule

    def remove_fault(self, rule_id: int) -> None:
        with self._lock:
            self.faults = [f for f in self.faults if f.id != rule_id]

    def clear_faults(self) -> None:
        with self._lock:
            self.faults = []
        self.release_held()

    def release_held(self) -> None:
        """Let requests held by slow/timeout faults finish now."""
        if self.release_hook is not None:
            self.release_hook()

    def pick_fault(self, method: str, path: str) -> FaultRule | None:
        import re

        with self._lock:
            for rule in self.faults:
                if rule.method and rule.method != method:
                    continue
                if not re.search(rule.path, path):
                    continue
                if rule.rate < 1.0 and self.rng.random() >= rule.rate:
                    continue
                rule.hits += 1
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self.faults.remove(rule)
                return rule
            return None

    # --- publishing -------------------------------------------------------------------------
    def publish_calendar(self, calendar_id: str, detail: str = "full") -> Publication:
        if detail not in ("availability", "limited", "full"):
            raise ValueError("detail must be availability, limited or full")
        with self._lock:
            cal = self.calendar(calendar_id)
            for pub in self.publications.values():
                if pub.calendar_id == cal.id:
                    pub.detail = detail
                    return pub
            pub = Publication(secrets.token_hex(16), cal.id, detail, datetime.now(UTC))
            self.publications[pub.token] = pub
            return pub

    def unpublish_calendar(self, calendar_id: str) -> None:
        with self._lock:
            for token in [t for t, p in self.publications.items() if p.calendar_id == calendar_id]:
                del self.publications[token]

    def publication(self, token: str) -> Publication | None:
        with self._lock:
            return self.publications.get(token)
