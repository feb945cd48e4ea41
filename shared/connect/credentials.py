"""Credentials the Graph adapter uses, and the real ``GraphProvider``.

* ``DelegatedCredential`` — an async azure-core token credential for one Microsoft account.
  Each token request loads the account's encrypted MSAL cache, asks MSAL for a token
  silently (from the cache, or by redeeming the refresh token), writes the cache back only
  when MSAL changed it, and raises ``NeedsReconnect`` when the refresh token is revoked or
  expired. MSAL is synchronous, so it runs in a worker thread; a token is reused in memory
  until five minutes before it expires.
* ``AppOnlyCredential`` — client credentials for a tenant that granted admin consent
  (azure-identity's async ``ClientSecretCredential``).

Both have ``invalidate()``: when Graph answers 401 to a token that has not expired (revoked,
or a Continuous Access Evaluation event), the Graph adapter calls it and retries once with a
fresh token. A claims challenge (``WWW-Authenticate: … error="insufficient_claims", claims=…``)
reaches ``get_token(claims=…)`` through kiota's request adapter, and MSAL redeems the refresh
token with those claims (``claims_challenge``).
* ``RealGraphProvider`` — builds a ``GraphSdkAdapter`` for a link with the right credential.

Both credentials serve Graph only, so they ask for Graph's scopes whatever the caller names:
Graph stand-ins on other hosts would otherwise get a ``.default`` scope for their own host.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from azure.core.credentials import AccessToken

from shared.config import Settings
from shared.connect.msal_client import (
    DELEGATED_SCOPES,
    GRAPH_DEFAULT_SCOPE,
    aadsts_codes,
    build_app,
    classify_client_credentials_error,
    classify_silent_error,
    is_microsoft_host,
)
from shared.crypto import Cipher
from shared.domain import Link, LinkMode
from shared.errors import AuthError, BadRequest, Conflict, ConsentRequired, NeedsReconnect, NotFound, TransientError
from shared.repos.accounts import AccountRepository, StoredCache
from shared.storage.base import StoragePort

if TYPE_CHECKING:
    from shared.ports import GraphCalendarPort

#: refresh this long before an access token expires
REFRESH_MARGIN = 300.0
#: application permissions an app-only token must carry for our calendar work
APP_ROLES = frozenset({"Calendars.ReadWrite"})


def _silent(settings: Settings, stored: StoredCache, claims: str | None,
            force_refresh: bool = False) -> tuple[dict[str, Any] | None, str | None]:
    """Blocking MSAL part: (result or None if the account is not in the cache, new cache or None)."""
    import msal

    cache = msal.SerializableTokenCache()
    cache.deserialize(stored.cache)
    # The authority of the sign-in (ENTRA_TENANT): MSAL files tokens under it, so a silent request
    # through another authority (the account's tenant id) would miss them and refresh every time.
    app = build_app(settings, cache=cache)
    account = next((a for a in app.get_accounts() if a.get("home_account_id") == stored.account_id), None)
    if account is None:
        return None, None
    result = app.acquire_token_silent_with_error(list(DELEGATED_SCOPES), account=account, claims_challenge=claims,
                                                 force_refresh=force_refresh)
    return result, (cache.serialize() if cache.has_state_changed else None)


class DelegatedCredential:
    """Tokens of one Microsoft account (``home_account_id``) from its stored MSAL cache."""

    def __init__(self, settings: Settings, storage: StoragePort, account_id: str) -> None:
        self._settings = settings
        self._accounts = AccountRepository(storage, Cipher(settings.token_encryption_keys))
        self.account_id = account_id
        self._token: AccessToken | None = None
        self._lock: asyncio.Lock | None = None
        self._force_refresh = False

    async def invalidate(self) -> None:
        """Graph refused the current access token (401) although it has not expired: the next
        request redeems the refresh token instead of reusing it from memory or MSAL's cache.
        Only a refused refresh then means the user must reconnect."""
        self._token = None
        self._force_refresh = True

    async def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                        enable_cae: bool = False, **kwargs: Any) -> AccessToken:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            token = self._token
            if token is not None and claims is None and token.expires_on - REFRESH_MARGIN > time.time():
                return token
            self._token = await self._acquire(claims, self._force_refresh)
            self._force_refresh = False
            return self._token

    async def _acquire(self, claims: str | None, force_refresh: bool = False) -> AccessToken:
        stored = await self._accounts.load(self.account_id)
        if stored is None:
            raise NeedsReconnect("no Microsoft sign-in is stored for this account")
        try:
            result, new_cache = await asyncio.to_thread(_silent, self._settings, stored, claims, force_refresh)
        except OSError as exc:  # requests' errors are OSErrors
            raise TransientError("the identity platform is unreachable", code="identity_unreachable") from exc
        if new_cache is not None:
            stored.cache = new_cache
            # Another process may have refreshed (or the account was forgotten) meanwhile; its cache
            # is as good as ours, and Entra refresh tokens stay valid after use.
            with contextlib.suppress(Conflict, NotFound):
                await self._accounts.save(stored)
        if result is None:
            raise NeedsReconnect("the stored Microsoft sign-in has no usable account")
        if "access_token" not in result:
            raise classify_silent_error(result)
        expires_in = int(result.get("expires_in") or 0)
        return AccessToken(str(result["access_token"]), int(time.time()) + expires_in)

    async def close(self) -> None:
        """Nothing to release: MSAL's HTTP session is shared per process."""

    async def __aenter__(self) -> DelegatedCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AppOnlyCredential:
    """Client credentials in ``tenant_id`` (admin consent); errors mapped to the exception tree."""

    def __init__(self, settings: Settings, tenant_id: str) -> None:
        from azure.identity.aio import ClientSecretCredential

        kwargs: dict[str, Any] = {"authority": settings.entra_authority_host}
        if settings.ca_bundle:
            kwargs["connection_verify"] = settings.ca_bundle
        if not is_microsoft_host(settings.entra_authority_host):
            kwargs["disable_instance_discovery"] = True
        self.tenant_id = tenant_id
        self._settings = settings
        self._kwargs = kwargs
        self._inner = ClientSecretCredential(tenant_id, settings.entra_client_id, settings.entra_client_secret,
                                             **kwargs)

    async def invalidate(self) -> None:
        """Graph refused the current token (401): forget it. azure-identity keeps tokens in the
        credential's own cache, so a fresh credential is the way to a fresh token."""
        from azure.identity.aio import ClientSecretCredential

        old = self._inner
        self._inner = ClientSecretCredential(self.tenant_id, self._settings.entra_client_id,
                                             self._settings.entra_client_secret, **self._kwargs)
        await old.close()

    async def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                        enable_cae: bool = False, **kwargs: Any) -> AccessToken:
        from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseError

        try:
            token: AccessToken = await self._inner.get_token(GRAPH_DEFAULT_SCOPE, claims=claims)
            return token
        except ClientAuthenticationError as exc:
            # The message is Entra's human text; only its AADSTS numbers travel on.
            codes = sorted(aadsts_codes({"error_description": str(exc)}))
            raise classify_client_credentials_error({"error": "client_credentials_failed", "error_codes": codes},
                                                    self.tenant_id) from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise TransientError("the identity platform is unreachable", code="identity_unreachable") from exc

    async def close(self) -> None:
        await self._inner.close()

    async def __aenter__(self) -> AppOnlyCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT access token, or None when the token is not a JWT.

    Not a signature check: the token came straight from the token endpoint over TLS; we only
    look at what it grants.
    """
    parts = token.split(".")
    if len(parts) != 3 or len(token) > 16_384:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def jwt_roles(token: str) -> frozenset[str] | None:
    """The ``roles`` claim of a JWT access token, or None when the token is opaque."""
    claims = jwt_claims(token)
    if claims is None:
        return None
    roles = claims.get("roles")
    return frozenset(str(r) for r in roles) if isinstance(roles, list) else frozenset()


def _client_credentials(settings: Settings, tenant_id: str) -> dict[str, Any]:
    app = build_app(settings, tenant=tenant_id)
    result: dict[str, Any] = app.acquire_token_for_client(scopes=[GRAPH_DEFAULT_SCOPE])
    return result


async def verify_admin_consent(settings: Settings, tenant_id: str) -> str:
    """Prove that ``tenant_id`` granted our app tenant-wide access by obtaining an app-only
    token there; return the tenant id the token names. Raise ``ConsentRequired`` /
    ``TransientError`` / ``AuthError`` if not.

    Only a JWT whose ``roles`` hold our application permissions counts: Entra issues those for
    Graph, and a token we cannot read (opaque) proves nothing about what was granted."""
    try:
        result = await asyncio.to_thread(_client_credentials, settings, tenant_id)
    except OSError as exc:
        raise TransientError("the identity platform is unreachable", code="identity_unreachable") from exc
    if "access_token" not in result:
        raise classify_client_credentials_error(result, tenant_id)
    claims = jwt_claims(str(result["access_token"]))
    if claims is None:
        raise ConsentRequired("the app-only token is not a JWT; consent cannot be proven", tenant_id=tenant_id)
    roles = jwt_roles(str(result["access_token"])) or frozenset()
    if not roles >= APP_ROLES:
        raise ConsentRequired("the tenant granted no calendar permission to the app", tenant_id=tenant_id)
    tid = str(claims.get("tid") or "").lower()
    if not tid:
        raise ConsentRequired("the app-only token names no tenant", tenant_id=tenant_id)
    return tid


class RealGraphProvider:
    """``GraphProvider`` over msgraph-sdk; hands out one adapter per call (the caller closes it)."""

    def __init__(self, settings: Settings, storage: StoragePort) -> None:
        self._settings = settings
        self._storage = storage

    def credential_for(self, link: Link) -> DelegatedCredential | AppOnlyCredential:
        if link.mode is LinkMode.DELEGATED:
            if not link.account_id:
                raise NeedsReconnect("the link has no Microsoft account")
            return DelegatedCredential(self._settings, self._storage, link.account_id)
        if link.mode is LinkMode.APP_ONLY:
            if not link.tenant_id:
                raise AuthError("the app-only link names no tenant")
            return AppOnlyCredential(self._settings, link.tenant_id)
        raise BadRequest("an ICS link has no Graph access", code="ics_link")

    async def for_link(self, link: Link) -> GraphCalendarPort:
        credential = self.credential_for(link)
        if isinstance(credential, DelegatedCredential) and not await AccountRepository(
                self._storage, Cipher(self._settings.token_encryption_keys)).exists(link.account_id):
            raise NeedsReconnect("no Microsoft sign-in is stored for this account")
        adapter: GraphCalendarPort = _adapter_class()(
            credential, base_url=self._settings.graph_base_url, verify=self._settings.verify,
            max_concurrency=self._settings.graph_max_concurrency)
        return adapter


@lru_cache(maxsize=1)
def _adapter_class() -> Any:
    """``GraphSdkAdapter`` that also closes its credential (app-only credentials hold an HTTP
    session). Built on first use: msgraph-sdk stays out of processes that never call Graph."""
    from shared.adapters.graph_sdk import GraphSdkAdapter

    class OwningGraphAdapter(GraphSdkAdapter):
        def __init__(self, credential: DelegatedCredential | AppOnlyCredential, **kwargs: Any) -> None:
            super().__init__(credential, **kwargs)
            self._credential = credential

        async def close(self) -> None:
            try:
                await super().close()
            finally:
                await self._credential.close()

    return OwningGraphAdapter
