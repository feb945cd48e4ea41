"""timum's management API for a provider's links and settings, and its provider scope.

Routes (function-key auth level, plus the provider scope below):

* ``GET    /api/providers/{provider}/links``                       → the provider's links
* ``DELETE /api/providers/{provider}/links/{resource}[?deleteOutlookEvents=true]`` → unlink
* ``POST   /api/providers/{provider}/links/{resource}/resync``     → full resync (202)
* ``GET|PUT /api/providers/{provider}/settings``                   → privacy and behaviour settings

Provider scope. The function key only says "this is timum". Each request must also carry
``X-Timum-Provider: <provider>`` equal to the route's provider, and ``Timum-Signature`` in the
webhook format (``t=<unix>,v1=<hex HMAC-SHA256>``, secrets TIMUM_WEBHOOK_SECRETS, 300 s
tolerance) computed over the *canonical request*::

    "<t>." + "<METHOD> <path>[?<query>]" + "\\n" + "<X-Timum-Provider>" + "\\n" + <raw body>

``path`` and ``query`` exactly as sent (e.g. ``DELETE /api/providers/p1/links/r1?deleteOutlookEvents=true``),
the body empty for GET and DELETE. Signing method, path and provider — not the body alone — is
what keeps a request signed for provider A from being replayed against provider B's routes.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from shared.connect import status
from shared.connect.teardown import unlink
from shared.context import Services
from shared.domain import (
    BookingEventEdits,
    CancelPolicy,
    CustomerPrivacy,
    Link,
    LinkKey,
    ProviderSettings,
    TitlePrivacy,
)
from shared.errors import BadRequest, InvalidSignature
from shared.ids import check_id
from shared.messages import SYNC_QUEUE, SyncMessage, SyncReason
from shared.repos.links import LinkRepository, ProviderSettingsRepository
from shared.safety import rules
from shared.safety.freshness import synced_through
from shared.signing import sign_webhook, verify_webhook

PROVIDER_HEADER = "X-Timum-Provider"
MAX_ID_LENGTH = 128


class ProviderScopeError(InvalidSignature):
    """The request is not scoped to the route's provider (→ 403)."""

    code = "provider_scope"


def canonical_request(method: str, path_and_query: str, provider: str, body: bytes) -> bytes:
    return f"{method.upper()} {path_and_query}\n{provider}\n".encode() + body


def path_and_query(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def sign_api_request(method: str, url_or_path: str, provider: str, body: bytes, secrets: Sequence[str], *,
                     timestamp: int) -> dict[str, str]:
    """Headers a client (timum) sends: the provider and the signature of the canonical request."""
    target = path_and_query(url_or_path) if "://" in url_or_path else url_or_path
    return {PROVIDER_HEADER: provider,
            "Timum-Signature": sign_webhook(canonical_request(method, target, provider, body), secrets,
                                            timestamp=timestamp)}


def check_provider_scope(*, method: str, url: str, headers: Mapping[str, str], body: bytes, route_provider: str,
                         secrets: Sequence[str], now: float) -> None:
    """Raise ``ProviderScopeError`` (403) or ``InvalidSignature`` (401) unless the request is
    signed by timum for exactly this provider, method, path and body."""
    claimed = headers.get(PROVIDER_HEADER) or ""
    if not claimed or not hmac.compare_digest(claimed.encode(), route_provider.encode()):
        raise ProviderScopeError(f"{PROVIDER_HEADER} does not name this route's provider")
    verify_webhook(canonical_request(method, path_and_query(url), claimed, body), headers.get("Timum-Signature"),
                   secrets, now=now)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def link_json(link: Link) -> dict[str, Any]:
    return {
        "resourceId": link.timum_resource_id,
        # the id this link is managed by (unlink, resync): the resource for its own calendar, a
        # longer id for each block-only calendar of the resource
        "linkId": link.resource_id,
        "calendarRole": "block_only" if link.block_only else "bookings",
        "calendarName": link.calendar_name,
        "calendarOwner": link.calendar_owner,
        "mode": link.mode.value,
        "syncMode": link.sync_mode.value,
        "subscriptionExpiresAt": _iso(link.subscription_expires_at),
        "lastSyncAt": _iso(link.last_sync_at),
        "lastError": link.last_error or None,
        "lastErrorAt": _iso(link.last_error_at),
        "needsReconnect": link.needs_reconnect,
        "health": link.health.value,
        "icsHost": link.ics_host or None,
        "createdAt": _iso(link.created_at),
        "skipped": {"count": link.skipped_items, "sample": link.skipped_sample or None},
        "subscriptionResource": (link.subscription_resource or "calendar") if link.subscription_id else None,
        "linkedBy": link.linked_by or None,
        # Without a clock of its own here: the lease is not read, so a round running at this very
        # moment does not hold a push link's value back (the conflict check does read it).
        "syncedThrough": _iso(synced_through(link, datetime.now(UTC), round_running=False)),
    }


async def list_links(services: Services, provider_id: str) -> dict[str, Any]:
    links = await LinkRepository(services.storage).list_for_provider(check_id(provider_id, "provider"))
    return {"providerId": provider_id, "links": [link_json(lk) for lk in links]}


async def delete_link(services: Services, provider_id: str, resource_id: str, *,
                      delete_outlook_events: bool = False) -> None:
    key = LinkKey(check_id(provider_id, "provider"), check_id(resource_id, "resource"))
    link = await LinkRepository(services.storage).require(key)
    await unlink(services, link, delete_outlook_events=delete_outlook_events)
    await status.forget(services, link)


async def resync(services: Services, provider_id: str, resource_id: str) -> None:
    key = LinkKey(check_id(provider_id, "provider"), check_id(resource_id, "resource"))
    await LinkRepository(services.storage).require(key)
    await services.storage.queue(SYNC_QUEUE).send(
        SyncMessage(link=str(key), reason=SyncReason.RESYNC, full=True).to_json())


def settings_json(settings: ProviderSettings) -> dict[str, Any]:
    return {"titlePrivacy": settings.title_privacy.value, "tentativeBlocks": settings.tentative_blocks,
            "customerPrivacy": settings.customer_privacy.value, "cancelPolicy": settings.cancel_policy.value,
            "locale": settings.locale, "bookingEventEdits": settings.booking_event_edits.value,
            **rules.rules_json(settings)}


async def get_settings(services: Services, provider_id: str) -> dict[str, Any]:
    return settings_json(await ProviderSettingsRepository(services.storage).get(check_id(provider_id, "provider")))


_ENUMS: dict[str, tuple[str, type[TitlePrivacy] | type[CustomerPrivacy] | type[CancelPolicy]
                         | type[BookingEventEdits]]] = {
    "titlePrivacy": ("title_privacy", TitlePrivacy),
    "customerPrivacy": ("customer_privacy", CustomerPrivacy),
    "cancelPolicy": ("cancel_policy", CancelPolicy),
    "bookingEventEdits": ("booking_event_edits", BookingEventEdits),
}


def parse_settings(provider_id: str, data: Any, current: ProviderSettings) -> ProviderSettings:
    """Validate a settings body; fields left out keep their current value. Unknown fields and
    wrong values are refused with the field named, and nothing is saved."""
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(data) - {"titlePrivacy", "tentativeBlocks", "customerPrivacy", "cancelPolicy", "locale",
                                  "bookingEventEdits"} - rules.FIELDS)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]}", field=unknown[0])
    values: dict[str, Any] = {}
    for name, (attr, enum) in _ENUMS.items():
        if name in data:
            allowed = [e.value for e in enum]
            if data[name] not in allowed:
                raise BadRequest(f"{name} must be one of {', '.join(allowed)}", field=name)
            values[attr] = enum(data[name])
    if "locale" in data:
        if data["locale"] not in ("de", "en"):
            raise BadRequest("locale must be de or en", field="locale")
        values["locale"] = data["locale"]
    return rules.parse_rules(data, replace(current, provider_id=provider_id, **values))


async def put_settings(services: Services, provider_id: str, data: Any) -> dict[str, Any]:
    repo = ProviderSettingsRepository(services.storage)
    updated = parse_settings(check_id(provider_id, "provider"), data, await repo.get(provider_id))
    await repo.save(updated)
    return settings_json(updated)


def parse_bool_param(raw: str | None, name: str) -> bool:
    if raw is None or raw == "":
        return False
    low = raw.lower()
    if low in ("true", "1"):
        return True
    if low in ("false", "0"):
        return False
    raise BadRequest(f"{name} must be true or false", field=name)

