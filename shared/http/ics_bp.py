"""``GET|HEAD /api/ics/{token}``: the per-resource subscription feed.

Anonymous: the unguessable token is the credential (256 bits, stored hashed). No redirects,
no compression (calendar clients handle neither reliably), strong ETag and Last-Modified.
"""

from __future__ import annotations

import azure.functions as func

bp = func.Blueprint()
_cache = None


@bp.route(route="ics/{token}", methods=["GET", "HEAD"], auth_level=func.AuthLevel.ANONYMOUS)
async def ics_feed(req: func.HttpRequest) -> func.HttpResponse:
    global _cache
    from shared.context import utcnow
    from shared.errors import StorageError
    from shared.http.responses import plain_error
    from shared.ics.service import FeedCache, serve_feed
    from shared.wiring import get_storage, settings

    if _cache is None:
        _cache = FeedCache()
    token = req.route_params.get("token", "")
    if token.endswith(".ics"):
        token = token[:-4]
    try:
        result = await serve_feed(get_storage(), settings(), _cache, token, now=utcnow(),
                                  if_none_match=req.headers.get("If-None-Match"),
                                  if_modified_since=req.headers.get("If-Modified-Since"))
    except StorageError as exc:
        # Calendar clients poll every few minutes at most: a minute costs nothing and spares storage.
        return plain_error(exc, "temporarily unavailable", headers={"Retry-After": "60"})
    headers = result.headers()
    if result.status == 404 or result.feed is None:
        return func.HttpResponse("not found", status_code=404, mimetype="text/plain", headers=headers)
    if result.status == 304:
        return func.HttpResponse(status_code=304, headers=headers)
    body = b"" if req.method == "HEAD" else result.feed.body
    headers["Content-Disposition"] = 'inline; filename="calendar.ics"'
    if req.method == "HEAD":
        headers["Content-Length"] = str(len(result.feed.body))
    return func.HttpResponse(body, status_code=200, headers=headers, mimetype="text/calendar", charset="utf-8")
