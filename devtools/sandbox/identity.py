"""Stand-in for the Microsoft identity platform's v2.0 endpoints (login.microsoftonline.com).

Owns sign-in, consent and token issuance for the sandbox: OpenID discovery and keys, the
authorize endpoint with its account picker, consent and "need admin approval" screens, the
token endpoint (authorization_code with PKCE, refresh_token with rotation, client_credentials),
the v2.0 admin-consent endpoint and sign-out. The real MSAL and azure-identity talk to it
unchanged; only the authority host and the CA bundle differ from production.

What is modelled (and why it matters to the service):
- Tenants may forbid user consent; then only an administrator (or a prior admin consent) lets
  users in, otherwise the app gets ``consent_required`` / AADSTS90094 — the admin-consent dead
  end users of other sync tools complain about.
- Admin consent comes in two kinds, as in Entra: to named delegated scopes (for all users; no
  application permission — what the single-calendar path asks for) and to ``/.default`` (every
  permission of the registration, application permissions included — the organisation path).
  Administrators' ID tokens name their role in ``wids``. Per tenant, an application scope
  (Exchange RBAC for Applications) can leave mailboxes out of app-only access (Graph answers
  403 ``ErrorAccessDenied``), and the app can be deleted (client credentials: AADSTS7000229).
- An app exists in a tenant (has a service principal) once anybody there consented. Client
  credentials fail with AADSTS7000229 without one, and yield a token *without roles* when
  only users consented — as Entra does, so the service must not take a token as proof of
  admin consent.
- Refresh tokens rotate (a new one per use; the old one stays valid, as with Entra) and can be
  revoked (AADSTS700082 / AADSTS50173), the account disabled (AADSTS50057) or the consent
  withdrawn (AADSTS65001): each surfaces as ``invalid_grant`` so the service must ask the user
  to reconnect.
- Access tokens are opaque and live in the shared :class:`Directory`, where the Graph stand-in
  checks them; the ID token is a real RS256 JWT whose keys are published at ``jwks_uri``.

Codes, pending sign-ins and browser sessions live in memory; a restart signs everybody out.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from devtools.sandbox import ui
from devtools.sandbox.config import SandboxConfig
from devtools.sandbox.directory import AppRegistration, Directory, SandboxTenant, SandboxUser

GRAPH_RESOURCE = "https://graph.microsoft.com"
#: role template id of Entra's Global Administrator (``wids`` claim)
GLOBAL_ADMINISTRATOR = "62e90394-69f5-4237-9190-012177145e10"
#: sign-in failures a test can provoke (``fail_next_sign_in``): (error, AADSTS code, message) as Entra sends them
SIGN_IN_FAILURES: dict[str, tuple[str, int, str]] = {
    "not_assigned": ("access_denied", 50105, "Your administrator has configured the application to block users "
                     "unless they are specifically granted ('assigned') access to the application."),
    "server_error": ("server_error", 50000, "There was an error issuing a token or an issue with our sign-in "
                     "service."),
    "temporarily_unavailable": ("temporarily_unavailable", 90033, "A transient error has occurred. Please try "
                                "again."),
}
#: Microsoft Graph's well-known application id; scopes may name the resource by it
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"

#: Graph delegated permissions the sandbox knows (canonical spelling). Any of them may be
#: requested dynamically; consent covers the app as a whole.
KNOWN_DELEGATED = (
    "Calendars.Read", "Calendars.ReadBasic", "Calendars.ReadWrite", "Calendars.Read.Shared",
    "Calendars.ReadWrite.Shared", "MailboxSettings.Read", "MailboxSettings.ReadWrite", "User.Read",
    "User.ReadBasic.All", "Place.Read.All",
)
#: what the app registration lists as required: ``/.default`` means these
CONFIGURED_DELEGATED = ("Calendars.ReadWrite", "Calendars.ReadWrite.Shared", "MailboxSettings.Read", "User.Read")
#: application permissions (roles) the app registration lists; an admin grants them with admin
#: consent to ``/.default`` (never with consent to named delegated scopes)
APPLICATION_ROLES = frozenset({"Calendars.ReadWrite", "MailboxSettings.Read", "User.Read.All", "Place.Read.All"})
OIDC_SCOPES = ("openid", "profile", "email", "offline_access")
TENANT_ALIASES = ("common", "organizations")
PROMPTS = ("login", "none", "consent", "select_account", "create")

PERMISSION_TITLES: dict[str, tuple[str, str]] = {
    "Calendars.Read": ("Ihre Kalender lesen", "Read your calendars"),
    "Calendars.ReadBasic": ("Grundlegende Kalenderdaten lesen", "Read basic details of your calendars"),
    "Calendars.ReadWrite": ("Vollzugriff auf Ihre Kalender", "Have full access to your calendars"),
    "Calendars.Read.Shared": ("Freigegebene Kalender lesen", "Read calendars you can access"),
    "Calendars.ReadWrite.Shared": ("Freigegebene Kalender lesen und schreiben",
                                   "Read and write calendars you can access"),
    "MailboxSettings.Read": ("Ihre Postfacheinstellungen lesen", "Read your mailbox settings"),
    "MailboxSettings.ReadWrite": ("Ihre Postfacheinstellungen lesen und schreiben",
                                  "Read and write your mailbox settings"),
    "User.Read": ("Sie anmelden und Ihr Profil lesen", "Sign you in and read your profile"),
    "User.ReadBasic.All": ("Grundlegende Profile aller Benutzer lesen", "Read all users' basic profiles"),
    "Place.Read.All": ("Alle Orte der Organisation lesen", "Read all company places"),
    "offline_access": ("Zugriff auf Daten beibehalten, für die Sie Zugriff erteilt haben",
                       "Maintain access to data you have given it access to"),
}
APP_ROLE_TITLES: dict[str, tuple[str, str]] = {
    "Calendars.ReadWrite": ("Kalender in allen Postfächern lesen und schreiben",
                            "Read and write calendars in all mailboxes"),
    "MailboxSettings.Read": ("Einstellungen aller Postfächer lesen", "Read all user mailbox settings"),
    "User.Read.All": ("Vollständige Profile aller Benutzer lesen", "Read all users' full profiles"),
    "Place.Read.All": ("Alle Orte der Organisation lesen", "Read all company places"),
}

CODE_LIFETIME = 600.0          # Entra's authorization codes live about ten minutes
PENDING_LIFETIME = 1800.0      # an unfinished sign-in is forgotten after half an hour
SESSION_COOKIE = "sbx_identity_session"


# =============================================================================================
# Errors
# =============================================================================================

class OAuthError(Exception):
    """A protocol error, rendered as Entra does: JSON at the token endpoint, a redirect to the
    app once the redirect URI is trusted, an error page before that."""

    def __init__(self, error: str, code: int, message: str, *, status: int = 400,
                 subcode: str | None = None) -> None:
        super().__init__(f"AADSTS{code}: {message}")
        self.error = error
        self.code = code
        self.message = message
        self.status = status
        self.subcode = subcode


def _timestamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@dataclass(frozen=True)
class _Trace:
    trace_id: str
    correlation_id: str
    timestamp: str

    @classmethod
    def of(cls, request: Request) -> _Trace:
        # Entra echoes the client's client-request-id (MSAL sends one) as correlation id.
        correlation = request.headers.get("client-request-id") or str(uuid.uuid4())
        return cls(str(uuid.uuid4()), correlation, _timestamp())

    def describe(self, err: OAuthError) -> str:
        return (f"AADSTS{err.code}: {err.message}\r\nTrace ID: {self.trace_id}\r\n"
                f"Correlation ID: {self.correlation_id}\r\nTimestamp: {self.timestamp}")


# =============================================================================================
# Scopes
# =============================================================================================

@dataclass(frozen=True)
class Scopes:
    """A parsed ``scope`` parameter: Graph permissions (canonical names, with the spelling the
    client used, so the response echoes it and MSAL's cache finds the token again) and the
    OpenID Connect scopes."""

    permissions: tuple[str, ...]
    written: tuple[str, ...]
    oidc: frozenset[str]

    @property
    def for_token(self) -> frozenset[str]:
        """What the access token grants; a bare OIDC request gets Graph's User.Read, as in Entra."""
        perms = self.permissions or ("User.Read",)
        return frozenset(perms) | self.oidc

    def response_scope(self) -> str:
        written = self.written or (f"{GRAPH_RESOURCE}/User.Read",)
        return " ".join([*written, *(s for s in OIDC_SCOPES if s in self.oidc)])

    @classmethod
    def from_grant(cls, granted: Iterable[str]) -> Scopes:
        granted = set(granted)
        perms = tuple(p for p in KNOWN_DELEGATED if p in granted)
        return cls(perms, tuple(f"{GRAPH_RESOURCE}/{p}" for p in perms),
                   frozenset(s for s in OIDC_SCOPES if s in granted))


_DELEGATED_BY_LOWER = {p.lower(): p for p in KNOWN_DELEGATED}
_GRAPH_PREFIXES = (f"{GRAPH_RESOURCE}/", f"{GRAPH_APP_ID}/")


def parse_scopes(text: str) -> Scopes:
    perms: list[str] = []
    written: list[str] = []
    oidc: set[str] = set()
    default = False
    for item in text.split():
        low = item.lower()
        if low in OIDC_SCOPES:
            oidc.add(low)
            continue
        prefix = next((p for p in _GRAPH_PREFIXES if low.startswith(p.lower())), None)
        if prefix is not None:
            name = item[len(prefix):]
        elif "/" in item or ":" in item:
            raise OAuthError("invalid_resource", 500011,
                             f"The resource principal named {item.rsplit('/', 1)[0]} was not found in the tenant. "
                             "This can happen if the application has not been installed by the administrator of "
                             "the tenant or consented to by any user in the tenant.")
        else:
            name = item
        if name == ".default":
            default = True
            continue
        canonical = _DELEGATED_BY_LOWER.get(name.lower())
        if canonical is None:
            raise OAuthError("invalid_scope", 70011,
                             f"The provided value for the input parameter 'scope' isn't valid. "
                             f"The scope {item} isn't valid.")
        if canonical not in perms:
            perms.append(canonical)
            written.append(f"{GRAPH_RESOURCE}/{canonical}" if prefix is not None else canonical)
    if default and perms:
        raise OAuthError("invalid_scope", 70011,
                         "The provided value for the input parameter 'scope' isn't valid. "
                         "The .default scope can't be combined with resource-specific scopes.")
    if default:
        perms = list(CONFIGURED_DELEGATED)
        written = [f"{GRAPH_RESOURCE}/{p}" for p in perms]
    return Scopes(tuple(perms), tuple(written), frozenset(oidc))


# =============================================================================================
# State
# =============================================================================================

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


# =============================================================================================
# The platform
# =============================================================================================

class IdentityPlatform:
    """The identity stand-in. ``routes`` go on the HTTPS listener; the control API and page
    (see :mod:`devtools.sandbox.identity_control`) use the public methods below."""

    def __init__(self, directory: Directory, config: SandboxConfig, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.config = config
        self._clock = clock
        self._lock = threading.RLock()
        self._pending: dict[str, PendingSignIn] = {}
        self._codes: dict[str, AuthCode] = {}
        self._sessions: dict[str, str] = {}
        #: seconds; None → the directory's default (an hour, like Entra's 60–90 minutes)
        self.access_token_lifetime: float | None = None
        #: errors the next interactive sign-ins end in, after the account was picked (see fail_next_sign_in)
        self._sign_in_failures: list[str] = []
        self._signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._kid = base64.urlsafe_b64encode(secrets.token_bytes(15)).decode().rstrip("=")
        self.routes: list[BaseRoute] = [
            Route("/common/discovery/instance", self._instance_discovery, methods=["GET"]),
            Route("/error", self._error_lookup, methods=["GET"]),
            Route("/{tenant}/v2.0/.well-known/openid-configuration", self._openid_configuration, methods=["GET"]),
            Route("/{tenant}/discovery/v2.0/keys", self._jwks, methods=["GET"]),
            Route("/{tenant}/oauth2/v2.0/authorize", self._authorize, methods=["GET"]),
            Route("/{tenant}/oauth2/v2.0/authorize/select", self._select_account, methods=["POST"]),
            Route("/{tenant}/oauth2/v2.0/authorize/consent", self._consent, methods=["POST"]),
            Route("/{tenant}/oauth2/v2.0/authorize/admin", self._switch_to_admin, methods=["POST"]),
            Route("/{tenant}/oauth2/v2.0/authorize/return", self._return_without_consent, methods=["POST"]),
            Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
            Route("/{tenant}/oauth2/v2.0/logout", self._logout, methods=["GET", "POST"]),
            Route("/{tenant}/v2.0/adminconsent", self._admin_consent, methods=["GET"]),
            Route("/{tenant}/v2.0/adminconsent/select", self._admin_select, methods=["POST"]),
            Route("/{tenant}/v2.0/adminconsent/consent", self._admin_decide, methods=["POST"]),
        ]

    # --- URLs ------------------------------------------------------------------------------
    @property
    def base(self) -> str:
        return self.config.https_base

    def authority(self, tenant: str) -> str:
        """What the service passes to MSAL as ``authority=``."""
        return f"{self.base}/{tenant}"

    def issuer(self, tenant_id: str) -> str:
        return f"{self.base}/{tenant_id}/v2.0"

    # --- controls (Python API; the JSON control API calls these) ---------------------------
    def tenant_or_raise(self, id_or_domain: str) -> SandboxTenant:
        tenant = self.directory.tenant(id_or_domain)
        if tenant is None:
            raise KeyError(f"unknown tenant {id_or_domain!r}")
        return tenant

    def user_or_raise(self, id_or_mail: str) -> SandboxUser:
        user = self.directory.user(id_or_mail)
        if user is None:
            raise KeyError(f"unknown user {id_or_mail!r}")
        return user

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
        return self.directory.expire_access_tokens(user_id=self.user_or_raise(user).id if user else None)

    def refuse_access_tokens(self, user: str | None = None, *, mode: str = "revoked",
                             tenant: str | None = None) -> int:
        """Graph refuses live access tokens (all, one user's, or one tenant's, app-only included) but
        refresh tokens and client credentials still work: ``mode`` "revoked" (plain 401) or
        "claims_challenge" (a CAE challenge)."""
        return self.directory.refuse_access_tokens(user_id=self.user_or_raise(user).id if user else None, mode=mode,
                                                   tenant_id=tenant)

    def sign_out(self, user: str | None = None) -> int:
        """End browser sessions (all, or one user's): the next authorize shows the account picker."""
        user_id = self.user_or_raise(user).id if user else None
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

    def _take_sign_in_failure(self) -> OAuthError | None:
        with self._lock:
            if not self._sign_in_failures:
                return None
            error, code, message = SIGN_IN_FAILURES[self._sign_in_failures.pop(0)]
        return OAuthError(error, code, message)

    def session_count(self) -> int:
        with self._lock:
            return len(self._sessions)

    # --- discovery -------------------------------------------------------------------------
    async def _instance_discovery(self, request: Request) -> Response:
        # Only used when a client passes this host as its instance-discovery endpoint.
        endpoint = request.query_params.get("authorization_endpoint", "")
        parts = urlsplit(endpoint)
        tenant = parts.path.strip("/").split("/")[0] if parts.path.strip("/") else "common"
        host = urlsplit(self.base).netloc
        return JSONResponse({
            "tenant_discovery_endpoint": f"{self.base}/{tenant}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        })

    async def _openid_configuration(self, request: Request) -> Response:
        tenant_path = request.path_params["tenant"]
        trace = _Trace.of(request)
        try:
            tenant = self._resolve_tenant(tenant_path)
        except OAuthError as err:
            return self._json_error(err, trace)
        path = tenant_path if tenant is None else tenant.id
        issuer_tid = "{tenantid}" if tenant is None else tenant.id
        host = urlsplit(self.base).netloc
        return JSONResponse({
            "token_endpoint": f"{self.base}/{path}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{self.base}/{path}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{self.base}/{issuer_tid}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self.base}/oidc/userinfo",
            "authorization_endpoint": f"{self.base}/{path}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{self.base}/{path}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{self.base}/{path}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
                "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name",
                "tid", "ver", "at_hash", "c_hash", "email",
            ],
            "kerberos_endpoint": f"{self.base}/{path}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": host,
            "rbac_url": "https://pas.windows.net",
        })

    async def _jwks(self, request: Request) -> Response:
        numbers = self._signing_key.public_key().public_numbers()
        return JSONResponse({"keys": [{
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self._kid,
            "n": _b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
            "e": _b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
        }]})

    async def _error_lookup(self, request: Request) -> Response:
        lang = ui.pick_language(request)
        code = request.query_params.get("code", "")
        message = _KNOWN_CODES.get(code, ("Unbekannter Fehlercode.", "Unknown error code."))
        err = OAuthError("lookup", int(code) if code.isdigit() else 0, message[0] if lang == "de" else message[1])
        return self._error_page(request, err, _Trace.of(request), lang, status=200)

    # --- authorize -------------------------------------------------------------------------
    async def _authorize(self, request: Request) -> Response:
        q = request.query_params
        lang = ui.pick_language(request)
        trace = _Trace.of(request)
        tenant_path = request.path_params["tenant"]
        # Until client and redirect URI are known to be registered, errors are shown, never
        # redirected: redirecting to an unchecked URI would make this an open redirector.
        try:
            tenant = self._resolve_tenant(tenant_path)
            app = self._app_for(q.get("client_id"), tenant_path)
            redirect_uri = q.get("redirect_uri")
            if not redirect_uri:
                raise OAuthError("invalid_request", 900144,
                                 "The request body must contain the following parameter: 'redirect_uri'.")
            self._check_redirect_uri(app, redirect_uri)
        except OAuthError as err:
            return self._error_page(request, err, trace, lang)

        state = q.get("state")
        response_mode = q.get("response_mode") or "query"
        base = PendingSignIn(ctx="", kind="authorize", tenant_path=tenant_path,
                             tenant_id=tenant.id if tenant else None, client_id=app.client_id,
                             redirect_uri=redirect_uri, state=state, scopes=Scopes((), (), frozenset()),
                             scope_text="", lang=lang,
                             response_mode=response_mode if response_mode in ("query", "fragment", "form_post")
                             else "query")
        try:
            if response_mode not in ("query", "fragment", "form_post"):
                raise OAuthError("invalid_request", 9002313,
                                 f"Invalid request. The response_mode '{response_mode}' is not supported.")
            response_type = q.get("response_type")
            if not response_type:
                raise OAuthError("invalid_request", 900144,
                                 "The request body must contain the following parameter: 'response_type'.")
            if response_type.split() != ["code"]:
                raise OAuthError("unsupported_response_type", 700054,
                                 f"response_type '{response_type}' is not enabled for the application.")
            scope_text = q.get("scope")
            if not scope_text:
                raise OAuthError("invalid_request", 900144,
                                 "The request body must contain the following parameter: 'scope'.")
            scopes = parse_scopes(scope_text)
            challenge = q.get("code_challenge")
            method = q.get("code_challenge_method")
            if challenge is not None:
                method = method or "plain"
                if method not in ("S256", "plain"):
                    raise OAuthError("invalid_request", 9002313,
                                     f"Invalid request. The code_challenge_method '{method}' is not supported.")
                if not 43 <= len(challenge) <= 128:
                    raise OAuthError("invalid_request", 501491, "Invalid size of Code_Challenge parameter.")
            elif method is not None:
                raise OAuthError("invalid_request", 900144,
                                 "The request body must contain the following parameter: 'code_challenge'.")
            prompt = q.get("prompt")
            if prompt is not None and prompt not in PROMPTS:
                raise OAuthError("invalid_request", 90023, f"Invalid prompt parameter value '{prompt}'.")
        except OAuthError as err:
            return self._redirect_error(request, base, err, trace)

        pending = PendingSignIn(
            ctx=secrets.token_urlsafe(24), kind="authorize", tenant_path=tenant_path,
            tenant_id=tenant.id if tenant else None, client_id=app.client_id, redirect_uri=redirect_uri,
            state=state, scopes=scopes, scope_text=scope_text, lang=lang, response_mode=response_mode,
            nonce=q.get("nonce"), code_challenge=challenge, code_challenge_method=method if challenge else None,
            prompt=prompt, login_hint=q.get("login_hint"), domain_hint=q.get("domain_hint"),
            client_info=q.get("client_info") == "1", created=self._clock(),
        )
        self._store_pending(pending)

        session_user = self._session_user(request)
        hint_ok = session_user is not None and (
            not pending.login_hint or pending.login_hint.lower() == session_user.mail.lower())
        usable_session = (session_user is not None and hint_ok and session_user.account_enabled
                          and session_user in self._candidates(pending))
        if prompt == "none":
            if not usable_session or session_user is None:
                return self._redirect_error(request, pending, OAuthError(
                    "login_required", 50058, "A silent sign-in request was sent but no user is signed in."), trace)
            if not self.directory.has_delegated_consent(session_user.id, app.client_id):
                return self._redirect_error(request, pending, self._consent_missing(app), trace)
            return self._complete(request, pending, session_user)
        if usable_session and session_user is not None and prompt in (None, "consent"):
            # Single sign-on: an existing browser session skips the account picker.
            pending.user_id = session_user.id
            return self._after_sign_in(request, pending, session_user, trace)
        return self._pick_account_page(request, pending)

    async def _select_account(self, request: Request) -> Response:
        trace = _Trace.of(request)
        form = await _form(request)
        pending = self._pending_or_none(form.get("ctx"), "authorize")
        if pending is None:
            return self._error_page(request, _flow_expired(), trace, ui.pick_language(request))
        user = self.directory.user(form.get("user", ""))
        if user is None or user not in self._candidates(pending):
            return self._error_page(request, self._not_in_tenant(user, pending), trace, pending.lang, status=400)
        pending.user_id = user.id
        response = self._after_sign_in(request, pending, user, trace)
        if user.account_enabled:
            self._start_session(response, user)
        return response

    async def _consent(self, request: Request) -> Response:
        trace = _Trace.of(request)
        form = await _form(request)
        pending = self._pending_or_none(form.get("ctx"), "authorize")
        if pending is None or pending.user_id is None:
            return self._error_page(request, _flow_expired(), trace, ui.pick_language(request))
        user = self.directory.users[pending.user_id]
        tenant = self.directory.tenants[user.tenant_id]
        if form.get("decision") != "accept":
            self._drop_pending(pending.ctx)
            return self._redirect_error(request, pending, OAuthError(
                "access_denied", 65004, "User declined to consent to access the app.", subcode="cancel"), trace)
        if not (user.is_admin or tenant.user_consent_allowed):
            # The consent screen was never offered to this user; a forged post changes nothing.
            return self._error_page(request, self._admin_approval_error(tenant), trace, pending.lang, status=403)
        self.directory.set_user_consent(user.id, pending.client_id, True)
        if user.is_admin and form.get("org_consent") == "1":
            # Consent on behalf of the organisation from the sign-in screen covers the delegated
            # permissions requested, never application permissions.
            self.directory.set_delegated_admin_consent(tenant.id, pending.client_id, True)
        return self._complete(request, pending, user)

    async def _switch_to_admin(self, request: Request) -> Response:
        trace = _Trace.of(request)
        form = await _form(request)
        pending = self._pending_or_none(form.get("ctx"), "authorize")
        if pending is None or pending.user_id is None:
            return self._error_page(request, _flow_expired(), trace, ui.pick_language(request))
        user = self.directory.users[pending.user_id]
        pending.admins_only = True
        pending.tenant_id = user.tenant_id
        pending.user_id = None
        return self._pick_account_page(request, pending)

    async def _return_without_consent(self, request: Request) -> Response:
        trace = _Trace.of(request)
        form = await _form(request)
        pending = self._pending_or_none(form.get("ctx"), "authorize")
        if pending is None or pending.user_id is None:
            return self._error_page(request, _flow_expired(), trace, ui.pick_language(request))
        tenant = self.directory.tenants[self.directory.users[pending.user_id].tenant_id]
        self._drop_pending(pending.ctx)
        return self._redirect_error(request, pending, self._admin_approval_error(tenant), trace)

    def _after_sign_in(self, request: Request, pending: PendingSignIn, user: SandboxUser, trace: _Trace) -> Response:
        injected = self._take_sign_in_failure()
        if injected is not None:
            self._drop_pending(pending.ctx)
            return self._redirect_error(request, pending, injected, trace)
        if not user.account_enabled:
            return self._error_page(request, OAuthError("invalid_grant", 50057, "The user account is disabled."),
                                    trace, pending.lang, status=400)
        tenant = self.directory.tenants[user.tenant_id]
        app = self.directory.apps[pending.client_id]
        consented = self.directory.has_delegated_consent(user.id, app.client_id)
        if consented and pending.prompt != "consent":
            return self._complete(request, pending, user)
        if user.is_admin or tenant.user_consent_allowed:
            perms = list(pending.scopes.permissions or ("User.Read",))
            if "offline_access" in pending.scopes.oidc:
                perms.append("offline_access")
            return ui.render(
                request, "identity/consent.html", lang=pending.lang,
                title=_t(pending.lang, "Berechtigungen", "Permissions"),
                app_name=app.name, user=user, tenant_name=tenant.name, ctx=pending.ctx,
                permissions=[_perm(p, pending.lang) for p in perms],
                offer_org_consent=user.is_admin,
                action_url=f"/{pending.tenant_path}/oauth2/v2.0/authorize/consent",
            )
        if consented:
            # prompt=consent from a user who may not consent: the admin's grant already covers it.
            return self._complete(request, pending, user)
        return ui.render(
            request, "identity/admin_approval.html", lang=pending.lang,
            title=_t(pending.lang, "Genehmigung erforderlich", "Approval required"),
            app_name=app.name, user=user, ctx=pending.ctx,
            error_description=trace.describe(self._admin_approval_error(tenant)).split("\r\n")[0],
            admin_url=f"/{pending.tenant_path}/oauth2/v2.0/authorize/admin",
            return_url=f"/{pending.tenant_path}/oauth2/v2.0/authorize/return",
        )

    def _complete(self, request: Request, pending: PendingSignIn, user: SandboxUser) -> Response:
        now = self._clock()
        code = secrets.token_urlsafe(48)
        with self._lock:
            self._codes[code] = AuthCode(
                client_id=pending.client_id, redirect_uri=pending.redirect_uri, user_id=user.id,
                tenant_id=user.tenant_id, scopes=pending.scopes, nonce=pending.nonce,
                code_challenge=pending.code_challenge, code_challenge_method=pending.code_challenge_method,
                auth_time=int(now), expires_at=now + CODE_LIFETIME)
            self._pending.pop(pending.ctx, None)
            self._purge(now)
        params: dict[str, str] = {"code": code}
        if pending.state is not None:
            params["state"] = pending.state
        params["session_state"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{user.id}/{pending.client_id}"))
        if pending.client_info:
            params["client_info"] = _client_info(user)
        return self._respond_to_app(request, pending, params)

    # --- admin consent ---------------------------------------------------------------------
    async def _admin_consent(self, request: Request) -> Response:
        q = request.query_params
        lang = ui.pick_language(request)
        trace = _Trace.of(request)
        tenant_path = request.path_params["tenant"]
        try:
            if tenant_path.lower() in ("common", "consumers"):
                raise OAuthError("invalid_request", 9002313,
                                 f"Invalid request. Admin consent cannot be requested at the '{tenant_path}' "
                                 "endpoint; use the tenant id, a verified domain or 'organizations'.")
            tenant = self._resolve_tenant(tenant_path)
            app = self._app_for(q.get("client_id"), tenant_path)
            redirect_uri = q.get("redirect_uri")
            if not redirect_uri:
                raise OAuthError("invalid_request", 900144,
                                 "The request body must contain the following parameter: 'redirect_uri'.")
            self._check_redirect_uri(app, redirect_uri)
        except OAuthError as err:
            return self._error_page(request, err, trace, lang)
        scope_text = q.get("scope") or f"{GRAPH_RESOURCE}/.default"
        pending = PendingSignIn(
            ctx=secrets.token_urlsafe(24), kind="adminconsent", tenant_path=tenant_path,
            tenant_id=tenant.id if tenant else None, client_id=app.client_id, redirect_uri=redirect_uri,
            state=q.get("state"), scopes=Scopes((), (), frozenset()), scope_text=scope_text, lang=lang,
            admins_only=True, created=self._clock())
        try:
            pending.scopes = parse_scopes(scope_text)
        except OAuthError as err:
            return self._redirect_error(request, pending, err, trace)
        self._store_pending(pending)
        session_user = self._session_user(request)
        if session_user is not None and session_user in self._candidates(pending) and session_user.account_enabled:
            pending.user_id = session_user.id
            return self._admin_consent_page(request, pending, session_user)
        return self._pick_account_page(request, pending)

    async def _admin_select(self, request: Request) -> Response:
        trace = _Trace.of(request)
        form = await _form(request)
        pending = self._pending_or_none(form.get("ctx"), "adminconsent")
        if pending is None:
            return self._error_page(request, _flow_expired(), trace, ui.pick_language(request))
        user = self.directory.user(form.get("user", ""))
        if user is None or user not in self._candidates(pending):
            err = (OAuthError("access_denied", 90093, "Only an administrator of the tenant can grant consent "
                              "on behalf of the organization.", status=403)
                   if user is not None and not user.is_admin else self._not_in_tenant(user, pending))
            return self._error_page(request, err, trace, pending.lang, status=err.status)
        if not user.account_enabled:
            return self._error_page(request, OAuthError("invalid_grant", 50057, "The user account is disabled."),
                                    trace, pending.lang)
        pending.user_id = user.id
        response = self._admin_consent_page(request, pending, user)
        self._start_session(response, user)
        return response

    def _admin_consent_page(self, request: Request, pending: PendingSignIn, user: SandboxUser) -> Response:
        app = self.directory.apps[pending.client_id]
        tenant = self.directory.tenants[user.tenant_id]
        perms = ([{**_perm(r, pending.lang, app_role=True), "app": True} for r in sorted(APPLICATION_ROLES)]
                 if pending.scopes_default else [])
        perms += [{**_perm(p, pending.lang), "app": False} for p in pending.scopes.permissions]
        return ui.render(
            request, "identity/admin_consent.html", lang=pending.lang,
            title=_t(pending.lang, "Administratorzustimmung", "Admin consent"),
            app_name=app.name, user=user, tenant_name=tenant.name, ctx=pending.ctx, permissions=perms,
            action_url=f"/{pending.tenant_path}/v2.0/adminconsent/consent",
        )

    async def _admin_decide(self, request: Request) -> Response:
        trace = _Trace.of(request)
        form = await _form(request)
        pending = self._pending_or_none(form.get("ctx"), "adminconsent")
        if pending is None or pending.user_id is None:
            return self._error_page(request, _flow_expired(), trace, ui.pick_language(request))
        user = self.directory.users[pending.user_id]
        self._drop_pending(pending.ctx)
        if form.get("decision") != "accept":
            return self._redirect_error(request, pending, OAuthError(
                "access_denied", 65004, "User declined to consent to access the app.", subcode="cancel"), trace)
        if pending.scopes_default:
            # /.default: everything the registration lists, application permissions included.
            self.directory.set_admin_consent(user.tenant_id, pending.client_id, True)
        else:
            # Named delegated scopes: consent for all users to those, and no application permission.
            self.directory.set_delegated_admin_consent(user.tenant_id, pending.client_id, True)
        params = {"admin_consent": "True", "tenant": user.tenant_id}
        if pending.state is not None:
            params["state"] = pending.state
        params["scope"] = pending.scope_text
        return self._respond_to_app(request, pending, params)

    # --- logout ----------------------------------------------------------------------------
    async def _logout(self, request: Request) -> Response:
        lang = ui.pick_language(request)
        sid = request.cookies.get(SESSION_COOKIE)
        if sid:
            with self._lock:
                self._sessions.pop(sid, None)
        target = request.query_params.get("post_logout_redirect_uri")
        registered = {uri for app in list(self.directory.apps.values()) for uri in list(app.redirect_uris)}
        response: Response
        if target and target in registered:
            response = RedirectResponse(target, status_code=302)
        else:
            response = ui.render(request, "identity/signed_out.html", lang=lang,
                                 title=_t(lang, "Abgemeldet", "Signed out"))
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="lax")
        return response

    # --- token -----------------------------------------------------------------------------
    async def _token(self, request: Request) -> Response:
        trace = _Trace.of(request)
        tenant_path = request.path_params["tenant"]
        try:
            form = await _form(request)
            tenant = self._resolve_tenant(tenant_path)
            grant_type = form.get("grant_type")
            if not grant_type:
                raise OAuthError("invalid_request", 900144,
                                 "The request body must contain the following parameter: 'grant_type'.")
            if grant_type not in ("authorization_code", "refresh_token", "client_credentials"):
                raise OAuthError("unsupported_grant_type", 70003,
                                 f"The app requested an unsupported grant type '{grant_type}'.")
            app = self._authenticate_client(request, form, tenant, tenant_path)
            if grant_type == "authorization_code":
                body = self._redeem_code(form, app, tenant)
            elif grant_type == "refresh_token":
                body = self._redeem_refresh_token(form, app, tenant)
            else:
                body = self._client_credentials(form, app, tenant)
        except OAuthError as err:
            return self._json_error(err, trace)
        return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache",
                                           "client-request-id": trace.correlation_id,
                                           "x-ms-request-id": trace.trace_id})

    def _authenticate_client(self, request: Request, form: Mapping[str, str], tenant: SandboxTenant | None,
                             tenant_path: str) -> AppRegistration:
        client_id = form.get("client_id")
        secret = form.get("client_secret")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            # RFC 6749 §2.3.1: id and secret are form-encoded, then joined by a colon.
            try:
                raw = base64.b64decode(auth[6:].strip(), validate=True).decode()
            except (ValueError, UnicodeDecodeError) as exc:
                raise OAuthError("invalid_client", 7000215, "Invalid client secret provided.", status=401) from exc
            basic_id, _, basic_secret = raw.partition(":")
            basic_id = dict(parse_qsl(f"v={basic_id}"))["v"] if basic_id else ""
            basic_secret = dict(parse_qsl(f"v={basic_secret}", keep_blank_values=True)).get("v", "")
            if client_id and client_id != basic_id:
                raise OAuthError("invalid_request", 9002313,
                                 "Invalid request. The client_id in the body differs from the one in the "
                                 "Authorization header.")
            client_id, secret = basic_id, basic_secret
        app = self._app_for(client_id, tenant_path, tenant=tenant)
        if form.get("client_assertion"):
            raise OAuthError("invalid_client", 700027,
                             "Client assertion failed signature validation: the sandbox app has only a secret.",
                             status=401)
        if not secret:
            raise OAuthError("invalid_client", 7000218, "The request body must contain the following parameter: "
                             "'client_assertion' or 'client_secret'.", status=401)
        if not hmac.compare_digest(secret.encode(), app.client_secret.encode()):
            raise OAuthError("invalid_client", 7000215,
                             "Invalid client secret provided. Ensure the secret being sent in the request is the "
                             f"client secret value, not the client secret ID, for a secret added to app "
                             f"'{app.client_id}'.", status=401)
        return app

    def _redeem_code(self, form: Mapping[str, str], app: AppRegistration, tenant: SandboxTenant | None
                     ) -> dict[str, Any]:
        code_value = form.get("code")
        if not code_value:
            raise OAuthError("invalid_request", 900144,
                             "The request body must contain the following parameter: 'code'.")
        now = self._clock()
        with self._lock:
            entry = self._codes.get(code_value)
            if entry is None:
                raise OAuthError("invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
            if entry.used:
                raise OAuthError("invalid_grant", 54005, "OAuth2 Authorization code was already redeemed, please "
                                 "retry with a new valid code or use an existing refresh token.")
            # Single use: whatever happens below, this code is spent.
            entry.used = True
        if entry.expires_at <= now:
            raise OAuthError("invalid_grant", 70008, "The provided authorization code or refresh token has expired "
                             "due to inactivity. Send a new interactive authorization request for this user and "
                             "resource.")
        if entry.client_id != app.client_id:
            raise OAuthError("invalid_grant", 70000, "The provided value for the 'code' parameter is not valid. "
                             "The code was issued to a different client.")
        if tenant is not None and tenant.id != entry.tenant_id:
            raise OAuthError("invalid_grant", 700005, "Provided Authorization Code is intended to use against other "
                             "tenant, thus rejected.")
        if form.get("redirect_uri") != entry.redirect_uri:
            raise OAuthError("invalid_client", 500112, f"The reply address '{form.get('redirect_uri') or ''}' does "
                             f"not match the reply address '{entry.redirect_uri}' provided when requesting "
                             "Authorization code.", status=401)
        if entry.code_challenge is not None:
            verifier = form.get("code_verifier") or ""
            if entry.code_challenge_method == "S256":
                computed = _b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
            else:
                computed = verifier
            if not verifier or not hmac.compare_digest(computed, entry.code_challenge):
                raise OAuthError("invalid_grant", 50148, "The code_verifier does not match the code_challenge "
                                 "supplied in the authorization request for PKCE.")
        user = self.directory.users[entry.user_id]
        if not user.account_enabled:
            raise OAuthError("invalid_grant", 50057, "The user account is disabled.")
        scopes = parse_scopes(form["scope"]) if form.get("scope") else entry.scopes
        return self._user_tokens(app, user, scopes, nonce=entry.nonce, auth_time=entry.auth_time)

    def _redeem_refresh_token(self, form: Mapping[str, str], app: AppRegistration, tenant: SandboxTenant | None
                              ) -> dict[str, Any]:
        value = form.get("refresh_token")
        if not value:
            raise OAuthError("invalid_request", 900144,
                             "The request body must contain the following parameter: 'refresh_token'.")
        grant = self.directory.refresh_tokens.get(value)
        if grant is None:
            raise OAuthError("invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
        if grant.client_id != app.client_id:
            raise OAuthError("invalid_grant", 70000, "The provided refresh token was issued to a different client.")
        if tenant is not None and tenant.id != grant.tenant_id:
            raise OAuthError("invalid_grant", 700005, "Provided grant is intended to use against other tenant, "
                             "thus rejected.")
        if grant.revoked:
            if grant.revoked_code == 50173:
                raise OAuthError("invalid_grant", 50173, "The provided grant has expired due to it being revoked, a "
                                 "fresh auth token is needed. The user might have changed or reset their password.")
            raise OAuthError("invalid_grant", grant.revoked_code, "The refresh token has expired due to inactivity "
                             "or was revoked. Send a new interactive authorization request for this user and "
                             "resource.")
        user = self.directory.users[grant.user_id]
        if not user.account_enabled:
            raise OAuthError("invalid_grant", 50057, "The user account is disabled.")
        if not self.directory.has_delegated_consent(user.id, app.client_id):
            raise self._consent_missing(app, error="invalid_grant")
        scopes = parse_scopes(form["scope"]) if form.get("scope") else Scopes.from_grant(grant.scopes)
        if "offline_access" in grant.scopes:
            # The grant already allows offline access; a refresh keeps doing so even when the
            # client does not repeat offline_access in the scope.
            scopes = Scopes(scopes.permissions, scopes.written, scopes.oidc | {"offline_access"})
        body = self._user_tokens(app, user, scopes, nonce=None, auth_time=None)
        self.directory.issued_by_refresh(str(body["access_token"]), form.get("claims"))
        return body

    def _client_credentials(self, form: Mapping[str, str], app: AppRegistration, tenant: SandboxTenant | None
                            ) -> dict[str, Any]:
        if tenant is None:
            raise OAuthError("invalid_request", 50059, "No tenant-identifying information found in either the "
                             "request or implied by any provided credentials.")
        scope = form.get("scope")
        if not scope:
            raise OAuthError("invalid_request", 900144,
                             "The request body must contain the following parameter: 'scope'.")
        items = scope.split()
        if len(items) != 1 or not items[0].endswith("/.default"):
            raise OAuthError("invalid_scope", 1002012, f"The provided value for scope {scope} is not valid. Client "
                             "credential flows must have a scope value with /.default suffixed to the resource "
                             "identifier (application ID URI).")
        resource = items[0][: -len("/.default")]
        if resource.lower().rstrip("/") not in (GRAPH_RESOURCE, GRAPH_APP_ID):
            raise OAuthError("invalid_resource", 500011, f"The resource principal named {resource} was not found in "
                             f"the tenant named {tenant.name}. This can happen if the application has not been "
                             "installed by the administrator of the tenant or consented to by any user in the tenant.")
        if not self.directory.has_service_principal(tenant.id, app.client_id):
            raise OAuthError("invalid_client", 7000229, f"The client application {app.client_id} is missing service "
                             f"principal in the tenant {tenant.id}. See instructions here: "
                             "https://go.microsoft.com/fwlink/?linkid=2225119", status=401)
        granted = tenant.app_role_grants.get(app.client_id, frozenset())
        token, claims = self.directory.issue_access_token(
            tenant_id=tenant.id, client_id=app.client_id, user_id=None,
            roles=granted, lifetime=self.access_token_lifetime)
        # Entra's app-only tokens for Graph are JWTs whose roles claim lists the granted
        # application permissions; apps read it to tell admin consent from a bare service principal.
        jwt = self._app_access_token(app, tenant, claims.roles, int(claims.expires_at))
        self.directory.rename_access_token(token, jwt)
        lifetime = max(0, int(claims.expires_at - time.time()))
        return {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": jwt}

    def _app_access_token(self, app: AppRegistration, tenant: SandboxTenant, roles: frozenset[str],
                          expires_at: int) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": GRAPH_RESOURCE, "iss": f"https://sts.windows.net/{tenant.id}/", "iat": now, "nbf": now,
            "exp": expires_at, "appid": app.client_id, "idtyp": "app", "oid": app.client_id, "tid": tenant.id,
            "uti": _b64url(secrets.token_bytes(16)), "ver": "1.0",
        }
        if roles:
            claims["roles"] = sorted(roles)
        header = {"typ": "JWT", "alg": "RS256", "kid": self._kid}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._signing_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def _user_tokens(self, app: AppRegistration, user: SandboxUser, scopes: Scopes, *, nonce: str | None,
                     auth_time: int | None) -> dict[str, Any]:
        token, claims = self.directory.issue_access_token(
            tenant_id=user.tenant_id, client_id=app.client_id, user_id=user.id, scopes=scopes.for_token,
            lifetime=self.access_token_lifetime)
        lifetime = max(0, int(claims.expires_at - time.time()))
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": scopes.response_scope(),
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }
        if "offline_access" in scopes.oidc:
            body["refresh_token"] = self.directory.issue_refresh_token(
                tenant_id=user.tenant_id, client_id=app.client_id, user_id=user.id,
                scopes=frozenset(scopes.permissions) | scopes.oidc)
        if "openid" in scopes.oidc:
            body["id_token"] = self._id_token(app, user, scopes, nonce=nonce, auth_time=auth_time)
        body["client_info"] = _client_info(user)
        return body

    def _id_token(self, app: AppRegistration, user: SandboxUser, scopes: Scopes, *, nonce: str | None,
                  auth_time: int | None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": app.client_id,
            "iss": self.issuer(user.tenant_id),
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "name": user.display_name,
            "oid": user.id,
            "preferred_username": user.mail,
            # Entra's sub is pairwise: stable per user and app, different across apps.
            "sub": _b64url(hashlib.sha256(f"{user.id}:{app.client_id}".encode()).digest()[:24]),
            "tid": user.tenant_id,
            "uti": _b64url(secrets.token_bytes(16)),
            "ver": "2.0",
        }
        if "email" in scopes.oidc:
            claims["email"] = user.mail
        if user.is_admin:
            # The registration's groupMembershipClaims includes DirectoryRole: Entra then names the
            # user's directory roles (role template ids) in ``wids``. Sandbox admins are Global Administrators.
            claims["wids"] = [GLOBAL_ADMINISTRATOR]
        if nonce is not None:
            claims["nonce"] = nonce
        if auth_time is not None:
            claims["auth_time"] = auth_time
        header = {"typ": "JWT", "alg": "RS256", "kid": self._kid}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._signing_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    # --- helpers ---------------------------------------------------------------------------
    def _resolve_tenant(self, tenant_path: str) -> SandboxTenant | None:
        if tenant_path.lower() in TENANT_ALIASES:
            return None
        tenant = self.directory.tenant(tenant_path)
        if tenant is None:
            raise OAuthError("invalid_tenant", 90002, f"Tenant '{tenant_path}' not found. Check to make sure you have "
                             "the correct tenant ID and are signing into the correct cloud.")
        return tenant

    def _app_for(self, client_id: str | None, tenant_path: str, *, tenant: SandboxTenant | None = None
                 ) -> AppRegistration:
        if not client_id:
            raise OAuthError("invalid_request", 900144,
                             "The request body must contain the following parameter: 'client_id'.")
        app = self.directory.apps.get(client_id)
        if app is None:
            directory_name = tenant.name if tenant else tenant_path
            raise OAuthError("unauthorized_client", 700016, f"Application with identifier '{client_id}' was not found "
                             f"in the directory '{directory_name}'. This can happen if the application has not been "
                             "installed by the administrator of the tenant or consented to by any user in the tenant. "
                             "You may have sent your authentication request to the wrong tenant.")
        return app

    @staticmethod
    def _check_redirect_uri(app: AppRegistration, redirect_uri: str) -> None:
        if redirect_uri not in app.redirect_uris:
            raise OAuthError("invalid_request", 50011, f"The redirect URI '{redirect_uri}' specified in the request "
                             f"does not match the redirect URIs configured for the application '{app.client_id}'. "
                             "Make sure the redirect URI sent in the request matches one added to your application.")

    def _consent_missing(self, app: AppRegistration, *, error: str = "consent_required") -> OAuthError:
        return OAuthError(error, 65001, f"The user or administrator has not consented to use the application with ID "
                          f"'{app.client_id}' named '{app.name}'. Send an interactive authorization request for "
                          "this user and resource.")

    def _admin_approval_error(self, tenant: SandboxTenant) -> OAuthError:
        return OAuthError("consent_required", 90094, f"An administrator of {tenant.name} has set a policy that "
                          "prevents you from granting the app the permissions it is requesting. Contact an "
                          f"administrator of {tenant.name}, who can grant permissions to this app on your behalf.")

    def _not_in_tenant(self, user: SandboxUser | None, pending: PendingSignIn) -> OAuthError:
        tenant = self.directory.tenants.get(pending.tenant_id or "")
        where = tenant.name if tenant else pending.tenant_path
        who = user.mail if user else "?"
        return OAuthError("invalid_request", 50020, f"User account '{who}' from identity provider does not exist in "
                          f"tenant '{where}' and cannot access the application '{pending.client_id}' in that tenant.")

    def _candidates(self, pending: PendingSignIn) -> list[SandboxUser]:
        """Who may sign in for this request: the tenant's users (all for common/organizations),
        narrowed by domain_hint and, on the admin paths, to administrators."""
        users = list(self.directory.users.values())
        if pending.tenant_id is not None:
            users = [u for u in users if u.tenant_id == pending.tenant_id]
        elif pending.domain_hint:
            hinted = self.directory.tenant(pending.domain_hint)
            if hinted is not None:
                users = [u for u in users if u.tenant_id == hinted.id]
        if pending.admins_only:
            users = [u for u in users if u.is_admin]
        return users

    def _pick_account_page(self, request: Request, pending: PendingSignIn) -> Response:
        app = self.directory.apps[pending.client_id]
        hint = (pending.login_hint or "").lower()
        candidates = self._candidates(pending)
        tenants = {u.tenant_id for u in candidates}
        users = [{
            "id": u.id, "display_name": u.display_name, "mail": u.mail, "is_admin": u.is_admin,
            "enabled": u.account_enabled, "initials": _initials(u.display_name), "hinted": u.mail.lower() == hint,
            "tenant_name": self.directory.tenants[u.tenant_id].name,
        } for u in sorted(candidates, key=lambda u: (u.tenant_id, u.display_name))]
        action = (f"/{pending.tenant_path}/v2.0/adminconsent/select" if pending.kind == "adminconsent"
                  else f"/{pending.tenant_path}/oauth2/v2.0/authorize/select")
        notice = None
        if pending.admins_only and pending.kind == "authorize":
            notice = _t(pending.lang, "Melden Sie sich mit einem Administratorkonto an, um für die Organisation "
                        "zuzustimmen.", "Sign in with an administrator account to consent for the organization.")
        return ui.render(
            request, "identity/pick_account.html", lang=pending.lang,
            title=_t(pending.lang, "Anmelden", "Sign in"), app_name=app.name, users=users, ctx=pending.ctx,
            action_url=action, admin_mode=pending.kind == "adminconsent", show_tenant=len(tenants) > 1,
            notice=notice,
            # The account picker answers a GET that must not be replayed with a stale ctx.
            switch_url=None if request.method != "GET" else ui.with_language(
                str(request.url.path) + "?" + request.url.query, "en" if pending.lang == "de" else "de"),
        )

    def _respond_to_app(self, request: Request, pending: PendingSignIn, params: Mapping[str, str]) -> Response:
        if pending.response_mode == "form_post":
            return ui.render(request, "identity/form_post.html", lang=pending.lang,
                             title=_t(pending.lang, "Weiterleitung", "Redirecting"),
                             redirect_uri=pending.redirect_uri, fields=list(params.items()), switch_url=None)
        encoded = urlencode(params)
        parts = urlsplit(pending.redirect_uri)
        if pending.response_mode == "fragment":
            target = urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, encoded))
        else:
            query = f"{parts.query}&{encoded}" if parts.query else encoded
            target = urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
        return RedirectResponse(target, status_code=302)

    def _redirect_error(self, request: Request, pending: PendingSignIn, err: OAuthError, trace: _Trace) -> Response:
        params = {"error": err.error, "error_description": trace.describe(err)}
        if err.subcode:
            params["error_subcode"] = err.subcode
        params["error_uri"] = f"{self.base}/error?code={err.code}"
        if pending.state is not None:
            params["state"] = pending.state
        return self._respond_to_app(request, pending, params)

    def _error_page(self, request: Request, err: OAuthError, trace: _Trace, lang: str, *,
                    status: int | None = None) -> Response:
        return ui.render(request, "identity/error.html", lang=lang, title=_t(lang, "Fehler", "Error"),
                         status_code=status or err.status, code=err.code, message=err.message, error=err.error,
                         trace_id=trace.trace_id, correlation_id=trace.correlation_id, timestamp=trace.timestamp)

    def _json_error(self, err: OAuthError, trace: _Trace) -> Response:
        return JSONResponse({
            "error": err.error,
            "error_description": trace.describe(err),
            "error_codes": [err.code],
            "timestamp": trace.timestamp,
            "trace_id": trace.trace_id,
            "correlation_id": trace.correlation_id,
            "error_uri": f"{self.base}/error?code={err.code}",
        }, status_code=err.status, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _store_pending(self, pending: PendingSignIn) -> None:
        with self._lock:
            self._purge(self._clock())
            self._pending[pending.ctx] = pending

    def _pending_or_none(self, ctx: str | None, kind: str) -> PendingSignIn | None:
        if not ctx:
            return None
        with self._lock:
            pending = self._pending.get(ctx)
            if pending is None or pending.kind != kind or pending.created + PENDING_LIFETIME <= self._clock():
                return None
            return pending

    def _drop_pending(self, ctx: str) -> None:
        with self._lock:
            self._pending.pop(ctx, None)

    def _purge(self, now: float) -> None:
        for ctx in [c for c, p in self._pending.items() if p.created + PENDING_LIFETIME <= now]:
            del self._pending[ctx]
        # Keep spent codes a little past their lifetime so a replay gets "already redeemed".
        for code in [c for c, e in self._codes.items() if e.expires_at + CODE_LIFETIME <= now]:
            del self._codes[code]

    def _session_user(self, request: Request) -> SandboxUser | None:
        sid = request.cookies.get(SESSION_COOKIE)
        if not sid:
            return None
        with self._lock:
            user_id = self._sessions.get(sid)
        return self.directory.users.get(user_id) if user_id else None

    def _start_session(self, response: Response, user: SandboxUser) -> None:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[sid] = user.id
        # Secure keeps the cookie off the plain-http listeners that share 127.0.0.1 (cookies
        # ignore ports); Lax lets it ride on the top-level navigation back to the authorize URL.
        response.set_cookie(SESSION_COOKIE, sid, path="/", secure=True, httponly=True, samesite="lax")


# =============================================================================================
# Small helpers
# =============================================================================================

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _client_info(user: SandboxUser) -> str:
    # MSAL builds home_account_id as "<uid>.<utid>" from this.
    return _b64url(json.dumps({"uid": user.id, "utid": user.tenant_id}).encode())


def _initials(name: str) -> str:
    parts = [p for p in name.replace("Dr.", "").replace("Prof.", "").split() if p]
    return "".join(p[0] for p in parts[:1] + parts[-1:]).upper() if parts else "?"


def _t(lang: str, de: str, en: str) -> str:
    return de if lang == "de" else en


def _perm(name: str, lang: str, *, app_role: bool = False) -> dict[str, Any]:
    titles = (APP_ROLE_TITLES if app_role else PERMISSION_TITLES).get(name, (name, name))
    return {"name": name, "title": titles[0] if lang == "de" else titles[1]}


def _flow_expired() -> OAuthError:
    return OAuthError("invalid_request", 50089, "Authentication failed due to flow token expired. "
                      "Start the sign-in again from the application.")


async def _form(request: Request) -> dict[str, str]:
    """The url-encoded body as a dict (last value wins). Parsed by hand: the standard form
    parser would need python-multipart, and OAuth only ever posts url-encoded forms."""
    body = (await request.body()).decode("utf-8", "replace")
    return dict(parse_qsl(body, keep_blank_values=True))


_KNOWN_CODES: dict[str, tuple[str, str]] = {
    "50011": ("Die Redirect-URI ist für die Anwendung nicht registriert.", "The redirect URI is not registered for "
              "the application."),
    "50020": ("Das Konto gehört nicht zu diesem Mandanten.", "The account does not belong to this tenant."),
    "50057": ("Das Benutzerkonto ist deaktiviert.", "The user account is disabled."),
    "50058": ("Stille Anmeldung ohne angemeldeten Benutzer.", "Silent sign-in, but no user is signed in."),
    "50148": ("Der PKCE-code_verifier passt nicht zur code_challenge.", "The PKCE code_verifier does not match the "
              "code_challenge."),
    "50173": ("Die Berechtigung wurde widerrufen (z. B. Kennwort geändert).", "The grant was revoked (e.g. password "
              "changed)."),
    "54005": ("Der Autorisierungscode wurde bereits eingelöst.", "The authorization code was already redeemed."),
    "65001": ("Es liegt keine Zustimmung für die Anwendung vor.", "Nobody has consented to the application."),
    "65004": ("Der Benutzer hat die Zustimmung abgelehnt.", "The user declined to consent."),
    "70008": ("Der Code oder das Aktualisierungstoken ist abgelaufen.", "The code or refresh token has expired."),
    "90094": ("Ein Administrator muss der Anwendung zustimmen.", "An administrator must consent to the application."),
    "700016": ("Die Anwendung ist unbekannt.", "The application is unknown."),
    "700082": ("Das Aktualisierungstoken ist abgelaufen oder wurde widerrufen.", "The refresh token expired or was "
               "revoked."),
    "7000215": ("Ungültiger geheimer Clientschlüssel.", "Invalid client secret."),
    "7000229": ("Die Anwendung hat keinen Dienstprinzipal im Mandanten (keine Zustimmung).", "The application has "
                "no service principal in the tenant (nobody consented)."),
}
