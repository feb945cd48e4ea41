"""HTTP triggers of the organisation mapping page: ``GET|POST /api/connect/organisation`` and the
progress of its bulk link, ``GET /api/connect/organisation/status``.

A thin shell over ``shared.org.service``; the session cookie is the chooser's (set when the
organisation sign-in or the administrator's consent opened the page).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import azure.functions as func

from shared.http.responses import cookie_value, error_response, json_response, read_form, render_page

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
    response = render_page("organisation.html", locale=page.locale, status=page.status,
                           form_targets=[page.return_url], headers={"Cache-Control": "no-store"}, **page.values)
    if page.values.get("progress"):
        # While rows are linked the page polls its status URL, on its own origin only.
        response.headers["Content-Security-Policy"] += "; connect-src 'self'"
    return response


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
                                         cursor=req.params.get("cursor"), locale=locale,
                                         since=req.params.get("since"), refused=req.params.get("refused"))
    except Exception:
        log.exception("organisation page failed")
        return render_error(services, ErrorPage("internal", locale, status=500))
    if isinstance(outcome, ErrorPage):
        return render_error(services, outcome)
    return render_org(outcome)


@bp.route(route="connect/organisation", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def connect_organisation(req: func.HttpRequest) -> func.HttpResponse:
    return await handle_organisation(_services(), req)


async def handle_status(services: Services, req: func.HttpRequest) -> func.HttpResponse:
    """The progress of a press of "Übernehmen" as JSON, for the mapping page to poll: rows still
    being linked (``waiting``), ``linked``, ``failed``, ``done``. Only for the session's own
    organisation (the chooser's cookie); a few counts, read from the tenant's job rows."""
    from shared.errors import BadRequest
    from shared.http.connect_bp import session_cookie_name
    from shared.org import service

    try:
        counts = await service.status(services, cookie_value(req, session_cookie_name(services)),
                                      since=req.params.get("since"), refused=req.params.get("refused"))
    except Exception as exc:
        log.exception("organisation status failed")
        return error_response(exc)
    if counts is None:
        return error_response(BadRequest("no organisation session or press to report on", code="session_expired"))
    return json_response(counts)


@bp.route(route="connect/organisation/status", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def connect_organisation_status(req: func.HttpRequest) -> func.HttpResponse:
    return await handle_status(_services(), req)
