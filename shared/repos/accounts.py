"""Microsoft accounts (their encrypted MSAL token caches) and tenants' admin consent.

Tables and keys:

* ``accounts`` PK ``home_account_id`` (MSAL's ``<oid>.<tid>``) — one serialized
  ``SerializableTokenCache`` per Microsoft account, AES-GCM encrypted with the account id
  as associated data, so a cache copied onto another account's row does not decrypt.
  Links point here through ``Link.account_id``; several links may share one account.
* ``tenants``  PK tenant id — a tenant whose administrator granted consent tenant-wide
  (app-only access becomes possible there).

This module never sees tokens in plain text except as the opaque cache string it hands
to MSAL; nothing here logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from shared.crypto import Cipher
from shared.errors import Conflict, NotFound
from shared.storage.base import StoragePort, encode_key

ACCOUNTS = "accounts"
TENANTS = "tenants"


@dataclass
class StoredCache:
    """One account's token cache as stored; ``etag`` guards the write-back."""

    account_id: str
    tenant_id: str
    username: str
    cache: str          # the serialized MSAL cache (plain text: handle as a secret)
    etag: str = ""


def _aad(account_id: str) -> str:
    return f"accounts:{account_id}"


class AccountRepository:
    def __init__(self, storage: StoragePort, cipher: Cipher) -> None:
        self._table = storage.table(ACCOUNTS)
        self._cipher = cipher

    async def load(self, account_id: str) -> StoredCache | None:
        """The account's cache, or None. A cache sealed with a retired key is re-sealed with the
        active key on the way (best effort: a concurrent writer's newer cache wins)."""
        row = await self._table.get(encode_key(account_id), "")
        if row is None:
            return None
        sealed = str(row["cache"])
        plain = self._cipher.decrypt_str(sealed, aad=_aad(account_id))
        stored = StoredCache(account_id=account_id, tenant_id=str(row.get("tenant_id", "")),
                             username=str(row.get("username", "")), cache=plain, etag=row.etag)
        if self._cipher.needs_reencryption(sealed):
            try:
                fresh = await self._table.update(self._row(stored), etag=row.etag)
                stored.etag = fresh.etag
            except (Conflict, NotFound):
                pass
        return stored

    def _row(self, stored: StoredCache) -> dict[str, object]:
        return {"PartitionKey": encode_key(stored.account_id), "RowKey": "",
                "cache": self._cipher.encrypt_str(stored.cache, aad=_aad(stored.account_id)),
                "key_id": self._cipher.active_key_id, "tenant_id": stored.tenant_id, "username": stored.username,
                "updated_at": datetime.now(UTC)}

    async def save(self, stored: StoredCache) -> StoredCache:
        """Replace the cache if its ETag still matches (``Conflict`` if not); insert-or-replace
        when ``stored.etag`` is empty (a fresh sign-in supersedes whatever was there)."""
        row = self._row(stored)
        result = (await self._table.update(row, etag=stored.etag) if stored.etag
                  else await self._table.upsert(row))
        stored.etag = result.etag
        return stored

    async def delete(self, account_id: str) -> bool:
        return await self._table.delete(encode_key(account_id), "")

    async def exists(self, account_id: str) -> bool:
        return await self._table.get(encode_key(account_id), "") is not None

    async def list_ids(self) -> list[str]:
        from shared.storage.base import decode_key

        return [decode_key(r.pk) for r in await self._table.query()]


@dataclass(frozen=True)
class TenantConsent:
    tenant_id: str
    admin_consent: bool
    consented_at: datetime | None


class TenantRepository:
    def __init__(self, storage: StoragePort) -> None:
        self._table = storage.table(TENANTS)

    async def get(self, tenant_id: str) -> TenantConsent | None:
        row = await self._table.get(encode_key(tenant_id), "")
        if row is None:
            return None
        return TenantConsent(tenant_id, bool(row.get("admin_consent")), row.get("consented_at"))

    async def has_admin_consent(self, tenant_id: str) -> bool:
        if not tenant_id:
            return False
        consent = await self.get(tenant_id)
        return bool(consent and consent.admin_consent)

    async def record_admin_consent(self, tenant_id: str, *, now: datetime) -> None:
        await self._table.upsert({"PartitionKey": encode_key(tenant_id), "RowKey": "", "admin_consent": True,
                                  "consented_at": now})

    async def revoke_admin_consent(self, tenant_id: str) -> None:
        """App-only access stopped working (consent withdrawn): fall back to delegated links."""
        await self._table.delete(encode_key(tenant_id), "")
