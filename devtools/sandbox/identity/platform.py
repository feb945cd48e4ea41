"""The identity stand-in's state, in one place for the token endpoint, the sign-in pages and the
control API: the directory (tenants, users, consent, tokens), pending sign-ins, authorization
codes, browser sessions, the access-token lifetime and the sign-in failures a test has asked
for — and the Python control methods tests and the control page call to change them.

Codes, pending sign-ins and browser sessions live in memory; a restart signs everybody out.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response

from devtools.sandbox.config import SandboxConfig
from devtools.sandbox.directory import AppRegistration, Directory, SandboxTenant, SandboxUser
from devtools.sandbox.identity.protocol import (
    APPLICATION_ROLES,
    SIGN_IN_FAILURES,
    TENANT_ALIASES,
    OAuthError,
    Scopes,
    missing_parameter,
)

CODE_LIFETIME = 600.0          # Entra's authorization codes live about ten minutes
PENDING_LIFETIME = 1800.0      # an unfinished sign-in is forgotten after half an hour
SESSION_COOKIE = "sbx_identity_session"

_T = TypeVar("_T")


@dataclass
class PendingSignIn:
    """An authorize (or admin-consent) request between the first GET and the final redirect."""

    ctx: str
    kind: str                      # "authorize" | "adminconsent"
    tenant_path: str               # as written in the URL: a GUID, a domain, common, organizations
    tenant_id: str | None          # None for common / organizations
    client_id: str
    redirect_uri: str
    state: str | None
    scopes: Scopes
    scope_text: str
    lang: str
    response_mode: str = "query"
    nonce: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    prompt: str | None = None
    login_hint: str | None = None
    domain_hint: str | None = None
    client_info: bool = False
    admins_only: bool = False
    user_id: str | None = None
    created: float = field(default_factory=time.time)

    @property
    def scopes_default(self) -> bool:
        """The request asked for ``/.default`` (all configured permissions, application ones included)."""
        return any(item.lower().endswith("/.default") or item == ".default" for item in self.scope_text.split())


@dataclass
class AuthCode:
    client_id: str
    redirect_uri: str
    user_id: str
    tenant_id: str
    scopes: Scopes
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int
    expires_at: float
    used: bool = False


class IdentityPlatform:
    """The identity stand-in's state and its controls. The HTTPS routes that serve it are built
    by :func:`devtools.sandbox.identity.identity_routes`; the control API and page (see
    :mod:`devtools.sandbox.identity_control`) use the public methods below."""

    def __init__(self, directory: Directory, config: SandboxConfig, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.config = config
        self.clock = clock
        self._lock = threading.RLock()
        self._pending: dict[str, PendingSignIn] = {}
        self._codes: dict[str, AuthCode] = {}
        self._sessions: dict[str, str] = {}
        #: seconds; None → the directory's default (an hour, like Entra's 60–90 minutes)
        self.access_token_lifetime: float | None = None
        #: errors the next interactive sign-ins end in, after the account was picked (see fail_next_sign_in)
        self._sign_in_failures: list[str] = []

    # --- URLs ------------------------------------------------------------------------------
    @property
    def base(self) -> str:
        return self.config.https_base

    def authority(self, tenant: str) -> str:
        """What the service passes to MSAL as ``authority=``."""
        return f"{self.base}/{tenant}"

    def issuer(self, tenant_id: str) -> str:
        return f"{self.base}/{tenant_id}/v2.0"

    def error_uri(self, code: int) -> str:
        """Where an error response points for a description of its AADSTS code."""
        return f"{self.base}/error?code={code}"

    # --- controls (Python API; the JSON control API calls these) ---------------------------
    def tenant_or_raise(self, id_or_domain: str) -> SandboxTenant:
        return _known(self.directory.tenant(id_or_domain), "tenant", id_or_domain)

    def user_or_raise(self, id_or_mail: str) -> SandboxUser:
        return _known(self.directory.user(id_or_mail), "user", id_or_mail)

    def set_user_consent_allowed(self, tenant: str, allowed: bool) -> None:
        self.directory.set_user_consent_allowed(self.tenant_or_raise(tenant).id, allowed)

    def set_admin_consent(self, tenant: str, granted: bool = True, *, client_id: str | None = None) -> None:
        self.directory.set_admin_consent(self.tenant_or_raise(tenant).id, client_id or self.config.client_id, granted)

    def set_application_consent(self, tenant: str, roles: Iterable[str] | None, *,
                                client_id: str | None = None) -> None:
        """Grant exactly these application permissions (None or empty: withdraw them all, as when
        an admin removes the app's permissions in Entra); delegated consent stays as it is."""
        wanted = frozenset(roles or ())
        unknown = wanted - APPLICATION_ROLES
        if unknown:
            raise ValueError(f"unknown application permissions {sorted(unknown)}")
        self.directory.set_application_consent(self.tenant_or_raise(tenant).id, client_id or self.config.client_id,
                                               wanted or None)

    def set_app_mailbox_scope(self, tenant: str, mailboxes: Iterable[str] | None, *,
                              client_id: str | None = None) -> None:
        """Exchange RBAC for Applications: limit app-only access to ``mailboxes`` (ids or mail
        addresses); None lifts the limit."""
        target = self.tenant_or_raise(tenant)
        ids = None if mailboxes is None else {self.user_or_raise(m).id for m in mailboxes}
        self.directory.set_app_mailbox_scope(target.id, client_id or self.config.client_id, ids)

    def delete_service_principal(self, tenant: str, *, client_id: str | None = None) -> None:
        """The tenant's admin deleted the app: client credentials then fail with AADSTS7000229."""
        self.directory.delete_service_principal(self.tenant_or_raise(tenant).id, client_id or self.config.client_id)

    def set_user_consent(self, user: str, granted: bool = True, *, client_id: str | None = None) -> None:
        self.directory.set_user_consent(self.user_or_raise(user).id, client_id or self.config.client_id, granted)

    def set_account_enabled(self, user: str, enabled: bool) -> None:
        target = self.user_or_raise(user)
        self.directory.set_account_enabled(target.id, enabled)
        if not enabled:
            self.sign_out(target.id)

    def revoke_refresh_tokens(self, user: str, *, reason: str = "revoked") -> int:
        """``reason``: "revoked" → AADSTS700082, "password_changed" → AADSTS50173."""
        codes = {"revoked": 700082, "password_changed": 50173}
        if reason not in codes:
            raise ValueError(f"reason must be one of {sorted(codes)}")
        return self.directory.revoke_user_tokens(self.user_or_raise(user).id, code=codes[reason])

    def expire_access_tokens(self, user: str | None = None) -> int:
        return self.directory.expire_access_tokens(user_id=self._user_id_or_all(user))

    def refuse_access_tokens(self, user: str | None = None, *, mode: str = "revoked",
                             tenant: str | None = None) -> int:
        """Graph refuses live access tokens (all, one user's, or one tenant's, app-only included) but
        refresh tokens and client credentials still work: ``mode`` "revoked" (plain 401) or
        "claims_challenge" (a CAE challenge)."""
        return self.directory.refuse_access_tokens(user_id=self._user_id_or_all(user), mode=mode, tenant_id=tenant)

    def sign_out(self, user: str | None = None) -> int:
        """End browser sessions (all, or one user's): the next authorize shows the account picker."""
        user_id = self._user_id_or_all(user)
        with self._lock:
            doomed = [sid for sid, uid in self._sessions.items() if user_id is None or uid == user_id]
            for sid in doomed:
                del self._sessions[sid]
            return len(doomed)

    def set_access_token_lifetime(self, seconds: float | None) -> None:
        if seconds is not None and seconds <= 0:
            raise ValueError("lifetime must be positive")
        self.access_token_lifetime = seconds

    def fail_next_sign_in(self, kind: str) -> None:
        """Make the next interactive sign-in (after the account is picked) come back to the app
        with an error of ``kind`` (see ``SIGN_IN_FAILURES``): the sign-in failures that are
        neither a declined consent nor an administrator's policy, which users cause by clicking."""
        if kind not in SIGN_IN_FAILURES:
            raise ValueError(f"kind must be one of {sorted(SIGN_IN_FAILURES)}")
        with self._lock:
            self._sign_in_failures.append(kind)

    def take_sign_in_failure(self) -> OAuthError | None:
        """The failure a test asked the next sign-in to end in, if any (each is used once)."""
        with self._lock:
            if not self._sign_in_failures:
                return None
            error, code, message = SIGN_IN_FAILURES[self._sign_in_failures.pop(0)]
        return OAuthError(error, code, message)

    def session_count(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _user_id_or_all(self, user: str | None) -> str | None:
        return self.user_or_raise(user).id if user else None

    # --- lookups both the token endpoint and the pages make ---------------------------------
    def resolve_tenant(self, tenant_path: str) -> SandboxTenant | None:
        """The tenant a URL names; None for the multi-tenant aliases (common, organizations)."""
        if tenant_path.lower() in TENANT_ALIASES:
            return None
        tenant = self.directory.tenant(tenant_path)
        if tenant is None:
            raise OAuthError("invalid_tenant", 90002, f"Tenant '{tenant_path}' not found. Check to make sure you have "
                             "the correct tenant ID and are signing into the correct cloud.")
        return tenant

    def app_for(self, client_id: str | None, tenant_path: str, *, tenant: SandboxTenant | None = None
                ) -> AppRegistration:
        if not client_id:
            raise missing_parameter("client_id")
        app = self.directory.apps.get(client_id)
        if app is None:
            directory_name = tenant.name if tenant else tenant_path
            raise OAuthError("unauthorized_client", 700016, f"Application with identifier '{client_id}' was not found "
                             f"in the directory '{directory_name}'. This can happen if the application has not been "
                             "installed by the administrator of the tenant or consented to by any user in the tenant. "
                             "You may have sent your authentication request to the wrong tenant.")
        return app

    # --- pending sign-ins ------------------------------------------------------------------
    def store_pending(self, pending: PendingSignIn) -> None:
        with self._lock:
            self._purge(self.clock())
            self._pending[pending.ctx] = pending

    def pending(self, ctx: str | None, kind: str) -> PendingSignIn | None:
        """The live sign-in of ``kind`` a page's ``ctx`` names, or None (unknown, other kind, too old)."""
        if not ctx:
            return None
        with self._lock:
            pending = self._pending.get(ctx)
            if pending is None or pending.kind != kind or pending.created + PENDING_LIFETIME <= self.clock():
                return None
            return pending

    def drop_pending(self, ctx: str) -> None:
        with self._lock:
            self._pending.pop(ctx, None)

    def _purge(self, now: float) -> None:
        for ctx in [c for c, p in self._pending.items() if p.created + PENDING_LIFETIME <= now]:
            del self._pending[ctx]
        # Keep spent codes a little past their lifetime so a replay gets "already redeemed".
        for code in [c for c, e in self._codes.items() if e.expires_at + CODE_LIFETIME <= now]:
            del self._codes[code]

    # --- authorization codes ---------------------------------------------------------------
    def issue_code(self, pending: PendingSignIn, user: SandboxUser) -> str:
        """End the sign-in with a code for ``user``; the pending sign-in is gone afterwards."""
        now = self.clock()
        code = secrets.token_urlsafe(48)
        with self._lock:
            self._codes[code] = AuthCode(
                client_id=pending.client_id, redirect_uri=pending.redirect_uri, user_id=user.id,
                tenant_id=user.tenant_id, scopes=pending.scopes, nonce=pending.nonce,
                code_challenge=pending.code_challenge, code_challenge_method=pending.code_challenge_method,
                auth_time=int(now), expires_at=now + CODE_LIFETIME)
            self._pending.pop(pending.ctx, None)
            self._purge(now)
        return code

    def spend_code(self, value: str) -> AuthCode:
        """The code's grant, marked used: whatever the caller finds wrong with it next, a code
        is good for one attempt only."""
        with self._lock:
            entry = self._codes.get(value)
            if entry is None:
                raise OAuthError("invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
            if entry.used:
                raise OAuthError("invalid_grant", 54005, "OAuth2 Authorization code was already redeemed, please "
                                 "retry with a new valid code or use an existing refresh token.")
            entry.used = True
            return entry

    # --- browser sessions ------------------------------------------------------------------
    def session_user(self, request: Request) -> SandboxUser | None:
        sid = request.cookies.get(SESSION_COOKIE)
        if not sid:
            return None
        with self._lock:
            user_id = self._sessions.get(sid)
        return self.directory.users.get(user_id) if user_id else None

    def start_session(self, response: Response, user: SandboxUser) -> None:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[sid] = user.id
        # Secure keeps the cookie off the plain-http listeners that share 127.0.0.1 (cookies
        # ignore ports); Lax lets it ride on the top-level navigation back to the authorize URL.
        response.set_cookie(SESSION_COOKIE, sid, path="/", secure=True, httponly=True, samesite="lax")

    def end_session(self, request: Request, response: Response) -> None:
        sid = request.cookies.get(SESSION_COOKIE)
        if sid:
            with self._lock:
                self._sessions.pop(sid, None)
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="lax")


def _known(found: _T | None, what: str, name: str) -> _T:
    """``found``, or the KeyError every control raises for a tenant or user it does not know."""
    if found is None:
        raise KeyError(f"unknown {what} {name!r}")
    return found
