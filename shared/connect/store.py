"""Short-lived state of the connect flow: used link nonces, pending sign-ins, chooser sessions.

Tables (Azure Tables has no TTL, so every row carries ``expires_at``; reads treat an expired
row as absent, and ``purge_expired`` clears them from a timer):

* ``nonces``    PK sha256(nonce) — a connect link's nonce, inserted on first use: a second
  insert conflicts, which is how a replayed link is caught. Kept until the link's expiry.
* ``authflows`` PK sha256(state) — the MSAL auth-code flow (holds the PKCE verifier, so it is
  encrypted), the verified connect context and sha256 of the browser binding (the random value
  the starting browser holds in a cookie); taken exactly once by the callback. Pending
  admin-consent requests live here too (kind ``adminconsent``), keyed by their own state.
* ``sessions``  PK sha256(session id) — the calendar chooser's session after sign-in. The
  browser holds the random id in an HttpOnly cookie; the table only has its hash, so a
  leaked table row does not open a session.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.crypto import Cipher
from shared.errors import Conflict, InvalidSignature, NotFound
from shared.ids import secrets_equal
from shared.storage.base import StoragePort

NONCES = "nonces"
AUTHFLOWS = "authflows"
SESSIONS = "sessions"

FLOW_LIFETIME = timedelta(minutes=15)
ADMIN_CONSENT_LIFETIME = timedelta(days=7)
SESSION_LIFETIME = timedelta(minutes=30)


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class ConnectContext:
    """What a verified connect link asked for; travels through sign-in to the chooser."""

    provider_id: str
    resource_id: str | None
    locale: str
    return_url: str
    #: "" for one calendar, "org" for the organisation path (see ``shared.signing``)
    scope: str = ""
    #: the provider's name from the signed link ("" when timum sent none)
    provider_name: str = ""

    @property
    def is_org(self) -> bool:
        return self.scope == "org"

    @property
    def provider_label(self) -> str:
        """How our pages name the timum account a calendar goes to: its name, else its id."""
        return self.provider_name or self.provider_id

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConnectContext:
        return cls(provider_id=str(data["provider_id"]), resource_id=data.get("resource_id") or None,
                   locale=str(data.get("locale") or ""), return_url=str(data["return_url"]),
                   scope=str(data.get("scope") or ""), provider_name=str(data.get("provider_name") or ""))


class NonceRepository:
    def __init__(self, storage: StoragePort) -> None:
        self._table = storage.table(NONCES)

    async def use(self, nonce: str, *, expires_at: datetime, now: datetime) -> None:
        """Record the first use of ``nonce``; ``InvalidSignature(link_reused)`` on any later use."""
        pk = _hash(nonce)
        row = {"PartitionKey": pk, "RowKey": "", "expires_at": expires_at}
        try:
            await self._table.insert(row)
        except Conflict:
            existing = await self._table.get(pk, "")
            # A row outliving its link's expiry is garbage, but the link is expired anyway.
            if existing is not None and existing["expires_at"] <= now:
                raise InvalidSignature("the link has expired", code="link_expired") from None
            raise InvalidSignature("the link was already used", code="link_reused") from None


@dataclass(frozen=True)
class PendingFlow:
    kind: str                      # "signin" | "orgsignin" | "adminconsent"
    context: ConnectContext
    flow: dict[str, Any]           # MSAL's auth-code flow (empty for admin consent)
    tenant: str = ""
    #: sha256 of the binding cookie of the browser that started the sign-in ("" for admin consent,
    #: whose link is forwarded to another person's browser)
    binding_hash: str = ""

    def bound_to(self, binding: str | None) -> bool:
        """True when ``binding`` is the value the starting browser was given."""
        if not self.binding_hash or not binding or len(binding) > 256:
            return False
        return hmac.compare_digest(self.binding_hash, binding_hash(binding))


def binding_hash(binding: str) -> str:
    return _hash(binding)


class AuthFlowRepository:
    def __init__(self, storage: StoragePort, cipher: Cipher) -> None:
        self._table = storage.table(AUTHFLOWS)
        self._cipher = cipher

    async def put(self, state: str, pending: PendingFlow, *, expires_at: datetime) -> None:
        pk = _hash(state)
        plain = json.dumps({"kind": pending.kind, "context": pending.context.to_json(), "flow": pending.flow,
                            "tenant": pending.tenant, "binding": pending.binding_hash}, separators=(",", ":"))
        await self._table.insert({"PartitionKey": pk, "RowKey": "", "kind": pending.kind,
                                  "data": self._cipher.encrypt_str(plain, aad=f"authflows:{pk}"),
                                  "expires_at": expires_at})

    async def _read(self, state: str, *, now: datetime, take: bool) -> PendingFlow | None:
        if not state or len(state) > 256:
            return None
        pk = _hash(state)
        row = await self._table.get(pk, "")
        if row is None:
            return None
        if take:
            try:
                # Conditional delete: of two concurrent callbacks with the same state, one wins.
                if not await self._table.delete(pk, "", etag=row.etag):
                    return None
            except Conflict:
                return None
        if row["expires_at"] <= now:
            if not take:
                await self._table.delete(pk, "")
            return None
        data = json.loads(self._cipher.decrypt_str(str(row["data"]), aad=f"authflows:{pk}"))
        return PendingFlow(kind=str(data["kind"]), context=ConnectContext.from_json(data["context"]),
                           flow=dict(data.get("flow") or {}), tenant=str(data.get("tenant") or ""),
                           binding_hash=str(data.get("binding") or ""))

    async def take(self, state: str, *, now: datetime) -> PendingFlow | None:
        """The pending flow for ``state``, removed so it can be used once; None if unknown/expired."""
        return await self._read(state, now=now, take=True)

    async def peek(self, state: str, *, now: datetime) -> PendingFlow | None:
        return await self._read(state, now=now, take=False)


@dataclass
class ChooserSession:
    session_hash: str
    context: ConnectContext
    account_id: str
    tenant_id: str
    account_name: str
    expires_at: datetime
    busy: bool = False
    etag: str = ""


class SessionRepository:
    """Chooser sessions. The CSRF token is an HMAC of the session id under a key derived from
    the token-encryption key, so it needs no storage and is useless without the cookie. The
    first key signs; every key verifies (a form rendered before a key rotation still submits)."""

    def __init__(self, storage: StoragePort, cipher: Cipher, csrf_keys: bytes | tuple[bytes, ...]) -> None:
        self._table = storage.table(SESSIONS)
        self._cipher = cipher
        self._csrf_keys = (csrf_keys,) if isinstance(csrf_keys, bytes) else tuple(csrf_keys)

    async def create(self, context: ConnectContext, *, account_id: str, tenant_id: str, account_name: str,
                     now: datetime) -> str:
        session_id = secrets.token_urlsafe(32)
        pk = _hash(session_id)
        expires_at = now + SESSION_LIFETIME
        data = json.dumps({"context": context.to_json(), "account_id": account_id, "tenant_id": tenant_id,
                           "account_name": account_name}, separators=(",", ":"))
        await self._table.insert({"PartitionKey": pk, "RowKey": "", "expires_at": expires_at, "busy": False,
                                  "data": self._cipher.encrypt_str(data, aad=f"sessions:{pk}")})
        return session_id

    async def get(self, session_id: str | None, *, now: datetime) -> ChooserSession | None:
        if not session_id or len(session_id) > 128:
            return None
        pk = _hash(session_id)
        row = await self._table.get(pk, "")
        if row is None:
            return None
        if row["expires_at"] <= now:
            await self._table.delete(pk, "")
            return None
        data = json.loads(self._cipher.decrypt_str(str(row["data"]), aad=f"sessions:{pk}"))
        return ChooserSession(session_hash=pk, context=ConnectContext.from_json(data["context"]),
                              account_id=str(data["account_id"]), tenant_id=str(data["tenant_id"]),
                              account_name=str(data.get("account_name") or ""), expires_at=row["expires_at"],
                              busy=bool(row.get("busy")), etag=row.etag)

    async def set_busy(self, session: ChooserSession, busy: bool) -> None:
        """Flip the busy flag only if nobody else did meanwhile: a double-submitted form runs once."""
        row = await self._table.get(session.session_hash, "")
        if row is None:
            raise NotFound("the session has ended")
        if row.etag != session.etag or bool(row.get("busy")) == busy:
            raise Conflict("the session is being used by another request", code="busy")
        stored = await self._table.update({**row, "busy": busy}, etag=row.etag)
        session.busy, session.etag = busy, stored.etag

    async def delete(self, session: ChooserSession) -> None:
        await self._table.delete(session.session_hash, "")

    def csrf_token(self, session_id: str, key: bytes | None = None) -> str:
        return hmac.new(key or self._csrf_keys[0], f"csrf:{session_id}".encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session_id: str, token: str | None) -> bool:
        if not token or len(token) > 128:
            return False
        # Constant time, and a non-ASCII value is just unequal (hmac.compare_digest raises on it).
        return any(secrets_equal(self.csrf_token(session_id, key), str(token)) for key in self._csrf_keys)


def derive_key(keys: tuple[tuple[str, bytes], ...], purpose: str) -> bytes:
    """A sub-key for ``purpose`` from the active encryption key (HMAC as a KDF)."""
    return derive_keys(keys, purpose)[0]


def derive_keys(keys: tuple[tuple[str, bytes], ...], purpose: str) -> tuple[bytes, ...]:
    """A sub-key for ``purpose`` from each configured encryption key, the active one first."""
    return tuple(hmac.new(key, f"timum-outlook:{purpose}".encode(), hashlib.sha256).digest() for _, key in keys)


async def purge_expired(storage: StoragePort, *, now: datetime | None = None) -> int:
    """Delete expired nonces, flows and sessions; returns how many. Safe to run anytime."""
    now = now or datetime.now(UTC)
    removed = 0
    for name in (NONCES, AUTHFLOWS, SESSIONS):
        table = storage.table(name)
        for row in await table.query():
            if row.get("expires_at") is not None and row["expires_at"] <= now:
                try:
                    removed += int(await table.delete(row.pk, row.rk, etag=row.etag))
                except Conflict:
                    continue
    return removed
