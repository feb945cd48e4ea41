"""Links, their calendar and subscription indexes, per-link leases and provider settings.

Tables and keys (access paths):

* ``links``         PK provider id, RK resource id — a provider's links in one partition query.
* ``calendarindex`` PK hash(tenant, mailbox, calendar) — enforces one calendar ↔ one resource.
* ``subscriptions`` PK subscription id — the webhook's only look-up; holds sha256(clientState).
* ``leases``        PK link key — one delta run per link; ``dirty`` coalesces notifications.
* ``providers``     PK provider id — privacy and behaviour settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.domain import Link, LinkKey, ProviderSettings, stable_id
from shared.errors import Conflict, NotFound
from shared.repos.codec import from_entity, to_entity
from shared.storage.base import StoragePort, decode_key, encode_key

LINKS = "links"
CALENDAR_INDEX = "calendarindex"
SUBSCRIPTIONS = "subscriptions"
LEASES = "leases"
PROVIDERS = "providers"

#: Lost ETag races a read-change-save tolerates before it gives up with ``Conflict``.
MODIFY_ATTEMPTS = 8


def calendar_key(tenant_id: str, mailbox_id: str, calendar_id: str) -> str:
    return stable_id(tenant_id, mailbox_id.lower(), calendar_id, prefix="cal-")


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class LinkRepository:
    def __init__(self, storage: StoragePort) -> None:
        self._links = storage.table(LINKS)
        self._calendars = storage.table(CALENDAR_INDEX)

    @staticmethod
    def _from(entity: dict[str, object], etag: str) -> Link:
        from shared.storage.base import Entity

        return from_entity(Link, Entity(entity, etag=etag), etag=etag)

    async def get(self, key: LinkKey) -> Link | None:
        row = await self._links.get(encode_key(key.provider_id), encode_key(key.resource_id))
        return None if row is None else self._from(row, row.etag)

    async def require(self, key: LinkKey) -> Link:
        link = await self.get(key)
        if link is None:
            raise NotFound(f"no link for resource {key.resource_id}")
        return link

    async def list_for_provider(self, provider_id: str) -> list[Link]:
        return [self._from(r, r.etag) for r in await self._links.query(encode_key(provider_id))]

    async def list_block_only(self, provider_id: str, resource_id: str) -> list[Link]:
        """The block-only links of one resource (``Link.block_of``)."""
        rows = await self._links.query(encode_key(provider_id), equals={"block_of": resource_id})
        return [self._from(r, r.etag) for r in rows]

    async def list_all(self) -> list[Link]:
        return [self._from(r, r.etag) for r in await self._links.query()]

    async def keys_for_account(self, account_id: str, *, limit: int | None = None) -> list[LinkKey]:
        """The links made with one Microsoft account (a reconnect revives them; the last one's
        end lets the account's tokens go)."""
        rows = await self._links.query(equals={"account_id": account_id}, limit=limit)
        return [LinkKey(str(row["provider_id"]), str(row["resource_id"])) for row in rows]

    async def save(self, link: Link) -> Link:
        """Insert a new link or replace it if its ETag still matches (``Conflict`` otherwise)."""
        entity = to_entity(link, pk=encode_key(link.provider_id), rk=encode_key(link.resource_id))
        stored = (await self._links.update(entity, etag=link.etag) if link.etag
                  else await self._links.insert(entity))
        link.etag = stored.etag
        return link

    async def modify(self, key: LinkKey, change: Callable[[Link], bool | Awaitable[bool]], *,
                     current: Link | None = None) -> Link | None:
        """Apply ``change`` to the stored link and save it under its ETag; on a lost race read the
        link again and apply ``change`` again, so no concurrent write is lost.

        ``current`` is the link as the caller already read it (saves a read). ``change`` may be
        async (e.g. to record an outbox row first) and returns False when the link as found no
        longer wants the change: nothing is saved, the link is returned as stored. None when there
        is no link (deleted meanwhile). ``Conflict`` after ``MODIFY_ATTEMPTS`` lost races.
        """
        link = current if current is not None else await self.get(key)
        for _ in range(MODIFY_ATTEMPTS):
            if link is None:
                return None
            wanted = change(link)
            if inspect.isawaitable(wanted):
                wanted = await wanted
            if not wanted:
                return link
            try:
                return await self.save(link)
            except Conflict:
                link = await self.get(key)
            except NotFound:
                link = None
        if link is None:
            return None
        raise Conflict(f"link {key} kept changing while it was being saved")

    async def delete(self, key: LinkKey) -> None:
        """Remove the link's row; its calendar claim is the caller's (a move keeps it)."""
        await self._links.delete(encode_key(key.provider_id), encode_key(key.resource_id))

    async def claim_calendar(self, link: Link) -> None:
        """Record that this calendar belongs to this resource; ``Conflict`` if another resource has it."""
        pk = calendar_key(link.tenant_id, link.mailbox_id, link.calendar_id)
        row = {"PartitionKey": pk, "RowKey": "", "provider_id": link.provider_id, "resource_id": link.resource_id}
        try:
            await self._calendars.insert(row)
        except Conflict:
            current = await self._calendars.get(pk, "")
            if current is None:
                await self._calendars.insert(row)
                return
            if (current["provider_id"], current["resource_id"]) != (link.provider_id, link.resource_id):
                raise Conflict("this calendar is already linked to another resource", code="calendar_taken") from None

    async def calendar_owner(self, tenant_id: str, mailbox_id: str, calendar_id: str) -> LinkKey | None:
        row = await self._calendars.get(calendar_key(tenant_id, mailbox_id, calendar_id), "")
        return None if row is None else LinkKey(row["provider_id"], row["resource_id"])

    async def release_calendar(self, link: Link) -> None:
        pk = calendar_key(link.tenant_id, link.mailbox_id, link.calendar_id)
        row = await self._calendars.get(pk, "")
        if row is not None and (row["provider_id"], row["resource_id"]) == (link.provider_id, link.resource_id):
            await self._calendars.delete(pk, "", etag=row.etag)


@dataclass(frozen=True)
class SubscriptionRecord:
    subscription_id: str
    link: LinkKey
    client_state_hash: str

    def client_state_matches(self, client_state: str | None) -> bool:
        # Constant-time: the clientState is the only proof that a notification came from Graph.
        return hmac.compare_digest(self.client_state_hash, hash_secret(client_state or ""))


class SubscriptionRepository:
    def __init__(self, storage: StoragePort) -> None:
        self._table = storage.table(SUBSCRIPTIONS)

    async def put(self, subscription_id: str, link: LinkKey, client_state: str, *,
                  now: datetime | None = None) -> None:
        await self._table.upsert({"PartitionKey": encode_key(subscription_id), "RowKey": "",
                                  "link": str(link), "client_state_hash": hash_secret(client_state),
                                  "created_at": now or datetime.now(UTC)})

    async def get(self, subscription_id: str) -> SubscriptionRecord | None:
        row = await self._table.get(encode_key(subscription_id), "")
        if row is None:
            return None
        return SubscriptionRecord(subscription_id, LinkKey.parse(row["link"]), row["client_state_hash"])

    async def delete(self, subscription_id: str) -> None:
        await self._table.delete(encode_key(subscription_id), "")

    async def list_all(self) -> list[tuple[SubscriptionRecord, datetime | None]]:
        """Every indexed subscription with the time it was indexed (None for older rows)."""
        found: list[tuple[SubscriptionRecord, datetime | None]] = []
        for row in await self._table.query():
            created = row.get("created_at")
            found.append((SubscriptionRecord(decode_key(str(row["PartitionKey"])), LinkKey.parse(row["link"]),
                                             row["client_state_hash"]),
                          created if isinstance(created, datetime) else None))
        return found


class LeaseRepository:
    """One delta run per link at a time, coordinated through one row with its ETag.

    ``acquire`` either takes the lease or marks it dirty for the holder; ``release`` tells the
    holder whether someone knocked meanwhile, in which case it runs once more before letting go.
    An expired lease (crashed holder) is simply taken over.
    """

    def __init__(self, storage: StoragePort, *, ttl: timedelta = timedelta(minutes=5)) -> None:
        self._table = storage.table(LEASES)
        self._ttl = ttl

    async def acquire(self, key: LinkKey, owner: str, *, now: datetime | None = None) -> bool:
        now = now or datetime.now(UTC)
        pk = encode_key(str(key))
        for _ in range(10):
            row = await self._table.get(pk, "")
            fresh = {"PartitionKey": pk, "RowKey": "", "owner": owner, "expires_at": now + self._ttl, "dirty": False}
            try:
                if row is None:
                    await self._table.insert(fresh)
                    return True
                if row.get("owner") and row["owner"] != owner and row["expires_at"] > now:
                    if not row.get("dirty"):
                        await self._table.update({**row, "dirty": True}, etag=row.etag)
                    return False
                await self._table.update(fresh, etag=row.etag)
                return True
            except (Conflict, NotFound):
                continue  # lost a race; read again
        return False

    async def is_dirty(self, key: LinkKey, owner: str) -> bool:
        """Whether ``owner`` holds the lease and a message marked it dirty meanwhile (no change)."""
        row = await self._table.get(encode_key(str(key)), "")
        return row is not None and row.get("owner") == owner and bool(row.get("dirty"))

    async def release(self, key: LinkKey, owner: str, *, now: datetime | None = None) -> bool:
        """Release the lease. Returns True if it was marked dirty: the caller keeps it and runs again."""
        now = now or datetime.now(UTC)
        pk = encode_key(str(key))
        for _ in range(10):
            row = await self._table.get(pk, "")
            if row is None or row.get("owner") != owner:
                return False
            try:
                if row.get("dirty"):
                    await self._table.update({**row, "dirty": False, "expires_at": now + self._ttl}, etag=row.etag)
                    return True
                await self._table.delete(pk, "", etag=row.etag)
                return False
            except (Conflict, NotFound):
                continue
        return False


    async def let_go(self, key: LinkKey, owner: str, *, now: datetime | None = None) -> None:
        """Release for good: ``release`` keeps a dirty lease once; the next call lets go."""
        for _ in range(3):
            if not await self.release(key, owner, now=now):
                return

    async def run_coalesced(self, key: LinkKey, owner: str, run: Callable[[], Awaitable[bool]], *,
                            clock: Callable[[], datetime], max_runs: int,
                            on_cap: Callable[[], Awaitable[None]],
                            before_rerun: Callable[[], Awaitable[None]] | None = None) -> bool:
        """Run ``run`` under the lease of ``key``, and again while messages marked it dirty meanwhile.

        False, without running, when another owner holds the lease: it is marked dirty, so the
        holder runs once more and sees what this caller came for. ``run`` returns False to stop
        (nothing more to do, or nothing it can do); ``before_rerun`` may wait before a rerun,
        still holding the lease. After ``max_runs`` a still-dirty lease calls ``on_cap`` (hand the
        rest to a fresh message) instead of running on. On any failure the lease is let go, so
        the retry does not wait for the TTL; a process that dies leaves it to the TTL, the same
        outcome later.
        """
        if not await self.acquire(key, owner, now=clock()):
            return False
        try:
            runs = 0
            while await run():
                runs += 1
                if runs >= max_runs:
                    if await self.release(key, owner, now=clock()):
                        await on_cap()
                    break
                if before_rerun is not None:
                    await before_rerun()
                if not await self.release(key, owner, now=clock()):
                    return True
            await self.let_go(key, owner, now=clock())
        except BaseException:
            with contextlib.suppress(Exception):
                await self.let_go(key, owner, now=clock())
            raise
        return True


class ProviderSettingsRepository:
    def __init__(self, storage: StoragePort) -> None:
        self._table = storage.table(PROVIDERS)

    async def get(self, provider_id: str) -> ProviderSettings:
        row = await self._table.get(encode_key(provider_id), "settings")
        return ProviderSettings(provider_id) if row is None else from_entity(ProviderSettings, row)

    async def save(self, settings: ProviderSettings) -> None:
        await self._table.upsert(to_entity(settings, pk=encode_key(settings.provider_id), rk="settings"))
