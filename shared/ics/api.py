"""Provider-scoped management of ICS feeds and ICS imports (called by timum's links API routes).

* Feed: create or rotate a resource's secret feed URL (shown once), or revoke it.
* Import: link a resource to a *published* Outlook calendar URL instead of Graph — for tenants
  whose administrators allow no API access. The URL is a credential: stored encrypted (bound to
  the link), shown only by host.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from shared.context import Services
from shared.crypto import Cipher
from shared.domain import Link, LinkKey, LinkMode, SyncMode
from shared.errors import BadRequest, Conflict
from shared.ics.fetch import check_url
from shared.ics.tokens import FeedTokenRepository
from shared.messages import SYNC_QUEUE, SyncMessage, SyncReason
from shared.repos.links import LinkRepository

MAX_NAME = 200


def _key(provider_id: str, resource_id: str) -> LinkKey:
    for name, value in (("provider", provider_id), ("resource", resource_id)):
        if not value or len(value) > 128 or any(ord(c) < 32 for c in value):
            raise BadRequest(f"{name} is not a valid id", field=name)
    return LinkKey(provider_id, resource_id)


async def issue_feed(services: Services, provider_id: str, resource_id: str, body: Any) -> dict[str, Any]:
    """Create or rotate the feed; the previous URL stops working (other instances may serve it for
    up to ``LOOKUP_TTL`` seconds more, see ``shared.ics.tokens``)."""
    key = _key(provider_id, resource_id)
    if body is not None and not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    name = (body or {}).get("calendarName")
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME):
        raise BadRequest(f"calendarName must be text of at most {MAX_NAME} characters", field="calendarName")
    if not name:
        resource = await services.timum.get_resource(key.provider_id, key.resource_id)
        name = str(resource.get("name", "")) if resource else ""
    token = await FeedTokenRepository(services.storage).issue(key, name or "timum")
    from shared.bookings.backfill import queue_backfill

    await queue_backfill(services, key)  # bookings made before the feed existed
    return {"resourceId": key.resource_id, "calendarName": name or "timum",
            "url": services.settings.url(f"ics/{token}"),
            "webcalUrl": "webcal://" + services.settings.url(f"ics/{token}").split("://", 1)[1]}


async def revoke_feed(services: Services, provider_id: str, resource_id: str) -> bool:
    return await FeedTokenRepository(services.storage).revoke(_key(provider_id, resource_id))


async def set_ics_import(services: Services, provider_id: str, resource_id: str, body: Any) -> Link:
    """Link the resource to a published calendar URL and queue the first import."""
    key = _key(provider_id, resource_id)
    if not isinstance(body, dict) or not isinstance(body.get("url"), str):
        raise BadRequest("the body needs the published calendar's url", field="url")
    url = check_url(body["url"], allow_loopback=services.settings.ics_import_allow_loopback)
    repo = LinkRepository(services.storage)
    existing = await repo.get(key)
    if existing is not None and existing.mode is not LinkMode.ICS:
        raise Conflict("this resource is linked to an Outlook calendar through Microsoft Graph; unlink it first",
                       code="resource_linked")
    cipher = Cipher(services.settings.token_encryption_keys)
    host = urlsplit(url).hostname or ""
    link = existing or Link(provider_id=key.provider_id, resource_id=key.resource_id, mode=LinkMode.ICS,
                            tenant_id="", mailbox_id="", calendar_id="", calendar_name="", calendar_owner="",
                            sync_mode=SyncMode.POLLING, created_at=services.clock())
    link.ics_url_encrypted = cipher.encrypt_str(url, aad=str(key))
    link.ics_host = host
    link.calendar_name = host
    link.ics_etag = ""
    link.ics_last_modified = ""
    link = await repo.save(link)
    # The delta worker runs ICS links too (same lease, planner and writes); see shared/outlook/run.py.
    await services.storage.queue(SYNC_QUEUE).send(SyncMessage(str(key), SyncReason.SETUP, full=True).to_json())
    return link
