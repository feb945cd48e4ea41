"""The timum side of a page's actions: its slot upserts and deletes as one
``TimumPort.write_blocked_slots`` call (batches of up to 100 where timum offers them) instead of one
request per slot. What the engine records afterwards is unchanged: the status row of each action
that succeeded, after the call, so the pending-row protocol sees the same order of effects.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.core.outlook_plan import Action, DeleteBlock, UpsertBlock
from shared.ports import SlotWrite, TimumPort


async def perform_slot_actions(timum: TimumPort, provider_id: str, resource_id: str,
                               actions: Sequence[Action]) -> list[BaseException | None]:
    """One result per action, None for success (and for actions that do not touch timum). A call
    that fails as a whole fails each of its writes; cancellation propagates."""
    failures: list[BaseException | None] = [None] * len(actions)
    writes: list[SlotWrite] = []
    where: list[int] = []
    for n, action in enumerate(actions):
        if isinstance(action, UpsertBlock):
            writes.append(action.slot)
            where.append(n)
        elif isinstance(action, DeleteBlock):
            writes.append(action.external_id)
            where.append(n)
    if not writes:
        return failures
    try:
        results: Sequence[BaseException | None] = await timum.write_blocked_slots(provider_id, resource_id, writes)
    except Exception as exc:  # e.g. a bad resource id: every write of the call failed with it
        results = [exc] * len(writes)
    for n, result in zip(where, results, strict=True):
        failures[n] = result
    return failures
