"""Outlook → timum: the run of a Graph link — its Graph port, the mailbox-id migration, and the
delta rounds (``shared.sync.rounds``) from ``calendarView/delta``, with a fresh round when Graph
expired the delta state (``SyncStateExpired``: 410 / ``syncStateNotFound``)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from shared.connect.status import Remote
from shared.context import Services
from shared.domain import Link, LinkHealth, LinkMode
from shared.errors import (
    SyncError,
    SyncStateExpired,
    TransientError,
)
from shared.ports import GraphCalendarPort
from shared.sync.rounds import (
    DEFAULT_RETRY_AFTER_SECONDS,
    LinkStopped,
    SyncOutcome,
    record_health,
    stop_for,
    sync_link,
    with_retry_after,
)

log = logging.getLogger(__name__)


#: A fresh round that keeps getting 410 means Graph is broken for this calendar; back off.
MAX_ROUNDS_PER_RUN = 2


@contextlib.asynccontextmanager
async def graph_session(services: Services, link: Link) -> AsyncIterator[GraphCalendarPort]:
    """A Graph port for ``link``, closed afterwards: real ports hold an HTTP client (and app-only
    credentials a session) that would otherwise leak for the life of the worker."""
    graph = await services.graph.for_link(link)
    try:
        yield graph
    finally:
        await graph.close()


async def run_outlook_once(services: Services, link: Link, *, full: bool, outcome: SyncOutcome) -> bool:
    """One run of a Graph link; True if it completed normally (a dirty lease may ask for another)."""
    if link.health is LinkHealth.NEEDS_RECONNECT and not full:
        # Without a usable token every run would fail the same way; the reconnect flow sets the
        # health back to OK and asks for a full sync.
        outcome.status = "needs_reconnect"
        return False
    try:
        try:
            graph = await services.graph.for_link(link)
        except SyncError as exc:
            stop = stop_for(exc, Remote.GRAPH)
            if stop is not None:
                raise stop from exc
            raise
        try:
            from shared.outlook.mailbox_ids import ensure_object_id

            link = await ensure_object_id(services, link, graph)  # app-only links made with an address
            link = await _rounds(services, graph, link, full=full, outcome=outcome)
        finally:
            await graph.close()  # see graph_session
    except LinkStopped as stop:
        if stop.health is LinkHealth.NEEDS_RECONNECT and link.mode is LinkMode.APP_ONLY:
            # A withdrawn grant affects the whole tenant: one notice per provider, not per link.
            from shared.org.revoke import tenant_revoked

            if await tenant_revoked(services, link.tenant_id):
                outcome.status = "needs_reconnect"
                return False
        await record_health(services, link, stop.health, stop.reason, outcome)
        outcome.status = "needs_reconnect" if stop.health is LinkHealth.NEEDS_RECONNECT else "error"
        return False
    except TransientError as exc:
        if exc.retry_after is None:
            raise with_retry_after(exc) from exc
        raise
    if link.health is not LinkHealth.OK:
        await record_health(services, link, LinkHealth.OK, "", outcome)
    return True


async def _rounds(services: Services, graph: GraphCalendarPort, link: Link, *, full: bool,
                  outcome: SyncOutcome) -> Link:
    for _ in range(MAX_ROUNDS_PER_RUN):
        try:
            return await sync_link(services, graph, link, full=full, outcome=outcome)
        except SyncStateExpired:
            # Graph forgot our delta state (410): start over; reconciliation removes what we
            # cannot hear about any more.
            log.warning("delta state expired for link %s; full resync", link.key)
            outcome.resynced = True
            full = True
    raise TransientError("Graph expired the delta state of a fresh round", code="sync_state_loop",
                         retry_after=DEFAULT_RETRY_AFTER_SECONDS)
