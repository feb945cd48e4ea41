"""One booking, several deliveries at once: the per-booking lease lets one invocation write to
Outlook while the others only mark it dirty, and the holder then writes the newest stored version.
Without it two invocations both find no event and both create one."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from shared.bookings.service import _lease_key
from shared.repos.links import LeaseRepository
from tests.support.booking_world import KEY, START, World, booking


def slow_creates(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Graph takes a moment to create an event, long enough for a second delivery to start."""
    real = world.graph.create_event

    async def slow(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.05)
        return await real(*args, **kwargs)

    monkeypatch.setattr(world.graph, "create_event", slow)


async def test_concurrent_deliveries_of_one_booking_make_one_event_at_the_newest_time(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    slow_creates(world, monkeypatch)
    results = await asyncio.gather(world.send(booking(1)), world.send(booking(2, minutes=45)))
    # One delivery gave way; the holder wrote (what its last run reports depends on whether
    # version 2 was stored before or after its first read of the store).
    assert results.count("coalesced") == 1
    [event] = world.ours()
    # The holder saw the dirty mark and applied version 2, stored while it was creating version 1.
    assert event.start == START + timedelta(minutes=45)  # type: ignore[attr-defined]
    # The lease is free again: the next delivery is not held off.
    assert await LeaseRepository(world.services.storage).acquire(_lease_key(KEY.provider_id, "bk-1"), "next")


async def test_the_lease_key_never_meets_a_link_key() -> None:
    key = _lease_key("prov-1", "res-1")
    assert key.provider_id == "prov-1" and key.resource_id != "res-1"
    assert key.resource_id.startswith("booking|")
