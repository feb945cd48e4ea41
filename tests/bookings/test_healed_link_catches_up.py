"""A booking refused while its link was broken reaches Outlook once the link heals, whatever healed
it (a sync round, a reconnect, an administrator's renewed consent): ``set_health(OK)`` queues the
replay in its one place."""

from __future__ import annotations

import json

from shared.bookings.service import apply_booking_message
from shared.connect.status import set_health
from shared.domain import LinkHealth
from shared.errors import AuthError
from shared.messages import BOOKING_QUEUE
from shared.repos.links import LinkRepository
from shared.storage.memory import MemoryStorage
from tests.support.booking_world import KEY, World, booking


async def test_a_booking_refused_while_the_calendar_was_forbidden_is_written_when_the_link_heals(
        memory_storage: MemoryStorage) -> None:
    world = World(memory_storage)
    await world.link()
    # The administrator narrowed the app's mailbox scope for a while: Graph answers 403.
    world.graph.fail_next(AuthError("access to the mailbox is denied", code="graph_forbidden"), op="create_event")
    # Only a person can fix a refusal: the link waits for a reconnect (the one health rule).
    assert await world.send(booking(1)) == "needs_reconnect"
    assert world.ours() == []
    repo = LinkRepository(world.services.storage)
    broken = await repo.require(KEY)
    assert broken.health is LinkHealth.NEEDS_RECONNECT

    # The scope is widened again and the link heals (a sync round, a sign-in, a renewed consent).
    await set_health(world.services, broken, LinkHealth.OK)
    messages = [json.loads(raw) for raw in memory_storage.queue(BOOKING_QUEUE).drain()]
    assert {"replay_link": str(KEY)} in messages
    for message in messages:
        await apply_booking_message(world.services, message)
    [event] = world.ours()
    assert event.start == booking(1).start  # type: ignore[attr-defined]
