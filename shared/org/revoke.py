"""The administrator withdrew the application's permissions, or deleted the app.

Token requests then fail with Entra's documented errors — AADSTS7000229 (no service principal:
the app was deleted from the tenant), AADSTS700016 (application not found in the directory),
AADSTS65001 (no consent) — or succeed without the ``roles`` we need (permissions removed).
The first app-only link to notice calls ``tenant_revoked``: it proves the loss with a fresh token
(one failed request is not a revocation), then

* marks the tenant's organisation connections ``revoked`` (ETag: exactly one caller wins),
* drops the recorded app-only consent (the chooser stops offering app-only links),
* sets every Graph link of the tenant to ``needs_reconnect`` — without a webhook per link —
* and tells timum once per provider with one ``organisation.status_changed`` event listing the
  resources, through a small outbox (``linkstatus``, PK ``org|provider|tenant``) so a crash
  between the change and the POST still delivers it exactly once.

The mapping page then says what happened and offers the consent link again.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC
from typing import Any

from shared.context import Services
from shared.domain import Link, LinkHealth, LinkMode, stable_id
from shared.errors import AuthError, Conflict, ConsentRequired, NotFound
from shared.repos.links import LINKS, LinkRepository
from shared.storage.base import encode_key

log = logging.getLogger(__name__)

ORG_EVENT = "organisation.status_changed"
_OUTBOX = "linkstatus"
#: an app-only token must still carry this for the tenant's links to work
_NEEDED = frozenset({"Calendars.ReadWrite"})


async def grant_lost(services: Services, tenant_id: str) -> str:
    """Why the tenant's grant is gone ("" if it still holds). Transient failures propagate."""
    from shared.org.service import app_only_grant

    try:
        _, roles = await app_only_grant(services, tenant_id)
    except (ConsentRequired, AuthError) as exc:
        return f"{exc.code}: {exc.message}"[:300]
    return "" if roles >= _NEEDED else "consent_withdrawn: the application permissions were removed (roles)"


async def tenant_revoked(services: Services, tenant_id: str) -> bool:
    """Check the tenant's grant; if it is gone, put every link of the tenant on ``needs_reconnect``
    with one status webhook per provider. True when the grant is gone (whoever handled it)."""
    from shared.org.store import OrgRepository
    from shared.repos.accounts import TenantRepository

    reason = await grant_lost(services, tenant_id)
    if not reason:
        return False
    now = services.clock()
    orgs = OrgRepository(services.storage)
    won = [c.provider_id for c in await orgs.for_tenant(tenant_id) if await orgs.revoke(c, reason, now=now)]
    await TenantRepository(services.storage).revoke_admin_consent(tenant_id)
    rows = await services.storage.table(LINKS).query(equals={"tenant_id": tenant_id})
    repo = LinkRepository(services.storage)
    by_provider: dict[str, list[Link]] = {}
    for row in rows:
        link = await repo.get(_key(row))
        if link is None or link.mode is LinkMode.ICS:
            continue
        by_provider.setdefault(link.provider_id, []).append(link)
    providers = set(by_provider) | set(won)
    for provider_id in sorted(providers):
        links = by_provider.get(provider_id, [])
        changed = [link for link in links if await _mark(services, link, reason)]
        if changed or provider_id in won:
            await _record(services, provider_id, tenant_id, [link.resource_id for link in links], reason)
        await _deliver(services, provider_id, tenant_id)
    log.warning("application access withdrawn in a tenant: %d providers, %d links need a reconnect",
                len(providers), sum(len(v) for v in by_provider.values()))
    return True


async def revive_tenant(services: Services, tenant_id: str) -> int:
    """The grant is back (an administrator connected the organisation again): every app-only
    link of the tenant that waited for it is healthy again, set up anew (subscription, full
    sync) and replays the bookings stored meanwhile. Returns how many."""
    from shared.connect.flow import revive
    from shared.messages import AdminAction

    rows = await services.storage.table(LINKS).query(equals={"tenant_id": tenant_id})
    repo = LinkRepository(services.storage)
    revived = 0
    for row in rows:
        link = await repo.get(_key(row))
        if link is None or link.mode is not LinkMode.APP_ONLY or link.health is not LinkHealth.NEEDS_RECONNECT:
            continue
        await revive(services, link, AdminAction.RESUBSCRIBE)
        revived += 1
    return revived


def _key(row: Any) -> Any:
    from shared.domain import LinkKey

    return LinkKey(str(row["provider_id"]), str(row["resource_id"]))


async def _mark(services: Services, link: Link, reason: str) -> bool:
    repo = LinkRepository(services.storage)
    current: Link | None = link
    for _ in range(5):
        if current is None or current.health is LinkHealth.NEEDS_RECONNECT:
            return False
        current.health = LinkHealth.NEEDS_RECONNECT
        current.last_error, current.last_error_at = reason[:500], services.clock()
        try:
            await repo.save(current)
            return True
        except Conflict:
            current = await repo.get(link.key)
        except NotFound:
            return False
    return False


def _pk(provider_id: str, tenant_id: str) -> str:
    return encode_key(f"org|{provider_id}|{tenant_id}")


async def _record(services: Services, provider_id: str, tenant_id: str, resources: list[str], reason: str) -> None:
    table = services.storage.table(_OUTBOX)
    pk = _pk(provider_id, tenant_id)
    existing = await table.get(pk, "")
    if existing is not None and not existing.get("sent"):
        return  # an earlier notice of this revocation is still to go
    now = services.clock()
    await table.upsert({"PartitionKey": pk, "RowKey": "", "sent": False, "occurred_at": now, "reason": reason[:300],
                        "resources": " ".join(sorted(resources))[:30_000],
                        "delivery_id": stable_id(provider_id, tenant_id, now.isoformat(), prefix="os-", length=32)})


async def _deliver(services: Services, provider_id: str, tenant_id: str) -> None:
    from shared.connect.status import reason_text
    from shared.repos.links import ProviderSettingsRepository

    table = services.storage.table(_OUTBOX)
    row = await table.get(_pk(provider_id, tenant_id), "")
    if row is None or row.get("sent"):
        return
    locale = (await ProviderSettingsRepository(services.storage).get(provider_id)).locale
    payload = {
        "id": row["delivery_id"], "type": ORG_EVENT,
        "occurredAt": row["occurred_at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": {"providerId": provider_id, "status": LinkHealth.NEEDS_RECONNECT.value,
                 "reason": reason_text(locale, LinkHealth.NEEDS_RECONNECT, "org_consent_revoked"),
                 "resourceIds": [r for r in str(row.get("resources") or "").split() if r]},
    }
    await services.timum.send_link_status(payload)
    with contextlib.suppress(Conflict, NotFound):
        await table.update({**row, "sent": True}, etag=row.etag)
