"""Block-only calendars: a second calendar of a resource, synced by the same engine into the
resource's blocked slots, never written to, reconciled and torn down apart from the resource's
own calendar."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.adapters.graph_memory import MemoryGraph, MemoryGraphProvider
from shared.adapters.timum_memory import MemoryTimum
from shared.context import Services
from shared.domain import (
    BLOCK_SLOT_PREFIX,
    MAIN_SLOT_PREFIX,
    Booking,
    BookingStatus,
    Link,
    LinkKey,
    LinkMode,
    SyncMode,
    block_key,
    slot_external_id,
    timum_resource,
)
from shared.messages import SyncMessage, SyncReason
from shared.repos.links import LinkRepository
from shared.services.subscriptions import teardown
from shared.storage.memory import MemoryStorage
from shared.sync.worker import run_sync
from tests.support.outlook_world import make_settings

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
T = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
MAIN = LinkKey("prov-1", "res-1")


class World:
    def __init__(self) -> None:
        self.storage = MemoryStorage()
        self.timum = MemoryTimum()
        self.timum.add_resource("prov-1", "Anna", resource_id="res-1")
        self.graph = MemoryGraph(clock=lambda: NOW, app_only=True)
        self.graph.add_mailbox("anna@praxis.example", display_name="Anna")
        self.graph.add_mailbox("privat@example.org", display_name="Anna privat")
        self.main_cal = self.graph.add_calendar("anna@praxis.example", "Praxis")
        self.private_cal = self.graph.add_calendar("privat@example.org", "Privat")
        self.services = Services(settings=make_settings(), storage=self.storage, timum=self.timum,
                                 graph=MemoryGraphProvider(self.graph), clock=lambda: NOW)
        self.block = block_key("prov-1", "res-1", "tid-1", "privat@example.org", self.private_cal)

    async def link(self, key: LinkKey, mailbox: str, calendar: str) -> Link:
        return await LinkRepository(self.storage).save(Link(
            provider_id=key.provider_id, resource_id=key.resource_id, mode=LinkMode.APP_ONLY, tenant_id="tid-1",
            mailbox_id=mailbox, calendar_id=calendar, calendar_name=calendar, calendar_owner=mailbox,
            sync_mode=SyncMode.POLLING, block_of=timum_resource(key.resource_id) if key != MAIN else ""))

    async def sync(self, key: LinkKey, *, full: bool = False) -> None:
        out = await run_sync(self.services, SyncMessage(str(key), SyncReason.RESYNC if full else SyncReason.POLL,
                                                        full=full), worker_id="w")
        assert out.status == "ok", out

    def slots(self) -> dict[str, tuple[datetime, datetime]]:
        return {s.external_id: (s.start, s.end) for s in self.timum.slots.get(("prov-1", "res-1"), {}).values()}


def test_keys() -> None:
    key = block_key("p", "res-1", "tid", "Privat@Example.org", "cal-1")
    assert key == block_key("p", "res-1", "tid", "privat@example.org", "cal-1"), "mailbox case does not matter"
    assert timum_resource(key.resource_id) == "res-1" and timum_resource("res-1") == "res-1"
    assert slot_external_id(key, "e").startswith(BLOCK_SLOT_PREFIX)
    assert slot_external_id(LinkKey("p", "res-1"), "e").startswith(MAIN_SLOT_PREFIX)


async def test_both_calendars_block_the_resource_and_keep_out_of_each_others_way() -> None:
    w = World()
    await w.link(MAIN, "anna@praxis.example", w.main_cal)
    block = await w.link(w.block, "privat@example.org", w.private_cal)
    assert block.block_only and block.timum_resource_id == "res-1"
    work = w.graph.put_event("anna@praxis.example", w.main_cal, subject="Team", start=T, end=T + H)
    own = w.graph.put_event("privat@example.org", w.private_cal, subject="Zweitjob", start=T + 2 * H, end=T + 3 * H)
    await w.sync(MAIN, full=True)
    await w.sync(w.block, full=True)
    assert w.slots() == {slot_external_id(MAIN, work): (T, T + H),
                         slot_external_id(w.block, own): (T + 2 * H, T + 3 * H)}

    # A full round of either reconciles only its own slots.
    await w.sync(MAIN, full=True)
    await w.sync(w.block, full=True)
    assert len(w.slots()) == 2
    w.graph.user_delete(own)
    await w.sync(w.block)
    assert set(w.slots()) == {slot_external_id(MAIN, work)}

    # Tearing the block-only calendar down leaves the resource's own slots.
    again = w.graph.put_event("privat@example.org", w.private_cal, subject="Arzt", start=T + 4 * H, end=T + 5 * H)
    await w.sync(w.block)
    assert slot_external_id(w.block, again) in w.slots()
    await LinkRepository(w.storage).delete(await LinkRepository(w.storage).require(w.block))
    await teardown(w.services, w.block)
    assert set(w.slots()) == {slot_external_id(MAIN, work)}


async def test_a_block_only_calendar_is_never_written_to() -> None:
    from shared.bookings.service import replay_link_bookings
    from shared.bookings.store import BookingRepository

    w = World()
    await w.link(w.block, "privat@example.org", w.private_cal)
    await BookingRepository(w.storage).upsert_if_newer(Booking(id="bk-1", provider_id="prov-1", resource_id="res-1",
                                                          version=1, start=T, end=T + H,
                                                          status=BookingStatus.CONFIRMED))
    outcome = await replay_link_bookings(w.services, w.block)
    assert outcome.result in ("no_link", "replayed:0")
    assert w.graph.calendar_view("privat@example.org", w.private_cal, T - H, T + 2 * H) == []
