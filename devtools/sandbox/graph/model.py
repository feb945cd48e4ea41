"""Plain records of the Graph stand-in: calendars, shares, events, subscriptions, deliveries,
fault rules and the tunable behaviour, plus the two event id formats.

Event ids come in two formats, as in Exchange: the *default* id embeds the calendar (folder) the
item lives in and therefore changes when the event moves to another calendar; the *immutable*
id (``Prefer: IdType="ImmutableId"``) does not. Both resolve to the same item; a default id
minted before a move no longer resolves afterwards.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

IMMUTABLE_PREFIX = "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A"
DEFAULT_PREFIX = "AAMkAGI2TG93AAA"


class GraphError(Exception):
    """An error Graph would answer with: HTTP status, error code and message."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                 inner_code: str = "") -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        #: a more specific code Graph puts in ``innerError.code`` only
        self.inner_code = inner_code


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


def _unb64(text: str) -> str | None:
    try:
        padded = text + "=" * (-len(text) % 4)
        return base64.urlsafe_b64decode(padded.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def immutable_id(key: str, occurrence: str | None = None) -> str:
    return IMMUTABLE_PREFIX + _b64(f"{key}|{occurrence or ''}")


def default_id(calendar_id: str, key: str, occurrence: str | None = None) -> str:
    return DEFAULT_PREFIX + _b64(f"{calendar_id}|{key}|{occurrence or ''}")


@dataclass(frozen=True)
class ParsedId:
    key: str
    occurrence: str | None
    calendar_id: str | None      # set for default ids: the calendar the id was minted in


def parse_event_id(ext: str) -> ParsedId | None:
    if ext.startswith(IMMUTABLE_PREFIX):
        raw = _unb64(ext[len(IMMUTABLE_PREFIX):])
        if raw is None or raw.count("|") != 1:
            return None
        key, occ = raw.split("|")
        return ParsedId(key, occ or None, None)
    if ext.startswith(DEFAULT_PREFIX):
        raw = _unb64(ext[len(DEFAULT_PREFIX):])
        if raw is None or raw.count("|") != 2:
            return None
        cal, key, occ = raw.split("|")
        return ParsedId(key, occ or None, cal)
    return None


def change_key(key: str, version: int) -> str:
    return base64.b64encode(hashlib.sha1(f"{key}:{version}".encode()).digest()[:16]).decode()


def graph_instant(moment: datetime) -> str:
    """``createdDateTime``-style UTC instant with seven fractional digits."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"


def graph_wall(wall: datetime) -> str:
    """``dateTimeTimeZone.dateTime``: wall-clock time with seven fractional digits."""
    return wall.strftime("%Y-%m-%dT%H:%M:%S.") + f"{wall.microsecond:06d}0"


_FRACTION = re.compile(r"\.(\d+)")


def parse_datetime(text: str) -> datetime:
    """Graph date-times: any fraction length, optional ``Z`` or offset. Naive results stay naive."""
    text = text.strip()
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


@dataclass
class Calendar:
    id: str
    owner_id: str
    name: str
    color: str = "auto"
    hex_color: str = ""
    is_default: bool = False
    version: int = 1

    @property
    def change_key(self) -> str:
        return change_key(self.id, self.version)


@dataclass
class Share:
    calendar_id: str
    user_id: str               # the person the calendar is shared with
    can_edit: bool = True
    accepted: bool = False


#: fields an exception may override on a single occurrence
OVERRIDABLE = ("subject", "body", "body_type", "start_local", "end_local", "show_as", "categories",
               "location", "is_cancelled", "importance")


@dataclass
class Override:
    fields: dict[str, Any]
    created: datetime
    last_modified: datetime
    version: int = 1


@dataclass
class Event:
    key: str
    calendar_id: str
    subject: str
    start_local: datetime              # naive wall time in ``tz`` (midnight for all-day events)
    end_local: datetime
    tz: str                            # zone name as the client gave it (Windows or IANA)
    end_tz: str
    is_all_day: bool = False
    body: str = ""
    body_type: str = "html"
    show_as: str = "busy"
    sensitivity: str = "normal"
    importance: str = "normal"
    categories: list[str] = field(default_factory=list)
    location: str = ""
    is_cancelled: bool = False
    recurrence: dict[str, Any] | None = None
    transaction_id: str | None = None
    #: lower-cased property id → (id as given, value)
    ext_props: dict[str, tuple[str, str]] = field(default_factory=dict)
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    last_modified: datetime = field(default_factory=lambda: datetime.now(UTC))
    version: int = 1
    ical_uid: str = ""
    reminder_minutes: int = 15
    #: original occurrence date (ISO) → overrides
    exceptions: dict[str, Override] = field(default_factory=dict)
    #: original occurrence dates (ISO) deleted from the series
    cancelled: set[str] = field(default_factory=set)

    @property
    def change_key(self) -> str:
        return change_key(self.key, self.version)


@dataclass
class Instance:
    """What a calendar view shows: a single event, or one occurrence/exception of a series."""

    event: Event
    occurrence: str | None             # original occurrence date (ISO) for series members
    type: str                          # singleInstance | occurrence | exception | seriesMaster
    data: dict[str, Any]               # effective field values (event fields merged with overrides)
    start_utc: datetime
    end_utc: datetime
    original_start_utc: datetime | None = None

    @property
    def key(self) -> str:
        return f"{self.event.key}|{self.occurrence or ''}"

    @property
    def change_key(self) -> str:
        if self.type == "exception" and self.occurrence:
            override = self.event.exceptions[self.occurrence]
            return change_key(f"{self.event.key}|{self.occurrence}", self.event.version * 1000 + override.version)
        return self.event.change_key


@dataclass
class Subscription:
    id: str
    resource: str
    change_type: str
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expiration: datetime
    application_id: str
    creator_id: str                    # user id (delegated) or service principal id (app-only)
    tenant_id: str
    mailbox_id: str
    calendar_id: str
    immutable_ids: bool
    app_only: bool
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    reauthorization_sent: bool = False


@dataclass
class Delivery:
    """One POST to a notification or lifecycle URL, as the sandbox saw it."""

    id: int
    at: datetime
    kind: str                          # change | lifecycle | validation
    target: str                        # scheme://host/path, no query (it may carry function keys)
    subscription_ids: list[str]
    change_types: list[str]
    count: int
    attempt: int
    status: int | None                 # HTTP status, None when no answer came
    outcome: str                       # ok | http_error | timeout | error
    duration_ms: float


@dataclass
class FaultRule:
    id: int
    kind: str                          # one of FAULT_KINDS
    path: str = ".*"                   # regex searched in the request path
    method: str | None = None
    rate: float = 1.0
    remaining: int | None = None       # None: unlimited
    retry_after: float = 1.0
    delay: float = 5.0                 # slow / timeout: seconds to hold the request
    hits: int = 0
    retry_after_date: bool = False     # 429 / 503: Retry-After as an HTTP date instead of seconds

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "path": self.path, "method": self.method, "rate": self.rate,
                "remaining": self.remaining, "retryAfter": self.retry_after, "delay": self.delay,
                "hits": self.hits, "retryAfterAsDate": self.retry_after_date}


#: 429 / 503 / 504 with their usual bodies; slow / timeout hold the request; syncStateNotFound-400
#: and resyncRequired-400 answer 400 with the sync-state code only in ``innerError`` (Graph's
#: error guide: clients must read the nested codes too).
FAULT_KINDS = ("429", "503", "504", "slow", "timeout", "syncStateNotFound-400", "resyncRequired-400")


@dataclass
class Behaviour:
    """Knobs that make the stand-in as awkward as the real service. Tests set them explicitly."""

    #: calendarView and delta page size without ``Prefer: odata.maxpagesize``
    default_page_size: int = 10
    max_page_size: int = 1000
    #: chance that a delta page is served empty (still with a nextLink) before the next real page
    empty_page_probability: float = 0.1
    #: chance that an incremental delta round repeats one unchanged item the client already has
    replay_probability: float = 0.05
    #: delta/skip tokens older than this (seconds) answer 410; None: only capacity limits them
    delta_token_max_age: float | None = None
    max_sync_states: int = 10000
    #: chance that a notification is delivered twice (a create also as ``updated``)
    duplicate_probability: float = 0.1
    coalesce_delay: float = 0.2
    delivery_timeout: float = 3.0
    max_delivery_attempts: int = 5
    retry_base_delay: float = 1.0
    validation_timeout: float = 10.0
    #: reauthorizationRequired is sent once this many seconds before a subscription expires
    reauthorization_lead: float = 15 * 60
    housekeeping_interval: float = 1.0
    max_concurrency: int = 4
    concurrency_retry_after: float = 1.0
    max_subscriptions_per_mailbox: int = 1000
    max_event_subscription_minutes: int = 4230
    require_https_notification_url: bool = False
    #: ``@removed`` items give the reason "changed" instead of "deleted" (delta-query overview: both occur)
    removed_reason_changed: bool = False
    #: incremental delta rounds report an updated item with only some of its properties (no start
    #: or end), as the delta-query overview allows; GET on the event still gives all of it
    partial_delta_items: bool = False
    #: timed events come in their own wall time under a custom zone label, whatever the Prefer
    #: header asks: 0 off; 1 ``tzone://Microsoft/Custom`` / ``Customized Time Zone`` on start/end
    #: with originalStart/EndTimeZone still named; 2 those custom as well
    custom_zone_labels: int = 0
    #: mailboxSettings report a user-defined zone ("Customized Time Zone"), in workingHours too
    custom_mailbox_zone: bool = False
    #: per-calendar event subscriptions are refused (400); only the documented ``/users/{id}/events``
    refuse_calendar_subscriptions: bool = False

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def as_date(value: date | datetime) -> date:
    return value.date() if isinstance(value, datetime) else value
