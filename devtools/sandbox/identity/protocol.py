"""What the token endpoint and the sign-in pages both speak: the permissions the sandbox knows,
the ``scope`` parameter, protocol errors as Entra words them, and the request trace every error
carries. Nothing here holds state."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.requests import Request

from devtools.sandbox.directory import AppRegistration, SandboxUser

GRAPH_RESOURCE = "https://graph.microsoft.com"
#: Microsoft Graph's well-known application id; scopes may name the resource by it
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
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


def missing_parameter(name: str) -> OAuthError:
    return OAuthError("invalid_request", 900144, f"The request body must contain the following parameter: '{name}'.")


def account_disabled() -> OAuthError:
    return OAuthError("invalid_grant", 50057, "The user account is disabled.")


def consent_missing(app: AppRegistration, *, error: str = "consent_required") -> OAuthError:
    return OAuthError(error, 65001, f"The user or administrator has not consented to use the application with ID "
                      f"'{app.client_id}' named '{app.name}'. Send an interactive authorization request for "
                      "this user and resource.")


@dataclass(frozen=True)
class Trace:
    """The ids and time an error names, so a user's report can be matched to the request."""

    trace_id: str
    correlation_id: str
    timestamp: str

    @classmethod
    def of(cls, request: Request) -> Trace:
        # Entra echoes the client's client-request-id (MSAL sends one) as correlation id.
        correlation = request.headers.get("client-request-id") or str(uuid.uuid4())
        return cls(str(uuid.uuid4()), correlation, dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ"))

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


NO_SCOPES = Scopes((), (), frozenset())
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
# Encoding
# =============================================================================================

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def client_info(user: SandboxUser) -> str:
    # MSAL builds home_account_id as "<uid>.<utid>" from this.
    return b64url(json.dumps({"uid": user.id, "utid": user.tenant_id}).encode())


async def read_form(request: Request) -> dict[str, str]:
    """The url-encoded body as a dict (last value wins). Parsed by hand: the standard form
    parser would need python-multipart, and OAuth only ever posts url-encoded forms."""
    body = (await request.body()).decode("utf-8", "replace")
    return dict(parse_qsl(body, keep_blank_values=True))
