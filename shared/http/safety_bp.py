"""HTTP trigger of the live conflict check (timum, function key + provider scope).

``POST /api/providers/{provider}/resources/{resource}/conflicts`` — see ``shared.safety.conflicts``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import azure.functions as func

from shared.http.responses import error_response, json_response

if TYPE_CHECKING:
    from shared.context import Services
    from shared.safety.conflicts import Ready

bp = func.Blueprint()
log = logging.getLogger(__name__)

#: a conflict-check body is two timestamps
BODY_LIMIT = 4096


def _services() -> Services:
    from shared.wiring import get_services

    return get_services()


async def handle_conflicts(services: Services, req: func.HttpRequest, *, ready: Ready | None = None,
                           received: float | None = None) -> func.HttpResponse:
    from shared.connect import links_api
    from shared.errors import BadRequest, SyncError
    from shared.http.scope import scoped_request
    from shared.safety.conflicts import check_conflicts

    try:
        try:
            provider, body = scoped_request(services, req, limit=BODY_LIMIT)
        except links_api.ProviderScopeError as exc:
            return error_response(exc, status=403)
        try:
            import json

            data = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest("body is not valid JSON") from exc
        answer = await check_conflicts(services, provider, req.route_params.get("resource") or "", data,
                                       ready=ready, received=received)
        return json_response(answer, headers={"Cache-Control": "no-store"})
    except SyncError as exc:
        log.info("conflict check refused: %s", exc.code)
        return error_response(exc)
    except Exception as exc:
        log.exception("conflict check failed")
        return error_response(exc)


@bp.route(route="providers/{provider}/resources/{resource}/conflicts", methods=["POST"],
          auth_level=func.AuthLevel.FUNCTION)
async def resource_conflicts(req: func.HttpRequest) -> func.HttpResponse:
    # The budget counts from here: a fresh process's first call builds its clients below.
    received = asyncio.get_running_loop().time()
    from shared.safety import preload

    services = _services()
    # Loading starts with the first check, in its own thread (what it loads, and why not at
    # import: shared.safety.preload); each live read waits for it within its budget.
    preload.start()
    return await handle_conflicts(services, req, ready=preload.ready, received=received)
