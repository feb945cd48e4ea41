"""Outlook → timum workers: delta runs, link set-up/teardown, subscription upkeep, polling."""

from __future__ import annotations

import logging
import os
import uuid

import azure.functions as func

from shared.messages import LINK_ADMIN_QUEUE, SYNC_QUEUE

bp = func.Blueprint()
log = logging.getLogger(__name__)
_WORKER_ID = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def invocation_owner() -> str:
    """The link-lease owner for one invocation. Per invocation, not per process: the host runs up
    to ``batchSize`` messages of one process at once, and the lease lets an owner back in, so a
    per-process owner would admit side-by-side delta rounds of one link (they write pending rows
    under one round tag, and one round's settling deletes slots the other just confirmed)."""
    return f"{_WORKER_ID}-{uuid.uuid4().hex[:8]}"


async def _handle(msg: func.QueueMessage, queue: str, run: str) -> None:
    from shared.errors import BadRequest, Throttled
    from shared.jobs.common import message_json, requeue_delay
    from shared.wiring import get_services

    try:
        data = message_json(msg)
    except BadRequest:
        log.error("dropped a malformed message from %s", queue)
        return
    from shared.observability import bind, metrics

    services = get_services()
    try:
        with bind(link=str(data.get("link", "")), queue=queue, dequeue=msg.dequeue_count or 1):
            if run == "sync":
                from shared.messages import SyncMessage, SyncReason
                from shared.services.outlook_sync import run_sync

                message = SyncMessage.parse(data)
                outcome = await run_sync(services, message, worker_id=invocation_owner())
                log.info("sync %s: runs=%d pages=%d upserts=%d deletes=%d graph=%d", outcome.status, outcome.runs,
                         outcome.pages, outcome.upserts, outcome.deletes, outcome.graph_requests)
                if (message.reason is SyncReason.NOTIFICATION and message.observed_at
                        and outcome.upserts + outcome.deletes > 0):
                    lag_ms = (services.clock().timestamp() - message.observed_at) * 1000
                    metrics.record("notification_to_block_lag_ms", lag_ms)
            else:
                from shared.messages import AdminMessage
                from shared.services.subscriptions import handle_admin_message

                await handle_admin_message(services, AdminMessage.parse(data))
    except BadRequest as exc:
        log.error("dropped a message from %s: %s", queue, exc.message)
    except Throttled as exc:
        delay = requeue_delay(exc.retry_after, msg.dequeue_count or 1)
        await services.storage.queue(queue).send(data, delay_seconds=delay)
        log.warning("throttled; message re-queued on %s in %.1f s", queue, delay)


@bp.queue_trigger(arg_name="msg", queue_name=SYNC_QUEUE, connection="AzureWebJobsStorage")
async def sync_worker(msg: func.QueueMessage) -> None:
    await _handle(msg, SYNC_QUEUE, "sync")


@bp.queue_trigger(arg_name="msg", queue_name=LINK_ADMIN_QUEUE, connection="AzureWebJobsStorage")
async def link_admin_worker(msg: func.QueueMessage) -> None:
    await _handle(msg, LINK_ADMIN_QUEUE, "admin")


async def _poisoned(msg: func.QueueMessage, queue: str) -> None:
    from shared.errors import BadRequest
    from shared.jobs.common import message_json, record_link_error

    try:
        data = message_json(msg)
    except BadRequest:
        log.error("unreadable poison message on %s", queue)
        return
    from shared.observability import metrics

    metrics.increment("poison_messages", queue=queue)
    link = str(data.get("link", ""))
    if "|" in link:
        await record_link_error(link, "gave_up", f"{queue}: failed {msg.dequeue_count or 5} times; a resync retries")
    log.error("poison message on %s for link %s", queue, link or "?")


@bp.queue_trigger(arg_name="msg", queue_name=f"{SYNC_QUEUE}-poison", connection="AzureWebJobsStorage")
async def sync_poison(msg: func.QueueMessage) -> None:
    await _poisoned(msg, SYNC_QUEUE)


@bp.queue_trigger(arg_name="msg", queue_name=f"{LINK_ADMIN_QUEUE}-poison", connection="AzureWebJobsStorage")
async def link_admin_poison(msg: func.QueueMessage) -> None:
    await _poisoned(msg, LINK_ADMIN_QUEUE)


@bp.timer_trigger(schedule="0 */30 * * * *", arg_name="timer", run_on_startup=False)
async def renew_subscriptions(timer: func.TimerRequest) -> None:
    """Renew subscriptions expiring within 24 h (they live ≤ 4,230 min, so each renews ~daily)."""
    from shared.observability import metrics
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
