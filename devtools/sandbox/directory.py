"""Shared sandbox state about who exists and which tokens are valid.

The identity stand-in issues tokens into this directory; the Graph stand-in verifies them
here. Access tokens are opaque random strings to clients (as real Graph tokens are to
apps), looked up on each request, so revocation and expiry act immediately.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field


@dataclass
class SandboxTenant:
    id: str
    name: str
    domain: str
    #: False → users cannot consent themselves: the authorize endpoint answers consent_required /
    #: AADSTS65001 / AADSTS90094 until an admin grants consent for the app.
    user_consent_allowed: bool = True
    #: client ids that an administrator consented to tenant-wide (enables client_credentials)
    admin_consented_apps: set[str] = field(default_factory=set)
    #: application permissions (app roles) an administrator granted, per client id: what an
    #: app-only token's ``roles`` hold. Admin consent to delegated permissions alone grants none.
    app_role_grants: dict[str, frozenset[str]] = field(default_factory=dict)
    #: Exchange RBAC for Applications / application access policy, per client id: the mailboxes
    #: (user ids) app-only access may reach. No entry → every mailbox of the tenant.
    app_mailbox_scope: dict[str, set[str]] = field(default_factory=dict)


@dataclass
class SandboxUser:
    id: str
    tenant_id: str
    display_name: str
    mail: str
    #: Windows time zone name, as Graph's mailboxSettings reports it
    time_zone: str = "W. Europe Standard Time"
    #: client ids this user consented to (delegated)
    consented_apps: set[str] = field(default_factory=set)
    #: may grant tenant-wide (admin) consent, on the consent screen and at /adminconsent
    is_admin: bool = False
    #: a disabled account cannot sign in, and its refresh tokens fail with AADSTS50057
    account_enabled: bool = True
    #: what the mailbox is: "user", or a resource mailbox "room" / "equipment" (no sign-in)
    mailbox_kind: str = "user"
    #: Graph's userType: "Member" or "Guest"
    user_type: str = "Member"

    @property
    def user_principal_name(self) -> str:
        return self.mail


@dataclass
class AppRegistration:
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    name: str = "timum Outlook Sync"


@dataclass(frozen=True)
class AccessClaims:
    token_id: str
    tenant_id: str
    client_id: str
    user_id: str | None          # None for app-only tokens
    scopes: frozenset[str]       # delegated scopes, e.g. {"Calendars.ReadWrite", "User.Read"}
    roles: frozenset[str]        # application permissions, e.g. {"Calendars.ReadWrite"}
    expires_at: float

    @property
    def app_only(self) -> bool:
        return self.user_id is None


class TokenError(Exception):
    """Why a bearer token was refused: ``reason`` is 'invalid', 'expired' or 'revoked'."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class RefreshGrant:
    token: str
    tenant_id: str
    client_id: str
    user_id: str
    scopes: frozenset[str]
    revoked: bool = False
    #: the AADSTS code a revoked grant answers with: 700082 (revoked/expired), 50173 (credentials changed)
    revoked_code: int = 700082


class Directory:
    """Tenants, users, app registrations and live tokens. Thread-safe; the stand-ins share one."""

    ACCESS_TOKEN_LIFETIME = 3600

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.tenants: dict[str, SandboxTenant] = {}
        self.users: dict[str, SandboxUser] = {}
        self.apps: dict[str, AppRegistration] = {}
        self.access_tokens: dict[str, AccessClaims] = {}
        self.refresh_tokens: dict[str, RefreshGrant] = {}
        #: access tokens Graph refuses before they expire: token → "revoked" | "claims_challenge"
        self.refused_access_tokens: dict[str, str] = {}
        #: users with a pending Continuous Access Evaluation challenge → the base64 claims Graph sends
        self.claims_challenges: dict[str, str] = {}

    # --- set-up -------------------------------------------------------------------------
    def add_tenant(self, name: str, domain: str, *, tenant_id: str | None = None,
                   user_consent_allowed: bool = True) -> SandboxTenant:
        with self._lock:
            tenant = SandboxTenant(tenant_id or str(uuid.uuid4()), name, domain, user_consent_allowed)
            self.tenants[tenant.id] = tenant
            return tenant

    def add_user(self, tenant_id: str, display_name: str, local_part: str, *, user_id: str | None = None,
                 time_zone: str = "W. Europe Standard Time", is_admin: bool = False) -> SandboxUser:
        with self._lock:
            tenant = self.tenants[tenant_id]
            user = SandboxUser(user_id or str(uuid.uuid4()), tenant_id, display_name,
                               f"{local_part}@{tenant.domain}", time_zone, is_admin=is_admin)
            self.users[user.id] = user
            return user

    def add_app(self, client_id: str, client_secret: str, redirect_uris: list[str]) -> AppRegistration:
        with self._lock:
            app = AppRegistration(client_id, client_secret, list(redirect_uris))
            self.apps[client_id] = app
            return app

    # --- look-ups ------------------------------------------------------------------------
    def user(self, id_or_upn: str) -> SandboxUser | None:
        """By object id or by mail/UPN (case-insensitive), as Graph's /users/{id | upn} does."""
        with self._lock:
            if id_or_upn in self.users:
                return self.users[id_or_upn]
            low = id_or_upn.lower()
            return next((u for u in self.users.values() if u.mail.lower() == low), None)

    def tenant(self, id_or_domain: str) -> SandboxTenant | None:
        with self._lock:
            if id_or_domain in self.tenants:
                return self.tenants[id_or_domain]
            low = id_or_domain.lower()
            return next((t for t in self.tenants.values() if t.domain.lower() == low), None)

    def tenant_users(self, tenant_id: str) -> list[SandboxUser]:
        with self._lock:
            return [u for u in self.users.values() if u.tenant_id == tenant_id]

    # --- consent and tenant policy ---------------------------------------------------------
    def set_user_consent_allowed(self, tenant_id: str, allowed: bool) -> None:
        with self._lock:
            self.tenants[tenant_id].user_consent_allowed = allowed

    def set_admin_consent(self, tenant_id: str, client_id: str, granted: bool = True) -> None:
        """Admin consent to everything the app registration lists (``/.default``): the delegated
        permissions for all users and the application permissions. ``False`` withdraws both."""
        from devtools.sandbox.identity.protocol import APPLICATION_ROLES

        with self._lock:
            tenant = self.tenants[tenant_id]
            if granted:
                tenant.admin_consented_apps.add(client_id)
                tenant.app_role_grants[client_id] = APPLICATION_ROLES
            else:
                tenant.admin_consented_apps.discard(client_id)
                tenant.app_role_grants.pop(client_id, None)

    def set_user_consent(self, user_id: str, client_id: str, granted: bool = True) -> None:
        with self._lock:
            apps = self.users[user_id].consented_apps
            if granted:
                apps.add(client_id)
            else:
                apps.discard(client_id)

    def set_account_enabled(self, user_id: str, enabled: bool) -> None:
        with self._lock:
            self.users[user_id].account_enabled = enabled

    def set_application_consent(self, tenant_id: str, client_id: str, roles: frozenset[str] | None) -> None:
        """Grant (or, with None, withdraw) application permissions to ``client_id`` in the tenant."""
        with self._lock:
            grants = self.tenants[tenant_id].app_role_grants
            if roles:
                grants[client_id] = frozenset(roles)
            else:
                grants.pop(client_id, None)

    def set_delegated_admin_consent(self, tenant_id: str, client_id: str, granted: bool = True) -> None:
        """Admin consent to the delegated permissions only, for every user of the tenant."""
        with self._lock:
            apps = self.tenants[tenant_id].admin_consented_apps
            if granted:
                apps.add(client_id)
            else:
                apps.discard(client_id)

    def set_app_mailbox_scope(self, tenant_id: str, client_id: str, user_ids: set[str] | None) -> None:
        """Restrict app-only access to these mailboxes (None lifts the restriction)."""
        with self._lock:
            scopes = self.tenants[tenant_id].app_mailbox_scope
            if user_ids is None:
                scopes.pop(client_id, None)
            else:
                scopes[client_id] = set(user_ids)

    def in_app_scope(self, tenant_id: str, client_id: str, user_id: str) -> bool:
        with self._lock:
            allowed = self.tenants[tenant_id].app_mailbox_scope.get(client_id)
            return allowed is None or user_id in allowed

    def delete_service_principal(self, tenant_id: str, client_id: str) -> None:
        """The admin deleted the app from the tenant (enterprise apps): every consent goes with it."""
        with self._lock:
            tenant = self.tenants[tenant_id]
            tenant.admin_consented_apps.discard(client_id)
            tenant.app_role_grants.pop(client_id, None)
            for user in self.users.values():
                if user.tenant_id == tenant_id:
                    user.consented_apps.discard(client_id)

    def add_resource_mailbox(self, tenant_id: str, display_name: str, local_part: str, *, kind: str = "room",
                             user_id: str | None = None) -> SandboxUser:
        """A room or equipment mailbox: a disabled account with a calendar, as Exchange makes them."""
        if kind not in ("room", "equipment"):
            raise ValueError("kind must be room or equipment")
        user = self.add_user(tenant_id, display_name, local_part, user_id=user_id)
        with self._lock:
            user.mailbox_kind = kind
            user.account_enabled = False
        return user

    def has_delegated_consent(self, user_id: str, client_id: str) -> bool:
        """The user consented, or an admin consented for the user's whole tenant."""
        with self._lock:
            user = self.users[user_id]
            return client_id in user.consented_apps or client_id in self.tenants[user.tenant_id].admin_consented_apps

    def has_service_principal(self, tenant_id: str, client_id: str) -> bool:
        """Whether the (multi-tenant) app exists in the tenant: any consent there creates it."""
        with self._lock:
            tenant = self.tenants[tenant_id]
            if client_id in tenant.admin_consented_apps or client_id in tenant.app_role_grants:
                return True
            return any(u.tenant_id == tenant_id and client_id in u.consented_apps for u in self.users.values())

    # --- tokens --------------------------------------------------------------------------
    def issue_access_token(self, *, tenant_id: str, client_id: str, user_id: str | None,
                           scopes: frozenset[str] = frozenset(), roles: frozenset[str] = frozenset(),
                           lifetime: float | None = None) -> tuple[str, AccessClaims]:
        with self._lock:
            token = "sbx-at." + secrets.token_urlsafe(32)
            claims = AccessClaims(token_id=token[-12:], tenant_id=tenant_id, client_id=client_id, user_id=user_id,
                                  scopes=scopes, roles=roles,
                                  expires_at=time.time() + (self.ACCESS_TOKEN_LIFETIME if lifetime is None
                                                            else lifetime))
            self.access_tokens[token] = claims
            return token, claims

    def rename_access_token(self, token: str, new_token: str) -> None:
        """Let ``new_token`` (e.g. a JWT carrying the same claims) stand for an issued token."""
        with self._lock:
            self.access_tokens[new_token] = self.access_tokens.pop(token)

    def issue_refresh_token(self, *, tenant_id: str, client_id: str, user_id: str,
                            scopes: frozenset[str]) -> str:
        with self._lock:
            token = "sbx-rt." + secrets.token_urlsafe(32)
            self.refresh_tokens[token] = RefreshGrant(token, tenant_id, client_id, user_id, scopes)
            return token

    def verify_access_token(self, token: str) -> AccessClaims:
        with self._lock:
            claims = self.access_tokens.get(token)
            if claims is None:
                raise TokenError("invalid")
            refused = self.refused_access_tokens.get(token)
            if refused is not None:
                raise TokenError(refused)
            if claims.expires_at <= time.time():
                raise TokenError("expired")
            return claims

    def expire_access_tokens(self, *, user_id: str | None = None) -> int:
        """Make live access tokens expired (all, or one user's) — clients must refresh."""
        with self._lock:
            n = 0
            for tok, claims in list(self.access_tokens.items()):
                if user_id is None or claims.user_id == user_id:
                    self.access_tokens[tok] = AccessClaims(**{**claims.__dict__, "expires_at": 0.0})
                    n += 1
            return n

    def revoke_user_tokens(self, user_id: str, *, code: int = 700082) -> int:
        """Revoke refresh tokens (→ invalid_grant AADSTS700082, or ``code``) and drop access tokens of a user."""
        with self._lock:
            n = 0
            for grant in self.refresh_tokens.values():
                if grant.user_id == user_id and not grant.revoked:
                    grant.revoked = True
                    grant.revoked_code = code
                    n += 1
            for tok, claims in list(self.access_tokens.items()):
                if claims.user_id == user_id:
                    del self.access_tokens[tok]
            return n

    # --- mid-life token faults (appended) ---------------------------------------------------------
    def refuse_access_tokens(self, *, user_id: str | None = None, mode: str = "revoked",
                             tenant_id: str | None = None) -> int:
        """Make Graph refuse live, unexpired access tokens (all, one user's, or — app-only ones
        included — one tenant's) while refresh tokens
        keep working — the case a client must survive by getting a fresh token.

        ``mode``: "revoked" → a plain 401; "claims_challenge" → a Continuous Access Evaluation 401
        with ``error="insufficient_claims"`` and base64 ``claims`` in ``WWW-Authenticate``, and
        until a token request carries claims (``claims`` form field) every token issued to the user
        is refused the same way."""
        if mode not in ("revoked", "claims_challenge"):
            raise ValueError("mode must be 'revoked' or 'claims_challenge'")
        with self._lock:
            n = 0
            now = time.time()
            for tok, claims in self.access_tokens.items():
                if ((user_id is None or claims.user_id == user_id)
                        and (tenant_id is None or claims.tenant_id == tenant_id) and claims.expires_at > now):
                    self.refused_access_tokens[tok] = mode
                    n += 1
                    if mode == "claims_challenge" and claims.user_id is not None:
                        self.claims_challenges[claims.user_id] = self.claims_challenge_value(now)
            return n

    @staticmethod
    def claims_challenge_value(now: float) -> str:
        """What CAE puts in ``claims``: base64 of a claims request for a token issued after now."""
        request = {"access_token": {"nbf": {"essential": True, "value": str(int(now))}}}
        return base64.b64encode(json.dumps(request, separators=(",", ":")).encode()).decode()

    def claims_challenge_for(self, token: str) -> str | None:
        with self._lock:
            claims = self.access_tokens.get(token)
            if claims is None or claims.user_id is None:
                return None
            return self.claims_challenges.get(claims.user_id)

    def issued_by_refresh(self, token: str, requested_claims: str | None) -> None:
        """A token just issued through the refresh grant: it satisfies a pending claims challenge
        only if the request asked for claims; otherwise Graph refuses it like the old one."""
        with self._lock:
            claims = self.access_tokens.get(token)
            if claims is None or claims.user_id is None or claims.user_id not in self.claims_challenges:
                return
            if requested_claims:
                del self.claims_challenges[claims.user_id]
            else:
                self.refused_access_tokens[token] = "claims_challenge"
