"""timum → Outlook worker: applies booking changes accepted by the booking webhook."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import azure.functions as func

from shared.jobs.common import QueueJob, run_message, run_poison
from shared.messages import BOOKING_QUEUE, BookingChange, BookingMessage, parse_booking_message

if TYPE_CHECKING:
    from shared.context import Services

bp = func.Blueprint()
log = logging.getLogger(__name__)


async def _run_booking(services: Services, message: BookingMessage, msg: func.QueueMessage) -> None:
    from shared.bookings.service import apply_booking_message
    from shared.observability.metrics import metrics

    outcome = await apply_booking_message(services, message, delivery=msg.id or "")
    log.info("booking change applied: %s", outcome.result)
    if (isinstance(message, BookingChange) and message.received_at
            and outcome.result in ("created", "updated", "recreated", "deleted")):
        metrics.record("booking_to_event_lag_ms", (services.clock().timestamp() - message.received_at) * 1000)


BOOKING_JOB: QueueJob[BookingMessage] = QueueJob(
    BOOKING_QUEUE, parse_booking_message, lambda m: m.key, _run_booking,
    gave_up="a booking change failed repeatedly; the next change or a resync retries it",
    booking=lambda m: m.booking.id if isinstance(m, BookingChange) else "")


@bp.queue_trigger(arg_name="msg", queue_name=BOOKING_QUEUE, connection="AzureWebJobsStorage")
async def booking_worker(msg: func.QueueMessage) -> None:
    await run_message(BOOKING_JOB, msg)


@bp.queue_trigger(arg_name="msg", queue_name=f"{BOOKING_QUEUE}-poison", connection="AzureWebJobsStorage")
async def booking_poison(msg: func.QueueMessage) -> None:
    """A booking change failed maxDequeueCount times: put the failure on the link's status."""
    await run_poison(BOOKING_JOB, msg)
