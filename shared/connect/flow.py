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
import hashlib
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from shared.config import Settings
from shared.connect.msal_client import DELEGATED_SCOPES, build_app, is_consent_error
from shared.connect.outcomes import Binding, ConsentPage, ConsentResultPage, ErrorPage, Redirect, end_binding
from shared.connect.store import (
    ADMIN_CONSENT_LIFETIME,
    FLOW_LIFETIME,
    AuthFlowRepository,
    ConnectContext,
    NonceRepository,
    PendingFlow,
    SessionRepository,
    binding_hash,
    derive_keys,
)
from shared.context import Services
from shared.crypto import Cipher
from shared.domain import Link, LinkHealth, LinkKey
from shared.errors import AuthError, ConsentRequired, InvalidSignature, StorageError, SyncError, TransientError
from shared.i18n import has, negotiate, normalize
from shared.messages import BOOKING_QUEUE, LINK_ADMIN_QUEUE, AdminAction, AdminMessage, ReplayLink
from shared.repos.accounts import AccountRepository, StoredCache, TenantRepository
from shared.repos.links import LinkRepository
from shared.signing import return_url_allowed, verify_connect_link

log = logging.getLogger(__name__)

_GENERIC_TENANTS = frozenset({"common", "organizations", "consumers"})
_TENANT_IN_TEXT = re.compile(r"tenant\W{1,4}([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})", re.I)
_TENANT_PARAM = re.compile(r"^[A-Za-z0-9.-]{1,128}$")
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def cipher_for(settings: Settings) -> Cipher:
    return Cipher(settings.token_encryption_keys)


def session_store(services: Services) -> SessionRepository:
    keys = services.settings.token_encryption_keys
    # Every configured key verifies a CSRF token, so a chooser form open while the keys rotate
    # still submits; the first key signs new ones.
    return SessionRepository(services.storage, Cipher(keys), derive_keys(keys, "csrf"))


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


def timum_home(settings: Settings) -> str:
    """A way back to timum for pages that have no verified return address: the first address
    timum registered as allowed (never one taken from an unverified request)."""
    for prefix in settings.timum_return_url_allowlist:
        if prefix:
            return prefix.rstrip("?")
    return ""


def _refused(settings: Settings, token: str | None, code: str, accept_language: str | None) -> ErrorPage:
    data = _peek(token)
    loc = data.get("loc")
    locale = normalize(loc) if loc in ("de", "en") else negotiate(accept_language, settings.default_locale)
    ret = data.get("ret")
    # Only an expired link passed the signature check (it is checked first): its return address
    # is timum's. Any other refused link may be forged, so its page links to timum's home.
    trusted = code == "link_expired" and isinstance(ret, str) and return_url_allowed(
        ret, settings.timum_return_url_allowlist)
    return ErrorPage(code=code if has(f"error.{code}") else "link_malformed", locale=locale, status=400,
                     return_url=ret if trusted and isinstance(ret, str) else timum_home(settings))


def _initiate(settings: Settings, state: str, scopes: tuple[str, ...] = DELEGATED_SCOPES) -> dict[str, Any]:
    app = build_app(settings)
    flow: dict[str, Any] = app.initiate_auth_code_flow(
        list(scopes), redirect_uri=settings.url("oauth/callback"), state=state,
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
                             locale=normalize(link.locale, settings.default_locale), return_url=link.return_url,
                             scope=link.scope, provider_name=link.provider_name)
    try:
        begun = await _begin(services, context, use_nonce=lambda: NonceRepository(services.storage).use(
            link.nonce, expires_at=datetime.fromtimestamp(link.expires_at + 60, UTC), now=now))
    except InvalidSignature as exc:
        log.info("connect link refused: %s", exc.code)
        return ErrorPage(exc.code, context.locale, status=400, return_url=context.return_url)
    if isinstance(begun, ErrorPage):
        return begun
    log.info("sign-in started for provider %s", link.provider_id)
    return begun


def binding_tag(state: str) -> str:
    """Names the binding cookie of the sign-in with ``state`` (not secret: the state travels in URLs)."""
    return hashlib.sha256(f"binding:{state}".encode()).hexdigest()[:16]


async def _begin(services: Services, context: ConnectContext,
                 use_nonce: Callable[[], Awaitable[None]] | None = None) -> Redirect | ErrorPage:
    """Start MSAL's flow for ``context`` and bind it to the browser: the random binding goes to
    the browser as a cookie, only its hash is stored with the flow."""
    settings = services.settings
    state = secrets.token_urlsafe(32)
    # The organisation path's sign-in only says who is connecting and in which tenant: the
    # calendars are reached with the application permissions an administrator grants.
    from shared.org.permissions import ORG_SIGN_IN_SCOPES

    scopes = ORG_SIGN_IN_SCOPES if context.is_org else DELEGATED_SCOPES
    try:
        flow = await asyncio.to_thread(_initiate, settings, state, scopes)
    except (TransientError, AuthError, OSError):
        log.exception("could not start the Microsoft sign-in")
        # The link is still unused: the user may simply click it again.
        return ErrorPage("unavailable", context.locale, status=503, return_url=context.return_url)
    if use_nonce is not None:
        await use_nonce()
    binding = Binding(binding_tag(state), secrets.token_urlsafe(32))
    await AuthFlowRepository(services.storage, cipher_for(settings)).put(
        state, PendingFlow(kind="orgsignin" if context.is_org else "signin", context=context, flow=flow,
                           binding_hash=binding_hash(binding.value)),
        expires_at=services.clock() + FLOW_LIFETIME)
    return Redirect(str(flow["auth_uri"]), status=302, binding=binding)


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


def admin_consent_url(settings: Settings, tenant: str, state: str, *, org: bool = False) -> str:
    """Least privilege: the organisation path asks for every permission of the registration
    (``/.default``, which holds the application permissions); the single-calendar path names
    the delegated permissions, so the administrator grants them for all users and nothing more."""
    from shared.org.permissions import delegated_consent_scope

    scope = "https://graph.microsoft.com/.default" if org else delegated_consent_scope()
    query = urlencode({"client_id": settings.entra_client_id, "scope": scope,
                       "redirect_uri": settings.url("oauth/admin-callback"), "state": state})
    return f"{settings.entra_authority_host.rstrip('/')}/{tenant}/v2.0/adminconsent?{query}"


async def _consent_page(services: Services, context: ConnectContext, *, description: str) -> ConsentPage:
    from shared.observability.metrics import metrics

    settings = services.settings
    tenant = consent_tenant(settings, description)
    # Operators watch this: a tenant that keeps refusing needs its admin to act.
    metrics.increment("consent_errors", declined=False)
    state = secrets.token_urlsafe(24)
    await AuthFlowRepository(services.storage, cipher_for(settings)).put(
        state, PendingFlow(kind="adminconsent", context=context, flow={}, tenant=tenant),
        expires_at=services.clock() + ADMIN_CONSENT_LIFETIME)
    return ConsentPage(locale=context.locale, consent_url=admin_consent_url(settings, tenant, state,
                                                                            org=context.is_org),
                       return_url=context.return_url, org=context.is_org)


#: AADSTS codes meaning "an administrator must consent first" (user consent is not allowed)
_ADMIN_REQUIRED_CODES = frozenset({65001, 90094, 90008})
_USER_DECLINED_CODE = 65004
_ERROR_NAME = re.compile(r"^[a-z_]{1,64}$")


def sign_in_problem(error: str, description: str = "", subcode: str = "") -> str:
    """What a sign-in error means for the user: ``declined`` (they said no on the consent
    screen), ``admin_required`` (their organisation lets only an administrator consent) or
    ``failed`` (anything else: cancelled sign-in, disabled account, a server error)."""
    codes = {int(c) for c in re.findall(r"AADSTS(\d{4,7})", description or "")}
    if _USER_DECLINED_CODE in codes or (error == "access_denied" and subcode == "cancel" and not codes):
        return "declined"
    if codes & _ADMIN_REQUIRED_CODES or error == "consent_required":
        return "admin_required"
    return "failed"


def _loggable(error: str) -> str:
    """An error name from the query string, fit for a log line (it is anonymous input)."""
    return error if _ERROR_NAME.match(error) else "unrecognised"


async def _problem_page(services: Services, context: ConnectContext, problem: str, *,
                        description: str) -> ErrorPage | ConsentPage:
    """The page for a sign-in that came back without a token: the admin-consent page when only
    an administrator can consent; otherwise its own page with a fresh sign-in to try again."""
    if problem == "admin_required":
        return await _consent_page(services, context, description=description)
    if problem == "declined":
        from shared.observability.metrics import metrics

        metrics.increment("consent_errors", declined=True)
    code = "consent_declined" if problem == "declined" else "sign_in_failed"
    again = await _begin(services, context)
    if isinstance(again, ErrorPage):
        return ErrorPage(code, context.locale, status=400, return_url=context.return_url)
    return ErrorPage(code, context.locale, status=400, return_url=context.return_url, retry_url=again.location,
                     binding=again.binding)


def _redeem(settings: Settings, flow: dict[str, Any],
            params: Mapping[str, str]) -> tuple[dict[str, Any], str, dict[str, Any] | None]:
    """Blocking: redeem the code. Returns (MSAL result, serialized cache, the signed-in account)."""
    import msal

    cache = msal.SerializableTokenCache()
    app = build_app(settings, cache=cache)
    result: dict[str, Any] = app.acquire_token_by_auth_code_flow(flow, dict(params))
    accounts = app.get_accounts() if "access_token" in result else []
    return result, cache.serialize(), (accounts[0] if accounts else None)


async def callback(services: Services, params: Mapping[str, str], *, binding: str | None,
                   accept_language: str | None = None) -> Redirect | ErrorPage | ConsentPage:
    """Microsoft's answer. ``binding`` is the value of the sign-in's binding cookie as the
    browser sent it: an answer brought back by any other browser is refused before anything
    is redeemed or stored (a victim finishing an attacker's sign-in, or login CSRF)."""
    settings = services.settings
    now = services.clock()
    fallback_locale = negotiate(accept_language, settings.default_locale)
    flows = AuthFlowRepository(services.storage, cipher_for(settings))
    state = params.get("state") or ""
    # This browser's binding cookie for the sign-in, to be dropped once the sign-in is over.
    spent = binding_tag(state) if binding and state else ""
    pending = await flows.peek(state, now=now)
    if pending is None:
        # Expired or already used: nothing is left for the cookie to bind.
        return end_binding(ErrorPage("flow_unknown", fallback_locale, status=400, return_url=timum_home(settings)),
                           spent)
    if pending.kind not in ("signin", "orgsignin"):
        return ErrorPage("flow_unknown", fallback_locale, status=400, return_url=timum_home(settings))
    if not pending.bound_to(binding):
        # The flow stays: the browser that started it may still finish it.
        log.warning("sign-in answer refused: it came back %s", "with another browser's binding" if binding
                    else "without the starting browser's binding cookie")
        return ErrorPage("browser_mismatch", pending.context.locale, status=400, return_url=timum_home(settings))
    if await flows.take(state, now=now) is None:
        # Another request with the same answer won the race.
        return end_binding(ErrorPage("flow_unknown", pending.context.locale, status=400,
                                     return_url=timum_home(settings)), spent)
    # From here on the flow is spent, whatever the answer says.
    return end_binding(await _answer(services, pending, params, binding), spent)


async def _answer(services: Services, pending: PendingFlow, params: Mapping[str, str],
                  binding: str | None) -> Redirect | ErrorPage | ConsentPage:
    """What the answer to a sign-in that ``pending`` started (now taken) leads to."""
    settings = services.settings
    now = services.clock()
    context = pending.context
    error = params.get("error") or ""
    description = params.get("error_description") or ""
    if error:
        problem = sign_in_problem(error, description, params.get("error_subcode") or "")
        log.info("sign-in came back with %s (%s)", _loggable(error), problem)
        return await _problem_page(services, context, problem, description=description)
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
        problem = sign_in_problem(err, desc) if is_consent_error(err, desc) else "failed"
        log.info("code redemption refused: %s (%s)", _loggable(err) if err else "no account", problem)
        return await _problem_page(services, context, problem, description=desc)
    claims = result.get("id_token_claims") or {}
    if pending.kind == "orgsignin":
        # Nothing of this sign-in is kept: it only names the person and the tenant.
        from shared.org.service import after_sign_in

        return await after_sign_in(services, context, claims, binding=binding)
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
    repo = LinkRepository(services.storage)
    try:
        for key in await repo.keys_for_account(account_id):
            link = await repo.get(key)
            if link is not None and link.health is LinkHealth.NEEDS_RECONNECT:
                await revive(services, link, AdminAction.SETUP)
    except SyncError as exc:
        # The sign-in itself succeeded; the links are repaired on the next connect or resync.
        log.warning("could not revive links after sign-in: %s", exc.code)


async def revive(services: Services, link: Link, setup: AdminAction) -> Link:
    """A link that waited for a reconnect (a sign-in, an organisation's renewed consent) is healthy
    again: mark it so — which also replays its stored bookings (``set_health``) — and queue
    ``setup`` (subscription, full sync).

    The health is saved before timum is told, so a status webhook timum refuses now changes
    nothing here: the link's next completed round sends it again. The set-up must not depend on
    it, or the link would stay healthy without a subscription (a later sign-in skips a healthy
    link) and the links after it would not be revived at all."""
    from shared.connect.status import set_health

    try:
        link = await set_health(services, link, LinkHealth.OK, "reconnected")
    except SyncError as exc:
        log.warning("revived link %s, but timum did not take its status now: %s", link.key, exc.code)
    await services.storage.queue(LINK_ADMIN_QUEUE).send(AdminMessage(link=str(link.key), action=setup).to_json())
    return link


async def queue_booking_replay(services: Services, key: LinkKey) -> None:
    """Have the booking worker write every stored booking of the link's resource to Outlook.

    Booking changes that came while the link had no usable token (or no link at all) were
    stored but not written: the writer stops at a link that needs a reconnect rather than fail
    every retry. Linking or reconnecting is when they must catch up; the replay is idempotent
    (the booking map), so a second one writes nothing."""
    await services.storage.queue(BOOKING_QUEUE).send(ReplayLink(key).to_json())


# --- admin consent ----------------------------------------------------------------------------

async def admin_callback(services: Services, params: Mapping[str, str], *, accept_language: str | None = None,
                         binding: str | None = None) -> ConsentResultPage | ErrorPage | Redirect:
    """An administrator's answer to the admin-consent link. It counts only with the state of a
    consent request we issued (single use: taken once consent is recorded) and only for the
    tenant that state names — proven by an app-only token (a JWT) issued there."""
    settings = services.settings
    now = services.clock()
    flows = AuthFlowRepository(services.storage, cipher_for(settings))
    state = params.get("state") or ""
    # The organisation path binds its consent to the administrator's browser too; that cookie
    # goes once the consent's flow is spent. A failed answer leaves the flow (and the cookie):
    # the consent link may be opened again.
    spent = binding_tag(state) if binding and state else ""
    pending = await flows.peek(state, now=now)
    if pending is None or pending.kind != "adminconsent":
        log.info("admin consent answer without a valid request refused")
        return end_binding(ErrorPage("consent_unknown", negotiate(accept_language, settings.default_locale),
                                     status=400, return_url=timum_home(settings)), spent if pending is None else "")
    context = pending.context
    locale, back = context.locale, context.return_url
    error = params.get("error") or ""
    if error:
        description = params.get("error_description") or ""
        log.info("admin consent came back with %s", _loggable(error))
        reason = "access_denied" if error == "access_denied" or "AADSTS65004" in description else ""
        if "AADSTS90093" in description or "AADSTS90094" in description:
            reason = "not_admin"
        return ConsentResultPage(locale=locale, ok=False, reason=reason, return_url=back)
    tenant = (params.get("tenant") or "").lower()
    if str(params.get("admin_consent") or "").lower() != "true" or not _TENANT_PARAM.match(tenant):
        return ErrorPage("sign_in_failed", locale, status=400, return_url=back)
    if context.is_org:
        from shared.org.service import consent_callback

        return await consent_callback(services, pending, state, tenant, binding=binding, spent=spent)
    asked = pending.tenant.lower()
    named = asked not in _GENERIC_TENANTS and bool(asked)
    if named and _GUID.match(asked) and asked != tenant:
        log.warning("admin consent answer names another tenant than the request; refused")
        return ConsentResultPage(locale=locale, ok=False, reason="other_tenant", return_url=back)
    from shared.connect.credentials import APP_ROLES
    from shared.org.service import app_only_grant

    try:
        # Anyone can call this URL; only a token issued by the tenant proves the app is there.
        # The single-calendar path asks for delegated permissions only, which leave no trace in
        # an app-only token: the token proves the app's service principal and the tenant; what
        # it grants decides whether app-only links are on offer (an earlier organisation grant).
        proven, roles = await app_only_grant(services, asked if named else tenant)
    except (ConsentRequired, AuthError, TransientError) as exc:
        log.warning("admin consent for a tenant could not be confirmed: %s", exc.code)
        return ConsentResultPage(locale=locale, ok=False, reason="unverified", return_url=back)
    if proven != tenant:
        # A request for a tenant named by domain: the token says which tenant that is.
        log.warning("admin consent answer names another tenant than the request; refused")
        return ConsentResultPage(locale=locale, ok=False, reason="other_tenant", return_url=back)
    if await flows.take(state, now=now) is None:
        return end_binding(ErrorPage("consent_unknown", locale, status=400, return_url=back), spent)
    try:
        if roles >= APP_ROLES:
            await TenantRepository(services.storage).record_admin_consent(proven, now=now)
    except StorageError:
        log.exception("could not record admin consent")
        return end_binding(ErrorPage("unavailable", locale, status=503, return_url=back), spent)
    log.info("admin consent recorded for a tenant")
    return end_binding(ConsentResultPage(locale=locale, ok=True, return_url=back), spent)
