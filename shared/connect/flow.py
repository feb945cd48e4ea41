"""Microsoft sign-in for a connect link: link check, MSAL auth-code flow with PKCE, admin consent.

``start``     verifies the signed link (signature, expiry, return URL, single-use nonce), starts
              MSAL's auth-code flow, keeps the flow server-side and sends the browser to Microsoft.
``callback``  takes the flow back by ``state`` (once), redeems the code, stores the account's
              token cache encrypted, and opens a chooser session — or, when the organisation
              needs an administrator's consent, shows the admin-consent page.
``admin_callback`` records tenant-wide consent after proving it with an app-only token.

Nothing is stored for a refused link; no token, code or signed link is ever logged.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from shared.config import Settings
from shared.connect.msal_client import DELEGATED_SCOPES, build_app, is_consent_error
from shared.connect.outcomes import ConsentPage, ConsentResultPage, ErrorPage, Redirect
from shared.connect.store import (
    ADMIN_CONSENT_LIFETIME,
    FLOW_LIFETIME,
    AuthFlowStore,
    ConnectContext,
    NonceStore,
    PendingFlow,
    SessionStore,
    derive_key,
)
from shared.context import Services
from shared.crypto import Cipher
from shared.domain import LinkHealth, LinkKey
from shared.errors import AuthError, ConsentRequired, InvalidSignature, StorageError, SyncError, TransientError
from shared.i18n import has, negotiate, normalize
from shared.messages import BOOKING_QUEUE, LINK_ADMIN_QUEUE, AdminAction, AdminMessage
from shared.repos.accounts import AccountRepository, StoredCache, TenantRepository
from shared.repos.links import LINKS, LinkRepository
from shared.signing import return_url_allowed, verify_connect_link

log = logging.getLogger(__name__)

_GENERIC_TENANTS = frozenset({"common", "organizations", "consumers"})
_TENANT_IN_TEXT = re.compile(r"tenant\W{1,4}([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})", re.I)
_TENANT_PARAM = re.compile(r"^[A-Za-z0-9.-]{1,128}$")


def cipher_for(settings: Settings) -> Cipher:
    return Cipher(settings.token_encryption_keys)


def session_store(services: Services) -> SessionStore:
    keys = services.settings.token_encryption_keys
    return SessionStore(services.storage, Cipher(keys), derive_key(keys, "csrf"))


# --- start ------------------------------------------------------------------------------------

def _peek(token: str | None) -> dict[str, Any]:
    """The payload of a link that failed verification, read only to pick the error page's
    language and — if it is an allowed address — its way back. Nothing else is trusted."""
    try:
        payload = (token or "").split(".", 1)[0]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _refused(settings: Settings, token: str | None, code: str, accept_language: str | None) -> ErrorPage:
    data = _peek(token)
    loc = data.get("loc")
    locale = normalize(loc) if loc in ("de", "en") else negotiate(accept_language, settings.default_locale)
    ret = data.get("ret")
    back = ret if isinstance(ret, str) and return_url_allowed(ret, settings.timum_return_url_allowlist) else ""
    return ErrorPage(code=code if has(f"error.{code}") else "link_malformed", locale=locale, status=400,
                     return_url=back)


def _initiate(settings: Settings, state: str) -> dict[str, Any]:
    app = build_app(settings)
    flow: dict[str, Any] = app.initiate_auth_code_flow(
        list(DELEGATED_SCOPES), redirect_uri=settings.url("oauth/callback"), state=state,
        # A shared practice computer often has someone else's Microsoft session open.
        prompt="select_account",
        # The code comes back in a POST body: never in a URL, a browser history or a log line.
        response_mode="form_post",
    )
    return flow


async def start(services: Services, token: str | None, *, accept_language: str | None = None) -> Redirect | ErrorPage:
    settings = services.settings
    now = services.clock()
    try:
        link = verify_connect_link(token, settings.timum_connect_secrets, now=now.timestamp(),
                                   allowlist=settings.timum_return_url_allowlist)
    except InvalidSignature as exc:
        log.info("connect link refused: %s", exc.code)
        return _refused(settings, token, exc.code, accept_language)
    context = ConnectContext(provider_id=link.provider_id, resource_id=link.resource_id,
                             locale=normalize(link.locale, settings.default_locale), return_url=link.return_url)
    state = secrets.token_urlsafe(32)
    try:
        flow = await asyncio.to_thread(_initiate, settings, state)
    except (TransientError, AuthError, OSError):
        log.exception("could not start the Microsoft sign-in")
        # The link is still unused: the user may simply click it again.
        return ErrorPage("unavailable", context.locale, status=503, return_url=context.return_url)
    try:
        await NonceStore(services.storage).use(
            link.nonce, expires_at=datetime.fromtimestamp(link.expires_at + 60, UTC), now=now)
    except InvalidSignature as exc:
        log.info("connect link refused: %s", exc.code)
        return ErrorPage(exc.code, context.locale, status=400, return_url=context.return_url)
    await AuthFlowStore(services.storage, cipher_for(settings)).put(
        state, PendingFlow(kind="signin", context=context, flow=flow), expires_at=now + FLOW_LIFETIME)
    log.info("sign-in started for provider %s", link.provider_id)
    return Redirect(str(flow["auth_uri"]), status=302)


# --- callback ---------------------------------------------------------------------------------

def consent_tenant(settings: Settings, description: str = "") -> str:
    """The tenant to ask for admin consent: named in the error, else the configured one if it is
    a real tenant, else ``organizations`` (never ``common``)."""
    found = _TENANT_IN_TEXT.search(description or "")
    if found:
        return found.group(1).lower()
    if settings.entra_tenant.lower() not in _GENERIC_TENANTS:
        return settings.entra_tenant
    return "organizations"


def admin_consent_url(settings: Settings, tenant: str, state: str) -> str:
    query = urlencode({"client_id": settings.entra_client_id, "scope": "https://graph.microsoft.com/.default",
                       "redirect_uri": settings.url("oauth/admin-callback"), "state": state})
    return f"{settings.entra_authority_host.rstrip('/')}/{tenant}/v2.0/adminconsent?{query}"


async def _consent_page(services: Services, context: ConnectContext, *, description: str,
                        declined: bool) -> ConsentPage:
    from shared.observability import metrics

    settings = services.settings
    tenant = consent_tenant(settings, description)
    # Operators watch this: a tenant that keeps refusing needs its admin to act.
    metrics.increment("consent_errors", declined=declined)
    state = secrets.token_urlsafe(24)
    await AuthFlowStore(services.storage, cipher_for(settings)).put(
        state, PendingFlow(kind="adminconsent", context=context, flow={}, tenant=tenant),
        expires_at=services.clock() + ADMIN_CONSENT_LIFETIME)
    return ConsentPage(locale=context.locale, consent_url=admin_consent_url(settings, tenant, state),
                       return_url=context.return_url, declined=declined)


def _redeem(settings: Settings, flow: dict[str, Any],
            params: Mapping[str, str]) -> tuple[dict[str, Any], str, dict[str, Any] | None]:
    """Blocking: redeem the code. Returns (MSAL result, serialized cache, the signed-in account)."""
    import msal

    cache = msal.SerializableTokenCache()
    app = build_app(settings, cache=cache)
    result: dict[str, Any] = app.acquire_token_by_auth_code_flow(flow, dict(params))
    accounts = app.get_accounts() if "access_token" in result else []
    return result, cache.serialize(), (accounts[0] if accounts else None)


async def callback(services: Services, params: Mapping[str, str], *,
                   accept_language: str | None = None) -> Redirect | ErrorPage | ConsentPage:
    settings = services.settings
    now = services.clock()
    fallback_locale = negotiate(accept_language, settings.default_locale)
    pending = await AuthFlowStore(services.storage, cipher_for(settings)).take(params.get("state") or "", now=now)
    if pending is None or pending.kind != "signin":
        return ErrorPage("flow_unknown", fallback_locale, status=400)
    context = pending.context
    error = params.get("error") or ""
    description = params.get("error_description") or ""
    if error:
        log.info("sign-in came back with %s", error)
        if is_consent_error(error, description):
            declined = error == "access_denied" or "AADSTS65004" in description
            return await _consent_page(services, context, description=description, declined=declined)
        return ErrorPage("sign_in_failed", context.locale, status=400, return_url=context.return_url)
    try:
        result, serialized, account = await asyncio.to_thread(_redeem, settings, pending.flow, params)
    except ValueError:
        # MSAL checks state (and the flow's shape): a mismatch means the answer is not ours.
        return ErrorPage("state_mismatch", context.locale, status=400, return_url=context.return_url)
    except (TransientError, AuthError, OSError):
        log.exception("could not redeem the authorisation code")
        return ErrorPage("unavailable", context.locale, status=503, return_url=context.return_url)
    if "access_token" not in result or account is None:
        err = str(result.get("error") or "")
        desc = str(result.get("error_description") or "")
        log.info("code redemption refused: %s", err or "no account")
        if is_consent_error(err, desc):
            return await _consent_page(services, context, description=desc, declined="AADSTS65004" in desc)
        return ErrorPage("sign_in_failed", context.locale, status=400, return_url=context.return_url)
    claims = result.get("id_token_claims") or {}
    account_id = str(account["home_account_id"])
    tenant_id = str(claims.get("tid") or account_id.partition(".")[2])
    name = str(claims.get("name") or claims.get("preferred_username") or account.get("username") or "")
    username = str(claims.get("preferred_username") or account.get("username") or "")
    await AccountRepository(services.storage, cipher_for(settings)).save(
        StoredCache(account_id=account_id, tenant_id=tenant_id, username=username, cache=serialized))
    await _revive_links(services, account_id)
    label = f"{name} ({username})" if username and name and username != name else (name or username)
    session_id = await session_store(services).create(context, account_id=account_id, tenant_id=tenant_id,
                                                      account_name=label, now=now)
    log.info("sign-in completed for provider %s", context.provider_id)
    return Redirect(settings.url("connect/calendars"), status=303, session_id=session_id)


async def _revive_links(services: Services, account_id: str) -> None:
    """A fresh sign-in repairs every link that waited for this account to reconnect."""
    from shared.connect.status import set_health

    repo = LinkRepository(services.storage)
    try:
        rows = await services.storage.table(LINKS).query(equals={"account_id": account_id})
        for row in rows:
            link = await repo.get(_key_of(row))
            if link is None or link.health is not LinkHealth.NEEDS_RECONNECT:
                continue
            link = await set_health(services, link, LinkHealth.OK, "reconnected")
            await services.storage.queue(LINK_ADMIN_QUEUE).send(
                AdminMessage(link=str(link.key), action=AdminAction.SETUP).to_json())
            await queue_booking_replay(services, link.key)
    except SyncError as exc:
        # The sign-in itself succeeded; the links are repaired on the next connect or resync.
        log.warning("could not revive links after sign-in: %s", exc.code)


async def queue_booking_replay(services: Services, key: LinkKey) -> None:
    """Have the booking worker write every stored booking of the link's resource to Outlook.

    Booking changes that came while the link had no usable token (or no link at all) were
    stored but not written: the writer stops at a link that needs a reconnect rather than fail
    every retry. Linking or reconnecting is when they must catch up; the replay is idempotent
    (the booking map), so a second one writes nothing."""
    await services.storage.queue(BOOKING_QUEUE).send({"replay_link": str(key)})


def _key_of(row: Mapping[str, Any]) -> Any:
    from shared.domain import LinkKey

    return LinkKey(str(row["provider_id"]), str(row["resource_id"]))


# --- admin consent ----------------------------------------------------------------------------

async def admin_callback(services: Services, params: Mapping[str, str], *,
                         accept_language: str | None = None) -> ConsentResultPage | ErrorPage:
    settings = services.settings
    now = services.clock()
    pending = await AuthFlowStore(services.storage, cipher_for(settings)).take(params.get("state") or "", now=now)
    context = pending.context if pending is not None and pending.kind == "adminconsent" else None
    locale = context.locale if context else negotiate(accept_language, settings.default_locale)
    back = context.return_url if context else ""
    error = params.get("error") or ""
    if error:
        description = params.get("error_description") or ""
        log.info("admin consent came back with %s", error)
        reason = "access_denied" if error == "access_denied" or "AADSTS65004" in description else ""
        if "AADSTS90093" in description or "AADSTS90094" in description:
            reason = "not_admin"
        return ConsentResultPage(locale=locale, ok=False, reason=reason, return_url=back)
    tenant = params.get("tenant") or ""
    if str(params.get("admin_consent") or "").lower() != "true" or not _TENANT_PARAM.match(tenant):
        return ErrorPage("sign_in_failed", locale, status=400, return_url=back)
    from shared.connect.credentials import verify_admin_consent

    try:
        # Anyone can call this URL; only a token issued by the tenant proves the consent.
        await verify_admin_consent(settings, tenant)
    except (ConsentRequired, AuthError, TransientError) as exc:
        log.warning("admin consent for a tenant could not be confirmed: %s", exc.code)
        return ConsentResultPage(locale=locale, ok=False, reason="unverified", return_url=back)
    try:
        await TenantRepository(services.storage).record_admin_consent(tenant, now=now)
    except StorageError:
        log.exception("could not record admin consent")
        return ErrorPage("unavailable", locale, status=503, return_url=back)
    log.info("admin consent recorded for a tenant")
    return ConsentResultPage(locale=locale, ok=True, return_url=back)
