"""HTTP triggers of the connect flow (browser pages) and of timum's link management API.

Anonymous (browser): ``GET /api/connect``, ``GET /api/oauth/callback``,
``GET /api/oauth/admin-callback``, ``GET|POST /api/connect/calendars``.
Function key + provider scope (timum): ``/api/providers/{provider}/links…`` and
``/api/providers/{provider}/settings`` — see ``shared.connect.links_api``.

Each trigger is a thin shell over a ``handle_*`` function that takes the services
explicitly, so tests run the very same code with in-memory twins.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import quote

import azure.functions as func

from shared.http.responses import (
    cookie_value,
    error_response,
    json_response,
    read_form,
    read_json,
    redirect,
    render_page,
)

if TYPE_CHECKING:
    from shared.connect.outcomes import Binding, ChooserPage, ConsentPage, ConsentResultPage, ErrorPage, Redirect
    from shared.context import Services

bp = func.Blueprint()
log = logging.getLogger(__name__)

SESSION_LIFETIME_SECONDS = 30 * 60
#: error codes whose page tells the user to start again from timum
_START_AGAIN = frozenset({"link_malformed", "link_tampered", "link_expired", "link_reused", "link_return_url",
                          "flow_unknown", "state_mismatch", "sign_in_failed", "session_expired", "needs_reconnect",
                          "browser_mismatch", "consent_unknown"})
#: the binding cookie lives as long as the sign-in it binds
BINDING_LIFETIME_SECONDS = 15 * 60


def _services() -> Services:
    from shared.wiring import get_services

    return get_services()


def _locale(services: Services, req: func.HttpRequest) -> str:
    from shared.i18n import negotiate

    return negotiate(req.headers.get("Accept-Language"), services.settings.default_locale)


# --- cookies -----------------------------------------------------------------------------------

def session_cookie_name(services: Services) -> str:
    # __Host- cookies must be Secure with Path=/; plain http (local sandbox) cannot use the prefix.
    return "__Host-timum-connect" if services.settings.service_base_url.startswith("https://") else "timum-connect"


def _cookie(services: Services, value: str, max_age: int) -> str:
    secure = services.settings.service_base_url.startswith("https://")
    path = "/" if secure else "/api/connect"
    parts = [f"{session_cookie_name(services)}={value}", f"Path={path}", f"Max-Age={max_age}", "HttpOnly",
             "SameSite=Lax"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def binding_cookie_name(tag: str) -> str:
    """The sign-in binding cookie: one per sign-in (``tag``), so sign-ins in two tabs coexist."""
    return f"__Host-timum-signin-{tag}"


def _binding_cookie(binding: Binding) -> str:
    # Microsoft posts the answer from its own site (response_mode=form_post): only a
    # SameSite=None cookie comes along, and browsers take SameSite=None only with Secure.
    # The same attributes serve the local sandbox on http://127.0.0.1: browsers treat loopback
    # as a secure context and store and send Secure (and __Host-) cookies there (checked in
    # Chromium by tests/connect/test_browser_binding.py). Any other plain-http address cannot
    # keep the cookie, so sign-ins there are refused — the safe failure.
    return _binding_cookie_header(binding.tag, binding.value, BINDING_LIFETIME_SECONDS)


def _binding_cookie_header(tag: str, value: str, max_age: int) -> str:
    return "; ".join([f"{binding_cookie_name(tag)}={value}", "Path=/", f"Max-Age={max_age}", "HttpOnly", "Secure",
                      "SameSite=None"])


def _drop_spent_binding(response: func.HttpResponse, tag: str) -> func.HttpResponse:
    """Clear the binding cookie of a sign-in that has ended: same name and attributes, empty,
    Max-Age=0 (a browser matches a cookie by name, domain and path). Added as a header of its
    own, next to any cookie the response sets (a chooser session, a retry's new binding)."""
    if tag:
        response.headers.add("Set-Cookie", _binding_cookie_header(tag, "", 0))
    return response


# --- outcomes → responses -------------------------------------------------------------------

def render_error(services: Services, page: ErrorPage) -> func.HttpResponse:
    from shared.connect.flow import timum_home
    from shared.i18n import has, message

    code = page.code if has(f"error.{page.code}") else "internal"
    headers: dict[str, str] = {}
    if code == "session_expired":
        headers["Set-Cookie"] = _cookie(services, "", 0)
    elif page.binding is not None:
        headers["Set-Cookie"] = _binding_cookie(page.binding)
    hint = ""
    if page.retry_url:
        hint = message(page.locale, f"retry_hint.{code}") if has(f"retry_hint.{code}") else ""
    elif code in _START_AGAIN:
        hint = message(page.locale, "start_again")
    # Every error page has a way back: the flow's verified return address, else timum's home.
    return _drop_spent_binding(render_page(
        "error.html", locale=page.locale, status=page.status, heading="", detail=message(page.locale, f"error.{code}"),
        hint=hint, return_url=page.return_url or timum_home(services.settings), retry_url=page.retry_url, code=code,
        headers=headers or None), page.spent_binding)


def _render(services: Services,
            outcome: Redirect | ErrorPage | ConsentPage | ConsentResultPage | ChooserPage) -> func.HttpResponse:
    from shared.connect.outcomes import ConsentPage, ConsentResultPage, Redirect

    response = _render_outcome(services, outcome)
    # (an ErrorPage's spent binding is dropped by render_error, which other pages use too)
    if isinstance(outcome, Redirect | ConsentPage | ConsentResultPage):
        response = _drop_spent_binding(response, outcome.spent_binding)
    return response


def _render_outcome(services: Services,
                    outcome: Redirect | ErrorPage | ConsentPage | ConsentResultPage | ChooserPage) -> func.HttpResponse:
    from shared.connect.outcomes import ChooserPage, ConsentPage, ConsentResultPage, ErrorPage, Redirect
    from shared.i18n import message

    if isinstance(outcome, Redirect):
        headers: dict[str, str] = {}
        if outcome.binding is not None:
            headers["Set-Cookie"] = _binding_cookie(outcome.binding)
        elif outcome.session_id:
            headers["Set-Cookie"] = _cookie(services, outcome.session_id, SESSION_LIFETIME_SECONDS)
        elif outcome.clear_session:
            headers["Set-Cookie"] = _cookie(services, "", 0)
        return redirect(outcome.location, status=outcome.status, headers=headers)
    if isinstance(outcome, ErrorPage):
        return render_error(services, outcome)
    if isinstance(outcome, ConsentPage):
        loc = outcome.locale
        mailto = "mailto:?subject={}&body={}".format(
            quote(message(loc, "consent.mail_subject"), safe=""),
            quote(message(loc, "consent.mail_body", url=outcome.consent_url), safe=""))
        from shared.org.permissions import APPLICATION, DELEGATED, readable

        return render_page("admin_consent.html", locale=loc, consent_url=outcome.consent_url,
                           mailto_url=mailto, return_url=outcome.return_url, declined=outcome.declined,
                           org=outcome.org, permissions=readable(loc, APPLICATION if outcome.org else DELEGATED))
    if isinstance(outcome, ConsentResultPage):
        loc = outcome.locale
        if outcome.ok:
            nxt = "org.consent_done.next" if outcome.org else "consent_done.next"
            return render_page("consent_result.html", locale=loc, ok=True,
                               heading=message(loc, "consent_done.title"), lead=message(loc, "consent_done.lead"),
                               lines=[message(loc, nxt)], return_url=outcome.return_url)
        lines = [message(loc, f"consent_failed.{outcome.reason}")] if outcome.reason else []
        lines.append(message(loc, "consent_failed.retry"))
        return render_page("consent_result.html", locale=loc, status=400, ok=False,
                           heading=message(loc, "consent_failed.title"), lead=message(loc, "consent_failed.lead"),
                           lines=lines, return_url=outcome.return_url)
    assert isinstance(outcome, ChooserPage)
    return render_page("chooser.html", locale=outcome.locale, status=outcome.status,
                       form_targets=[outcome.return_url], **outcome.values)


def _internal_error(services: Services, req: func.HttpRequest) -> func.HttpResponse:
    from shared.connect.outcomes import ErrorPage

    log.exception("connect page failed")
    return render_error(services, ErrorPage("internal", _locale(services, req), status=500))


# --- browser pages -----------------------------------------------------------------------------

async def handle_connect_start(services: Services, req: func.HttpRequest) -> func.HttpResponse:
    from shared.connect import flow

    try:
        outcome = await flow.start(services, req.params.get("token"),
                                   accept_language=req.headers.get("Accept-Language"))
        return _render(services, outcome)
    except Exception:
        return _internal_error(services, req)


async def handle_oauth_callback(services: Services, req: func.HttpRequest) -> func.HttpResponse:
    """Microsoft's answer: a form POST (we ask for response_mode=form_post), or a query string
    from error paths that ignore the response mode."""
    from shared.connect import flow
    from shared.connect.outcomes import ErrorPage
    from shared.errors import BadRequest

    try:
        if req.method.upper() == "POST":
            try:
                params = read_form(req)
            except BadRequest:
                return render_error(services, ErrorPage("sign_in_failed", _locale(services, req), status=400))
        else:
            params = dict(req.params)
        state = params.get("state") or ""
        binding = cookie_value(req, binding_cookie_name(flow.binding_tag(state))) if state else None
        outcome = await flow.callback(services, params, binding=binding,
                                      accept_language=req.headers.get("Accept-Language"))
        return _render(services, outcome)
    except Exception:
        return _internal_error(services, req)


async def handle_admin_callback(services: Services, req: func.HttpRequest) -> func.HttpResponse:
    from shared.connect import flow

    try:
        state = req.params.get("state") or ""
        # The organisation path's consent, started by an administrator in this browser, opens
        # the mapping page right away; a forwarded link (another browser) gets the result page.
        binding = cookie_value(req, binding_cookie_name(flow.binding_tag(state))) if state else None
        outcome = await flow.admin_callback(services, dict(req.params),
                                            accept_language=req.headers.get("Accept-Language"), binding=binding)
        return _render(services, outcome)
    except Exception:
        return _internal_error(services, req)


async def handle_calendars(services: Services, req: func.HttpRequest) -> func.HttpResponse:
    from shared.connect import chooser
    from shared.connect.outcomes import ErrorPage
    from shared.errors import BadRequest

    session_id = cookie_value(req, session_cookie_name(services))
    locale = _locale(services, req)
    try:
        if req.method.upper() == "POST":
            try:
                form = read_form(req)
            except BadRequest:
                return render_error(services, ErrorPage("csrf", locale, status=400))
            return _render(services, await chooser.submit(services, session_id, form, locale=locale))
        return _render(services, await chooser.view(services, session_id, locale=locale))
    except Exception:
        return _internal_error(services, req)


@bp.route(route="connect", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def connect_start(req: func.HttpRequest) -> func.HttpResponse:
    return await handle_connect_start(_services(), req)


@bp.route(route="oauth/callback", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def oauth_callback(req: func.HttpRequest) -> func.HttpResponse:
    return await handle_oauth_callback(_services(), req)


@bp.route(route="oauth/admin-callback", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def oauth_admin_callback(req: func.HttpRequest) -> func.HttpResponse:
    return await handle_admin_callback(_services(), req)


@bp.route(route="connect/calendars", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def connect_calendars(req: func.HttpRequest) -> func.HttpResponse:
    return await handle_calendars(_services(), req)


# --- link management API (timum) -------------------------------------------------------------

async def handle_links_api(services: Services, req: func.HttpRequest, operation: str) -> func.HttpResponse:
    """Check the provider scope, then run ``operation`` (list | delete | resync | get_settings |
    put_settings). Errors become problem JSON with one status per exception class."""
    from shared.connect import links_api
    from shared.errors import SyncError
    from shared.http.scope import scoped_request
    from shared.ids import check_id

    try:
        try:
            provider, body = scoped_request(services, req)
        except links_api.ProviderScopeError as exc:
            return error_response(exc, status=403)
        # Every id of every route here (links, settings, ICS feed and import) passes the one id rule.
        check_id(provider, "provider")
        resource = req.route_params.get("resource") or ""
        if "resource" in req.route_params:
            check_id(resource, "resource")
        if operation == "list":
            return json_response(await links_api.list_links(services, provider))
        if operation == "delete":
            purge = links_api.parse_bool_param(req.params.get("deleteOutlookEvents"), "deleteOutlookEvents")
            await links_api.delete_link(services, provider, resource, delete_outlook_events=purge)
            return func.HttpResponse(status_code=204, headers={"Cache-Control": "no-store"})
        if operation == "resync":
            await links_api.resync(services, provider, resource)
            return json_response({"status": "queued"}, status=202)
        if operation in ("issue_feed", "revoke_feed", "ics_import"):
            from shared.ics import api as ics_api

            if operation == "issue_feed":
                data = read_json(req) if body.strip() else None
                return json_response(await ics_api.issue_feed(services, provider, resource, data), status=201)
            if operation == "revoke_feed":
                found = await ics_api.revoke_feed(services, provider, resource)
                if not found:
                    return json_response({"status": "none"}, status=404)
                return func.HttpResponse(status_code=204, headers={"Cache-Control": "no-store"})
            link = await ics_api.set_ics_import(services, provider, resource, read_json(req))
            return json_response(links_api.link_json(link), status=201)
        if operation == "get_settings":
            return json_response(await links_api.get_settings(services, provider))
        if req.method.upper() != "PUT":  # pragma: no cover - the routes admit no other method
            raise SyncError("unsupported method")
        data = read_json(req)
        return json_response(await links_api.put_settings(services, provider, data))
    except SyncError as exc:
        if not isinstance(exc, links_api.ProviderScopeError):
            log.info("links API refused %s: %s", operation, exc.code)
        return error_response(exc)
    except Exception as exc:
        log.exception("links API failed")
        return error_response(exc)


@bp.route(route="providers/{provider}/links", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def provider_links(req: func.HttpRequest) -> func.HttpResponse:
    return await handle_links_api(_services(), req, "list")


@bp.route(route="providers/{provider}/links/{resource}", methods=["DELETE"], auth_level=func.AuthLevel.FUNCTION)
async def provider_link_delete(req: func.HttpRequest) -> func.HttpResponse:
    return await handle_links_api(_services(), req, "delete")


@bp.route(route="providers/{provider}/links/{resource}/resync", methods=["POST"],
          auth_level=func.AuthLevel.FUNCTION)
async def provider_link_resync(req: func.HttpRequest) -> func.HttpResponse:
    return await handle_links_api(_services(), req, "resync")


@bp.route(route="providers/{provider}/settings", methods=["GET", "PUT"], auth_level=func.AuthLevel.FUNCTION)
async def provider_settings(req: func.HttpRequest) -> func.HttpResponse:
    return await handle_links_api(_services(), req,
                                  "get_settings" if req.method.upper() == "GET" else "put_settings")


@bp.route(route="providers/{provider}/links/{resource}/ics-feed", methods=["POST", "DELETE"],
          auth_level=func.AuthLevel.FUNCTION)
async def provider_ics_feed(req: func.HttpRequest) -> func.HttpResponse:
    return await handle_links_api(_services(), req, "issue_feed" if req.method.upper() == "POST" else "revoke_feed")


@bp.route(route="providers/{provider}/links/{resource}/ics-import", methods=["POST"],
          auth_level=func.AuthLevel.FUNCTION)
async def provider_ics_import(req: func.HttpRequest) -> func.HttpResponse:
    return await handle_links_api(_services(), req, "ics_import")
