"""The real ``GraphCalendarPort``: Microsoft Graph through msgraph-sdk.

Owns how we talk to Graph — which headers every request carries, how Graph's shapes become our
domain objects, and how every failure becomes one class of ``shared.errors``:

* ``Prefer: IdType="ImmutableId"`` on every request, so event ids survive moves between folders;
  delta also asks for UTC times and a page size.
* All-day events come back as midnight dates; they are returned as midnight in the mailbox's
  time zone (looked up once per adapter and mailbox), as ``OutlookEvent`` promises.
* At most ``max_concurrency`` requests per mailbox are in flight in this process (Graph allows 4
  per app and mailbox), shared by every adapter on the same event loop.
* Throttling is not waited out here: the SDK's retry handler is switched off and a 429/503
  surfaces as ``Throttled(retry_after=…)`` so the caller re-queues with a visibility delay. Only a
  Retry-After of at most ``SHORT_RETRY_SECONDS`` is retried once in place.
* A credential that raises one of our errors (``NeedsReconnect`` on invalid_grant) is not wrapped.
* Error codes are read from the whole chain (``error.code``, ``details``, every nested
  ``innererror``): a sync-state code anywhere, or 410 on delta, is ``SyncStateExpired``.
* A delta item that cannot be mapped without guessing (no end, a custom zone label nothing
  resolves) is returned in ``DeltaPage.skipped``, never fails the page; an item carrying only its
  changed properties is read in full first.

Cost: importing this module does not import the SDK; its generated models load with the first
request of a process (``bench/first_call.py`` prints what that costs). ``load_request_side()``
loads the request side off the event loop for a caller whose first request must be fast (the
live conflict check). The webhook path never imports this module.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import ssl
import time
import warnings
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from shared.adapters import timezones
from shared.adapters.graph_constants import (
    BOOKING_PROPERTY_ID,
    GRAPH_SCOPE,
    SUBSCRIPTION_CHANGE_TYPES,
    SUBSCRIPTION_FORBIDDEN,
    check_draft,
    is_object_id,
    mailbox_subscription_resource,
    subscription_resource,
)
from shared.adapters.timum_http import parse_retry_after
from shared.domain import CalendarInfo, DeltaPage, EventDraft, OutlookEvent, SkippedItem, SubscriptionInfo
from shared.errors import (
    AuthError,
    BadRequest,
    ConfigError,
    Conflict,
    NotFound,
    RemoteGone,
    SyncError,
    SyncStateExpired,
    Throttled,
    TransientError,
)
from shared.observability.metrics import metrics
from shared.ports import GraphCalendarPort

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

    from shared.config import Settings

log = logging.getLogger(__name__)

#: Time zone assumed when a mailbox's settings cannot be read (timum's home market).
FALLBACK_TIME_ZONE = "Europe/Berlin"

T = TypeVar("T")

#: A Retry-After up to this many seconds is waited out once inside the call; longer ones surface
#: as ``Throttled`` (a function must not sleep through Graph's back-off).
SHORT_RETRY_SECONDS = 1.0

PREFER_IMMUTABLE_ID = 'IdType="ImmutableId"'
PREFER_UTC = 'outlook.timezone="UTC"'

#: Graph error codes that mean "this delta token is no longer valid: start over".
_SYNC_STATE_CODES = frozenset({"syncstatenotfound", "resyncrequired", "syncstateinvalid"})

#: calendarView reads for the live conflict check: the fields the planner needs, pages and a cap.
CALENDAR_VIEW_FIELDS = ("id", "subject", "start", "end", "isAllDay", "showAs", "sensitivity", "isCancelled",
                        "type", "seriesMasterId", "transactionId", "categories")
CALENDAR_VIEW_PAGE_SIZE = 100
CALENDAR_VIEW_MAX_PAGES = 10



# --------------------------------------------------------------------------------------------
# Lazy SDK loading
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Sdk:
    """The SDK classes the adapter uses, imported once."""

    GraphServiceClient: Any
    GraphRequestAdapter: Any
    default_options: dict[str, Any]
    GraphClientFactory: Any
    RetryHandlerOption: Any
    AzureIdentityAuthenticationProvider: Any
    AnonymousAuthenticationProvider: Any
    RequestConfiguration: Any
    APIError: Any
    ODataError: Any
    AuthHTTPError: Any
    Event: Any
    ItemBody: Any
    BodyType: Any
    DateTimeTimeZone: Any
    FreeBusyStatus: Any
    SingleValueLegacyExtendedProperty: Any
    Subscription: Any
    DeltaQuery: Any
    EventsQuery: Any
    CalendarsQuery: Any
    UserQuery: Any
    CalendarViewQuery: Any


@lru_cache(maxsize=1)
def _sdk() -> _Sdk:
    # The generated request builders declare deprecated configuration classes at import time and
    # so emit DeprecationWarnings while loading; they are the SDK's, not ours to act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from kiota_abstractions.api_error import APIError
        from kiota_abstractions.authentication.anonymous_authentication_provider import (
            AnonymousAuthenticationProvider,
        )
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from kiota_authentication_azure._exceptions import HTTPError as AuthHTTPError
        from kiota_authentication_azure.azure_identity_authentication_provider import (
            AzureIdentityAuthenticationProvider,
        )
        from kiota_http.middleware.options import RetryHandlerOption
        from msgraph import GraphServiceClient
        from msgraph.generated.models.body_type import BodyType
        from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
        from msgraph.generated.models.event import Event
        from msgraph.generated.models.free_busy_status import FreeBusyStatus
        from msgraph.generated.models.item_body import ItemBody
        from msgraph.generated.models.o_data_errors.o_data_error import ODataError
        from msgraph.generated.models.single_value_legacy_extended_property import (
            SingleValueLegacyExtendedProperty,
        )
        from msgraph.generated.models.subscription import Subscription
        from msgraph.generated.users.item.calendars.calendars_request_builder import CalendarsRequestBuilder
        from msgraph.generated.users.item.calendars.item.calendar_view.calendar_view_request_builder import (
            CalendarViewRequestBuilder,
        )
        from msgraph.generated.users.item.calendars.item.calendar_view.delta.delta_request_builder import (
            DeltaRequestBuilder,
        )
        from msgraph.generated.users.item.calendars.item.events.events_request_builder import EventsRequestBuilder
        from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder
        from msgraph.graph_request_adapter import GraphRequestAdapter
        from msgraph.graph_request_adapter import options as default_options
        from msgraph_core import GraphClientFactory

        sdk = _Sdk(
            GraphServiceClient=GraphServiceClient,
            GraphRequestAdapter=GraphRequestAdapter,
            default_options=dict(default_options),
            GraphClientFactory=GraphClientFactory,
            RetryHandlerOption=RetryHandlerOption,
            AzureIdentityAuthenticationProvider=AzureIdentityAuthenticationProvider,
            AnonymousAuthenticationProvider=AnonymousAuthenticationProvider,
            RequestConfiguration=RequestConfiguration,
            APIError=APIError,
            ODataError=ODataError,
            AuthHTTPError=AuthHTTPError,
            Event=Event,
            ItemBody=ItemBody,
            BodyType=BodyType,
            DateTimeTimeZone=DateTimeTimeZone,
            FreeBusyStatus=FreeBusyStatus,
            SingleValueLegacyExtendedProperty=SingleValueLegacyExtendedProperty,
            Subscription=Subscription,
            DeltaQuery=DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters,
            EventsQuery=EventsRequestBuilder.EventsRequestBuilderGetQueryParameters,
            CalendarsQuery=CalendarsRequestBuilder.CalendarsRequestBuilderGetQueryParameters,
            UserQuery=UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters,
            CalendarViewQuery=CalendarViewRequestBuilder.CalendarViewRequestBuilderGetQueryParameters,
        )
        return sdk


def _touch_builders(client: Any) -> None:
    """Walk every request-builder chain the adapter uses, so their modules are imported here —
    under the warning filter — and not later in the middle of a request."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        user = client.users.by_user_id("x")
        calendar = user.calendars.by_calendar_id("y")
        _ = calendar.calendar_view.delta, calendar.calendar_view, calendar.events, user.calendars
        _ = user.events.by_event_id("z"), user.mailbox_settings, client.me
        _ = client.subscriptions.by_subscription_id("s").reauthorize


def load_request_side() -> float:
    """Import the SDK and walk the request builders, as building the first adapter of a process
    does; return the seconds spent (~0.2 s here). For a caller that wants these imports off its
    event loop (the live conflict check, ``shared/safety/preload.py``)."""
    began = time.perf_counter()
    sdk = _sdk()
    adapter = sdk.GraphRequestAdapter(sdk.AnonymousAuthenticationProvider(), client=httpx.AsyncClient())
    _touch_builders(sdk.GraphServiceClient(request_adapter=adapter))
    return time.perf_counter() - began


# --------------------------------------------------------------------------------------------
# Concurrency: one gate per (event loop, mailbox) in this process
# --------------------------------------------------------------------------------------------

_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, int], asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary())


#: Mailbox addresses whose object id this process has looked up (``user_object_id``): one mailbox
#: addressed both ways (links before and after their migration) shares one gate. Bounded.
_OBJECT_IDS: dict[str, str] = {}
_MAX_OBJECT_IDS = 10_000


def _remember_object_id(address: str, object_id: str) -> None:
    if len(_OBJECT_IDS) >= _MAX_OBJECT_IDS:
        _OBJECT_IDS.pop(next(iter(_OBJECT_IDS)))
    _OBJECT_IDS[address.lower()] = object_id.lower()


def _gate(key: str, limit: int) -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    per_loop = _GATES.setdefault(loop, {})
    low = key.lower()
    gate_key = (_OBJECT_IDS.get(low, low), limit)
    gate = per_loop.get(gate_key)
    if gate is None:
        gate = per_loop[gate_key] = asyncio.Semaphore(limit)
    return gate


# --------------------------------------------------------------------------------------------
# Error translation
# --------------------------------------------------------------------------------------------

def _retry_after(headers: Any) -> float | None:
    """Seconds from a Retry-After header: a number (possibly fractional) or an HTTP date.

    The parsing itself is the timum client's (one parser for every remote API we call)."""
    if not headers:
        return None
    try:
        raw = headers.get("retry-after") or headers.get("Retry-After")
    except AttributeError:
        return None
    if not raw:
        return None
    if isinstance(raw, list | tuple | set):  # kiota hands headers over as sets of values
        raw = next(iter(raw), "")
    return parse_retry_after(str(raw), now=time.time())


def error_codes(main: Any) -> list[str]:
    """Every error code of a Graph error body: ``error.code``, the ``details[].code`` and the code of
    each nested ``innererror`` (Graph's error guide: clients must look at all of them, the most
    specific one being the innermost). ``main`` is the SDK's ``MainError`` or the raw JSON object."""
    codes: list[str] = []
    seen: set[int] = set()

    def walk(node: Any, depth: int) -> None:
        if node is None or depth > 8 or id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, dict):
            code = node.get("code")
            if isinstance(code, str) and code:
                codes.append(code)
            for key, value in node.items():
                if key.lower() == "innererror" or key == "details":
                    for child in value if isinstance(value, list) else (value,):
                        walk(child, depth + 1)
            return
        code = getattr(node, "code", None)
        if isinstance(code, str) and code:
            codes.append(code)
        for child in getattr(node, "details", None) or ():
            walk(child, depth + 1)
        walk(getattr(node, "inner_error", None), depth + 1)
        # Keys the SDK model does not declare ("innererror" in lower case, "code" inside an
        # innerError) land in additional_data as plain JSON.
        extra = getattr(node, "additional_data", None)
        if isinstance(extra, dict) and extra:
            walk(extra, depth + 1)

    walk(main, 0)
    return codes


_URL = re.compile(r"\b(?:https?|wss?)://\S+", re.IGNORECASE)
#: ``…$metadata#users('<id>')/mailboxSettings``: the user as Graph resolved the key it was given.
_CONTEXT_USER = re.compile(r"#users\('([^'/]+)'\)", re.IGNORECASE)


def _clip(text: str, limit: int = 200) -> str:
    """Graph's message, one line, without URLs (a notification URL may carry a function key)."""
    text = _URL.sub("<url>", " ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def translate_error(exc: BaseException, action: str) -> SyncError | None:
    """The ``shared.errors`` class for what the SDK raised, or None to let it propagate as is.

    Messages name the action, the HTTP status and Graph's error code; never a URL (delta links and
    tokens live in them) nor a header.
    """
    if isinstance(exc, SyncError | asyncio.CancelledError) or not isinstance(exc, Exception):
        return None
    sdk = _sdk()
    if isinstance(exc, sdk.APIError):
        return _api_error(exc, action)
    if isinstance(exc, httpx.TimeoutException):
        return TransientError(f"{action}: Graph did not answer in time ({type(exc).__name__})", code="timeout")
    if isinstance(exc, httpx.HTTPError):
        return TransientError(f"{action}: Graph unreachable ({type(exc).__name__})", code="unreachable")
    if isinstance(exc, sdk.AuthHTTPError):
        return ConfigError([f"Graph base URL refused for authentication ({_clip(str(exc))})"])
    return _credential_error(exc, action) or TransientError(
        f"{action}: unexpected {type(exc).__name__} from the Graph client", code="graph_unexpected")


def _api_error(exc: Any, action: str) -> SyncError:
    """A Graph answer with an error status (the SDK's ``APIError``)."""
    status = exc.response_status_code or 0
    main = getattr(exc, "error", None)
    codes = error_codes(main)
    message = str(getattr(main, "message", "") or "") if main is not None else ""
    code = codes[0] if codes else ""
    detail = f"{action}: Graph answered {status}" + (f" {code}" if code else "")
    inner = [c for c in codes[1:] if c.lower() != code.lower()]
    if inner:
        detail += f" [{', '.join(_clip(c, 60) for c in inner[:3])}]"
    if message:
        detail += f" ({_clip(message)})"
    if any(c.lower() in _SYNC_STATE_CODES for c in codes):
        # The delta token is no longer usable, whatever the status (Graph sends 410 or 400)
        # and wherever in the chain the code sits: a fresh round, not a broken link.
        return SyncStateExpired(detail)
    return _status_error(status, detail, _retry_after(exc.response_headers))


def _status_error(status: int, detail: str, retry_after: float | None) -> SyncError:
    if status == 429 or (status == 503 and retry_after is not None):
        return Throttled(detail, retry_after=retry_after)
    if status >= 500 or status in (408, 0):
        return TransientError(detail, retry_after=retry_after)
    cls, code = _BY_STATUS.get(status, (BadRequest, "graph_bad_request"))
    return cls(detail, code=code)


#: Graph's other error statuses; anything else in 4xx is a request Graph refused as malformed.
_BY_STATUS: dict[int, tuple[type[SyncError], str | None]] = {
    401: (AuthError, "graph_unauthorized"),
    403: (AuthError, "graph_forbidden"),
    404: (NotFound, None),
    410: (RemoteGone, None),
    409: (Conflict, None),
    412: (Conflict, None),
}


def _credential_error(exc: Exception, action: str) -> SyncError | None:
    """azure-identity's failures (app-only credentials), which the SDK passes through."""
    try:
        from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError
    except ImportError:  # pragma: no cover - azure-core is a dependency of the SDK
        return None
    if isinstance(exc, ClientAuthenticationError):
        return AuthError(f"{action}: the credential could not get a token ({type(exc).__name__})",
                         code="credential")
    if isinstance(exc, ServiceRequestError):
        return TransientError(f"{action}: identity platform unreachable ({type(exc).__name__})",
                              code="unreachable")
    return None


def _delta_body(raw: bytes | None) -> dict[str, Any]:
    try:
        response = json.loads(raw) if raw else None
    except ValueError as exc:
        raise TransientError("calendar delta: Graph sent a body that is not JSON", code="graph_unexpected") from exc
    if not isinstance(response, dict):
        raise TransientError("calendar delta: Graph sent an empty response", code="graph_unexpected")
    return response


# --------------------------------------------------------------------------------------------
# Mapping between Graph and the domain
# --------------------------------------------------------------------------------------------

class UnreadableEvent(ValueError):
    """An item of a delta page that cannot be mapped without guessing; the round skips and counts it."""


#: Labels Graph puts in ``dateTimeTimeZone.timeZone`` (and mailbox settings) for a zone the user
#: defined, which has no name in either database: the label alone does not say the offset.
CUSTOM_ZONE_LABELS = frozenset({"tzone://microsoft/custom", "customized time zone"})

#: Properties every complete event of a delta page carries; an item missing one is a partial
#: update (delta-query overview: "updated instances may only carry the changed properties").
_COMPLETE_EVENT_KEYS = ("start", "end")

#: Partial items completed by reading the event, per page; beyond that they are skipped (bounded cost).
MAX_COMPLETIONS_PER_PAGE = 20


def known_zone(name: Any) -> tzinfo | None:
    """The zone a Graph zone label names, or None for a custom or unknown label."""
    if not isinstance(name, str) or not name.strip() or name.strip().lower() in CUSTOM_ZONE_LABELS:
        return None
    iana = timezones.to_iana(name)
    if iana is None:
        return None
    return UTC if iana == "UTC" else ZoneInfo(iana)


def _zone(name: str | None) -> tzinfo:
    return known_zone(name or "UTC") or UTC


def _label(value: Any) -> str:
    raw = value.get("timeZone") if isinstance(value, dict) else None
    return raw if isinstance(raw, str) else ""


def parse_graph_datetime(value: Any, fallbacks: Sequence[Any] = ()) -> datetime:
    """A Graph ``dateTimeTimeZone`` (the JSON object) as an aware datetime.

    A missing label means UTC (what ``Prefer: outlook.timezone="UTC"`` asks for). A custom or
    unknown label is resolved through ``fallbacks`` (zone names, first known one wins); without
    one the value is ``UnreadableEvent`` — reading it as UTC would move the slot silently.
    """
    if not isinstance(value, dict):
        raise UnreadableEvent("start/end is not a dateTimeTimeZone object")
    raw = str(value.get("dateTime") or "")
    if not raw:
        raise UnreadableEvent("dateTimeTimeZone without dateTime")
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise UnreadableEvent("dateTime is not an ISO date-time") from exc
    if parsed.tzinfo is not None:
        return parsed
    label = _label(value)
    zone = known_zone(label) if label else UTC
    for name in fallbacks:
        if zone is not None:
            break
        zone = known_zone(name)
    if zone is None:
        raise UnreadableEvent(f"time zone {_clip(label, 60)!r} cannot be resolved")
    return parsed.replace(tzinfo=zone)


def needs_mailbox_zone(event: dict[str, Any]) -> bool:
    """Whether mapping ``event`` may need the mailbox's zone: all-day events (their dates are read
    in it), and times whose label and the event's original zones are all unknown."""
    if event.get("isAllDay") is True:
        return True
    for part, original in (("start", "originalStartTimeZone"), ("end", "originalEndTimeZone")):
        label = _label(event.get(part))
        if label and known_zone(label) is None and known_zone(event.get(original)) is None:
            return True
    return False


def is_partial(event: dict[str, Any]) -> bool:
    return any(key not in event for key in _COMPLETE_EVENT_KEYS)


def _midnight(day: date, zone: tzinfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone)


def _booking_id(event: dict[str, Any]) -> str:
    wanted = BOOKING_PROPERTY_ID.lower()
    for prop in event.get("singleValueExtendedProperties") or ():
        if isinstance(prop, dict) and str(prop.get("id") or "").lower() == wanted:
            return str(prop.get("value") or "")
    return ""


def _text(event: dict[str, Any], name: str, default: str = "") -> str:
    value = event.get(name)
    return default if value is None else str(value)


def _day(value: Any) -> date:
    if not isinstance(value, dict):
        raise UnreadableEvent("start/end is not a dateTimeTimeZone object")
    try:
        return datetime.fromisoformat(str(value.get("dateTime") or "")).date()
    except ValueError as exc:
        raise UnreadableEvent("all-day dateTime is not an ISO date") from exc


def event_from_graph(event: dict[str, Any], mailbox_zone: str | None, *,
                     mailbox_zone_known: bool = True) -> OutlookEvent:
    """Map one event of a delta page, as Graph's JSON; all-day events become midnights in ``mailbox_zone``.

    Raises ``UnreadableEvent`` (a ``ValueError``) for an item that cannot be mapped without
    guessing. Custom zone labels on start/end resolve through the event's original zones, then the
    mailbox zone when it is really known (``mailbox_zone_known``). An all-day event of a mailbox
    whose zone is not known is read in its own original zone when that one is known.

    Plain JSON rather than the SDK's ``Event`` model: kiota builds each model through a table of
    every field of every Outlook item, which made parsing the bulk of a first sync (``bench/``
    measures it). We read only the fields the planner needs.
    """
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise UnreadableEvent("event without id")
    if "start" not in event:
        raise UnreadableEvent("event without start")
    if "end" not in event:
        raise UnreadableEvent("event without end")
    is_all_day = event.get("isAllDay") is True
    if is_all_day:
        # Graph reports all-day events as floating midnight dates; the date part is what counts.
        zone = _zone(mailbox_zone)
        if not mailbox_zone_known:
            zone = known_zone(event.get("originalStartTimeZone")) or zone
        start = _midnight(_day(event["start"]), zone)
        end = _midnight(_day(event["end"]), zone)
    else:
        shared_fallback = (mailbox_zone,) if mailbox_zone and mailbox_zone_known else ()
        start = parse_graph_datetime(event["start"], (event.get("originalStartTimeZone"), *shared_fallback))
        end = parse_graph_datetime(event["end"], (event.get("originalEndTimeZone"),
                                                  event.get("originalStartTimeZone"), *shared_fallback))
    if end < start:
        raise UnreadableEvent("event ends before it starts")
    return OutlookEvent(
        id=event_id,
        start=start,
        end=end,
        subject=_text(event, "subject"),
        is_all_day=is_all_day,
        show_as=_text(event, "showAs", "busy"),
        sensitivity=_text(event, "sensitivity", "normal"),
        is_cancelled=event.get("isCancelled") is True,
        type=_text(event, "type", "singleInstance"),
        series_master_id=_text(event, "seriesMasterId"),
        transaction_id=_text(event, "transactionId"),
        booking_id=_booking_id(event),
        categories=tuple(str(c) for c in (event.get("categories") or ())),
    )


def _wall_time(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).replace(tzinfo=None).isoformat(timespec="seconds")


def _iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _odata_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def tls_verify(verify: str | bool | ssl.SSLContext) -> bool | ssl.SSLContext:
    """httpx's ``verify`` from a setting: a path names a PEM bundle of *extra* CAs (the sandbox's),
    trusted besides the usual public ones; httpx no longer takes a path itself."""
    if not isinstance(verify, str):
        return verify
    if not verify:
        return True
    import certifi

    context = ssl.create_default_context(cafile=certifi.where())
    try:
        if os.path.isdir(verify):
            context.load_verify_locations(capath=verify)
        else:
            context.load_verify_locations(cafile=verify)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError([f"CA bundle {verify!r} cannot be read ({type(exc).__name__})"]) from exc
    return context


# --------------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------------

class GraphSdkAdapter(GraphCalendarPort):
    """``GraphCalendarPort`` over msgraph-sdk for one access context (one credential).

    The adapter owns ``http_client`` when one is given (tests pass one with a mock transport):
    the SDK's middleware is installed on it and ``close()`` closes it.
    """

    def __init__(self, credential: AsyncTokenCredential, *, base_url: str, verify: str | bool | ssl.SSLContext,
                 max_concurrency: int = 4, http_client: httpx.AsyncClient | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigError([f"Graph base URL must be an absolute http(s) URL, got {base_url!r}"])
        if max_concurrency < 1:
            raise ConfigError(["Graph concurrency per mailbox must be at least 1"])
        sdk = _sdk()
        self._sdk = sdk
        self._host = parts.hostname.lower()
        self._base_url = base_url.rstrip("/")
        self._max_concurrency = max_concurrency
        client = http_client or httpx.AsyncClient(verify=tls_verify(verify),
                                                  timeout=httpx.Timeout(30.0, connect=10.0))
        options = dict(sdk.default_options)
        # No sleeping inside a function on Graph's Retry-After: it surfaces as Throttled instead.
        retry = sdk.RetryHandlerOption(delay=0.0, max_retries=0, should_retry=False)
        options[retry.get_key()] = retry
        self._http = sdk.GraphClientFactory.create_with_default_middleware(client=client, options=options)
        # allowed_hosts: a host missing here would silently get no Authorization header.
        auth = sdk.AzureIdentityAuthenticationProvider(credential, scopes=[GRAPH_SCOPE], allowed_hosts=[self._host])
        # Asked for a fresh token when Graph refuses one that has not expired (see ``_call``).
        self._token_credential = credential
        request_adapter = sdk.GraphRequestAdapter(auth, client=self._http)
        request_adapter.base_url = self._base_url
        self._adapter = request_adapter
        self._client = sdk.GraphServiceClient(request_adapter=request_adapter)
        _touch_builders(self._client)
        # Per adapter (one per run): a zone the user changes is picked up by the next run.
        self._zones: dict[str, tuple[str, bool]] = {}

    # --- plumbing ----------------------------------------------------------------------------
    def _config(self, *extra_prefer: str, query: Any = None) -> Any:
        config = self._sdk.RequestConfiguration()
        config.headers.add("Prefer", PREFER_IMMUTABLE_ID)
        for value in extra_prefer:
            config.headers.add("Prefer", value)
        if query is not None:
            config.query_parameters = query
        return config

    async def _call(self, gate_key: str, action: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run one SDK call under the mailbox's gate; translate what it raises."""
        gate = _gate(gate_key, self._max_concurrency)
        for attempt in range(2):
            failure: SyncError | None = None
            cause: BaseException | None = None
            async with gate:
                try:
                    result = await op()
                except BaseException as exc:  # translated or re-raised below
                    failure = translate_error(exc, action)
                    if failure is None:
                        raise
                    cause = exc
                else:
                    metrics.increment("graph_requests", operation=action, outcome="ok")
                    return result
            metrics.increment("graph_requests", operation=action, outcome=failure.code)
            if isinstance(failure, Throttled):
                metrics.increment("graph_throttled", operation=action)
            if attempt == 0 and await self._refreshed_after_401(failure, action):
                continue
            short = (isinstance(failure, Throttled) and failure.retry_after is not None
                     and failure.retry_after <= SHORT_RETRY_SECONDS)
            if attempt == 0 and short:
                assert isinstance(failure, Throttled) and failure.retry_after is not None
                log.info("%s throttled; retrying once after %.2f s", action, failure.retry_after)
                await asyncio.sleep(failure.retry_after)
                continue
            raise failure from cause
        raise AssertionError("unreachable")  # pragma: no cover

    async def _refreshed_after_401(self, failure: SyncError, action: str) -> bool:
        """On Graph's 401 (a token revoked before it expired; kiota already answered a CAE claims
        challenge once), drop the credential's token so the retry gets a fresh one. The one place
        every Graph call passes through; a refused refresh raises ``NeedsReconnect`` from there."""
        if not (isinstance(failure, AuthError) and failure.code == "graph_unauthorized"):
            return False
        invalidate = getattr(self._token_credential, "invalidate", None)
        if invalidate is None:
            return False
        log.info("%s: Graph refused the access token; retrying once with a fresh one", action)
        await invalidate()
        return True

    def _user(self, mailbox_id: str) -> Any:
        return self._client.users.by_user_id(mailbox_id)

    # --- identity and mailbox ------------------------------------------------------------------
    async def me(self) -> dict[str, str]:
        user = await self._call("/me", "read the signed-in user", lambda: self._client.me.get(self._config()))
        return {
            "id": str(user.id or ""),
            "displayName": str(user.display_name or ""),
            "mail": str(user.mail or ""),
            "userPrincipalName": str(user.user_principal_name or ""),
        }

    async def user_object_id(self, mailbox: str) -> str:
        if not mailbox:
            raise BadRequest("mailbox is empty", field="mailbox")
        builder = self._user(mailbox)
        query = self._sdk.UserQuery(select=["id"])
        try:
            user = await self._raw_json(mailbox, "read user id",
                                        lambda: builder.to_get_request_information(self._config(query=query)))
        except AuthError as exc:
            if exc.code != "graph_forbidden":
                raise
            # Reading a user object app-only takes User.Read.All, which the app does not ask for.
            # The mailbox settings (MailboxSettings.Read) name the user by object id in their
            # @odata.context, as Graph resolves the key it was given.
            settings = await self._raw_json(
                mailbox, "read user id",
                lambda: builder.mailbox_settings.to_get_request_information(self._config()))
            context = settings.get("@odata.context") if isinstance(settings, dict) else None
            found = _CONTEXT_USER.search(context) if isinstance(context, str) else None
            if found is None or not is_object_id(found.group(1)):
                raise
            object_id = found.group(1)
        else:
            object_id = user.get("id") if isinstance(user, dict) else None
        if not isinstance(object_id, str) or not object_id:
            raise TransientError("read user id: Graph returned no id", code="graph_unexpected")
        _remember_object_id(mailbox, object_id)
        return object_id

    async def list_calendars(self, mailbox_id: str) -> list[CalendarInfo]:
        builder = self._user(mailbox_id).calendars
        query = self._sdk.CalendarsQuery(top=100)
        page = await self._call(mailbox_id, "list calendars", lambda: builder.get(self._config(query=query)))
        found: list[Any] = []
        while page is not None:
            found.extend(page.value or ())
            next_link = page.odata_next_link
            if not next_link:
                break
            nxt = builder.with_url(next_link)
            page = await self._call(mailbox_id, "list calendars", partial(nxt.get, self._config()))
        # The default calendar is always the mailbox owner's, so its owner address tells own from
        # shared without reading the user object (app-only access may not be allowed to).
        owners = {mailbox_id.lower()}
        owners.update(str(c.owner.address).lower() for c in found
                      if c.is_default_calendar and c.owner is not None and c.owner.address)
        result: list[CalendarInfo] = []
        for cal in found:
            address = str(getattr(cal.owner, "address", "") or "")
            result.append(CalendarInfo(
                id=str(cal.id),
                name=str(cal.name or ""),
                owner_name=str(getattr(cal.owner, "name", "") or ""),
                owner_address=address,
                can_edit=bool(cal.can_edit),
                is_default=bool(cal.is_default_calendar),
                is_shared=bool(address) and address.lower() not in owners,
                # A shared calendar is addressed through the mailbox that lists it: its id is that
                # mailbox's reference to the owner's calendar.
                mailbox_id=mailbox_id,
            ))
        return result

    async def mailbox_time_zone(self, mailbox_id: str) -> str:
        zone, _ = await self._mailbox_zone(mailbox_id)
        return zone

    async def _raw_json(self, gate_key: str, action: str, info: Callable[[], Any]) -> Any:
        """One GET through the SDK's adapter and middleware, its body as plain JSON.

        The raw body instead of the SDK's models where we read a few fields of a large shape: the
        models cost CPU (see ``event_from_graph``) and fail on shapes Graph sends but its schema
        does not declare (``userPurpose`` as an object in mailbox settings).
        """
        def send() -> Awaitable[bytes | None]:
            # kiota's error mapping: the key below stands for any error status (beside 4XX / 5XX).
            result: Awaitable[bytes | None] = self._adapter.send_primitive_async(
                info(), "bytes", {"XXX": self._sdk.ODataError})
            return result

        raw = await self._call(gate_key, action, send)
        try:
            return json.loads(raw) if raw else None
        except ValueError as exc:
            raise TransientError(f"{action}: Graph sent a body that is not JSON", code="graph_unexpected") from exc

    async def _mailbox_zone(self, mailbox_id: str) -> tuple[str, bool]:
        """The mailbox's zone (IANA) and whether Graph really named it (False: a fallback)."""
        cached = self._zones.get(mailbox_id.lower())
        if cached is not None:
            return cached
        builder = self._user(mailbox_id).mailbox_settings
        try:
            settings = await self._raw_json(mailbox_id, "read mailbox settings",
                                            lambda: builder.to_get_request_information(self._config()))
        except AuthError as exc:
            if exc.code != "graph_forbidden":
                raise  # 401: the token itself is bad, which a fallback would only hide
            # A delegated token may not read *another* user's settings (shared calendars), and an
            # older consent may lack MailboxSettings.Read: fall back rather than fail the link.
            log.warning("mailbox settings not readable; assuming %s", FALLBACK_TIME_ZONE)
            self._zones[mailbox_id.lower()] = (FALLBACK_TIME_ZONE, False)
            return FALLBACK_TIME_ZONE, False
        settings = settings if isinstance(settings, dict) else {}
        hours = settings.get("workingHours")
        hours_zone = hours.get("timeZone") if isinstance(hours, dict) else None
        candidates = (settings.get("timeZone"), hours_zone.get("name") if isinstance(hours_zone, dict) else None)
        found: tuple[str, bool] | None = None
        for name in candidates:
            zone = known_zone(name)
            if zone is not None:
                found = (str(timezones.to_iana(str(name)) or "UTC"), True)
                break
        if found is None:
            # A custom zone ("Customized Time Zone") names no offset. Reading all-day events in UTC
            # would move them for every user east or west of it; timum's home market is the
            # better guess, and timed events are never read in a guessed zone.
            log.warning("mailbox time zone %r is custom or unknown; assuming %s",
                        _clip(str(candidates[0] or ""), 60), FALLBACK_TIME_ZONE)
            found = (FALLBACK_TIME_ZONE, False)
        self._zones[mailbox_id.lower()] = found
        return found

    async def _complete(self, mailbox_id: str, calendar_id: str, item: dict[str, Any]) -> dict[str, Any]:
        """The full event for a partial delta item, read through its calendar (the path that also
        works for a calendar shared with the mailbox)."""
        event_id = item.get("id")
        if not isinstance(event_id, str) or not event_id:
            raise UnreadableEvent("event without id")
        builder = self._user(mailbox_id).calendars.by_calendar_id(calendar_id).events.by_event_id(event_id)
        try:
            full = await self._raw_json(mailbox_id, "read event",
                                        lambda: builder.to_get_request_information(self._config(PREFER_UTC)))
        except (NotFound, RemoteGone) as exc:
            # Deleted since the page was made — or not readable this way. A deletion comes as
            # @removed in a later round; until then the item keeps whatever slot it had.
            raise UnreadableEvent("partial item (only changed properties) could not be read in full") from exc
        if not isinstance(full, dict):
            raise UnreadableEvent("partial item (only changed properties) could not be read in full")
        # The read is at least as new as the delta item.
        return {**item, **full}

    # --- delta ----------------------------------------------------------------------------------
    async def delta(self, mailbox_id: str, calendar_id: str, *, start: datetime, end: datetime,
                    link: str = "", page_size: int = 100) -> DeltaPage:
        if page_size < 1:
            raise BadRequest("page size must be at least 1", field="page_size")
        builder, config = self._delta_request(mailbox_id, calendar_id, start=start, end=end, link=link,
                                              page_size=page_size)

        def send() -> Awaitable[bytes | None]:
            # The raw body instead of ``builder.get``: the SDK's model per event cost more CPU than
            # everything else in a first sync (see ``event_from_graph``). The request still goes
            # through the SDK's adapter and middleware (token, headers), and failures through its
            # error mapping, so ``translate_error`` sees what it sees for every other call.
            info = builder.to_get_request_information(config)
            # kiota's error mapping: the key below stands for any error status (beside 4XX / 5XX).
            result: Awaitable[bytes | None] = self._adapter.send_primitive_async(
                info, "bytes", {"XXX": self._sdk.ODataError})
            return result

        try:
            raw = await self._call(mailbox_id, "calendar delta", send)
        except RemoteGone as exc:
            if isinstance(exc, SyncStateExpired):
                raise
            # 410 Gone on a delta request is Graph's way of saying the token expired.
            raise SyncStateExpired(exc.message) from exc
        except NotFound as exc:
            raise RemoteGone(f"calendar is gone: {exc.message}") from exc
        response = _delta_body(raw)
        items = response.get("value")
        events, removed, skipped = await self._read_items(mailbox_id, calendar_id,
                                                          items if isinstance(items, list) else [])
        if skipped:
            log.warning("calendar delta: %d unreadable item(s) skipped, e.g. %s", len(skipped), skipped[0].reason)
        return DeltaPage(events=events, removed=removed,
                         next_link=str(response.get("@odata.nextLink") or ""),
                         delta_link=str(response.get("@odata.deltaLink") or ""), skipped=skipped)

    def _delta_request(self, mailbox_id: str, calendar_id: str, *, start: datetime, end: datetime, link: str,
                       page_size: int) -> tuple[Any, Any]:
        """The request builder and its configuration: the stored delta link, or a fresh window."""
        builder = self._user(mailbox_id).calendars.by_calendar_id(calendar_id).calendar_view.delta
        prefer = (f"odata.maxpagesize={page_size}", PREFER_UTC)
        if link:
            link_host = (urlsplit(link).hostname or "").lower()
            if link_host != self._host:
                # Following it would send no token (or send data elsewhere); a full round is safe.
                raise SyncStateExpired("stored delta link belongs to another Graph host; resync")
            return builder.with_url(link), self._config(*prefer)
        if start.tzinfo is None or end.tzinfo is None or end <= start:
            raise BadRequest("delta window must be timezone-aware with end after start", field="start")
        query = self._sdk.DeltaQuery(start_date_time=_iso_utc(start), end_date_time=_iso_utc(end))
        return builder, self._config(*prefer, query=query)

    async def _read_items(self, mailbox_id: str, calendar_id: str,
                          items: list[Any]) -> tuple[list[OutlookEvent], list[str], list[SkippedItem]]:
        """A page's items as events and removed ids; one that cannot be read is skipped, named."""
        events: list[OutlookEvent] = []
        removed: list[str] = []
        skipped: list[SkippedItem] = []
        completions = 0
        for item in items:
            item_id = item.get("id") if isinstance(item, dict) else None
            shown_id = item_id if isinstance(item_id, str) else ""
            try:
                if not isinstance(item, dict):
                    raise UnreadableEvent("item is not an object")
                if "@removed" in item:
                    # Both documented reasons ("deleted", "changed") mean: no longer in this view.
                    if not shown_id:
                        raise UnreadableEvent("removed item without id")
                    removed.append(shown_id)
                    continue
                if is_partial(item):
                    if completions >= MAX_COMPLETIONS_PER_PAGE:
                        raise UnreadableEvent("partial item (only changed properties); page limit of reads reached")
                    completions += 1
                    item = await self._complete(mailbox_id, calendar_id, item)
                events.append(await self._event_of(mailbox_id, item))
            except (ValueError, TypeError, AttributeError, KeyError, ZoneInfoNotFoundError) as exc:
                # One unreadable item must not stop the calendar: the round goes on without it.
                reason = str(exc) if isinstance(exc, UnreadableEvent) else f"unreadable event ({type(exc).__name__})"
                skipped.append(SkippedItem(id=_clip(shown_id, 200), reason=_clip(reason, 200)))
        return events, removed, skipped

    async def _event_of(self, mailbox_id: str, item: dict[str, Any]) -> OutlookEvent:
        zone: str | None = None
        zone_known = True
        if needs_mailbox_zone(item):
            zone, zone_known = await self._mailbox_zone(mailbox_id)
        return event_from_graph(item, zone, mailbox_zone_known=zone_known)

    # --- calendarView (live reads) --------------------------------------------------------------
    async def read_calendar_view(self, mailbox_id: str, calendar_id: str, *, start: datetime,
                                 end: datetime) -> list[OutlookEvent]:
        if start.tzinfo is None or end.tzinfo is None or end <= start:
            raise BadRequest("calendar view interval must be timezone-aware with end after start", field="start")
        builder = self._user(mailbox_id).calendars.by_calendar_id(calendar_id).calendar_view
        query = self._sdk.CalendarViewQuery(
            start_date_time=_iso_utc(start), end_date_time=_iso_utc(end), top=CALENDAR_VIEW_PAGE_SIZE,
            select=list(CALENDAR_VIEW_FIELDS),
            expand=[f"singleValueExtendedProperties($filter=id eq {_odata_literal(BOOKING_PROPERTY_ID)})"])
        config = self._config(PREFER_UTC, query=query)
        events: list[OutlookEvent] = []
        for _ in range(CALENDAR_VIEW_MAX_PAGES):
            def send(page: Any = builder, page_config: Any = config) -> Awaitable[bytes | None]:
                # Raw JSON, as for delta: the SDK's models cost more than the request itself.
                info = page.to_get_request_information(page_config)
                result: Awaitable[bytes | None] = self._adapter.send_primitive_async(
                    info, "bytes", {"XXX": self._sdk.ODataError})
                return result

            try:
                raw = await self._call(mailbox_id, "calendar view", send)
            except NotFound as exc:
                raise RemoteGone(f"calendar is gone: {exc.message}") from exc
            try:
                response = json.loads(raw) if raw else None
            except ValueError as exc:
                raise TransientError("calendar view: Graph sent a body that is not JSON",
                                     code="graph_unexpected") from exc
            if not isinstance(response, dict):
                raise TransientError("calendar view: Graph sent an empty response", code="graph_unexpected")
            for item in response.get("value") or ():
                try:
                    if item.get("type") == "seriesMaster":
                        continue  # calendarView lists occurrences; a master is no time of its own
                    zone, zone_known = (await self._mailbox_zone(mailbox_id) if needs_mailbox_zone(item)
                                        else (None, True))
                    events.append(event_from_graph(item, zone, mailbox_zone_known=zone_known))
                except (ValueError, TypeError, AttributeError, KeyError, ZoneInfoNotFoundError) as exc:
                    raise TransientError(f"calendar view: unreadable event ({type(exc).__name__})",
                                         code="graph_unexpected") from exc
            next_link = str(response.get("@odata.nextLink") or "")
            if not next_link:
                return events
            if (urlsplit(next_link).hostname or "").lower() != self._host:
                raise TransientError("calendar view: next page on another host", code="graph_unexpected")
            builder, config = builder.with_url(next_link), self._config(PREFER_UTC)
        # A conflict check reads a short interval; this many items means something is wrong.
        raise TransientError("calendar view: too many items in the interval", code="graph_view_too_large")

    # --- events ---------------------------------------------------------------------------------
    def _event_body(self, draft: EventDraft, zone: ZoneInfo, *, transaction_id: str | None) -> Any:
        sdk = self._sdk
        graph_zone = timezones.to_graph_zone(draft.time_zone)
        event = sdk.Event(
            subject=draft.subject,
            body=sdk.ItemBody(content_type=sdk.BodyType.Html, content=draft.body_html),
            start=sdk.DateTimeTimeZone(date_time=_wall_time(draft.start, zone), time_zone=graph_zone),
            end=sdk.DateTimeTimeZone(date_time=_wall_time(draft.end, zone), time_zone=graph_zone),
            show_as=sdk.FreeBusyStatus(draft.show_as),
            categories=list(draft.categories),
        )
        if transaction_id is not None:
            event.transaction_id = transaction_id
        if draft.booking_id:
            event.single_value_extended_properties = [
                sdk.SingleValueLegacyExtendedProperty(id=BOOKING_PROPERTY_ID, value=draft.booking_id)]
        return event

    async def create_event(self, mailbox_id: str, calendar_id: str, draft: EventDraft, *,
                           transaction_id: str) -> str:
        zone = check_draft(draft)
        if not transaction_id:
            raise BadRequest("a transaction id is required so a repeated create makes no duplicate",
                             field="transaction_id")
        body = self._event_body(draft, zone, transaction_id=transaction_id)
        events = self._user(mailbox_id).calendars.by_calendar_id(calendar_id).events
        try:
            created = await self._call(mailbox_id, "create event", lambda: events.post(body, self._config()))
        except Conflict:
            # A repeated transactionId may be refused instead of answered with the first event:
            # then the event exists, and its tag finds it.
            if draft.booking_id:
                existing = await self.find_event_by_booking(mailbox_id, calendar_id, draft.booking_id)
                if existing:
                    return existing
            raise
        except NotFound as exc:
            raise RemoteGone(f"calendar is gone: {exc.message}") from exc
        if created is None or not created.id:
            raise TransientError("create event: Graph returned no event id", code="graph_unexpected")
        return str(created.id)

    async def update_event(self, mailbox_id: str, event_id: str, draft: EventDraft) -> None:
        zone = check_draft(draft)
        body = self._event_body(draft, zone, transaction_id=None)
        item = self._user(mailbox_id).events.by_event_id(event_id)
        await self._call(mailbox_id, "update event", lambda: item.patch(body, self._config()))

    async def delete_event(self, mailbox_id: str, event_id: str) -> None:
        item = self._user(mailbox_id).events.by_event_id(event_id)
        try:
            await self._call(mailbox_id, "delete event", lambda: item.delete(self._config()))
        except (NotFound, RemoteGone):
            return

    async def find_event_by_booking(self, mailbox_id: str, calendar_id: str, booking_id: str) -> str | None:
        if not booking_id:
            raise BadRequest("booking id is empty", field="booking_id")
        flt = (f"singleValueExtendedProperties/Any(ep: ep/id eq {_odata_literal(BOOKING_PROPERTY_ID)}"
               f" and ep/value eq {_odata_literal(booking_id)})")
        query = self._sdk.EventsQuery(filter=flt, select=["id"], top=10)
        events = self._user(mailbox_id).calendars.by_calendar_id(calendar_id).events
        try:
            page = await self._call(mailbox_id, "find event by booking",
                                    lambda: events.get(self._config(query=query)))
        except NotFound as exc:
            raise RemoteGone(f"calendar is gone: {exc.message}") from exc
        for item in (page.value if page is not None else None) or ():
            if item.id:
                return str(item.id)
        return None

    # --- subscriptions --------------------------------------------------------------------------
    def _subscription_info(self, sub: Any, fallback_expiry: datetime) -> SubscriptionInfo:
        if sub is None or not sub.id:
            raise TransientError("subscription: Graph returned no subscription", code="graph_unexpected")
        expires = sub.expiration_date_time or fallback_expiry
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        return SubscriptionInfo(id=str(sub.id), expires_at=expires, resource=str(sub.resource or ""))

    async def create_subscription(self, mailbox_id: str, calendar_id: str, *, notification_url: str,
                                  lifecycle_url: str, client_state: str, expires_at: datetime,
                                  mailbox_wide: bool = False) -> SubscriptionInfo:
        if expires_at.tzinfo is None:
            raise BadRequest("subscription expiry must be timezone-aware", field="expires_at")
        if not client_state or len(client_state) > 128:
            raise BadRequest("client state must be 1 to 128 characters", field="client_state")
        body = self._sdk.Subscription(
            change_type=SUBSCRIPTION_CHANGE_TYPES,
            notification_url=notification_url,
            lifecycle_notification_url=lifecycle_url,
            resource=(mailbox_subscription_resource(mailbox_id) if mailbox_wide
                      else subscription_resource(mailbox_id, calendar_id)),
            expiration_date_time=expires_at.astimezone(UTC),
            client_state=client_state,
        )
        try:
            sub = await self._call(mailbox_id, "create subscription",
                                   lambda: self._client.subscriptions.post(body, self._config()))
        except AuthError as exc:
            if exc.code == "graph_forbidden":
                # Delegated tokens cannot subscribe to shared calendars; the caller polls instead.
                raise AuthError(exc.message, code=SUBSCRIPTION_FORBIDDEN) from exc
            raise
        except NotFound as exc:
            raise RemoteGone(f"calendar is gone: {exc.message}") from exc
        return self._subscription_info(sub, expires_at)

    async def renew_subscription(self, subscription_id: str, expires_at: datetime) -> SubscriptionInfo:
        if expires_at.tzinfo is None:
            raise BadRequest("subscription expiry must be timezone-aware", field="expires_at")
        body = self._sdk.Subscription(expiration_date_time=expires_at.astimezone(UTC))
        item = self._client.subscriptions.by_subscription_id(subscription_id)
        try:
            sub = await self._call("/subscriptions", "renew subscription", lambda: item.patch(body, self._config()))
        except NotFound as exc:
            raise RemoteGone(f"subscription is gone: {exc.message}") from exc
        return self._subscription_info(sub, expires_at)

    async def reauthorize_subscription(self, subscription_id: str) -> None:
        item = self._client.subscriptions.by_subscription_id(subscription_id)
        try:
            await self._call("/subscriptions", "reauthorize subscription",
                             lambda: item.reauthorize.post(self._config()))
        except NotFound as exc:
            raise RemoteGone(f"subscription is gone: {exc.message}") from exc

    async def delete_subscription(self, subscription_id: str) -> None:
        item = self._client.subscriptions.by_subscription_id(subscription_id)
        try:
            await self._call("/subscriptions", "delete subscription", lambda: item.delete(self._config()))
        except (NotFound, RemoteGone):
            return

    async def close(self) -> None:
        await self._http.aclose()


def graph_adapter_from_settings(credential: AsyncTokenCredential, settings: Settings, *,
                                http_client: httpx.AsyncClient | None = None) -> GraphSdkAdapter:
    """The adapter as the app configures it: Graph URL, extra CA bundle, per-mailbox concurrency."""
    return GraphSdkAdapter(credential, base_url=settings.graph_base_url, verify=settings.verify,
                           max_concurrency=settings.graph_max_concurrency, http_client=http_client)
