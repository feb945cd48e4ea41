"""In-memory twin of ``GraphCalendarPort``: Microsoft Graph's calendar behaviour, without a network.

It keeps what the port shows of Graph, with the same rules as the real adapter
(``graph_sdk.py``) so that one contract suite passes against both:

* mailboxes with a time zone, calendars (own and shared with another mailbox, which addresses a
  shared calendar through its own mailbox id), events with immutable ids;
* series (daily / weekly, with count or end date) expanded into occurrences, exceptions and
  deleted occurrences, each its own calendarView item with its own id; the series master is
  reported as well (``type == "seriesMaster"``), as calendarView delta may do;
* ``calendarView/delta`` rounds: a fresh round reports every item of the window; a delta link
  reports what changed since its round — changed items, and ``@removed`` for items deleted or
  moved out of the window. Links are opaque, may be followed twice (replays), and die with
  ``lose_state()`` (``SyncStateExpired``). A round is a snapshot taken at its first page;
  changes made while paging show up in the next round. Pages hold at most ``page_size`` items,
  may be empty and still carry a next link;
* non-all-day times in UTC (the adapter asks for ``outlook.timezone="UTC"``), all-day events as
  midnight in the time zone of the mailbox that asked;
* ``transactionId`` deduplicates creates; the booking id lives in an extended property that
  ``find_event_by_booking`` sees but delta does not (delta cannot expand it);
* subscriptions with Graph's lifetime limits, refused for delegated access to shared calendars
  (``AuthError(code=SUBSCRIPTION_FORBIDDEN)``); per calendar, or mailbox-wide (every calendar
  the mailbox owns), with ``refuse_calendar_subscriptions`` refusing the former (400); change and
  lifecycle notifications are collected in ``notifications`` / ``lifecycle_notifications`` for
  tests to deliver;
* ``user_object_id`` resolves a mailbox's address to its id;
* events made unreadable (``make_unreadable``: what a custom zone label or a missing end does to
  the real adapter) come in ``DeltaPage.skipped`` instead of ``events``;
* injectable failures — scripted (``fail_next``) or by rate with a seeded ``random.Random``
  (``Throttled`` with ``retry_after``, ``TransientError``, ``NeedsReconnect``) — and request
  counting per operation, plus the most requests ever in flight per mailbox (Graph allows 4).

Methods that are not part of the port (``add_mailbox``, ``put_event``, ``edit_event`` …) play the
user in Outlook: they cost no request and never fail.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from shared.adapters.graph_constants import (
    SHOW_AS,
    SUBSCRIPTION_FORBIDDEN,
    check_draft,
    mailbox_subscription_resource,
    subscription_resource,
)
from shared.domain import CalendarInfo, DeltaPage, EventDraft, Link, OutlookEvent, SkippedItem, SubscriptionInfo
from shared.errors import (
    AuthError,
    BadRequest,
    NeedsReconnect,
    NotFound,
    RemoteGone,
    SyncError,
    SyncStateExpired,
    Throttled,
    TransientError,
)
from shared.ports import GraphCalendarPort

BASE_URL = "https://graph.memory.invalid/v1.0"
#: Graph's documented maximum lifetime of an event subscription (the stricter of two figures).
MAX_SUBSCRIPTION_MINUTES = 4230
#: Shorter lifetimes are rounded up to this.
MIN_SUBSCRIPTION_MINUTES = 45
SENSITIVITY = frozenset({"normal", "personal", "private", "confidential"})
#: Fields an exception (one changed occurrence) may override.
EXCEPTION_FIELDS = frozenset({"start", "end", "subject", "show_as", "sensitivity", "is_cancelled"})
#: Occurrences generated per series at most: a runaway rule must not hang a test.
MAX_OCCURRENCES = 5000


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Recurrence:
    """A daily or weekly rule, the two Outlook users make most; ``until`` is the last local day."""

    pattern: str                      # daily | weekly
    interval: int = 1
    days_of_week: tuple[int, ...] = ()  # weekly: 0 = Monday … 6 = Sunday; empty: the start's weekday
    count: int | None = None
    until: date | None = None

    def __post_init__(self) -> None:
        if self.pattern not in ("daily", "weekly"):
            raise ValueError("pattern must be daily or weekly")
        if self.interval < 1:
            raise ValueError("interval must be at least 1")
        if any(not 0 <= d <= 6 for d in self.days_of_week):
            raise ValueError("days_of_week hold 0 (Monday) to 6 (Sunday)")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1")

    def local_days(self, first: date) -> Iterator[date]:
        """Days on which an occurrence starts, in order, from the series' first day on."""
        emitted = 0
        if self.pattern == "daily":
            day = first
            while True:
                if self.until is not None and day > self.until:
                    return
                yield day
                emitted += 1
                if self.count is not None and emitted >= self.count:
                    return
                day += timedelta(days=self.interval)
        weekdays = sorted(set(self.days_of_week or (first.weekday(),)))
        week = first - timedelta(days=first.weekday())
        while True:
            for weekday in weekdays:
                day = week + timedelta(days=weekday)
                if day < first:
                    continue
                if self.until is not None and day > self.until:
                    return
                yield day
                emitted += 1
                if self.count is not None and emitted >= self.count:
                    return
            week += timedelta(weeks=self.interval)


@dataclass
class FailureRates:
    """Per-request probabilities of injected failures (drawn from the twin's seeded generator)."""

    throttled: float = 0.0
    transient: float = 0.0
    needs_reconnect: float = 0.0
    retry_after: float = 1.5


@dataclass
class _Mailbox:
    id: str
    display_name: str
    mail: str
    time_zone: str


@dataclass
class _Calendar:
    id: str
    owner: str
    name: str
    is_default: bool
    shares: dict[str, bool] = field(default_factory=dict)  # mailbox → can edit


@dataclass
class _Event:
    id: str
    owner: str
    calendar_id: str
    subject: str
    start: datetime
    end: datetime
    is_all_day: bool = False
    show_as: str = "busy"
    sensitivity: str = "normal"
    is_cancelled: bool = False
    transaction_id: str = ""
    booking_id: str = ""
    categories: tuple[str, ...] = ()
    body_html: str = ""
    recurrence: Recurrence | None = None
    exceptions: dict[datetime, dict[str, Any]] = field(default_factory=dict)
    deleted_occurrences: set[datetime] = field(default_factory=set)
    version: int = 1


@dataclass
class _Snapshot:
    owner: str
    calendar_id: str
    mailbox: str
    start: datetime
    end: datetime
    items: dict[str, Hashable]


@dataclass
class _Round:
    mailbox: str
    calendar_id: str
    pages: list[tuple[list[OutlookEvent], list[str]]]
    delta_token: str


@dataclass
class MemorySubscription:
    id: str
    mailbox: str
    owner: str
    calendar_id: str
    resource: str
    notification_url: str
    lifecycle_url: str
    client_state: str
    expires_at: datetime
    reauthorized: int = 0


class MemoryGraph(GraphCalendarPort):
    def __init__(self, *, seed: int = 0, clock: Callable[[], datetime] = _utcnow, app_only: bool = False,
                 tenant_id: str = "tenant-memory", concurrency_limit: int = 4,
                 include_series_masters: bool = True) -> None:
        self._rng = random.Random(seed)
        self.clock = clock
        self.app_only = app_only
        self.tenant_id = tenant_id
        self.concurrency_limit = concurrency_limit
        self.include_series_masters = include_series_masters
        self.signed_in = ""
        self.mailboxes: dict[str, _Mailbox] = {}
        self.calendars: dict[str, _Calendar] = {}
        self.events: dict[str, _Event] = {}
        self.subscriptions: dict[str, MemorySubscription] = {}
        self.notifications: list[dict[str, Any]] = []
        self.lifecycle_notifications: list[dict[str, Any]] = []
        self.requests: Counter[str] = Counter()
        self.max_in_flight = 0
        #: ``close()`` calls: every port handed out must be closed by its user
        self.closed = 0
        self.rates = FailureRates()
        #: chance that an incremental round reports an unchanged item again (Graph replays)
        self.replay_rate = 0.0
        #: chance of an empty page with a next link before a page
        self.empty_page_rate = 0.0
        #: chance that one change yields a second notification (created + updated)
        self.duplicate_notification_rate = 0.0
        #: Graph's own cap on a page, below what the caller prefers
        self.max_page_size: int | None = None
        #: tenant policy refusing every subscription (→ ``SUBSCRIPTION_FORBIDDEN``)
        self.refuse_subscriptions = False
        #: refuse per-calendar subscriptions only (Graph documents ``/users/{id}/events``); the
        #: mailbox-wide resource is still allowed
        self.refuse_calendar_subscriptions = False
        #: event ids whose items the real adapter could not read, with the reason it would give
        #: (custom zone labels, no end …): delta reports them as skipped, not as events
        self.unreadable: dict[str, str] = {}
        #: answer of the notification endpoint's validation handshake (False: create fails with 400)
        self.endpoint_validator: Callable[[str], bool] = lambda url: url.startswith(("https://", "http://"))
        self._scripted: deque[tuple[str | None, SyncError]] = deque()
        self._transactions: dict[tuple[str, str], str] = {}
        self._rounds: dict[str, _Round] = {}
        self._snapshots: dict[str, _Snapshot] = {}
        self._in_flight: Counter[str] = Counter()
        self._ids = 0

    # ----------------------------------------------------------------------------------------
    # The user's side (no request, never fails)
    # ----------------------------------------------------------------------------------------
    def add_mailbox(self, mailbox_id: str, *, display_name: str = "", mail: str = "",
                    time_zone: str = "Europe/Berlin") -> str:
        ZoneInfo(time_zone)  # refuse unknown zones early
        self.mailboxes[mailbox_id] = _Mailbox(mailbox_id, display_name or mailbox_id, mail or mailbox_id, time_zone)
        if not any(c.owner == mailbox_id and c.is_default for c in self.calendars.values()):
            self.add_calendar(mailbox_id, "Kalender", is_default=True)
        return mailbox_id

    def sign_in(self, mailbox_id: str) -> None:
        """Make this a delegated context of ``mailbox_id`` (``me`` answers with it)."""
        self._mailbox(mailbox_id)
        self.signed_in = mailbox_id

    def add_calendar(self, mailbox_id: str, name: str, *, calendar_id: str = "", is_default: bool = False) -> str:
        self._mailbox(mailbox_id)
        cid = calendar_id or self._new_id("AAMkCal")
        self.calendars[cid] = _Calendar(cid, mailbox_id, name, is_default)
        return cid

    def default_calendar(self, mailbox_id: str) -> str:
        return next(c.id for c in self.calendars.values() if c.owner == mailbox_id and c.is_default)

    def share_calendar(self, calendar_id: str, with_mailbox: str, *, can_edit: bool = True) -> None:
        self._mailbox(with_mailbox)
        self.calendars[calendar_id].shares[with_mailbox] = can_edit

    def remove_calendar(self, calendar_id: str) -> None:
        self.calendars.pop(calendar_id, None)
        for event_id in [e.id for e in self.events.values() if e.calendar_id == calendar_id]:
            del self.events[event_id]

    def put_event(self, mailbox_id: str, calendar_id: str, *, subject: str = "", start: datetime | date,
                  end: datetime | date, all_day: bool = False, show_as: str = "busy", sensitivity: str = "normal",
                  recurrence: Recurrence | None = None, transaction_id: str = "", booking_id: str = "",
                  categories: tuple[str, ...] = (), event_id: str = "") -> str:
        """Create an event as the user would in Outlook; returns its immutable id."""
        cal = self._calendar(mailbox_id, calendar_id)
        if show_as not in SHOW_AS or sensitivity not in SENSITIVITY:
            raise ValueError("unknown showAs or sensitivity")
        start_at, end_at = self._times(cal.owner, start, end, all_day)
        event = _Event(id=event_id or self._new_id("AAMkEv"), owner=cal.owner, calendar_id=cal.id, subject=subject,
                       start=start_at, end=end_at, is_all_day=all_day, show_as=show_as, sensitivity=sensitivity,
                       transaction_id=transaction_id, booking_id=booking_id, categories=categories,
                       recurrence=recurrence)
        self.events[event.id] = event
        self._notify(event, "created")
        return event.id

    def edit_event(self, event_id: str, **changes: Any) -> None:
        """Change fields of an event or series (``start``/``end`` keep ``all_day``'s rules).

        With no changes it still bumps the change key, like saving an unchanged event in Outlook.
        """
        event = self.events[event_id]
        if "all_day" in changes:
            changes["is_all_day"] = changes.pop("all_day")
        unknown = set(changes) - {"subject", "start", "end", "is_all_day", "show_as", "sensitivity",
                                  "is_cancelled", "recurrence", "categories"}
        if unknown:
            raise ValueError(f"cannot edit {sorted(unknown)}")
        if "start" in changes or "end" in changes or "is_all_day" in changes:
            all_day = bool(changes.get("is_all_day", event.is_all_day))
            changes["start"], changes["end"] = self._times(event.owner, changes.get("start", event.start),
                                                           changes.get("end", event.end), all_day)
        for name, value in changes.items():
            setattr(event, name, value)
        if "recurrence" in changes or "start" in changes:
            # Outlook drops the exceptions of a series whose pattern or start changed.
            event.exceptions.clear()
            event.deleted_occurrences.clear()
        event.version += 1
        self._notify(event, "updated")

    def make_unreadable(self, event_id: str,
                        reason: str = "time zone 'Customized Time Zone' cannot be resolved") -> None:
        """Make the event's delta items unreadable (as a custom zone label does to the real adapter);
        it counts as a change, so the next round reports it."""
        self.unreadable[event_id] = reason
        self.edit_event(event_id)

    def make_readable(self, event_id: str) -> None:
        self.unreadable.pop(event_id, None)
        self.edit_event(event_id)

    def user_delete(self, event_id: str) -> None:
        """Delete an event, a whole series, or one occurrence (by the occurrence's id)."""
        self._delete(event_id)

    def cancel_meeting(self, event_id: str) -> None:
        """The organiser cancelled: the event stays in the attendee's calendar, ``isCancelled``."""
        self.edit_event(event_id, is_cancelled=True)

    def occurrence_ids(self, series_id: str, start: datetime, end: datetime) -> list[str]:
        event = self.events[series_id]
        return [item.id for item, _ in self._items(event, event.owner, start, end) if item.type != "seriesMaster"]

    def modify_occurrence(self, occurrence_id: str, **changes: Any) -> None:
        """Turn one occurrence into an exception with its own fields."""
        event, original = self._occurrence(occurrence_id)
        unknown = set(changes) - EXCEPTION_FIELDS
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)} on one occurrence")
        current = event.exceptions.setdefault(original, {"_version": 0})
        current.update(changes)
        current["_version"] += 1
        self._notify(event, "updated", occurrence_id)

    def calendar_view(self, mailbox_id: str, calendar_id: str, start: datetime, end: datetime) -> list[OutlookEvent]:
        """The truth: occurrences and single events of the window, as delta reports them (no masters)."""
        cal = self._calendar(mailbox_id, calendar_id)
        return [item for item, _ in self._view(cal, mailbox_id, start, end).values() if item.type != "seriesMaster"]

    def lose_state(self) -> None:
        """Every delta and next link expires (Graph's 410 / syncStateNotFound)."""
        self._rounds.clear()
        self._snapshots.clear()

    def fail_next(self, error: SyncError, *, op: str | None = None) -> None:
        """The next request (of ``op`` if given) fails with ``error``; calls queue up in order."""
        self._scripted.append((op, error))

    def remove_subscription(self, subscription_id: str) -> None:
        """Graph removed the subscription (e.g. the token lost access): lifecycle ``subscriptionRemoved``."""
        sub = self.subscriptions.pop(subscription_id)
        self._lifecycle(sub, "subscriptionRemoved")

    def require_reauthorization(self, subscription_id: str) -> None:
        self._lifecycle(self.subscriptions[subscription_id], "reauthorizationRequired")

    def drain_notifications(self) -> list[dict[str, Any]]:
        taken, self.notifications = self.notifications, []
        return taken

    @property
    def request_count(self) -> int:
        return sum(self.requests.values())

    # ----------------------------------------------------------------------------------------
    # The port
    # ----------------------------------------------------------------------------------------
    async def me(self) -> dict[str, str]:
        await self._request("me", "")
        if self.app_only or not self.signed_in:
            raise BadRequest("/me is only valid with delegated authentication", code="graph_bad_request")
        box = self.mailboxes[self.signed_in]
        return {"id": box.id, "displayName": box.display_name, "mail": box.mail, "userPrincipalName": box.mail}

    async def list_calendars(self, mailbox_id: str) -> list[CalendarInfo]:
        await self._request("list_calendars", mailbox_id)
        self._check_mailbox_access(mailbox_id)
        out: list[CalendarInfo] = []
        for cal in self.calendars.values():
            if cal.owner != mailbox_id and mailbox_id not in cal.shares:
                continue
            owner = self.mailboxes[cal.owner]
            shared = cal.owner != mailbox_id
            out.append(CalendarInfo(id=cal.id, name=cal.name, owner_name=owner.display_name,
                                    owner_address=owner.mail, can_edit=cal.shares[mailbox_id] if shared else True,
                                    is_default=cal.is_default and not shared, is_shared=shared,
                                    mailbox_id=mailbox_id))
        return out

    async def mailbox_time_zone(self, mailbox_id: str) -> str:
        await self._request("mailbox_time_zone", mailbox_id)
        self._check_mailbox_access(mailbox_id)
        return self.mailboxes[mailbox_id].time_zone

    async def delta(self, mailbox_id: str, calendar_id: str, *, start: datetime, end: datetime,
                    link: str = "", page_size: int = 100) -> DeltaPage:
        if page_size < 1:
            raise BadRequest("page size must be at least 1", field="page_size")
        await self._request("delta", mailbox_id)
        if link:
            kind, token = self._parse_link(link)
            if kind == "skip":
                return self._serve(token)
            snapshot = self._snapshots.get(token)
            if snapshot is None:
                raise SyncStateExpired("delta token is unknown or expired")
            cal = self._calendar_or_gone(snapshot.mailbox, snapshot.calendar_id)
            return self._start_round(cal, snapshot.mailbox, snapshot.start, snapshot.end, snapshot.items, page_size)
        if start.tzinfo is None or end.tzinfo is None or end <= start:
            raise BadRequest("delta window must be timezone-aware with end after start", field="start")
        cal = self._calendar_or_gone(mailbox_id, calendar_id)
        return self._start_round(cal, mailbox_id, start, end, None, page_size)

    async def user_object_id(self, mailbox: str) -> str:
        await self._request("user_object_id", mailbox)
        wanted = mailbox.lower()
        for box in self.mailboxes.values():
            if wanted in (box.id.lower(), box.mail.lower()):
                return box.id
        raise NotFound(f"read user id: no user {mailbox!r}")

    async def read_calendar_view(self, mailbox_id: str, calendar_id: str, *, start: datetime,
                                 end: datetime) -> list[OutlookEvent]:
        if start.tzinfo is None or end.tzinfo is None or end <= start:
            raise BadRequest("calendar view interval must be timezone-aware with end after start", field="start")
        await self._request("calendar_view", mailbox_id)
        cal = self._calendar_or_gone(mailbox_id, calendar_id)
        items: list[OutlookEvent] = []
        for event in self.events.values():
            if event.calendar_id != cal.id:
                continue
            for item, _ in self._items(event, mailbox_id, start, end):
                if item.type != "seriesMaster":
                    # calendarView, unlike delta, expands our extended property.
                    items.append(replace(item, booking_id=event.booking_id))
        return sorted(items, key=lambda item: (item.start, item.id))

    async def create_subscription(self, mailbox_id: str, calendar_id: str, *, notification_url: str,
                                  lifecycle_url: str, client_state: str, expires_at: datetime,
                                  mailbox_wide: bool = False) -> SubscriptionInfo:
        if expires_at.tzinfo is None:
            raise BadRequest("subscription expiry must be timezone-aware", field="expires_at")
        if not client_state or len(client_state) > 128:
            raise BadRequest("client state must be 1 to 128 characters", field="client_state")
        await self._request("create_subscription", mailbox_id)
        if mailbox_wide:
            self._mailbox(mailbox_id)
            cal = self._calendar_or_gone(mailbox_id, self.default_calendar(mailbox_id))
        else:
            cal = self._calendar_or_gone(mailbox_id, calendar_id)
        if self.refuse_subscriptions or (not self.app_only and cal.owner != mailbox_id):
            # Delegated Calendars.ReadWrite.Shared does not allow subscriptions on shared calendars.
            raise AuthError("Graph refused the subscription", code=SUBSCRIPTION_FORBIDDEN)
        if self.refuse_calendar_subscriptions and not mailbox_wide:
            raise BadRequest("create subscription: Graph answered 400 ExtensionError (resource not supported)",
                             code="graph_bad_request")
        for url in (notification_url, lifecycle_url):
            if not self.endpoint_validator(url):
                raise BadRequest("subscription validation request failed", code="graph_bad_request")
        sub = MemorySubscription(id=self._uuid(), mailbox=mailbox_id, owner=cal.owner,
                                 calendar_id="" if mailbox_wide else cal.id,
                                 resource=(mailbox_subscription_resource(mailbox_id) if mailbox_wide
                                           else subscription_resource(mailbox_id, calendar_id)),
                                 notification_url=notification_url, lifecycle_url=lifecycle_url,
                                 client_state=client_state, expires_at=self._clamp_expiry(expires_at))
        self.subscriptions[sub.id] = sub
        return SubscriptionInfo(sub.id, sub.expires_at, sub.resource)

    async def renew_subscription(self, subscription_id: str, expires_at: datetime) -> SubscriptionInfo:
        if expires_at.tzinfo is None:
            raise BadRequest("subscription expiry must be timezone-aware", field="expires_at")
        await self._request("renew_subscription", "")
        sub = self._live_subscription(subscription_id)
        sub.expires_at = self._clamp_expiry(expires_at)
        return SubscriptionInfo(sub.id, sub.expires_at, sub.resource)

    async def reauthorize_subscription(self, subscription_id: str) -> None:
        await self._request("reauthorize_subscription", "")
        self._live_subscription(subscription_id).reauthorized += 1

    async def delete_subscription(self, subscription_id: str) -> None:
        await self._request("delete_subscription", "")
        self.subscriptions.pop(subscription_id, None)

    async def create_event(self, mailbox_id: str, calendar_id: str, draft: EventDraft, *,
                           transaction_id: str) -> str:
        check_draft(draft)
        if not transaction_id:
            raise BadRequest("a transaction id is required so a repeated create makes no duplicate",
                             field="transaction_id")
        await self._request("create_event", mailbox_id)
        cal = self._calendar_or_gone(mailbox_id, calendar_id)
        self._check_write(cal, mailbox_id)
        existing = self._transactions.get((cal.owner, transaction_id))
        if existing is not None and existing in self.events:
            # Graph answers a repeated transactionId with the event it already made.
            return existing
        event = _Event(id=self._new_id("AAMkEv"), owner=cal.owner, calendar_id=cal.id, subject=draft.subject,
                       start=draft.start, end=draft.end, show_as=draft.show_as, categories=draft.categories,
                       body_html=draft.body_html, transaction_id=transaction_id, booking_id=draft.booking_id)
        self.events[event.id] = event
        self._transactions[(cal.owner, transaction_id)] = event.id
        self._notify(event, "created")
        return event.id

    async def update_event(self, mailbox_id: str, event_id: str, draft: EventDraft) -> None:
        check_draft(draft)
        await self._request("update_event", mailbox_id)
        event = self._event_for(mailbox_id, event_id)
        if event is None:
            raise NotFound("event not found")
        self._check_write(self.calendars[event.calendar_id], mailbox_id)
        event.subject, event.body_html = draft.subject, draft.body_html
        event.start, event.end, event.show_as = draft.start, draft.end, draft.show_as
        event.categories = draft.categories
        if draft.booking_id:
            event.booking_id = draft.booking_id
        event.version += 1
        self._notify(event, "updated")

    async def delete_event(self, mailbox_id: str, event_id: str) -> None:
        await self._request("delete_event", mailbox_id)
        master_id = event_id.split(".", 1)[0]
        event = self._event_for(mailbox_id, master_id)
        if event is None:
            return
        self._check_write(self.calendars[event.calendar_id], mailbox_id)
        self._delete(event_id)

    async def close(self) -> None:
        self.closed += 1

    async def find_event_by_booking(self, mailbox_id: str, calendar_id: str, booking_id: str) -> str | None:
        if not booking_id:
            raise BadRequest("booking id is empty", field="booking_id")
        await self._request("find_event_by_booking", mailbox_id)
        cal = self._calendar_or_gone(mailbox_id, calendar_id)
        for event in self.events.values():
            if event.calendar_id == cal.id and event.booking_id == booking_id:
                return event.id
        return None

    # ----------------------------------------------------------------------------------------
    # Requests: counting, injected failures, concurrency
    # ----------------------------------------------------------------------------------------
    async def _request(self, op: str, mailbox_id: str) -> None:
        self.requests[op] += 1
        for index, (wanted, error) in enumerate(self._scripted):
            if wanted is None or wanted == op:
                del self._scripted[index]
                raise error
        roll = self._rng.random()
        rates = self.rates
        if roll < rates.throttled:
            raise Throttled(f"{op}: Graph answered 429", retry_after=rates.retry_after)
        if roll < rates.throttled + rates.transient:
            raise TransientError(f"{op}: Graph answered 503", code="graph_unavailable")
        if roll < rates.throttled + rates.transient + rates.needs_reconnect:
            raise NeedsReconnect("the refresh token was revoked (invalid_grant)")
        self._in_flight[mailbox_id] += 1
        try:
            self.max_in_flight = max(self.max_in_flight, self._in_flight[mailbox_id])
            if self._in_flight[mailbox_id] > self.concurrency_limit:
                raise Throttled(f"{op}: too many concurrent requests for this mailbox", retry_after=1.0)
            # Let other requests of the same loop overlap, as real ones would.
            await asyncio.sleep(0)
        finally:
            self._in_flight[mailbox_id] -= 1

    # ----------------------------------------------------------------------------------------
    # Internals
    # ----------------------------------------------------------------------------------------
    def _new_id(self, prefix: str) -> str:
        # Real ids are base64 and contain '/', '+' and '='; so do these, to exercise key encoding.
        self._ids += 1
        return f"{prefix}{self._ids:05d}/{self._rng.getrandbits(40):010x}="

    def _uuid(self) -> str:
        raw = f"{self._rng.getrandbits(128):032x}"
        return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"

    def _token(self) -> str:
        return f"{self._rng.getrandbits(96):024x}"

    def _mailbox(self, mailbox_id: str) -> _Mailbox:
        box = self.mailboxes.get(mailbox_id)
        if box is None:
            raise NotFound("mailbox not found")
        return box

    def _check_mailbox_access(self, mailbox_id: str) -> None:
        self._mailbox(mailbox_id)
        if not self.app_only and self.signed_in and mailbox_id != self.signed_in:
            raise AuthError("access to another user's mailbox denied", code="graph_forbidden")

    def _calendar(self, mailbox_id: str, calendar_id: str) -> _Calendar:
        self._mailbox(mailbox_id)
        cal = self.calendars.get(calendar_id)
        if cal is None or (cal.owner != mailbox_id and mailbox_id not in cal.shares):
            raise RemoteGone("calendar is gone")
        return cal

    def _calendar_or_gone(self, mailbox_id: str, calendar_id: str) -> _Calendar:
        try:
            self._check_mailbox_access(mailbox_id)
        except NotFound as exc:
            raise RemoteGone("calendar is gone: mailbox not found") from exc
        return self._calendar(mailbox_id, calendar_id)

    @staticmethod
    def _check_write(cal: _Calendar, mailbox_id: str) -> None:
        if cal.owner != mailbox_id and not cal.shares.get(mailbox_id, False):
            raise AuthError("no write access to this calendar", code="graph_forbidden")

    def _times(self, owner: str, start: datetime | date, end: datetime | date,
               all_day: bool) -> tuple[datetime, datetime]:
        if all_day:
            zone = ZoneInfo(self.mailboxes[owner].time_zone)
            first = start.date() if isinstance(start, datetime) else start
            last = end.date() if isinstance(end, datetime) else end
            if last <= first:
                raise ValueError("an all-day event lasts at least one day")
            return datetime.combine(first, time(0), zone), datetime.combine(last, time(0), zone)
        if not isinstance(start, datetime) or not isinstance(end, datetime) or start.tzinfo is None \
                or end.tzinfo is None:
            raise ValueError("timed events need timezone-aware start and end")
        if end < start:
            raise ValueError("end before start")
        return start, end

    def _event_for(self, mailbox_id: str, event_id: str) -> _Event | None:
        event = self.events.get(event_id)
        if event is None:
            return None
        cal = self.calendars.get(event.calendar_id)
        if cal is None or (cal.owner != mailbox_id and mailbox_id not in cal.shares):
            return None
        return event

    def _occurrence(self, occurrence_id: str) -> tuple[_Event, datetime]:
        master_id, sep, stamp = occurrence_id.partition(".")
        event = self.events.get(master_id)
        if not sep or event is None or event.recurrence is None:
            raise KeyError(f"no occurrence {occurrence_id}")
        original = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        return event, original

    def _delete(self, event_id: str) -> None:
        if "." in event_id:
            try:
                event, original = self._occurrence(event_id)
            except KeyError:
                return
            event.deleted_occurrences.add(original)
            event.exceptions.pop(original, None)
            self._notify(event, "deleted", event_id)
            return
        gone = self.events.pop(event_id, None)
        if gone is not None:
            self._notify(gone, "deleted")

    # --- expansion ------------------------------------------------------------------------------
    def _output_times(self, event: _Event, start: datetime, end: datetime,
                      mailbox_id: str) -> tuple[datetime, datetime]:
        if event.is_all_day:
            # All-day events are floating dates in Graph; the adapter pins them to midnight in the
            # asking mailbox's zone. The date part is what counts.
            zone = ZoneInfo(self.mailboxes[mailbox_id].time_zone)
            return (datetime.combine(start.date(), time(0), zone), datetime.combine(end.date(), time(0), zone))
        return start.astimezone(UTC), end.astimezone(UTC)

    def _item(self, event: _Event, mailbox_id: str, *, start: datetime, end: datetime, kind: str,
              item_id: str, overrides: dict[str, Any] | None = None) -> OutlookEvent:
        fields = {"subject": event.subject, "show_as": event.show_as, "sensitivity": event.sensitivity,
                  "is_cancelled": event.is_cancelled}
        fields.update({k: v for k, v in (overrides or {}).items() if k in fields})
        out_start, out_end = self._output_times(event, start, end, mailbox_id)
        # Delta cannot expand extended properties: booking_id stays empty here, as from Graph.
        return OutlookEvent(id=item_id, start=out_start, end=out_end, subject=str(fields["subject"]),
                            is_all_day=event.is_all_day, show_as=str(fields["show_as"]),
                            sensitivity=str(fields["sensitivity"]), is_cancelled=bool(fields["is_cancelled"]),
                            type=kind, series_master_id=event.id if kind in ("occurrence", "exception") else "",
                            transaction_id=event.transaction_id, categories=event.categories)

    def _items(self, event: _Event, mailbox_id: str, start: datetime,
               end: datetime) -> list[tuple[OutlookEvent, Hashable]]:
        """calendarView items of one event or series overlapping [start, end), with change markers."""
        if event.recurrence is None:
            if event.end > start and event.start < end:
                item = self._item(event, mailbox_id, start=event.start, end=event.end, kind="singleInstance",
                                  item_id=event.id)
                return [(item, (item, event.version))]
            return []
        out: list[tuple[OutlookEvent, Hashable]] = []
        duration = event.end - event.start
        zone = event.start.tzinfo
        horizon = max([end, *(o for o in event.exceptions)])
        for count, day in enumerate(event.recurrence.local_days(event.start.date())):
            if count >= MAX_OCCURRENCES:
                break
            begin = datetime.combine(day, event.start.timetz().replace(tzinfo=None), zone)
            if begin >= horizon:
                break
            original = begin.astimezone(UTC)
            if original in event.deleted_occurrences:
                continue
            item_id = f"{event.id}.{original:%Y%m%dT%H%M%SZ}"
            override = event.exceptions.get(original)
            occ_start = override.get("start", begin) if override else begin
            occ_end = override.get("end", occ_start + duration) if override else begin + duration
            if not (occ_end > start and occ_start < end):
                continue
            kind = "exception" if override else "occurrence"
            item = self._item(event, mailbox_id, start=occ_start, end=occ_end, kind=kind, item_id=item_id,
                              overrides=override)
            out.append((item, (item, event.version, override.get("_version", 0) if override else 0)))
        if out and self.include_series_masters:
            master = self._item(event, mailbox_id, start=event.start, end=event.end, kind="seriesMaster",
                                item_id=event.id)
            out.insert(0, (master, (master, event.version)))
        return out

    def _view(self, cal: _Calendar, mailbox_id: str, start: datetime,
              end: datetime) -> dict[str, tuple[OutlookEvent, Hashable]]:
        view: dict[str, tuple[OutlookEvent, Hashable]] = {}
        for event in self.events.values():
            if event.calendar_id == cal.id:
                for item, marker in self._items(event, mailbox_id, start, end):
                    view[item.id] = (item, marker)
        return view

    # --- delta rounds ---------------------------------------------------------------------------
    def _parse_link(self, link: str) -> tuple[str, str]:
        parts = urlsplit(link)
        if f"{parts.scheme}://{parts.netloc}" != BASE_URL.rsplit("/", 1)[0]:
            raise SyncStateExpired("stored delta link belongs to another Graph host; resync")
        query = parse_qs(parts.query)
        if "$skiptoken" in query:
            return "skip", query["$skiptoken"][0]
        if "$deltatoken" in query:
            return "delta", query["$deltatoken"][0]
        raise SyncStateExpired("delta link carries no state token")

    def _link(self, kind: str, token: str, mailbox_id: str, calendar_id: str) -> str:
        # Both spellings of the function segment reach Graph; the SDK writes ``delta()``.
        return (f"{BASE_URL}/users/{mailbox_id}/calendars/{calendar_id}/calendarView/delta()"
                f"?${kind}token={token}")

    def _start_round(self, cal: _Calendar, mailbox_id: str, start: datetime, end: datetime,
                     previous: dict[str, Hashable] | None, page_size: int) -> DeltaPage:
        view = self._view(cal, mailbox_id, start, end)
        changed: list[OutlookEvent] = []
        for item_id in sorted(view):
            item, marker = view[item_id]
            if previous is None or previous.get(item_id) != marker:
                changed.append(item)
            elif self.replay_rate and self._rng.random() < self.replay_rate:
                changed.append(item)  # Graph may report an unchanged item again
        removed = sorted(set(previous or ()) - set(view))
        size = min(page_size, self.max_page_size or page_size)
        entries: list[OutlookEvent | str] = [*changed, *removed]
        pages: list[tuple[list[OutlookEvent], list[str]]] = []
        for offset in range(0, max(len(entries), 1), size):
            if self.empty_page_rate and self._rng.random() < self.empty_page_rate:
                pages.append(([], []))
            chunk = entries[offset:offset + size]
            pages.append(([e for e in chunk if isinstance(e, OutlookEvent)], [e for e in chunk if isinstance(e, str)]))
        delta_token = self._token()
        self._snapshots[delta_token] = _Snapshot(cal.owner, cal.id, mailbox_id, start, end,
                                                 {item_id: marker for item_id, (_, marker) in view.items()})
        round_token = self._token()
        self._rounds[round_token] = _Round(mailbox_id, cal.id, pages, delta_token)
        return self._serve(f"{round_token}:0")

    def _serve(self, token: str) -> DeltaPage:
        round_token, _, index_raw = token.partition(":")
        current = self._rounds.get(round_token)
        if current is None or not index_raw.isdigit() or int(index_raw) >= len(current.pages):
            raise SyncStateExpired("next link is unknown or expired")
        index = int(index_raw)
        events, removed = current.pages[index]
        mailbox_id, calendar_id = current.mailbox, current.calendar_id
        self._calendar_or_gone(mailbox_id, calendar_id)
        readable = [e for e in events if self._unreadable_reason(e.id) is None]
        skipped = [SkippedItem(e.id, self._unreadable_reason(e.id) or "") for e in events if e not in readable]
        if index + 1 < len(current.pages):
            return DeltaPage(readable, list(removed), skipped=skipped,
                             next_link=self._link("skip", f"{round_token}:{index + 1}", mailbox_id, calendar_id))
        return DeltaPage(readable, list(removed), skipped=skipped,
                         delta_link=self._link("delta", current.delta_token, mailbox_id, calendar_id))

    def _unreadable_reason(self, item_id: str) -> str | None:
        if not self.unreadable:
            return None
        if item_id in self.unreadable:
            return self.unreadable[item_id]
        # An occurrence is as unreadable as its series.
        series_id, dot, _ = item_id.partition(".")
        return self.unreadable.get(series_id) if dot else None

    # --- subscriptions and notifications --------------------------------------------------------
    def _clamp_expiry(self, expires_at: datetime) -> datetime:
        now = self.clock()
        if expires_at <= now:
            raise BadRequest("subscription expiration must be in the future", field="expires_at")
        latest = now + timedelta(minutes=MAX_SUBSCRIPTION_MINUTES)
        if expires_at > latest:
            raise BadRequest("subscription expiration exceeds the maximum for events", field="expires_at")
        return max(expires_at, now + timedelta(minutes=MIN_SUBSCRIPTION_MINUTES)).astimezone(UTC)

    def _live_subscription(self, subscription_id: str) -> MemorySubscription:
        sub = self.subscriptions.get(subscription_id)
        if sub is not None and sub.expires_at <= self.clock():
            # Graph deletes expired subscriptions.
            del self.subscriptions[subscription_id]
            sub = None
        if sub is None:
            raise RemoteGone("subscription is gone")
        return sub

    def _notify(self, event: _Event, change_type: str, item_id: str = "") -> None:
        now = self.clock()
        for sub in list(self.subscriptions.values()):
            # A mailbox-wide subscription (calendar "") hears every calendar its mailbox owns.
            watched = sub.calendar_id == event.calendar_id or (not sub.calendar_id and sub.owner == event.owner)
            if not watched or sub.expires_at <= now:
                continue
            note = {"subscriptionId": sub.id, "subscriptionExpirationDateTime": sub.expires_at.isoformat(),
                    "changeType": change_type, "clientState": sub.client_state, "tenantId": self.tenant_id,
                    "resource": f"Users/{sub.mailbox}/Events/{item_id or event.id}",
                    "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "id": item_id or event.id}}
            self.notifications.append(note)
            if self.duplicate_notification_rate and self._rng.random() < self.duplicate_notification_rate:
                self.notifications.append({**note, "changeType": "updated"})

    def _lifecycle(self, sub: MemorySubscription, event: str) -> None:
        self.lifecycle_notifications.append({
            "subscriptionId": sub.id, "subscriptionExpirationDateTime": sub.expires_at.isoformat(),
            "clientState": sub.client_state, "tenantId": self.tenant_id, "lifecycleEvent": event})


class MemoryGraphProvider:
    """``GraphProvider`` over one ``MemoryGraph``: every link gets the same twin.

    Accounts or tenants listed in ``revoked`` get ``NeedsReconnect``, like a revoked refresh token.
    """

    def __init__(self, graph: MemoryGraph) -> None:
        self.graph = graph
        self.revoked: set[str] = set()
        self.handed_out = 0

    async def for_link(self, link: Link) -> GraphCalendarPort:
        if link.account_id in self.revoked or link.tenant_id in self.revoked:
            raise NeedsReconnect("the account's refresh token is no longer valid")
        self.handed_out += 1
        return self.graph

