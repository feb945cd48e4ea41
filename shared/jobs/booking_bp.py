"""timum → Outlook worker: applies booking changes accepted by the booking webhook."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.messages import BOOKING_QUEUE

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.queue_trigger(arg_name="msg", queue_name=BOOKING_QUEUE, connection="AzureWebJobsStorage")
async def booking_worker(msg: func.QueueMessage) -> None:
    from shared.bookings.service import apply_booking_message
    from shared.errors import BadRequest, Throttled
    from shared.jobs.common import message_json, requeue_delay
    from shared.observability import bind, metrics
    from shared.wiring import get_services

    try:
        data = message_json(msg)
        services = get_services()
        raw = data.get("booking")
        booking: dict[str, object] = raw if isinstance(raw, dict) else {}
        link = str(data.get("replay_link") or data.get("backfill")
                   or f"{booking.get('providerId', '')}|{booking.get('resourceId', '')}")
        with bind(link=link, booking=str(booking.get("id", "")), dequeue=msg.dequeue_count or 1):
            outcome = await apply_booking_message(services, data)
    except BadRequest as exc:
        log.error("dropped a malformed booking message: %s", exc.message)
        return
    except Throttled as exc:
        delay = requeue_delay(exc.retry_after, msg.dequeue_count or 1)
        await get_services().storage.queue(BOOKING_QUEUE).send(data, delay_seconds=delay)
        log.warning("throttled; booking change re-queued in %.1f s", delay)
        return
    log.info("booking change applied: %s", outcome.result)
    received = data.get("received_at")
    if isinstance(received, int | float) and outcome.result in ("created", "updated", "recreated", "deleted"):
        metrics.record("booking_to_event_lag_ms", (services.clock().timestamp() - received) * 1000)


@bp.queue_trigger(arg_name="msg", queue_name=f"{BOOKING_QUEUE}-poison", connection="AzureWebJobsStorage")
async def booking_poison(msg: func.QueueMessage) -> None:
    """A booking change failed maxDequeueCount times: put the failure on the link's status."""
    from shared.errors import BadRequest
    from shared.jobs.common import message_json, record_link_error

    try:
        data = message_json(msg)
    except BadRequest:
        log.error("unreadable poison message on %s", BOOKING_QUEUE)
        return
    from shared.observability import metrics

    metrics.increment("poison_messages", queue=BOOKING_QUEUE)
    raw = data.get("booking")
    booking: dict[str, object] = raw if isinstance(raw, dict) else {}
    link = (data.get("replay_link") or data.get("backfill")
            or f"{booking.get('providerId', '')}|{booking.get('resourceId', '')}")
    if isinstance(link, str) and link.count("|") == 1 and not link.startswith("|") and not link.endswith("|"):
        await record_link_error(link, "gave_up", f"{BOOKING_QUEUE}: a booking change failed repeatedly; "
                                               "the next change or a resync retries it")
