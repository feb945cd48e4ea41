"""The one queue runner: every queue trigger hands its message to ``run_message`` (and its
``-poison`` twin to ``run_poison``) with a ``QueueJob`` saying how to read and run it.

``run_message``:

* decodes the body (JSON object) and parses it into the job's typed message
  (``shared.messages``); a body that is neither → logged and dropped: retrying cannot fix it;
* binds the correlation ids (queue, dequeue count, link, booking) for every log line of the run;
* runs the job, and maps what it raises:

  * ``BadRequest`` → log and drop;
  * ``Throttled`` → the same body is put back with a visibility delay of Retry-After (else
    exponential back-off with jitter); the invocation succeeds, so throttling never burns one
    of the host's attempts and the function never sleeps;
  * anything else (``TransientError``, ``StorageError``, a bug) → raised: the host makes the
    message visible again after ``visibilityTimeout`` and, after ``maxDequeueCount`` tries,
    moves it to ``-poison``.

What a failure does to the *link* is decided inside the job by ``shared.connect.status.health_for``.

``run_poison`` counts the message (``poison_messages``) and writes the give-up onto its link's
status (``last_error``), so timum and operators see it; the next change or a resync retries.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import azure.functions as func

if TYPE_CHECKING:
    from shared.context import Services
    from shared.domain import Link, LinkKey

log = logging.getLogger(__name__)

MAX_DELAY_SECONDS = 15 * 60

M = TypeVar("M")


@dataclass(frozen=True)
class QueueJob(Generic[M]):
    """How one queue's messages are read and run."""

    queue: str
    #: the typed message of a decoded body; ``BadRequest`` if it is not one
    parse: Callable[[dict[str, Any]], M]
    #: the link the message is about (for log correlation and the poison record)
    key: Callable[[M], LinkKey]
    run: Callable[[Services, M, func.QueueMessage], Awaitable[None]]
    #: what the give-up says on the link's status
    gave_up: str = "failed repeatedly; a resync retries"
    #: the booking a message is about, if any (log correlation)
    booking: Callable[[M], str] = lambda _message: ""
    #: a give-up's own handling, for a message that may be about no single link: True when it
    #: handled it; False (or no hook) notes it on the link's status
    poisoned: Callable[[Services, M], Awaitable[bool]] | None = None


def message_json(msg: func.QueueMessage) -> dict[str, Any]:
    from shared.errors import BadRequest

    try:
        data = json.loads(msg.get_body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("queue message is not JSON") from exc
    if not isinstance(data, dict):
        raise BadRequest("queue message is not a JSON object")
    return data


def requeue_delay(retry_after: float | None, dequeue_count: int) -> float:
    """Retry-After when Graph/timum said so, else exponential back-off with jitter."""
    if retry_after is not None and retry_after > 0:
        return min(MAX_DELAY_SECONDS, max(1.0, retry_after))
    base = min(MAX_DELAY_SECONDS, 2.0 ** min(dequeue_count, 9))
    return base * (0.5 + random.random() / 2)  # jitter, not security


def _read(job: QueueJob[M], msg: func.QueueMessage, what: str) -> tuple[dict[str, Any], M] | None:
    from shared.errors import BadRequest

    try:
        data = message_json(msg)
        return data, job.parse(data)
    except BadRequest as exc:
        log.error("dropped a malformed %s from %s: %s", what, job.queue, exc.message)
        return None


async def run_message(job: QueueJob[M], msg: func.QueueMessage) -> None:
    """Run one message of ``job``'s queue with the shared failure handling (module docstring)."""
    from shared.errors import BadRequest, Throttled
    from shared.observability.correlation import bind
    from shared.wiring import get_services

    read = _read(job, msg, "message")
    if read is None:
        return
    data, message = read
    services = get_services()
    dequeued = msg.dequeue_count or 1
    try:
        with bind(link=str(job.key(message)), booking=job.booking(message), queue=job.queue, dequeue=dequeued):
            await job.run(services, message, msg)
    except BadRequest as exc:
        log.error("dropped a message from %s: %s", job.queue, exc.message)
    except Throttled as exc:
        delay = requeue_delay(exc.retry_after, dequeued)
        await services.storage.queue(job.queue).send(data, delay_seconds=delay)
        log.warning("throttled; message re-queued on %s in %.1f s", job.queue, delay)


async def run_poison(job: QueueJob[M], msg: func.QueueMessage) -> None:
    """A message of ``job``'s queue failed ``maxDequeueCount`` times: count it and put the
    failure on its link's status."""
    from shared.observability.metrics import metrics
    from shared.wiring import get_services

    read = _read(job, msg, "poison message")
    if read is None:
        return
    metrics.increment("poison_messages", queue=job.queue)
    key = job.key(read[1])
    services = get_services()
    if job.poisoned is None or not await job.poisoned(services, read[1]):
        await record_link_error(services, key, "gave_up", f"{job.queue}: {job.gave_up}")
    log.error("poison message on %s for link %s", job.queue, key)


async def record_link_error(services: Services, key: LinkKey, code: str, detail: str) -> None:
    """Write the failure onto the link's status so timum and operators see it."""
    from shared.errors import Conflict
    from shared.repos.links import LinkRepository

    def note(current: Link) -> bool:
        current.last_error = f"{code}: {detail}"[:500]
        current.last_error_at = services.clock()
        return True

    # A link that keeps changing is being worked on: its own runs will report.
    with contextlib.suppress(Conflict):
        await LinkRepository(services.storage).modify(key, note)
