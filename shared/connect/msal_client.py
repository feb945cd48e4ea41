"""Building MSAL confidential clients, and telling MSAL's error answers apart.

MSAL is synchronous (``requests``): callers run these functions with ``asyncio.to_thread``.
One ``requests`` session and one HTTP cache are shared per process, so the authority's
OpenID metadata is fetched once rather than on every sign-in or token refresh.

MSAL requires an https authority; the sandbox serves one with its own CA, which reaches
MSAL through ``verify=`` (``CA_BUNDLE``). Instance discovery only exists on Microsoft's
own hosts, so it is switched off anywhere else.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared.config import Settings
from shared.errors import AuthError, ConsentRequired, NeedsReconnect, SyncError, TransientError

if TYPE_CHECKING:
    import msal
    import requests

#: Delegated permissions we ask for. MSAL adds openid, profile and offline_access itself and
#: refuses them when passed explicitly.
# MailboxSettings.Read (user-consentable, read-only) gives the mailbox time zone, which all-day
# events and booking times need; without it /mailboxSettings answers 403.
DELEGATED_SCOPES: tuple[str, ...] = ("User.Read", "Calendars.ReadWrite", "Calendars.ReadWrite.Shared",
                                     "MailboxSettings.Read")
#: Application permissions come from the app registration; client credentials ask for .default.
GRAPH_DEFAULT_SCOPE = "https://graph.microsoft.com/.default"

MICROSOFT_AUTHORITY_HOSTS = frozenset({
    "login.microsoftonline.com", "login.microsoft.com", "login.windows.net", "login.microsoftonline.us",
    "login.chinacloudapi.cn", "login.partner.microsoftonline.cn",
})

#: AADSTS codes meaning "the refresh token is gone for good": revoked, expired, password reset…
RECONNECT_CODES = frozenset({50173, 700082, 70008, 50078, 50076, 50079, 700084, 50133, 50089, 50148})
#: AADSTS codes meaning "an administrator must consent".
CONSENT_CODES = frozenset({65001, 65004, 90094, 90008})
_AADSTS = re.compile(r"AADSTS(\d{4,7})")
_HTTP_TIMEOUT = 15.0

_lock = threading.Lock()
_sessions: dict[str, requests.Session] = {}
_http_cache: dict[Any, Any] = {}


def is_microsoft_host(authority_host: str) -> bool:
    return (urlsplit(authority_host).hostname or "").lower() in MICROSOFT_AUTHORITY_HOSTS


def authority(settings: Settings, tenant: str | None = None) -> str:
    return f"{settings.entra_authority_host.rstrip('/')}/{tenant or settings.entra_tenant}"


def _session(verify: str | bool) -> requests.Session:
    import requests
    from requests.adapters import HTTPAdapter

    class TimeoutSession(requests.Session):
        """MSAL sets no timeout; a hung identity endpoint must not hang a function. ``verify`` is
        passed per request because requests lets REQUESTS_CA_BUNDLE override a session's own."""

        def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", _HTTP_TIMEOUT)
            kwargs.setdefault("verify", self.verify)
            return super().request(method, url, *args, **kwargs)  # type: ignore[arg-type]

    key = str(verify)
    with _lock:
        session = _sessions.get(key)
        if session is None:
            session = TimeoutSession()
            session.verify = verify
            adapter = HTTPAdapter(max_retries=1)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            _sessions[key] = session
        return session


def build_app(settings: Settings, *, tenant: str | None = None,
              cache: msal.TokenCache | None = None) -> msal.ConfidentialClientApplication:
    """A confidential client for ``tenant`` (default: ENTRA_TENANT). Blocking: run in a thread."""
    import msal

    try:
        return msal.ConfidentialClientApplication(
            settings.entra_client_id,
            client_credential=settings.entra_client_secret,
            authority=authority(settings, tenant),
            verify=settings.verify,
            http_client=_session(settings.verify),
            http_cache=_http_cache,
            instance_discovery=None if is_microsoft_host(settings.entra_authority_host) else False,
            token_cache=cache,
        )
    except ValueError as exc:
        # MSAL raises ValueError for an authority it cannot use (not https, unknown tenant).
        raise AuthError(f"the identity platform refused the authority: {type(exc).__name__}",
                        code="authority") from exc
    except OSError as exc:
        raise TransientError("the identity platform is unreachable", code="identity_unreachable") from exc


def aadsts_codes(result: Mapping[str, Any]) -> set[int]:
    codes = {int(c) for c in (result.get("error_codes") or []) if str(c).isdigit()}
    codes.update(int(c) for c in _AADSTS.findall(str(result.get("error_description") or "")))
    return codes


def is_consent_error(error: str, description: str = "", codes: set[int] | None = None) -> bool:
    found = set(codes or ()) | {int(c) for c in _AADSTS.findall(description or "")}
    return error in ("consent_required", "access_denied", "interaction_required") or bool(found & CONSENT_CODES)


def classify_silent_error(result: Mapping[str, Any]) -> SyncError:
    """What a failed ``acquire_token_silent_with_error`` means for the link. Messages carry
    only the error name and AADSTS numbers: Entra's descriptions are for humans, not logs."""
    error = str(result.get("error") or "unknown")
    codes = aadsts_codes(result)
    label = error + ("" if not codes else " (AADSTS" + ",".join(str(c) for c in sorted(codes)) + ")")
    if error in ("temporarily_unavailable", "server_error"):
        return TransientError(f"the identity platform is unavailable: {label}")
    if codes & CONSENT_CODES or error == "consent_required":
        return ConsentRequired(f"consent is needed again: {label}")
    if error in ("invalid_grant", "interaction_required", "login_required") or codes & RECONNECT_CODES:
        return NeedsReconnect(f"the Microsoft sign-in is no longer valid: {label}")
    if error in ("invalid_client", "unauthorized_client"):
        return AuthError(f"the app's credentials were refused: {label}", code="invalid_client")
    return AuthError(f"token refresh failed: {label}")


def classify_client_credentials_error(result: Mapping[str, Any], tenant_id: str) -> SyncError:
    error = str(result.get("error") or "unknown")
    codes = aadsts_codes(result)
    label = error + ("" if not codes else " (AADSTS" + ",".join(str(c) for c in sorted(codes)) + ")")
    if error in ("temporarily_unavailable", "server_error"):
        return TransientError(f"the identity platform is unavailable: {label}")
    if codes & CONSENT_CODES or error in ("consent_required", "unauthorized_client"):
        return ConsentRequired(f"no admin consent in tenant: {label}", tenant_id=tenant_id)
    return AuthError(f"client credentials refused: {label}")
