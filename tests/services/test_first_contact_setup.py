"""Link set-up: a polling link (delegated access to a shared calendar) gets its first sync at
once — queued before the subscription attempt Graph refuses, never left to the polling timer."""

from __future__ import annotations

from dataclasses import replace

import pytest

from shared.domain import SyncMode
from shared.errors import TransientError
from shared.messages import SYNC_QUEUE, AdminAction, AdminMessage, SyncMessage, SyncReason
from shared.repos.links import LinkRepository
from shared.services.subscriptions import handle_admin_message
from tests.support.outlook_world import KEY, World, queued


async def _polling(world: World) -> None:
    repo = LinkRepository(world.storage)
    await repo.save(replace(await world.link(), sync_mode=SyncMode.POLLING))


async def test_polling_link_is_synced_even_when_the_subscription_attempt_fails(world: World) -> None:
    await _polling(world)
    world.graph.fail_next(TransientError("Graph hiccup"), op="create_subscription")
    with pytest.raises(TransientError):  # the host retries the set-up; the first sync is already queued
        await handle_admin_message(world.services, AdminMessage(str(KEY), AdminAction.SETUP))
    [message] = [SyncMessage.parse(m) for m in queued(world, SYNC_QUEUE)]
    assert message.reason is SyncReason.SETUP and message.full


async def test_polling_link_set_up_queues_one_full_sync(world: World) -> None:
    await _polling(world)
    outcome = await handle_admin_message(world.services, AdminMessage(str(KEY), AdminAction.SETUP))
    assert outcome.result in ("polling", "push")
    messages = [SyncMessage.parse(m) for m in queued(world, SYNC_QUEUE)]
    assert [(m.reason, m.full) for m in messages] == [(SyncReason.SETUP, True)]
