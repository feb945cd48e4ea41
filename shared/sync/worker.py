"""The sync run of one link, as the ``link-sync`` queue worker starts it.

One run per link at a time (``LeaseRepository.run_coalesced``): a message that finds the lease
held marks it dirty and returns, and the holder runs once more before letting go, so a burst of
notifications costs a few delta rounds, not one each. Each run loads the link and runs it the
way its mode asks — Graph (``shared.outlook.run``) or a published calendar
(``shared.ics.run``); both share the rounds of ``shared.sync.rounds``.
"""

from __future__ import annotations

import asyncio

from shared.context import Services
from shared.domain import LinkKey, LinkMode
from shared.ics.run import run_ics_once
from shared.messages import SYNC_QUEUE, SyncMessage
from shared.outlook.run import run_outlook_once
from shared.repos.links import LeaseRepository, LinkRepository
from shared.sync.rounds import SyncOutcome

#: Delay before a full-sync request that met a held lease is tried again.
FULL_REQUEUE_DELAY_SECONDS = 30.0
#: Reruns in one invocation when notifications keep arriving; the rest waits for the next message.
MAX_RUNS_PER_INVOCATION = 5


async def run_sync(services: Services, message: SyncMessage, *, worker_id: str) -> SyncOutcome:
    """Bring the link's blocked slots in line with its calendar (Outlook, or a published one).
    Idempotent; safe to replay."""
    key = message.key
    outcome = SyncOutcome(link=str(key))
    leases = LeaseRepository(services.storage)
    full = message.full
    spacing = services.settings.sync_round_spacing_ms / 1000
    loop = asyncio.get_running_loop()
    round_began = loop.time()

    async def run() -> bool:
        nonlocal full, round_began
        outcome.runs += 1
        round_began = loop.time()
        go_on = await _run_once(services, key, full=full, outcome=outcome)
        full = False  # a rerun only needs what changed meanwhile
        return go_on

    async def space_out() -> None:
        if spacing > 0 and await leases.is_dirty(key, worker_id):
            # Changes keep coming (a burst: a series edited, events dragged, an import): wait
            # out the spacing before the rerun, still holding the lease, so the notifications
            # of the next seconds share one round instead of costing one each. A lone change
            # never waits: without a dirty mark the lease goes at once.
            await asyncio.sleep(max(0.0, spacing - (loop.time() - round_began)))

    async def hand_on() -> None:
        # Still dirty after the cap: hand the rest to a fresh message.
        await services.storage.queue(SYNC_QUEUE).send(SyncMessage(str(key), message.reason).to_json())

    if await leases.run_coalesced(key, worker_id, run, clock=services.clock, max_runs=MAX_RUNS_PER_INVOCATION,
                                  on_cap=hand_on, before_rerun=space_out):
        return outcome
    if message.full:
        # The holder reruns incrementally when it sees the dirty mark; a full request would be
        # lost there, so it goes back to the queue to run after the holder.
        await services.storage.queue(SYNC_QUEUE).send(message.to_json(), delay_seconds=FULL_REQUEUE_DELAY_SECONDS)
        outcome.status = "requeued"
    else:
        outcome.status = "coalesced"
    return outcome


async def _run_once(services: Services, key: LinkKey, *, full: bool, outcome: SyncOutcome) -> bool:
    """One run; True if it completed normally (a dirty lease may ask for another)."""
    link = await LinkRepository(services.storage).get(key)
    if link is None:
        outcome.status = "no_link"
        return False
    if link.mode is LinkMode.ICS:
        return await run_ics_once(services, link, outcome=outcome)
    return await run_outlook_once(services, link, full=full, outcome=outcome)
