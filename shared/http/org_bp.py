"""HTTP trigger of the organisation mapping page: ``GET|POST /api/connect/organisation``.

A thin shell over ``shared.org.service``; the session cookie is the chooser's (set when the
organisation sign-in or the administrator's consent opened the page).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import azure.functions as func

from shared.http.responses import cookie_value, read_form, render_page

if TYPE_CHECKING:
    from shared.context import Services
    from shared.org.service import OrgPage

bp = func.Blueprint()
#: bounded cost for an anonymous POST: at most this many bytes and fields
FORM_LIMIT = 512 * 1024
FORM_FIELDS = 2_000
log = logging.getLogger(__name__)


def _services() -> Services:
    from shared.wiring import get_services

    return get_services()


def render_org(page: OrgPage) -> func.HttpResponse:
    return render_page("organisation.html", locale=page.locale, status=page.status,
                       form_targets=[page.return_url], headers={"Cache-Control": "no-store"}, **page.values)


async def handle_organisation(services: Services, req: func.HttpRequest) -> func.HttpResponse:
    from shared.connect.outcomes import ErrorPage
    from shared.errors import BadRequest
    from shared.http.connect_bp import _locale, render_error, session_cookie_name
    from shared.org import service

    locale = _locale(services, req)
    session_id = cookie_value(req, session_cookie_name(services))
    try:
        if req.method.upper() == "POST":
            try:
                # A page of mailboxes has three fields per calendar; the service caps what it uses.
                form = read_form(req, FORM_LIMIT, max_fields=FORM_FIELDS)
            except BadRequest:
                return render_error(services, ErrorPage("csrf", locale, status=400))
            outcome = await service.submit(services, session_id, form, locale=locale)
        else:
            outcome = await service.view(services, session_id, search=req.params.get("q"),
                                         cursor=req.params.get("cursor"), locale=locale)
    except Exception:
        log.exception("organisation page failed")
        return render_error(services, ErrorPage("internal", locale, status=500))
    if isinstance(outcome, ErrorPage):
        return render_error(services, outcome)
    return render_org(outcome)


@bp.route(route="connect/organisation", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def connect_organisation(req: func.HttpRequest) -> func.HttpResponse:
    return await handle_organisation(_services(), req)
