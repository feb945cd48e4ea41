"""Outlook → timum workers: delta runs, link set-up/teardown, subscription upkeep, polling; the
link-admin queue also carries the organisation mapping page's bulk link (``OrgLinkMessage``)."""

from __future__ import annotations

import logging
import os
import uuid
from typing import TYPE_CHECKING

import azure.functions as func

from shared.jobs.common import QueueJob, run_message, run_poison
from shared.messages import (
    LINK_ADMIN_QUEUE,
    SYNC_QUEUE,
    AdminMessage,
    OrgLinkMessage,
    SyncMessage,
    parse_admin_message,
)

if TYPE_CHECKING:
    from shared.context import Services

bp = func.Blueprint()
log = logging.getLogger(__name__)
_WORKER_ID = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def invocation_owner(message_id: str = "") -> str:
    """The link-lease owner for one message. Per message, not per process: the host runs up to
    ``batchSize`` messages of one process at once, and the lease lets an owner back in, so a
    per-process owner would admit side-by-side delta rounds of one link (they write pending rows
    under one round tag, and one round's settling deletes slots the other just confirmed). The
    message's id, the same on each retry of it: an invocation that failed holding the lease
    (and could not let go) is retried within seconds, and under a new owner that retry would
    give way to the lease for minutes and complete, leaving the changes it announced for the
    next notification. Without an id, the invocation is its own owner."""
    if message_id:
        return f"message-{message_id}"
    return f"{_WORKER_ID}-{uuid.uuid4().hex[:8]}"


async def _run_sync(services: Services, message: SyncMessage, msg: func.QueueMessage) -> None:
    from shared.messages import SyncReason
    from shared.observability.metrics import metrics
    from shared.sync.worker import run_sync

    outcome = await run_sync(services, message, worker_id=invocation_owner(msg.id or ""))
    log.info("sync %s: runs=%d pages=%d upserts=%d deletes=%d graph=%d", outcome.status, outcome.runs,
             outcome.pages, outcome.upserts, outcome.deletes, outcome.graph_requests)
    if message.reason is SyncReason.NOTIFICATION and message.observed_at and outcome.upserts + outcome.deletes > 0:
        lag_ms = (services.clock().timestamp() - message.observed_at) * 1000
        metrics.record("notification_to_block_lag_ms", lag_ms)


async def _run_admin(services: Services, message: AdminMessage | OrgLinkMessage, msg: func.QueueMessage) -> None:
    if isinstance(message, OrgLinkMessage):
        from shared.org.service import run_queued_jobs

        await run_queued_jobs(services, message.provider, message.tenant)
        return
    from shared.services.subscriptions import handle_admin_message

    await handle_admin_message(services, message)


async def _admin_gave_up(services: Services, message: AdminMessage | OrgLinkMessage) -> bool:
    """An organisation's bulk link gives up on its rows; a link's message takes the usual way."""
    if not isinstance(message, OrgLinkMessage):
        return False
    from shared.org.service import give_up_jobs

    await give_up_jobs(services, message.provider, message.tenant)
    return True


SYNC_JOB: QueueJob[SyncMessage] = QueueJob(SYNC_QUEUE, SyncMessage.parse, lambda m: m.key, _run_sync)
ADMIN_JOB: QueueJob[AdminMessage | OrgLinkMessage] = QueueJob(
    LINK_ADMIN_QUEUE, parse_admin_message, lambda m: m.key, _run_admin, poisoned=_admin_gave_up)


@bp.queue_trigger(arg_name="msg", queue_name=SYNC_QUEUE, connection="AzureWebJobsStorage")
async def sync_worker(msg: func.QueueMessage) -> None:
    await run_message(SYNC_JOB, msg)


@bp.queue_trigger(arg_name="msg", queue_name=LINK_ADMIN_QUEUE, connection="AzureWebJobsStorage")
async def link_admin_worker(msg: func.QueueMessage) -> None:
    await run_message(ADMIN_JOB, msg)


@bp.queue_trigger(arg_name="msg", queue_name=f"{SYNC_QUEUE}-poison", connection="AzureWebJobsStorage")
async def sync_poison(msg: func.QueueMessage) -> None:
    await run_poison(SYNC_JOB, msg)


@bp.queue_trigger(arg_name="msg", queue_name=f"{LINK_ADMIN_QUEUE}-poison", connection="AzureWebJobsStorage")
async def link_admin_poison(msg: func.QueueMessage) -> None:
    await run_poison(ADMIN_JOB, msg)


@bp.timer_trigger(schedule="0 */30 * * * *", arg_name="timer", run_on_startup=False)
async def renew_subscriptions(timer: func.TimerRequest) -> None:
    """Renew subscriptions expiring within 24 h (they live ≤ 4,230 min, so each renews ~daily)."""
    from shared.observability.metrics import metrics
    from shared.services.subscriptions import renew_expiring
    from shared.wiring import get_services

    report = await renew_expiring(get_services())
    if report.failed:
        metrics.increment("subscription_renewal_failures", report.failed, reason="renewal")
    log.info("subscriptions: renewed=%d recreated=%d deferred=%d failed=%d orphans=%d", report.renewed,
             report.recreated, report.deferred, report.failed, report.orphans)


@bp.timer_trigger(schedule="0 * * * * *", arg_name="timer", run_on_startup=False)
async def poll_links(timer: func.TimerRequest) -> None:
    """Links without a subscription (polling mode) get a delta run every POLLING_INTERVAL_MINUTES;
    once a day every link gets one, which slides its window forward."""
    from shared.jobs.schedule import enqueue_due_syncs
    from shared.wiring import get_services

    await enqueue_due_syncs(get_services())
