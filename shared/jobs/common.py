"""What every queue worker does with errors, in one place.

* ``Throttled`` → the message is put back with a visibility delay of Retry-After; the
  invocation succeeds, so throttling never burns one of the host's 5 attempts and the
  function never sleeps.
* ``TransientError`` / ``StorageError`` → raise: the host makes the message visible again
  after ``visibilityTimeout`` and, after ``maxDequeueCount`` tries, moves it to ``-poison``.
* ``BadRequest`` on a malformed message → log and drop: retrying cannot fix it.
* Anything else from the tree → recorded on the link, then dropped.
"""

from __future__ import annotations

import json
import logging
import random
from typing import Any

import azure.functions as func

log = logging.getLogger(__name__)

MAX_DELAY_SECONDS = 15 * 60


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
    return base * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not security


async def record_link_error(link: str, code: str, detail: str) -> None:
    """Write the failure onto the link's status so timum and operators see it."""
    from shared.context import utcnow
    from shared.domain import LinkKey
    from shared.errors import Conflict
    from shared.repos.links import LinkRepository
    from shared.wiring import get_storage

    repo = LinkRepository(get_storage())
    for _ in range(3):
        current = await repo.get(LinkKey.parse(link))
        if current is None:
            return
        current.last_error = f"{code}: {detail}"[:500]
        current.last_error_at = utcnow()
        try:
            await repo.save(current)
            return
        except Conflict:
            continue
