"""A Graph twin whose event writes can 'crash' the caller after Graph performed them."""

from __future__ import annotations

from shared.adapters.graph_memory import MemoryGraph
from shared.domain import EventDraft
from tests.support.outlook_world import SimulatedCrash


class CrashingGraph(MemoryGraph):
    """Graph that performs an event write and then 'crashes' the caller before it hears the
    answer: the worker died with the write done and nothing of it recorded."""

    crash_next_write = False

    def _after_write(self) -> None:
        if self.crash_next_write:
            self.crash_next_write = False
            raise SimulatedCrash("crash after a Graph write")

    async def create_event(self, mailbox_id: str, calendar_id: str, draft: EventDraft, *,
                           transaction_id: str) -> str:
        event_id = await super().create_event(mailbox_id, calendar_id, draft, transaction_id=transaction_id)
        self._after_write()
        return event_id

    async def update_event(self, mailbox_id: str, event_id: str, draft: EventDraft) -> None:
        await super().update_event(mailbox_id, event_id, draft)
        self._after_write()

    async def delete_event(self, mailbox_id: str, event_id: str) -> None:
        await super().delete_event(mailbox_id, event_id)
        self._after_write()
