"""The two helpers every read-change-save and every coalesced run go through:
``LinkRepository.modify`` (ETag retry) and ``LeaseRepository.run_coalesced``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.domain import Link, LinkKey, LinkMode
from shared.errors import Conflict
from shared.repos.links import MODIFY_ATTEMPTS, LeaseRepository, LinkRepository
from shared.storage import StoragePort

KEY = LinkKey("prov-1", "res-1")
NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def _link() -> Link:
    return Link(provider_id=KEY.provider_id, resource_id=KEY.resource_id, mode=LinkMode.DELEGATED, tenant_id="tid",
                mailbox_id="anna@example.org", calendar_id="cal-1", calendar_name="Raum 1",
                calendar_owner="anna@example.org", account_id="acc.1")


async def test_modify_keeps_a_concurrent_write(storage: StoragePort) -> None:
    repo = LinkRepository(storage)
    stale = await repo.save(_link())
    other = await repo.require(KEY)
    other.calendar_name = "Renamed meanwhile"
    await repo.save(other)

    def note(link: Link) -> bool:
        link.last_error = "gave_up: x"
        return True

    saved = await repo.modify(KEY, note, current=stale)  # starts from a stale read: one lost race
    assert saved is not None
    stored = await repo.require(KEY)
    assert (stored.calendar_name, stored.last_error) == ("Renamed meanwhile", "gave_up: x")


async def test_modify_saves_nothing_the_link_no_longer_wants(storage: StoragePort) -> None:
    repo = LinkRepository(storage)
    await repo.save(_link())
    before = await repo.require(KEY)
    found = await repo.modify(KEY, lambda link: False)
    assert found == before and (await repo.require(KEY)).etag == before.etag


async def test_modify_of_no_link_is_none_and_an_async_change_is_awaited(storage: StoragePort) -> None:
    repo = LinkRepository(storage)
    calls: list[str] = []

    async def change(link: Link) -> bool:
        calls.append(link.calendar_name)
        link.calendar_name = "async"
        return True

    assert await repo.modify(KEY, change) is None and calls == []
    await repo.save(_link())
    saved = await repo.modify(KEY, change)
    assert saved is not None and saved.calendar_name == "async" and calls == ["Raum 1"]


async def test_modify_gives_up_after_its_attempts(storage: StoragePort) -> None:
    repo = LinkRepository(storage)
    await repo.save(_link())
    attempts = 0

    async def racing(link: Link) -> bool:
        nonlocal attempts
        attempts += 1
        rival = await repo.require(KEY)
        rival.calendar_name = f"rival {attempts}"
        await repo.save(rival)  # always one write ahead
        return True

    with pytest.raises(Conflict):
        await repo.modify(KEY, racing)
    assert attempts == MODIFY_ATTEMPTS


async def test_run_coalesced_reruns_while_dirty_then_lets_go(storage: StoragePort) -> None:
    leases = LeaseRepository(storage)
    runs = 0

    async def run() -> bool:
        nonlocal runs
        runs += 1
        if runs == 1:  # a message arrives during the first run
            assert not await leases.run_coalesced(KEY, "other", _never, clock=lambda: NOW, max_runs=5,
                                                  on_cap=_never_cap)
        return True

    assert await leases.run_coalesced(KEY, "me", run, clock=lambda: NOW, max_runs=5, on_cap=_never_cap)
    assert runs == 2
    assert await leases.acquire(KEY, "third", now=NOW)  # let go: free for the next


async def test_run_coalesced_hands_on_at_the_cap_and_lets_go_on_failure(storage: StoragePort) -> None:
    leases = LeaseRepository(storage)
    handed: list[int] = []

    async def always_dirty() -> bool:
        await leases.acquire(KEY, "knocker", now=NOW)
        return True

    async def hand_on() -> None:
        handed.append(1)

    assert await leases.run_coalesced(KEY, "me", always_dirty, clock=lambda: NOW, max_runs=3, on_cap=hand_on)
    assert handed == [1] and await leases.acquire(KEY, "next", now=NOW)
    await leases.let_go(KEY, "next", now=NOW)

    async def failing() -> bool:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await leases.run_coalesced(KEY, "me", failing, clock=lambda: NOW, max_runs=3, on_cap=hand_on)
    assert await leases.acquire(KEY, "after-failure", now=NOW)


async def _never() -> bool:
    raise AssertionError("a caller that met a held lease must not run")


async def _never_cap() -> None:
    raise AssertionError("no cap reached")
