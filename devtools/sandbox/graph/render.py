"""JSON shapes of Graph resources (event, calendar, calendarGroup, user, mailboxSettings,
subscription), following the examples in Microsoft's Graph reference, and the parsing of event
request bodies into the stand-in's fields."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from devtools.sandbox.directory import SandboxUser
from devtools.sandbox.graph import recurrence as rec
from devtools.sandbox.graph.model import (
    Calendar,
    GraphError,
    Instance,
    Subscription,
    default_id,
    graph_instant,
    graph_wall,
    immutable_id,
    parse_datetime,
)
from devtools.sandbox.graph.timezones import UnknownTimeZone, to_local, zone

_EXT_PROP_ID = re.compile(r"^\w+ (\{[0-9a-fA-F-]{36}\} (Name|Id) \S.*|0x[0-9a-fA-F]{1,4})$")
_NO_TIME = "0001-01-01T00:00:00Z"


def event_id(inst: Instance, immutable: bool) -> str:
    if immutable:
        return immutable_id(inst.event.key, inst.occurrence)
    return default_id(inst.event.calendar_id, inst.event.key, inst.occurrence)


def _date_time(inst: Instance, wall: datetime, utc: datetime, view_zone: str | None) -> dict[str, str]:
    if inst.event.is_all_day:
        # All-day events float: midnight to midnight in whatever zone is asked for.
        return {"dateTime": graph_wall(wall), "timeZone": view_zone or "UTC"}
    if view_zone is None:
        return {"dateTime": graph_wall(utc.astimezone(UTC).replace(tzinfo=None)), "timeZone": "UTC"}
    return {"dateTime": graph_wall(to_local(utc, view_zone)), "timeZone": view_zone}


def _body_preview(body: str, body_type: str) -> str:
    text = re.sub(r"<[^>]+>", " ", body) if body_type == "html" else body
    return " ".join(html.unescape(text).split())[:255]


def event_json(inst: Instance, *, organizer: SandboxUser | None, immutable: bool, view_zone: str | None,
               expand_props: list[str] | None = None, series_master_id: str | None = None,
               web_base: str = "https://outlook.office365.com") -> dict[str, Any]:
    """The full event resource for one instance. ``view_zone``: Prefer outlook.timezone or None (UTC)."""
    ev = inst.event
    d = inst.data
    ext = event_id(inst, immutable)
    override = ev.exceptions.get(inst.occurrence) if inst.occurrence else None
    created = override.created if override else ev.created
    modified = override.last_modified if override else ev.last_modified
    location = d["location"]
    loc = ({"displayName": location, "locationType": "default", "uniqueId": location, "uniqueIdType": "private"}
           if location else {"displayName": "", "locationType": "default", "uniqueIdType": "unknown",
                             "address": {}, "coordinates": {}})
    body_content = d["body"]
    if d["body_type"] == "html" and body_content and "<html>" not in body_content:
        body_content = ("<html>\r\n<head>\r\n<meta http-equiv=\"Content-Type\" content=\"text/html; "
                        "charset=utf-8\">\r\n</head>\r\n<body>\r\n" + body_content + "\r\n</body>\r\n</html>\r\n")
    out: dict[str, Any] = {
        "@odata.etag": f'W/"{inst.change_key}"',
        "id": ext,
        "createdDateTime": graph_instant(created),
        "lastModifiedDateTime": graph_instant(modified),
        "changeKey": inst.change_key,
        "categories": list(d["categories"]),
        "transactionId": ev.transaction_id if inst.type in ("singleInstance", "seriesMaster") else None,
        "originalStartTimeZone": ev.tz,
        "originalEndTimeZone": ev.end_tz,
        "iCalUId": ev.ical_uid + (inst.occurrence or "").replace("-", ""),
        "uid": ev.ical_uid,
        "reminderMinutesBeforeStart": ev.reminder_minutes,
        "isReminderOn": not ev.is_all_day,
        "hasAttachments": False,
        "subject": d["subject"],
        "bodyPreview": _body_preview(d["body"], d["body_type"]),
        "importance": d["importance"],
        "sensitivity": ev.sensitivity,
        "isAllDay": ev.is_all_day,
        "isCancelled": d["is_cancelled"],
        "isOrganizer": True,
        "responseRequested": True,
        "seriesMasterId": series_master_id if inst.type in ("occurrence", "exception") else None,
        "showAs": d["show_as"],
        "type": inst.type,
        "webLink": f"{web_base}/owa/?itemid={ext.replace('=', '%3D')}&exvsurl=1&path=/calendar/item",
        "onlineMeetingUrl": None,
        "isOnlineMeeting": False,
        "onlineMeetingProvider": "unknown",
        "allowNewTimeProposals": True,
        "isDraft": False,
        "hideAttendees": False,
        "recurrence": ev.recurrence if inst.type == "seriesMaster" else None,
        "onlineMeeting": None,
        "responseStatus": {"response": "organizer", "time": _NO_TIME},
        "body": {"contentType": d["body_type"], "content": body_content},
        "start": _date_time(inst, d["start_local"], inst.start_utc, view_zone),
        "end": _date_time(inst, d["end_local"], inst.end_utc, view_zone),
        "location": loc,
        "locations": [loc] if location else [],
        "attendees": [],
        "organizer": {"emailAddress": {"name": organizer.display_name if organizer else "",
                                       "address": organizer.mail if organizer else ""}},
    }
    if inst.original_start_utc is not None:
        out["originalStart"] = graph_instant(inst.original_start_utc)
    if expand_props is not None:
        wanted = {p.lower() for p in expand_props}
        props = [{"id": pid, "value": val} for low, (pid, val) in sorted(ev.ext_props.items())
                 if not expand_props or low in wanted]
        out["singleValueExtendedProperties"] = props
    return out


def select(obj: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
    if not fields:
        return obj
    wanted = {f.lower() for f in fields}
    return {k: v for k, v in obj.items()
            if k in ("@odata.etag", "id", "@odata.type") or k.lower() in wanted
            or k == "singleValueExtendedProperties"}


def calendar_json(cal: Calendar, owner: SandboxUser, *, can_edit: bool, can_share: bool) -> dict[str, Any]:
    return {
        "id": cal.id,
        "name": cal.name,
        "color": cal.color,
        "hexColor": cal.hex_color,
        "groupClassId": "0006f0b7-0000-0000-c000-000000000046",
        "isDefaultCalendar": cal.is_default and can_share,
        "changeKey": cal.change_key,
        "canShare": can_share,
        "canViewPrivateItems": can_share,
        "canEdit": can_edit,
        "allowedOnlineMeetingProviders": ["teamsForBusiness"],
        "defaultOnlineMeetingProvider": "teamsForBusiness",
        "isTallyingResponses": can_share,
        "isRemovable": not (cal.is_default and can_share),
        "owner": {"name": owner.display_name, "address": owner.mail},
    }


def user_json(user: SandboxUser) -> dict[str, Any]:
    given, _, surname = user.display_name.rpartition(" ")
    return {
        "businessPhones": [],
        "displayName": user.display_name,
        "givenName": given or user.display_name,
        "jobTitle": None,
        "mail": user.mail,
        "mobilePhone": None,
        "officeLocation": None,
        "preferredLanguage": "de-DE",
        "surname": surname,
        "userPrincipalName": user.user_principal_name,
        "id": user.id,
    }


#: What Graph names a user-defined zone: the label on a dateTimeTimeZone, and the name of a
#: mailbox's custom zone.
CUSTOM_ZONE_ID = "tzone://Microsoft/Custom"
CUSTOM_ZONE_NAME = "Customized Time Zone"

#: What an incremental delta round may keep of an updated event: no times (delta-query overview).
_PARTIAL_KEYS = ("@odata.etag", "id", "changeKey", "lastModifiedDateTime", "subject")


def partial_item(item: dict[str, Any]) -> dict[str, Any]:
    return {key: item[key] for key in _PARTIAL_KEYS if key in item}


def label_custom_zone(body: dict[str, Any], inst: Instance, *, originals_too: bool) -> None:
    """Times in the event's own wall time under custom zone labels, as Graph sends events made with a
    zone it has no name for (whatever ``Prefer: outlook.timezone`` asked)."""
    ev = inst.event
    body["start"] = {"dateTime": graph_wall(to_local(inst.start_utc, ev.tz)), "timeZone": CUSTOM_ZONE_ID}
    body["end"] = {"dateTime": graph_wall(to_local(inst.end_utc, ev.end_tz or ev.tz)), "timeZone": CUSTOM_ZONE_NAME}
    if originals_too:
        body["originalStartTimeZone"] = CUSTOM_ZONE_ID
        body["originalEndTimeZone"] = CUSTOM_ZONE_NAME


def mailbox_settings_json(user: SandboxUser, *, custom_zone: bool = False) -> dict[str, Any]:
    hours_zone: dict[str, Any] = {"name": user.time_zone}
    if custom_zone:
        # A zone the user defined: Graph names no zone, only offsets (customTimeZone).
        hours_zone = {"@odata.type": "#microsoft.graph.customTimeZone", "name": CUSTOM_ZONE_NAME, "bias": -60,
                      "standardOffset": {"time": "03:00:00.0000000", "dayOccurrence": 5, "dayOfWeek": "sunday",
                                         "month": 10, "year": 0},
                      "daylightOffset": {"daylightBias": -60, "time": "02:00:00.0000000", "dayOccurrence": 5,
                                         "dayOfWeek": "sunday", "month": 3, "year": 0}}
    return {
        "archiveFolder": "AAMkAGI2TGuLAAA=",
        "timeZone": CUSTOM_ZONE_NAME if custom_zone else user.time_zone,
        "automaticRepliesSetting": {
            "status": "disabled", "externalAudience": "all", "internalReplyMessage": "",
            "externalReplyMessage": "",
            "scheduledStartDateTime": {"dateTime": "2024-01-01T00:00:00.0000000", "timeZone": "UTC"},
            "scheduledEndDateTime": {"dateTime": "2024-01-02T00:00:00.0000000", "timeZone": "UTC"},
        },
        "language": {"locale": "de-DE", "displayName": "Deutsch (Deutschland)"},
        "workingHours": {
            "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
            "startTime": "08:00:00.0000000", "endTime": "17:00:00.0000000",
            "timeZone": hours_zone,
        },
        "dateFormat": "dd.MM.yyyy",
        "timeFormat": "HH:mm",
        "delegateMeetingMessageDeliveryOptions": "sendToDelegateOnly",
        # An object in what Graph sends, though its schema declares an enum string.
        "userPurpose": {"value": "user"},
    }


def subscription_json(sub: Subscription) -> dict[str, Any]:
    return {
        "id": sub.id,
        "resource": sub.resource,
        "applicationId": sub.application_id,
        "changeType": sub.change_type,
        "clientState": sub.client_state,
        "notificationUrl": sub.notification_url,
        "notificationQueryOptions": None,
        "lifecycleNotificationUrl": sub.lifecycle_url,
        "expirationDateTime": graph_instant(sub.expiration),
        "creatorId": sub.creator_id,
        "includeResourceData": None,
        "latestSupportedTlsVersion": "v1_2",
        "encryptionCertificate": None,
        "encryptionCertificateId": None,
        "notificationUrlAppId": None,
    }


# --- request bodies -----------------------------------------------------------------------
def _bad(message: str) -> GraphError:
    return GraphError(400, "BadRequest", message)


def _wall(raw: Any, name: str) -> tuple[datetime, str]:
    if not isinstance(raw, dict) or not isinstance(raw.get("dateTime"), str):
        raise _bad(f"The property '{name}' requires a dateTimeTimeZone value.")
    tz = raw.get("timeZone") or "UTC"
    if not isinstance(tz, str):
        raise _bad(f"{name}.timeZone must be a string")
    try:
        zone(tz)
    except UnknownTimeZone as exc:
        raise GraphError(400, "TimeZoneNotSupportedException",
                         f"A valid TimeZone value must be specified. The following TimeZone value is not "
                         f"supported: '{tz}'.") from exc
    try:
        value = parse_datetime(raw["dateTime"])
    except ValueError as exc:
        raise _bad(f"Cannot convert the literal '{raw['dateTime']}' to the expected type 'Edm.DateTime'.") from exc
    if value.tzinfo is not None:
        value = to_local(value, tz)
    return value, tz


FieldReader = Callable[[Any], dict[str, Any]]


def _start(value: Any) -> dict[str, Any]:
    local, tz = _wall(value, "start")
    return {"start_local": local, "tz": tz}


def _end(value: Any) -> dict[str, Any]:
    local, tz = _wall(value, "end")
    return {"end_local": local, "end_tz": tz}


def _optional_string(key: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _bad(f"{key} must be a string")
    return value


def _subject(value: Any) -> dict[str, Any]:
    return {"subject": _optional_string("subject", value) or ""}


def _transaction_id(value: Any) -> dict[str, Any]:
    return {"transaction_id": _optional_string("transactionId", value) or None}


def _typed(key: str, name: str, kind: type, what: str) -> FieldReader:
    """A reader of a field that must be of one JSON type (``what`` names it in the error)."""
    def read(value: Any) -> dict[str, Any]:
        if not isinstance(value, kind):
            raise _bad(f"{key} must be {what}")
        return {name: value}
    return read


def _categories(value: Any) -> dict[str, Any]:
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise _bad("categories must be a list of strings")
    return {"categories": list(value)}


def _body(value: Any) -> dict[str, Any]:
    b = value or {}
    if not isinstance(b, dict):
        raise _bad("body must be an itemBody")
    ctype = str(b.get("contentType") or "text").lower()
    if ctype not in ("text", "html"):
        raise GraphError(400, "RequestBodyRead", f"Requested value '{b.get('contentType')}' was not found.")
    return {"body": str(b.get("content") or ""), "body_type": ctype}


def _location(value: Any) -> dict[str, Any]:
    loc = value or {}
    return {"location": str(loc.get("displayName") or "") if isinstance(loc, dict) else ""}


def _recurrence(value: Any) -> dict[str, Any]:
    if value is None:
        return {"recurrence": None}
    try:
        return {"recurrence": rec.normalise(value)}
    except rec.RecurrenceError as exc:
        raise _bad(str(exc)) from exc


def _extended_properties(value: Any) -> dict[str, Any]:
    if not isinstance(value, list):
        raise _bad("singleValueExtendedProperties must be a collection")
    parsed = []
    for p in value:
        if not isinstance(p, dict) or not isinstance(p.get("id"), str) or not isinstance(p.get("value"), str):
            raise _bad("each singleValueExtendedProperty needs an id and a string value")
        if not _EXT_PROP_ID.match(p["id"]):
            raise GraphError(400, "ErrorInvalidProperty",
                             f"The property '{p['id']}' is not a valid extended property id.")
        parsed.append((p["id"], p["value"]))
    return {"ext_props": parsed}


# The event properties the stand-in stores, in the order they are checked (the first bad one is reported).
_EVENT_FIELDS: tuple[tuple[str, FieldReader], ...] = (
    ("start", _start),
    ("end", _end),
    ("subject", _subject),
    ("transactionId", _transaction_id),
    ("showAs", _typed("showAs", "show_as", str, "a string")),
    ("sensitivity", _typed("sensitivity", "sensitivity", str, "a string")),
    ("importance", _typed("importance", "importance", str, "a string")),
    ("isAllDay", _typed("isAllDay", "is_all_day", bool, "a boolean")),
    ("isCancelled", _typed("isCancelled", "is_cancelled", bool, "a boolean")),
    ("categories", _categories),
    ("body", _body),
    ("location", _location),
    ("recurrence", _recurrence),
    ("singleValueExtendedProperties", _extended_properties),
)


def event_fields(body: Any, *, partial: bool) -> dict[str, Any]:
    """Translate an event request body into stand-in fields; raises GraphError 400 on bad input."""
    if not isinstance(body, dict):
        raise _bad("Empty Payload. JSON content expected.")
    if not partial and ("start" not in body or "end" not in body):
        raise GraphError(400, "ErrorInvalidRequest", "Your request can't be completed. start and end are required.")
    fields: dict[str, Any] = {}
    for key, read in _EVENT_FIELDS:
        if key in body:
            fields.update(read(body[key]))
    return fields
