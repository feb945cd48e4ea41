"""Graph webhooks: change notifications and lifecycle notifications.

Both answer the validation handshake (200, text/plain, the decoded token) without touching
storage, and otherwise persist-then-ack: 202 once the messages are enqueued, 5xx when they
could not be (Graph then retries for up to 4 h). Anonymous by design: Graph cannot send a
function key header, and every notification is checked against its subscription's clientState.
What an anonymous POST may cost is bounded in ``shared.services.notifications``; the body's size
is checked here, from its declared length first, before anything parses it.
"""

from __future__ import annotations

import logging

import azure.functions as func

bp = func.Blueprint()
log = logging.getLogger(__name__)
#: the body of a 503 that sheds look-ups (a flood of unknown subscriptions), not a storage failure
DEFERRED_ANSWER = "unknown subscriptions deferred; deliver again"


def _validation(token: str) -> func.HttpResponse:
    from shared.services.notifications import MAX_VALIDATION_TOKEN

    if len(token) > MAX_VALIDATION_TOKEN:
        return func.HttpResponse("validation token too long", status_code=400, mimetype="text/plain")
    # req.params is already URL-decoded, which is what Graph expects back.
    return func.HttpResponse(token, status_code=200, mimetype="text/plain",
                             headers={"X-Content-Type-Options": "nosniff"})


async def _accept(req: func.HttpRequest, *, lifecycle: bool) -> func.HttpResponse:
    token = req.params.get("validationToken")
    if token is not None:
        return _validation(token)
    from shared.errors import BadRequest, StorageError
    from shared.http.responses import plain_error, read_body
    from shared.services import notifications
    from shared.wiring import subscription_cache, webhook_storage

    accept = (notifications.accept_lifecycle_notifications if lifecycle
              else notifications.accept_change_notifications)
    try:
        body = read_body(req, notifications.MAX_BODY_BYTES)
        result = await accept(webhook_storage(), subscription_cache(), body)
    except BadRequest as exc:
        return plain_error(exc, exc.message)  # PayloadTooLarge is a BadRequest: 413
    except notifications.LookupsDeferred as exc:
        log.warning("notifications deferred: %s", exc.message)
        return func.HttpResponse(DEFERRED_ANSWER, status_code=503, mimetype="text/plain",
                                 headers={"Retry-After": str(max(1, round(exc.retry_after or 1)))})
    except StorageError as exc:
        log.exception("could not persist notifications; Graph will retry")
        return plain_error(exc, "try again")
    log.info("notifications accepted=%d dropped=%d links=%d", result.accepted, result.dropped, len(result.links))
    return func.HttpResponse(status_code=202)


@bp.route(route="graph/notifications", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def graph_notifications(req: func.HttpRequest) -> func.HttpResponse:
    return await _accept(req, lifecycle=False)


@bp.route(route="graph/lifecycle", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def graph_lifecycle(req: func.HttpRequest) -> func.HttpResponse:
    return await _accept(req, lifecycle=True)
