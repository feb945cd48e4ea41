"""The queue-triggered sync worker as the host runs it: several messages of one process at once."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import azure.functions as func
import pytest

from shared.domain import slot_external_id
from shared.messages import SyncMessage, SyncReason
from shared.sync import worker
from shared.sync.rounds import SyncOutcome
from tests.support.outlook_world import KEY, World

H = timedelta(hours=1)
T = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


async def test_two_invocations_in_one_process_never_run_one_link_at_once(world: World,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import shared.wiring as wiring
    from shared.jobs import sync_bp

    monkeypatch.setattr(wiring, "get_services", lambda: world.services)
    ids = [world.add(start=T + i * H, end=T + (i + 1) * H) for i in range(3)]

    # A slow timum keeps the first invocation inside its delta round while the second one starts.
    real_put = world.timum.put_blocked_slot

    async def slow_put(*args: object, **kwargs: object) -> None:
        await asyncio.sleep(0.02)
        await real_put(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(world.timum, "put_blocked_slot", slow_put)
    outcomes: list[SyncOutcome] = []
    real_run = worker.run_sync

    async def recording(*args: object, **kwargs: object) -> SyncOutcome:
        outcome = await real_run(*args, **kwargs)  # type: ignore[arg-type]
        outcomes.append(outcome)
        return outcome

    monkeypatch.setattr(worker, "run_sync", recording)
    body = json.dumps(SyncMessage(str(KEY), SyncReason.NOTIFICATION).to_json()).encode()
    await asyncio.gather(*(sync_bp.sync_worker(func.QueueMessage(body=body)) for _ in range(2)))

    assert sorted(o.status for o in outcomes) == ["coalesced", "ok"]
    assert set(world.slots()) == {slot_external_id(KEY, i) for i in ids}


def test_each_invocation_gets_its_own_lease_owner() -> None:
    from shared.jobs.sync_bp import invocation_owner

    assert len({invocation_owner() for _ in range(100)}) == 100
    # A message's retries share its owner, and two messages never share one.
    assert invocation_owner("m-1") == invocation_owner("m-1") != invocation_owner("m-2")


async def test_the_retry_of_a_message_takes_back_the_lease_its_failed_run_left(world: World,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import shared.wiring as wiring
    from shared.jobs import sync_bp
    from shared.repos.links import LeaseRepository

    monkeypatch.setattr(wiring, "get_services", lambda: world.services)
    ids = [world.add(start=T + i * H, end=T + (i + 1) * H) for i in range(2)]
    # The failed run of message m-1 could not let go of the link's lease (storage failed on it).
    leases = LeaseRepository(world.storage)
    assert await leases.acquire(KEY, sync_bp.invocation_owner("m-1"), now=world.clock())
    body = json.dumps(SyncMessage(str(KEY), SyncReason.NOTIFICATION).to_json()).encode()

    await sync_bp.sync_worker(func.QueueMessage(id="m-2", body=body))      # another message gives way
    assert world.slots() == {}
    await sync_bp.sync_worker(func.QueueMessage(id="m-1", body=body))      # the host's retry of m-1
    assert set(world.slots()) == {slot_external_id(KEY, i) for i in ids}
    assert await leases.acquire(KEY, "next", now=world.clock())           # and it let go


async def test_a_burst_waits_out_the_spacing_and_shares_one_rerun(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.storage.memory import MemoryStorage
    from shared.sync.worker import run_sync
    from tests.support.outlook_world import make_world

    world = await make_world(MemoryStorage(), SYNC_ROUND_SPACING_MS="300")
    world.add(start=T, end=T + H)
    loop = asyncio.get_running_loop()
    real_put = world.timum.put_blocked_slot

    async def slow_put(*args: object, **kwargs: object) -> None:
        await asyncio.sleep(0.05)
        await real_put(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(world.timum, "put_blocked_slot", slow_put)
    message = SyncMessage(str(KEY), SyncReason.NOTIFICATION)

    async def later_changes() -> list[SyncOutcome]:
        # Notifications keep arriving while the first round runs and while the holder waits.
        out = []
        for n in range(4):
            await asyncio.sleep(0.02 if n == 0 else 0.06)
            world.add(start=T + (n + 1) * H, end=T + (n + 2) * H)
            out.append(await run_sync(world.services, message, worker_id=f"w{n}"))
        return out

    began = loop.time()
    holder, others = await asyncio.gather(run_sync(world.services, message, worker_id="holder"), later_changes())
    took = loop.time() - began
    assert [o.status for o in others] == ["coalesced"] * 4
    # One rerun covered all four changes, and it waited for the spacing first.
    assert holder.runs == 2
    assert took >= 0.3
    assert len(world.slots()) == 5
