"""timum's booking webhook. Anonymous at the host level: timum authenticates with its HMAC signature."""

from __future__ import annotations

import logging

import azure.functions as func

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.route(route="timum/bookings", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def timum_bookings(req: func.HttpRequest) -> func.HttpResponse:
    from shared.bookings.payload import MAX_BODY_BYTES
    from shared.bookings.webhook import accept_booking_webhook
    from shared.errors import BadRequest, StorageError
    from shared.http.responses import error_response, json_response, read_body
    from shared.signing import SIGNATURE_HEADER
    from shared.wiring import get_storage, settings

    try:
        event = await accept_booking_webhook(get_storage(), settings(), read_body(req, MAX_BODY_BYTES),
                                             req.headers.get(SIGNATURE_HEADER))
    except BadRequest as exc:  # also InvalidSignature (401) and PayloadTooLarge (413)
        return error_response(exc)
    except StorageError as exc:
        log.exception("could not enqueue a booking change; timum will retry")
        return error_response(exc)
    return json_response({"accepted": event.delivery_id}, status=202)
