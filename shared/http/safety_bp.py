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

bp = func.Blueprint()
log = logging.getLogger(__name__)

#: a conflict-check body is two timestamps
BODY_LIMIT = 4096

_warming: asyncio.Task[float] | None = None


def _services() -> Services:
    from shared.wiring import get_services

    return get_services()


def _warm_graph_sdk() -> None:
    """msgraph-sdk's first request in a process costs seconds (model imports), far past the
    check's budget: warm it once in a thread, so only the very first check falls back."""
    global _warming
    if _warming is None:
        from shared.adapters.graph_sdk import warm_up

        _warming = asyncio.ensure_future(asyncio.to_thread(warm_up))
        _warming.add_done_callback(_warmed)


def _warmed(task: asyncio.Task[float]) -> None:
    # A failed warm-up only means the first real request pays the cost; say so, do not raise.
    if not task.cancelled() and task.exception() is not None:
        log.warning("Graph SDK warm-up failed: %s", type(task.exception()).__name__)


async def handle_conflicts(services: Services, req: func.HttpRequest) -> func.HttpResponse:
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
        answer = await check_conflicts(services, provider, req.route_params.get("resource") or "", data)
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
    services = _services()
    _warm_graph_sdk()
    return await handle_conflicts(services, req)
