"""What the organisation path remembers.

* ``orgtenants`` — PK tenant id, RK provider id: an administrator of the tenant granted the
  application permissions while connecting this timum provider (``connected``), or the grant
  went away (``revoked``, with the AADSTS reason and when). A tenant is only ever mapped for a
  provider an administrator connected it for: a staff member of two practices cannot pull one
  practice's calendars into the other's timum account.
* ``orgjobs`` — PK provider|tenant, RK the calendar's index key: one row per calendar chosen on
  the mapping page, with its per-row state (``pending`` → ``creating`` → ``resource`` →
  ``linked``, or ``failed`` with a code). Pressing "Übernehmen" twice, or a crash halfway, resumes
  from these rows instead of starting over, so no calendar gets two links and no row two
  resources.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.errors import Conflict, NotFound
from shared.storage.base import StoragePort, decode_key, encode_key

ORG_TENANTS = "orgtenants"
ORG_JOBS = "orgjobs"

CONNECTED = "connected"
REVOKED = "revoked"


@dataclass(frozen=True)
class OrgConnection:
    tenant_id: str
    provider_id: str
    state: str
    connected_at: datetime | None
    revoked_at: datetime | None = None
    reason: str = ""
    roles: tuple[str, ...] = ()
    etag: str = ""

    @property
    def connected(self) -> bool:
        return self.state == CONNECTED


class OrgRepository:
    def __init__(self, storage: StoragePort) -> None:
        self._table = storage.table(ORG_TENANTS)

    @staticmethod
    def _from(row: Any) -> OrgConnection:
        return OrgConnection(tenant_id=decode_key(row.pk), provider_id=decode_key(row.rk), state=str(row["state"]),
                             connected_at=row.get("connected_at"), revoked_at=row.get("revoked_at"),
                             reason=str(row.get("reason") or ""),
                             roles=tuple(str(row.get("roles") or "").split()), etag=row.etag)

    async def get(self, tenant_id: str, provider_id: str) -> OrgConnection | None:
        row = await self._table.get(encode_key(tenant_id), encode_key(provider_id))
        return None if row is None else self._from(row)

    async def for_tenant(self, tenant_id: str) -> list[OrgConnection]:
        return [self._from(r) for r in await self._table.query(encode_key(tenant_id))]

    async def connect(self, tenant_id: str, provider_id: str, roles: frozenset[str], *, now: datetime) -> None:
        await self._table.upsert({"PartitionKey": encode_key(tenant_id), "RowKey": encode_key(provider_id),
                                  "state": CONNECTED, "connected_at": now, "reason": "",
                                  "roles": " ".join(sorted(roles))})

    async def revoke(self, connection: OrgConnection, reason: str, *, now: datetime) -> bool:
        """Mark one connection revoked; True only for the caller that made the change (ETag), so
        one revocation is announced once however many workers notice it."""
        if not connection.connected:
            return False
        row = await self._table.get(encode_key(connection.tenant_id), encode_key(connection.provider_id))
        if row is None or row.etag != connection.etag or row.get("state") != CONNECTED:
            return False
        try:
            await self._table.update({**row, "state": REVOKED, "revoked_at": now, "reason": reason[:200]},
                                     etag=row.etag)
        except (Conflict, NotFound):
            return False
        return True


PENDING = "pending"
CREATING = "creating"
RESOURCE = "resource"
LINKED = "linked"
FAILED = "failed"


@dataclass
class JobRow:
    calendar_key: str
    mailbox_id: str
    mailbox_address: str
    calendar_id: str
    calendar_name: str
    owner_name: str
    action: str                 # "new" | "existing"
    resource_id: str = ""       # the chosen existing resource, or the one created for "new"
    resource_name: str = ""
    state: str = PENDING
    error: str = ""
    etag: str = ""
    updated_at: datetime | None = None

    @property
    def done(self) -> bool:
        return self.state == LINKED


class MappingJobRepository:
    def __init__(self, storage: StoragePort, provider_id: str, tenant_id: str) -> None:
        self._table = storage.table(ORG_JOBS)
        self._pk = encode_key(f"{provider_id}|{tenant_id}")

    @staticmethod
    def _from(row: Any) -> JobRow:
        return JobRow(calendar_key=decode_key(row.rk), mailbox_id=str(row["mailbox_id"]),
                      mailbox_address=str(row.get("mailbox_address") or ""), calendar_id=str(row["calendar_id"]),
                      calendar_name=str(row.get("calendar_name") or ""), owner_name=str(row.get("owner_name") or ""),
                      action=str(row["action"]), resource_id=str(row.get("resource_id") or ""),
                      resource_name=str(row.get("resource_name") or ""), state=str(row["state"]),
                      error=str(row.get("error") or ""), etag=row.etag, updated_at=row.get("updated_at"))

    def _entity(self, job: JobRow, now: datetime) -> dict[str, Any]:
        return {"PartitionKey": self._pk, "RowKey": encode_key(job.calendar_key), "mailbox_id": job.mailbox_id,
                "mailbox_address": job.mailbox_address, "calendar_id": job.calendar_id,
                "calendar_name": job.calendar_name, "owner_name": job.owner_name, "action": job.action,
                "resource_id": job.resource_id, "resource_name": job.resource_name, "state": job.state,
                "error": job.error[:200], "updated_at": now}

    async def all(self) -> list[JobRow]:
        return [self._from(r) for r in await self._table.query(self._pk)]

    async def get(self, calendar_key: str) -> JobRow | None:
        row = await self._table.get(self._pk, encode_key(calendar_key))
        return None if row is None else self._from(row)

    async def plan(self, job: JobRow, *, now: datetime) -> JobRow:
        """Record a chosen row. A row already under way keeps its state and resource: choosing
        the same calendar again (a second press, a reload) must not start a second resource."""
        current = await self.get(job.calendar_key)
        if current is not None and current.state in (CREATING, RESOURCE, LINKED) and current.action == job.action \
                and (job.action == "new" or current.resource_id == job.resource_id):
            return current
        fresh = JobRow(**{**job.__dict__, "state": PENDING, "error": "", "etag": ""})
        if job.action == "new" and current is not None and current.action == "new" and current.resource_id:
            # A row that failed after its resource was made keeps that resource for the next try.
            fresh.resource_id = current.resource_id
        elif job.action == "new" and current is not None and current.state == CREATING:
            fresh.state = CREATING
        if current is None:
            try:
                stored = await self._table.insert(self._entity(fresh, now))
            except Conflict:
                return await self.plan(job, now=now)
        else:
            stored = await self._table.update(self._entity(fresh, now), etag=current.etag)
        fresh.etag = stored.etag
        return fresh

    async def save(self, job: JobRow, *, now: datetime) -> JobRow:
        """Advance a row (ETag-checked: two submits racing on one row → one wins, the other stops)."""
        stored = await self._table.update(self._entity(job, now), etag=job.etag)
        job.etag = stored.etag
        job.updated_at = now
        return job

    async def drop(self, calendar_key: str) -> None:
        await self._table.delete(self._pk, encode_key(calendar_key))
