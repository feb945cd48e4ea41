"""timum's provider-scoped requests (links API, ICS feed and import, settings, conflict check): the
body read within its limit, then the provider-scoped signature checked against the route's
provider — in one place, so no route of timum's can forget either."""

from __future__ import annotations

import azure.functions as func

from shared.context import Services
from shared.http.responses import DEFAULT_BODY_LIMIT, read_body


def scoped_request(services: Services, req: func.HttpRequest, *,
                   limit: int = DEFAULT_BODY_LIMIT) -> tuple[str, bytes]:
    """The route's provider id and the request body, once the signature covers both.

    Raises ``PayloadTooLarge`` (413) for a body over ``limit`` and ``ProviderScopeError`` (the
    caller answers 403) when the signature is missing, wrong, stale or for another provider."""
    from shared.connect import links_api

    body = read_body(req, limit)
    provider = req.route_params.get("provider") or ""
    links_api.check_provider_scope(method=req.method, url=req.url, headers=req.headers, body=body,
                                   route_provider=provider, secrets=services.settings.timum_webhook_secrets,
                                   now=services.clock().timestamp())
    return provider, body
