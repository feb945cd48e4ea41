"""A small world for the Outlook → timum engine (fixtures in ``tests/services/conftest.py``): the
Graph and timum twins, a settable clock, one link, and storage that can be made to fail at a
chosen write (a crash between two steps)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.adapters.graph_memory import MemoryGraph, MemoryGraphProvider
from shared.adapters.timum_memory import MemoryTimum
from shared.config import Settings
from shared.context import Services
from shared.domain import BlockedSlot, Link, LinkKey, LinkMode
from shared.messages import SyncMessage, SyncReason
from shared.repos.links import LinkRepository
from shared.repos.sync_state import EventMapRepository
from shared.storage.base import Entity, StoragePort, chunks, one_partition
from shared.storage.memory import MemoryQueue, MemoryStorage, MemoryTable
from shared.sync.rounds import SyncOutcome
from shared.sync.worker import run_sync
from tests.support.settings import make_settings as support_settings
from tests.support.twins import Clock, twin_services

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
MAILBOX = "anna@praxis.example"
PROVIDER, RESOURCE = "prov-1", "res-1"
KEY = LinkKey(PROVIDER, RESOURCE)


class SimulatedCrash(Exception):
    """The process died here: nothing after this point happened."""


def make_settings(**env: str) -> Settings:
    """The engine tests' settings (``tests.support.settings``), with their own addresses."""
    return support_settings(**{
        "SERVICE_BASE_URL": "https://sync.example.test", "ENTRA_CLIENT_ID": "client",
        "TIMUM_API_BASE_URL": "https://timum.example.test", "TIMUM_WEBHOOK_SECRETS": "w",
        "TIMUM_RETURN_URL_ALLOWLIST": "https://timum.example.test/", "DELTA_PAGE_SIZE": "3",
        # Reruns at once: these tests count rounds, and a wall-clock pause would only slow them.
        "SYNC_ROUND_SPACING_MS": "0",
        **env,
    })


class TripwireTable(MemoryTable):
    """A memory table whose owner can make a chosen write fail before it happens."""

    def __init__(self, name: str, owner: TripwireStorage) -> None:
        super().__init__(name)
        self._owner = owner

    async def insert(self, entity: Mapping[str, Any]) -> Entity:
        self._owner.check(self.name)
        return await super().insert(entity)

    async def upsert(self, entity: Mapping[str, Any]) -> Entity:
        self._owner.check(self.name)
        return await super().upsert(entity)

    async def update(self, entity: Mapping[str, Any], *, etag: str) -> Entity:
        self._owner.check(self.name)
        return await super().update(entity, etag=etag)

    async def delete(self, pk: str, rk: str, *, etag: str | None = None) -> bool:
        self._owner.check(self.name)
        return await super().delete(pk, rk, etag=etag)

    # A transaction is one write: the crash comes before a chunk, never inside one.
    async def upsert_many(self, entities: Sequence[Mapping[str, Any]]) -> None:
        for chunk in chunks(one_partition(entities)):
            self._owner.check(self.name)
            await super().upsert_many(chunk)

    async def delete_many(self, pk: str, rks: Sequence[str]) -> None:
        for chunk in chunks(list(dict.fromkeys(rks))):
            self._owner.check(self.name)
            await super().delete_many(pk, chunk)


class TripwireStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self._armed: dict[str, int] = {}
        self._lasting: set[str] = set()

    def table(self, name: str) -> MemoryTable:
        if name not in self.tables:
            self.tables[name] = TripwireTable(name, self)
        return self.tables[name]

    def arm(self, table: str, *, after: int = 0, lasting: bool = False) -> None:
        """The write to ``table`` after ``after`` successful ones crashes; ``lasting``: and every
        write to it after that too, until ``disarm`` (storage gone for the rest of a delivery,
        so not even its clean-up gets through)."""
        self._armed[table] = after
        if lasting:
            self._lasting.add(table)
        else:
            self._lasting.discard(table)

    def disarm(self) -> None:
        self._armed.clear()
        self._lasting.clear()

    def check(self, table: str) -> None:
        left = self._armed.get(table)
        if left is None:
            return
        if left <= 0:
            if table not in self._lasting:
                del self._armed[table]
            raise SimulatedCrash(f"crash before a write to {table}")
        self._armed[table] = left - 1


class CrashingTimum(MemoryTimum):
    """timum that performs a write and then 'crashes' the caller before it hears the answer."""

    def __init__(self) -> None:
        super().__init__()
        self.crash_after: int | None = None

    def _maybe_crash(self) -> None:
        if self.crash_after is None:
            return
        if self.crash_after <= 0:
            self.crash_after = None
            raise SimulatedCrash("crash after a timum write")
        self.crash_after -= 1

    async def put_blocked_slot(self, provider_id: str, resource_id: str, slot: BlockedSlot) -> None:
        await super().put_blocked_slot(provider_id, resource_id, slot)
        self._maybe_crash()

    async def delete_blocked_slot(self, provider_id: str, resource_id: str, external_id: str) -> None:
        await super().delete_blocked_slot(provider_id, resource_id, external_id)
        self._maybe_crash()

    def clear_failures(self) -> None:
        """Drop injected failures that no call consumed."""
        self._failures.clear()
        self.crash_after = None


@dataclass
class World:
    services: Services
    storage: StoragePort
    graph: MemoryGraph
    provider: MemoryGraphProvider
    timum: CrashingTimum
    clock: Clock
    calendar: str

    async def sync(self, *, full: bool = False, worker: str = "worker-1",
                   reason: SyncReason = SyncReason.NOTIFICATION) -> SyncOutcome:
        return await run_sync(self.services, SyncMessage(str(KEY), reason, full=full), worker_id=worker)

    def slots(self) -> dict[str, BlockedSlot]:
        return {s.external_id: s for s in self.timum.slots.get((PROVIDER, RESOURCE), {}).values()
                if s.source == "outlook"}

    async def link(self) -> Link:
        return await LinkRepository(self.storage).require(KEY)

    async def status_rows(self) -> dict[str, Any]:
        return dict(await EventMapRepository(self.storage).load(KEY))

    def add(self, **fields: Any) -> str:
        return self.graph.put_event(MAILBOX, self.calendar, **fields)


async def make_world(storage: StoragePort, *, seed: int = 7, page_size: int = 3, **env: str) -> World:
    clock = Clock()
    graph = MemoryGraph(seed=seed, clock=clock)
    graph.add_mailbox(MAILBOX, display_name="Anna Berg", time_zone="Europe/Berlin")
    graph.sign_in(MAILBOX)
    calendar = graph.add_calendar(MAILBOX, "Behandlungsraum 1")
    timum = CrashingTimum()
    timum.add_resource(PROVIDER, "Behandlungsraum 1", resource_id=RESOURCE)
    provider = MemoryGraphProvider(graph)
    services = twin_services(settings=make_settings(DELTA_PAGE_SIZE=str(page_size), **env), storage=storage,
                             graph=graph, provider=provider, timum=timum, clock=clock)
    await LinkRepository(storage).save(Link(
        provider_id=PROVIDER, resource_id=RESOURCE, mode=LinkMode.DELEGATED, tenant_id="tid", mailbox_id=MAILBOX,
        calendar_id=calendar, calendar_name="Behandlungsraum 1", calendar_owner=MAILBOX, account_id="acc-1",
        time_zone="Europe/Berlin", created_at=NOW))
    return World(services, storage, graph, provider, timum, clock, calendar)


def queued(world: World, queue: str) -> list[dict[str, object]]:
    """The messages waiting on ``queue`` (taken off it), decoded."""
    q = world.storage.queue(queue)
    assert isinstance(q, MemoryQueue)
    return [json.loads(m) for m in q.drain()]
