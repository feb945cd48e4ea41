"""``GET /api/health``: version and storage reachability, for probes and operators."""

from __future__ import annotations

import json

import azure.functions as func

bp = func.Blueprint()


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    from shared import __version__
    from shared.errors import SyncError
    from shared.http.responses import status_for
    from shared.wiring import get_storage

    body: dict[str, object] = {"status": "ok", "version": __version__, "storage": "ok"}
    status = 200
    try:
        await get_storage().ping()
    except SyncError as exc:
        # 503 tells load balancers and alerts that we cannot persist anything right now.
        body.update(status="degraded", storage="unreachable", detail=exc.code)
        status = status_for(exc)
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json",
                             headers={"Cache-Control": "no-store"})
