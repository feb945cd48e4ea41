"""Plain data the whole service talks in. No I/O, no SDK types.

Times are always timezone-aware; the adapters convert at the edge.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class LinkMode(StrEnum):
    DELEGATED = "delegated"   # the signed-in user's refresh token (MSAL cache)
    APP_ONLY = "app_only"     # client credentials; the tenant granted admin consent
    ICS = "ics"               # published Outlook ICS URL, fetched by a timer


class SyncMode(StrEnum):
    PUSH = "push"             # Graph subscription + delta on notification
    POLLING = "polling"       # no subscription possible: delta on a timer


class LinkHealth(StrEnum):
    OK = "ok"
    NEEDS_RECONNECT = "needs_reconnect"
    ERROR = "error"


class TitlePrivacy(StrEnum):
    """What a blocked slot in timum shows of the Outlook event."""

    NONE = "none"        # no title at all (default)
    LABEL = "label"      # the fixed label "Outlook"
    SUBJECT = "subject"  # the event subject, never for private events


class BookingEventEdits(StrEnum):
    """What happens when someone edits or deletes, in Outlook, the event a booking owns."""

    RESTORE = "restore"  # write the booking's event back at once (timum is the source of truth)
    REPORT = "report"    # leave Outlook as it is and tell timum (a conflict the provider resolves)


class CancelPolicy(StrEnum):
    """What happens to our Outlook event when its booking is cancelled."""

    DELETE = "delete"
    MARK = "mark"        # keep it, prefixed "Abgesagt:" / "Cancelled:" and shown as free


class CustomerPrivacy(StrEnum):
    """How much customer data goes into Outlook event bodies."""

    NONE = "none"
    NAME = "name"
    CONTACT = "contact"  # name, e-mail, phone


@dataclass(frozen=True)
class LinkKey:
    provider_id: str
    resource_id: str

    def __str__(self) -> str:
        return f"{self.provider_id}|{self.resource_id}"

    @classmethod
    def parse(cls, raw: str) -> LinkKey:
        provider, sep, resource = raw.partition("|")
        if not sep or not provider or not resource:
            raise ValueError("link key must be 'provider|resource'")
        return cls(provider, resource)


@dataclass(frozen=True)
class ProviderSettings:
    """Per-provider choices, stored with the provider; defaults protect privacy."""

    provider_id: str
    title_privacy: TitlePrivacy = TitlePrivacy.NONE
    tentative_blocks: bool = True
    customer_privacy: CustomerPrivacy = CustomerPrivacy.NAME
    cancel_policy: CancelPolicy = CancelPolicy.DELETE
    locale: str = "de"
    booking_event_edits: BookingEventEdits = BookingEventEdits.RESTORE
    # Which Outlook free/busy statuses block the resource (``tentative_blocks`` above is the
    # tentative one). Defaults keep the behaviour from before the rules were configurable.
    free_blocks: bool = False
    busy_blocks: bool = True
    oof_blocks: bool = True
    working_elsewhere_blocks: bool = False
    unknown_blocks: bool = True       # also any status Graph may add later
    #: all-day events block even when marked free (Outlook's default for all-day events is free)
    all_day_free_blocks: bool = False
    #: a link whose Outlook changes lag more than this is announced ``stale`` (0: never)
    stale_after_minutes: int = 60
    #: days after a link began to need a reconnect on which timum is reminded ("1,3,7"; "": never)
    reconnect_reminder_days: str = "1,3,7"


@dataclass
class Link:
    """One Outlook calendar ↔ one timum resource, and everything we know about its sync."""

    provider_id: str
    resource_id: str
    mode: LinkMode
    tenant_id: str
    mailbox_id: str                 # Graph user id of the mailbox that owns the calendar
    calendar_id: str
    calendar_name: str
    calendar_owner: str             # owner's address / name as Graph reports it
    account_id: str = ""            # MSAL home_account_id whose tokens serve DELEGATED links
    time_zone: str = "UTC"          # mailbox time zone (IANA), for all-day events and bookings
    sync_mode: SyncMode = SyncMode.PUSH
    subscription_id: str = ""
    subscription_expires_at: datetime | None = None
    delta_link: str = ""
    window_start: datetime | None = None   # the window the stored delta_link was made for
    window_end: datetime | None = None
    last_sync_at: datetime | None = None
    last_error: str = ""
    last_error_at: datetime | None = None
    health: LinkHealth = LinkHealth.OK
    ics_url_encrypted: str = ""     # ICS import mode: the published URL (a credential), encrypted
    ics_host: str = ""              # shown instead of the URL
    ics_etag: str = ""
    ics_last_modified: str = ""
    ics_skipped: int = 0
    skipped_items: int = 0          # unreadable items left out by the last completed round
    skipped_sample: str = ""        # one of their reasons, for the links API and status webhooks
    subscription_resource: str = ""  # "calendar" | "mailbox" (Graph refused the calendar) | "" (none)
    block_of: str = ""              # block-only link: the resource it blocks (also in its key)
    #: timum's page the link was connected from (its "Kalender verbinden" button): where a
    #: reconnect reminder sends the provider. A connect link itself lives 15 minutes, so no link
    #: minted at connect time could serve a reminder days later.
    reconnect_url: str = ""
    created_at: datetime | None = None
    linked_by: str = ""             # the Microsoft account that linked it ("Name (address)"), for display
    etag: str = field(default="", compare=False)

    @property
    def key(self) -> LinkKey:
        return LinkKey(self.provider_id, self.resource_id)

    @property
    def needs_reconnect(self) -> bool:
        return self.health is LinkHealth.NEEDS_RECONNECT

    @property
    def block_only(self) -> bool:
        """A calendar that only blocks its resource's time (never written to); see ``block_key``."""
        return is_block_only(self.key)

    @property
    def timum_resource_id(self) -> str:
        """The timum resource whose slots this link writes (for a block-only link, not its key's)."""
        return timum_resource(self.resource_id)


@dataclass(frozen=True)
class CalendarInfo:
    id: str
    name: str
    owner_name: str
    owner_address: str
    can_edit: bool
    is_default: bool
    is_shared: bool          # owned by someone else and shared with the signed-in user
    mailbox_id: str          # user id/address to use in /users/{id}/calendars/{cid}


@dataclass(frozen=True)
class OutlookEvent:
    """An Outlook event or one occurrence of a series, as a delta/calendarView item.

    For all-day events, ``start``/``end`` are midnight in the mailbox time zone (the adapter
    converts), so the planner need not know Graph's all-day conventions.
    """

    id: str                          # immutable id; occurrences have their own id
    start: datetime
    end: datetime
    subject: str = ""
    is_all_day: bool = False
    show_as: str = "busy"            # free | tentative | busy | oof | workingElsewhere | unknown
    sensitivity: str = "normal"      # normal | personal | private | confidential
    is_cancelled: bool = False
    type: str = "singleInstance"     # singleInstance | occurrence | exception | seriesMaster
    series_master_id: str = ""
    transaction_id: str = ""
    booking_id: str = ""             # our extended property, when the read could expand it
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class SkippedItem:
    """An item of a source (delta page, ICS file) that could not be read and was left out.

    One unreadable item must never stop a calendar: the round goes on without it, and the link's
    status counts it and names a sample reason (``Link.skipped_items`` / ``skipped_sample``).
    """

    id: str                          # the item's id as the source names it ("" when unknown)
    reason: str                      # short, human-readable, never containing a secret


@dataclass(frozen=True)
class DeltaPage:
    events: list[OutlookEvent]
    removed: list[str]               # ids reported as @removed
    next_link: str = ""
    delta_link: str = ""
    skipped: list[SkippedItem] = field(default_factory=list)   # unreadable items of this page


@dataclass(frozen=True)
class BlockedSlot:
    """A blocked time in timum that we own, addressed by our external id."""

    external_id: str
    start: datetime
    end: datetime
    all_day: bool = False
    title: str = ""
    source: str = "outlook"          # outlook | ics


class BookingStatus(StrEnum):
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Customer:
    name: str = ""
    email: str = ""
    phone: str = ""


@dataclass(frozen=True)
class Booking:
    id: str
    provider_id: str
    resource_id: str
    version: int
    start: datetime
    end: datetime
    status: BookingStatus
    service_name: str = ""
    time_zone: str = "Europe/Berlin"
    customer: Customer = Customer()
    notes: str = ""
    url: str = ""
    updated_at: datetime | None = None


@dataclass(frozen=True)
class EventDraft:
    """What we write to Outlook for a booking."""

    subject: str
    body_html: str
    start: datetime
    end: datetime
    time_zone: str
    show_as: str = "busy"
    categories: tuple[str, ...] = ("timum",)
    booking_id: str = ""


@dataclass(frozen=True)
class SubscriptionInfo:
    id: str
    expires_at: datetime
    resource: str = ""


def stable_id(*parts: str, prefix: str = "", length: int = 40) -> str:
    """Deterministic, URL- and table-key-safe id from parts (sha256 hex)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:length]
    return prefix + digest


#: Marks a block-only link's key: ``<resource><BLOCK_MARK><calendar tag>``. A resource keeps one
#: linked calendar that bookings are written to (key = the resource) and may add calendars that
#: only block its time; each is a link of its own (own sync state, health, freshness) under such a
#: key, so the writer — which looks links up by the booking's resource — never writes to one.
BLOCK_MARK = "~block~"
#: Slot id prefixes: the resource's own linked calendar, and its block-only calendars. Distinct,
#: so one link's reconciliation never takes another link's slots of the same resource for orphans.
MAIN_SLOT_PREFIX = "ol-"
BLOCK_SLOT_PREFIX = "ob-"


def is_block_only(key: LinkKey) -> bool:
    return BLOCK_MARK in key.resource_id


def timum_resource(resource_id: str) -> str:
    """The timum resource of a link's key (the key itself, or what precedes ``BLOCK_MARK``)."""
    return resource_id.split(BLOCK_MARK, 1)[0]


def block_key(provider_id: str, resource_id: str, tenant_id: str, mailbox_id: str, calendar_id: str) -> LinkKey:
    """The key of a block-only link of ``resource_id`` to one calendar (stable for that calendar)."""
    tag = stable_id(tenant_id, mailbox_id.lower(), calendar_id, length=12)
    return LinkKey(provider_id, f"{resource_id}{BLOCK_MARK}{tag}")


def slot_prefix(link: LinkKey) -> str:
    return BLOCK_SLOT_PREFIX if is_block_only(link) else MAIN_SLOT_PREFIX


def slot_external_id(link: LinkKey, event_id: str) -> str:
    """External id of the blocked slot for one Outlook event (or occurrence) on one link.

    Derived, not stored-then-read, so a replay after a crash PUTs the same slot again.
    """
    return stable_id(link.provider_id, link.resource_id, event_id, prefix=slot_prefix(link))


def booking_transaction_id(booking_id: str, resource_id: str = "") -> str:
    """Graph ``transactionId`` for the event of a booking: duplicate POSTs collapse to one event.

    Graph deduplicates creates by transactionId per mailbox, and two resources' calendars may sit
    in one mailbox: a booking reassigned to another resource must not collapse into the event it
    had at the first one, so the resource is part of the id."""
    if not resource_id:
        return stable_id("booking", booking_id, prefix="timum-", length=32)
    return stable_id("booking", booking_id, resource_id, prefix="timum-", length=32)
