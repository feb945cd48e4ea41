"""timum's booking webhook. Anonymous at the host level: timum authenticates with its HMAC signature."""

from __future__ import annotations

import json
import logging

import azure.functions as func

bp = func.Blueprint()
log = logging.getLogger(__name__)


def _json(status: int, body: dict[str, object]) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


@bp.route(route="timum/bookings", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def timum_bookings(req: func.HttpRequest) -> func.HttpResponse:
    from shared.bookings.payload import MAX_BODY_BYTES
    from shared.bookings.webhook import accept_booking_webhook
    from shared.errors import BadRequest, InvalidSignature, PayloadTooLarge, StorageError
    from shared.http.responses import read_body
    from shared.signing import SIGNATURE_HEADER
    from shared.wiring import get_storage, settings

    try:
        event = await accept_booking_webhook(get_storage(), settings(), read_body(req, MAX_BODY_BYTES),
                                             req.headers.get(SIGNATURE_HEADER))
    except PayloadTooLarge as exc:
        return _json(413, {"error": exc.code, "message": exc.message})
    except InvalidSignature as exc:
        return _json(401, {"error": exc.code, "message": exc.message})
    except BadRequest as exc:
        return _json(400, {"error": exc.code, "message": exc.message, "field": exc.field})
    except StorageError:
        log.exception("could not enqueue a booking change; timum will retry")
        return _json(503, {"error": "unavailable", "message": "try again later"})
    return _json(202, {"accepted": event.delivery_id})
