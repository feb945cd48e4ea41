"""The browser side of the identity stand-in: the authorize endpoint with its account picker,
consent and "need admin approval" screens, the v2.0 admin-consent endpoint, sign-out, and the
way each of them ends — a redirect (or form post) back to the app with a code or an error, or an
error page while the redirect URI is not yet known to be registered.

Pages are German by default and English on request (``ui_locales``); templates live in
``devtools/sandbox/templates/identity/``. A sign-in in progress is a :class:`PendingSignIn`
named by the ``ctx`` every form posts back.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from devtools.sandbox import ui
from devtools.sandbox.directory import AppRegistration, SandboxTenant, SandboxUser
from devtools.sandbox.identity.platform import IdentityPlatform, PendingSignIn
from devtools.sandbox.identity.protocol import (
    APPLICATION_ROLES,
    GRAPH_RESOURCE,
    NO_SCOPES,
    OAuthError,
    Trace,
    account_disabled,
    client_info,
    consent_missing,
    missing_parameter,
    parse_scopes,
    read_form,
)

PROMPTS = ("login", "none", "consent", "select_account", "create")
RESPONSE_MODES = ("query", "fragment", "form_post")

PERMISSION_TITLES: dict[str, tuple[str, str]] = {
    "Calendars.Read": ("Ihre Kalender lesen", "Read your calendars"),
    "Calendars.ReadBasic": ("Grundlegende Kalenderdaten lesen", "Read basic details of your calendars"),
    "Calendars.ReadWrite": ("Vollzugriff auf Ihre Kalender", "Have full access to your calendars"),
    "Calendars.Read.Shared": ("Freigegebene Kalender lesen", "Read calendars you can access"),
    "Calendars.ReadWrite.Shared": ("Freigegebene Kalender lesen und schreiben",
                                   "Read and write calendars you can access"),
    "MailboxSettings.Read": ("Ihre Postfacheinstellungen lesen", "Read your mailbox settings"),
    "MailboxSettings.ReadWrite": ("Ihre Postfacheinstellungen lesen und schreiben",
                                  "Read and write your mailbox settings"),
    "User.Read": ("Sie anmelden und Ihr Profil lesen", "Sign you in and read your profile"),
    "User.ReadBasic.All": ("Grundlegende Profile aller Benutzer lesen", "Read all users' basic profiles"),
    "Place.Read.All": ("Alle Orte der Organisation lesen", "Read all company places"),
    "offline_access": ("Zugriff auf Daten beibehalten, für die Sie Zugriff erteilt haben",
                       "Maintain access to data you have given it access to"),
}
APP_ROLE_TITLES: dict[str, tuple[str, str]] = {
    "Calendars.ReadWrite": ("Kalender in allen Postfächern lesen und schreiben",
                            "Read and write calendars in all mailboxes"),
    "MailboxSettings.Read": ("Einstellungen aller Postfächer lesen", "Read all user mailbox settings"),
    "User.Read.All": ("Vollständige Profile aller Benutzer lesen", "Read all users' full profiles"),
    "Place.Read.All": ("Alle Orte der Organisation lesen", "Read all company places"),
}


@dataclass(frozen=True)
class _Opening:
    """A browser request that starts a sign-in, checked as far as a redirect back to the app is safe."""

    trace: Trace
    lang: str
    tenant_path: str
    tenant: SandboxTenant | None
    app: AppRegistration
    redirect_uri: str
    started: float

    def pending(self, request: Request, kind: str, **details: Any) -> PendingSignIn:
        return PendingSignIn(
            ctx=secrets.token_urlsafe(24), kind=kind, tenant_path=self.tenant_path,
            tenant_id=self.tenant.id if self.tenant else None, client_id=self.app.client_id,
            redirect_uri=self.redirect_uri, state=request.query_params.get("state"), lang=self.lang,
            created=self.started, **details)


@dataclass(frozen=True)
class _Step:
    """A form post that continues a pending sign-in."""

    trace: Trace
    form: dict[str, str]
    pending: PendingSignIn

    @property
    def user_id(self) -> str:
        """Who picked their account; only steps resumed with ``signed_in=True`` have one."""
        if self.pending.user_id is None:
            raise LookupError("no account picked in this sign-in yet")
        return self.pending.user_id


class SignInPages:
    """Serves the authorize, admin-consent and logout endpoints and the screens between them."""

    def __init__(self, platform: IdentityPlatform) -> None:
        self.platform = platform
        self.directory = platform.directory

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/error", self._error_lookup, methods=["GET"]),
            Route("/{tenant}/oauth2/v2.0/authorize", self._opening(self._authorize), methods=["GET"]),
            Route("/{tenant}/oauth2/v2.0/authorize/select",
                  self._continuing("authorize", self._select_account, signed_in=False), methods=["POST"]),
            Route("/{tenant}/oauth2/v2.0/authorize/consent",
                  self._continuing("authorize", self._consent), methods=["POST"]),
            Route("/{tenant}/oauth2/v2.0/authorize/admin",
                  self._continuing("authorize", self._switch_to_admin), methods=["POST"]),
            Route("/{tenant}/oauth2/v2.0/authorize/return",
                  self._continuing("authorize", self._return_without_consent), methods=["POST"]),
            Route("/{tenant}/oauth2/v2.0/logout", self._logout, methods=["GET", "POST"]),
            Route("/{tenant}/v2.0/adminconsent", self._opening(self._admin_consent, admin_consent=True),
                  methods=["GET"]),
            Route("/{tenant}/v2.0/adminconsent/select",
                  self._continuing("adminconsent", self._admin_select, signed_in=False), methods=["POST"]),
            Route("/{tenant}/v2.0/adminconsent/consent",
                  self._continuing("adminconsent", self._admin_decide), methods=["POST"]),
        ]

    async def _error_lookup(self, request: Request) -> Response:
        lang = ui.pick_language(request)
        code = request.query_params.get("code", "")
        message = _KNOWN_CODES.get(code, ("Unbekannter Fehlercode.", "Unknown error code."))
        err = OAuthError("lookup", int(code) if code.isdigit() else 0, message[0] if lang == "de" else message[1])
        return self._error_page(request, err, Trace.of(request), lang, status=200)

    # --- authorize -------------------------------------------------------------------------
    def _authorize(self, request: Request, start: _Opening) -> Response:
        q = request.query_params
        trace, app = start.trace, start.app
        response_mode = q.get("response_mode") or "query"
        pending = start.pending(
            request, "authorize", scopes=NO_SCOPES, scope_text="",
            response_mode=response_mode if response_mode in RESPONSE_MODES else "query",
            nonce=q.get("nonce"), login_hint=q.get("login_hint"), domain_hint=q.get("domain_hint"),
            client_info=q.get("client_info") == "1")
        try:
            self._read_authorize_request(q, pending)
        except OAuthError as err:
            # The redirect URI is registered: from here on errors go back to the app.
            return self._redirect_error(request, pending, err, trace)
        self.platform.store_pending(pending)

        session_user = self.platform.session_user(request)
        hint_ok = session_user is not None and (
            not pending.login_hint or pending.login_hint.lower() == session_user.mail.lower())
        usable_session = (session_user is not None and hint_ok and session_user.account_enabled
                          and session_user in self._candidates(pending))
        if pending.prompt == "none":
            if not usable_session or session_user is None:
                return self._redirect_error(request, pending, OAuthError(
                    "login_required", 50058, "A silent sign-in request was sent but no user is signed in."), trace)
            if not self.directory.has_delegated_consent(session_user.id, app.client_id):
                return self._redirect_error(request, pending, consent_missing(app), trace)
            return self._complete(request, pending, session_user)
        if usable_session and session_user is not None and pending.prompt in (None, "consent"):
            # Single sign-on: an existing browser session skips the account picker.
            pending.user_id = session_user.id
            return self._after_sign_in(request, pending, session_user, trace)
        return self._pick_account_page(request, pending)

    @staticmethod
    def _read_authorize_request(q: QueryParams, pending: PendingSignIn) -> None:
        """Check the rest of an authorize request and record it on ``pending``."""
        response_mode = q.get("response_mode") or "query"
        if response_mode not in RESPONSE_MODES:
            raise OAuthError("invalid_request", 9002313,
                             f"Invalid request. The response_mode '{response_mode}' is not supported.")
        response_type = q.get("response_type")
        if not response_type:
            raise missing_parameter("response_type")
        if response_type.split() != ["code"]:
            raise OAuthError("unsupported_response_type", 700054,
                             f"response_type '{response_type}' is not enabled for the application.")
        scope_text = q.get("scope")
        if not scope_text:
            raise missing_parameter("scope")
        scopes = parse_scopes(scope_text)
        challenge = q.get("code_challenge")
        method = q.get("code_challenge_method")
        if challenge is not None:
            method = method or "plain"
            if method not in ("S256", "plain"):
                raise OAuthError("invalid_request", 9002313,
                                 f"Invalid request. The code_challenge_method '{method}' is not supported.")
            if not 43 <= len(challenge) <= 128:
                raise OAuthError("invalid_request", 501491, "Invalid size of Code_Challenge parameter.")
        elif method is not None:
            raise missing_parameter("code_challenge")
        prompt = q.get("prompt")
        if prompt is not None and prompt not in PROMPTS:
            raise OAuthError("invalid_request", 90023, f"Invalid prompt parameter value '{prompt}'.")
        pending.scopes, pending.scope_text = scopes, scope_text
        pending.code_challenge, pending.code_challenge_method = challenge, method if challenge else None
        pending.prompt = prompt

    def _select_account(self, request: Request, step: _Step) -> Response:
        pending = step.pending
        user = self.directory.user(step.form.get("user", ""))
        if user is None or user not in self._candidates(pending):
            return self._error_page(request, self._not_in_tenant(user, pending), step.trace, pending.lang, status=400)
        pending.user_id = user.id
        response = self._after_sign_in(request, pending, user, step.trace)
        if user.account_enabled:
            self.platform.start_session(response, user)
        return response

    def _consent(self, request: Request, step: _Step) -> Response:
        pending = step.pending
        user = self.directory.users[step.user_id]
        tenant = self.directory.tenants[user.tenant_id]
        if step.form.get("decision") != "accept":
            self.platform.drop_pending(pending.ctx)
            return self._redirect_error(request, pending, _declined(), step.trace)
        if not (user.is_admin or tenant.user_consent_allowed):
            # The consent screen was never offered to this user; a forged post changes nothing.
            return self._error_page(request, _admin_approval_error(tenant), step.trace, pending.lang, status=403)
        self.directory.set_user_consent(user.id, pending.client_id, True)
        if user.is_admin and step.form.get("org_consent") == "1":
            # Consent on behalf of the organisation from the sign-in screen covers the delegated
            # permissions requested, never application permissions.
            self.directory.set_delegated_admin_consent(tenant.id, pending.client_id, True)
        return self._complete(request, pending, user)

    def _switch_to_admin(self, request: Request, step: _Step) -> Response:
        pending = step.pending
        user = self.directory.users[step.user_id]
        pending.admins_only = True
        pending.tenant_id = user.tenant_id
        pending.user_id = None
        return self._pick_account_page(request, pending)

    def _return_without_consent(self, request: Request, step: _Step) -> Response:
        pending = step.pending
        tenant = self.directory.tenants[self.directory.users[step.user_id].tenant_id]
        self.platform.drop_pending(pending.ctx)
        return self._redirect_error(request, pending, _admin_approval_error(tenant), step.trace)

    def _after_sign_in(self, request: Request, pending: PendingSignIn, user: SandboxUser, trace: Trace) -> Response:
        injected = self.platform.take_sign_in_failure()
        if injected is not None:
            self.platform.drop_pending(pending.ctx)
            return self._redirect_error(request, pending, injected, trace)
        if not user.account_enabled:
            return self._error_page(request, account_disabled(), trace, pending.lang, status=400)
        tenant = self.directory.tenants[user.tenant_id]
        app = self.directory.apps[pending.client_id]
        consented = self.directory.has_delegated_consent(user.id, app.client_id)
        if consented and pending.prompt != "consent":
            return self._complete(request, pending, user)
        if user.is_admin or tenant.user_consent_allowed:
            perms = list(pending.scopes.permissions or ("User.Read",))
            if "offline_access" in pending.scopes.oidc:
                perms.append("offline_access")
            return ui.render(
                request, "identity/consent.html", lang=pending.lang,
                title=_t(pending.lang, "Berechtigungen", "Permissions"),
                app_name=app.name, user=user, tenant_name=tenant.name, ctx=pending.ctx,
                permissions=[_perm(p, pending.lang) for p in perms],
                offer_org_consent=user.is_admin,
                action_url=f"/{pending.tenant_path}/oauth2/v2.0/authorize/consent",
            )
        if consented:
            # prompt=consent from a user who may not consent: the admin's grant already covers it.
            return self._complete(request, pending, user)
        return ui.render(
            request, "identity/admin_approval.html", lang=pending.lang,
            title=_t(pending.lang, "Genehmigung erforderlich", "Approval required"),
            app_name=app.name, user=user, ctx=pending.ctx,
            error_description=trace.describe(_admin_approval_error(tenant)).split("\r\n")[0],
            admin_url=f"/{pending.tenant_path}/oauth2/v2.0/authorize/admin",
            return_url=f"/{pending.tenant_path}/oauth2/v2.0/authorize/return",
        )

    def _complete(self, request: Request, pending: PendingSignIn, user: SandboxUser) -> Response:
        params: dict[str, str] = {"code": self.platform.issue_code(pending, user)}
        if pending.state is not None:
            params["state"] = pending.state
        params["session_state"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{user.id}/{pending.client_id}"))
        if pending.client_info:
            params["client_info"] = client_info(user)
        return self._respond_to_app(request, pending, params)

    # --- admin consent ---------------------------------------------------------------------
    def _admin_consent(self, request: Request, start: _Opening) -> Response:
        scope_text = request.query_params.get("scope") or f"{GRAPH_RESOURCE}/.default"
        pending = start.pending(request, "adminconsent", scopes=NO_SCOPES, scope_text=scope_text, admins_only=True)
        try:
            pending.scopes = parse_scopes(scope_text)
        except OAuthError as err:
            return self._redirect_error(request, pending, err, start.trace)
        self.platform.store_pending(pending)
        session_user = self.platform.session_user(request)
        if session_user is not None and session_user in self._candidates(pending) and session_user.account_enabled:
            pending.user_id = session_user.id
            return self._admin_consent_page(request, pending, session_user)
        return self._pick_account_page(request, pending)

    def _admin_select(self, request: Request, step: _Step) -> Response:
        pending = step.pending
        user = self.directory.user(step.form.get("user", ""))
        if user is None or user not in self._candidates(pending):
            err = (OAuthError("access_denied", 90093, "Only an administrator of the tenant can grant consent "
                              "on behalf of the organization.", status=403)
                   if user is not None and not user.is_admin else self._not_in_tenant(user, pending))
            return self._error_page(request, err, step.trace, pending.lang, status=err.status)
        if not user.account_enabled:
            return self._error_page(request, account_disabled(), step.trace, pending.lang)
        pending.user_id = user.id
        response = self._admin_consent_page(request, pending, user)
        self.platform.start_session(response, user)
        return response

    def _admin_consent_page(self, request: Request, pending: PendingSignIn, user: SandboxUser) -> Response:
        app = self.directory.apps[pending.client_id]
        tenant = self.directory.tenants[user.tenant_id]
        perms = ([{**_perm(r, pending.lang, app_role=True), "app": True} for r in sorted(APPLICATION_ROLES)]
                 if pending.scopes_default else [])
        perms += [{**_perm(p, pending.lang), "app": False} for p in pending.scopes.permissions]
        return ui.render(
            request, "identity/admin_consent.html", lang=pending.lang,
            title=_t(pending.lang, "Administratorzustimmung", "Admin consent"),
            app_name=app.name, user=user, tenant_name=tenant.name, ctx=pending.ctx, permissions=perms,
            action_url=f"/{pending.tenant_path}/v2.0/adminconsent/consent",
        )

    def _admin_decide(self, request: Request, step: _Step) -> Response:
        pending = step.pending
        user = self.directory.users[step.user_id]
        self.platform.drop_pending(pending.ctx)
        if step.form.get("decision") != "accept":
            return self._redirect_error(request, pending, _declined(), step.trace)
        if pending.scopes_default:
            # /.default: everything the registration lists, application permissions included.
            self.directory.set_admin_consent(user.tenant_id, pending.client_id, True)
        else:
            # Named delegated scopes: consent for all users to those, and no application permission.
            self.directory.set_delegated_admin_consent(user.tenant_id, pending.client_id, True)
        params = {"admin_consent": "True", "tenant": user.tenant_id}
        if pending.state is not None:
            params["state"] = pending.state
        params["scope"] = pending.scope_text
        return self._respond_to_app(request, pending, params)

    # --- logout ----------------------------------------------------------------------------
    async def _logout(self, request: Request) -> Response:
        lang = ui.pick_language(request)
        target = request.query_params.get("post_logout_redirect_uri")
        registered = {uri for app in list(self.directory.apps.values()) for uri in list(app.redirect_uris)}
        response: Response
        if target and target in registered:
            response = RedirectResponse(target, status_code=302)
        else:
            response = ui.render(request, "identity/signed_out.html", lang=lang,
                                 title=_t(lang, "Abgemeldet", "Signed out"))
        self.platform.end_session(request, response)
        return response

    # --- screens and answers ---------------------------------------------------------------
    def _opening(self, handler: Callable[[Request, _Opening], Response], *,
                 admin_consent: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """The endpoint for a request that starts a sign-in: ``handler`` runs once tenant, client
        and redirect URI check out. Until then errors are shown, never redirected: redirecting to
        an unchecked URI would make this an open redirector."""
        async def endpoint(request: Request) -> Response:
            q = request.query_params
            lang = ui.pick_language(request)
            trace = Trace.of(request)
            tenant_path = request.path_params["tenant"]
            try:
                if admin_consent and tenant_path.lower() in ("common", "consumers"):
                    raise OAuthError("invalid_request", 9002313,
                                     f"Invalid request. Admin consent cannot be requested at the '{tenant_path}' "
                                     "endpoint; use the tenant id, a verified domain or 'organizations'.")
                tenant = self.platform.resolve_tenant(tenant_path)
                app = self.platform.app_for(q.get("client_id"), tenant_path)
                redirect_uri = q.get("redirect_uri")
                if not redirect_uri:
                    raise missing_parameter("redirect_uri")
                if redirect_uri not in app.redirect_uris:
                    raise OAuthError("invalid_request", 50011, f"The redirect URI '{redirect_uri}' specified in "
                                     "the request does not match the redirect URIs configured for the application "
                                     f"'{app.client_id}'. Make sure the redirect URI sent in the request matches "
                                     "one added to your application.")
            except OAuthError as err:
                return self._error_page(request, err, trace, lang)
            return handler(request, _Opening(trace, lang, tenant_path, tenant, app, redirect_uri,
                                             self.platform.clock()))
        return endpoint

    def _continuing(self, kind: str, handler: Callable[[Request, _Step], Response], *,
                    signed_in: bool = True) -> Callable[[Request], Awaitable[Response]]:
        """The endpoint for a form post that continues a pending sign-in of ``kind`` (named by
        the form's ``ctx``): ``handler`` gets the step; an unknown or stale ``ctx`` gets the
        "flow expired" page. ``signed_in``: the step comes after the account was picked."""
        async def endpoint(request: Request) -> Response:
            trace = Trace.of(request)
            form = await read_form(request)
            pending = self.platform.pending(form.get("ctx"), kind)
            if pending is None or (signed_in and pending.user_id is None):
                return self._error_page(request, _flow_expired(), trace, ui.pick_language(request))
            return handler(request, _Step(trace, form, pending))
        return endpoint

    def _candidates(self, pending: PendingSignIn) -> list[SandboxUser]:
        """Who may sign in for this request: the tenant's users (all for common/organizations),
        narrowed by domain_hint and, on the admin paths, to administrators."""
        users = list(self.directory.users.values())
        if pending.tenant_id is not None:
            users = [u for u in users if u.tenant_id == pending.tenant_id]
        elif pending.domain_hint:
            hinted = self.directory.tenant(pending.domain_hint)
            if hinted is not None:
                users = [u for u in users if u.tenant_id == hinted.id]
        if pending.admins_only:
            users = [u for u in users if u.is_admin]
        return users

    def _not_in_tenant(self, user: SandboxUser | None, pending: PendingSignIn) -> OAuthError:
        tenant = self.directory.tenants.get(pending.tenant_id or "")
        where = tenant.name if tenant else pending.tenant_path
        who = user.mail if user else "?"
        return OAuthError("invalid_request", 50020, f"User account '{who}' from identity provider does not exist in "
                          f"tenant '{where}' and cannot access the application '{pending.client_id}' in that tenant.")

    def _pick_account_page(self, request: Request, pending: PendingSignIn) -> Response:
        app = self.directory.apps[pending.client_id]
        hint = (pending.login_hint or "").lower()
        candidates = self._candidates(pending)
        tenants = {u.tenant_id for u in candidates}
        users = [{
            "id": u.id, "display_name": u.display_name, "mail": u.mail, "is_admin": u.is_admin,
            "enabled": u.account_enabled, "initials": _initials(u.display_name), "hinted": u.mail.lower() == hint,
            "tenant_name": self.directory.tenants[u.tenant_id].name,
        } for u in sorted(candidates, key=lambda u: (u.tenant_id, u.display_name))]
        action = (f"/{pending.tenant_path}/v2.0/adminconsent/select" if pending.kind == "adminconsent"
                  else f"/{pending.tenant_path}/oauth2/v2.0/authorize/select")
        notice = None
        if pending.admins_only and pending.kind == "authorize":
            notice = _t(pending.lang, "Melden Sie sich mit einem Administratorkonto an, um für die Organisation "
                        "zuzustimmen.", "Sign in with an administrator account to consent for the organization.")
        return ui.render(
            request, "identity/pick_account.html", lang=pending.lang,
            title=_t(pending.lang, "Anmelden", "Sign in"), app_name=app.name, users=users, ctx=pending.ctx,
            action_url=action, admin_mode=pending.kind == "adminconsent", show_tenant=len(tenants) > 1,
            notice=notice,
            # The account picker answers a GET that must not be replayed with a stale ctx.
            switch_url=None if request.method != "GET" else ui.with_language(
                str(request.url.path) + "?" + request.url.query, "en" if pending.lang == "de" else "de"),
        )

    def _respond_to_app(self, request: Request, pending: PendingSignIn, params: Mapping[str, str]) -> Response:
        if pending.response_mode == "form_post":
            return ui.render(request, "identity/form_post.html", lang=pending.lang,
                             title=_t(pending.lang, "Weiterleitung", "Redirecting"),
                             redirect_uri=pending.redirect_uri, fields=list(params.items()), switch_url=None)
        encoded = urlencode(params)
        parts = urlsplit(pending.redirect_uri)
        if pending.response_mode == "fragment":
            target = urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, encoded))
        else:
            query = f"{parts.query}&{encoded}" if parts.query else encoded
            target = urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
        return RedirectResponse(target, status_code=302)

    def _redirect_error(self, request: Request, pending: PendingSignIn, err: OAuthError, trace: Trace) -> Response:
        params = {"error": err.error, "error_description": trace.describe(err)}
        if err.subcode:
            params["error_subcode"] = err.subcode
        params["error_uri"] = self.platform.error_uri(err.code)
        if pending.state is not None:
            params["state"] = pending.state
        return self._respond_to_app(request, pending, params)

    @staticmethod
    def _error_page(request: Request, err: OAuthError, trace: Trace, lang: str, *,
                    status: int | None = None) -> Response:
        return ui.render(request, "identity/error.html", lang=lang, title=_t(lang, "Fehler", "Error"),
                         status_code=status or err.status, code=err.code, message=err.message, error=err.error,
                         trace_id=trace.trace_id, correlation_id=trace.correlation_id, timestamp=trace.timestamp)


# =============================================================================================
# Errors only the pages raise, and page helpers
# =============================================================================================

def _admin_approval_error(tenant: SandboxTenant) -> OAuthError:
    return OAuthError("consent_required", 90094, f"An administrator of {tenant.name} has set a policy that "
                      "prevents you from granting the app the permissions it is requesting. Contact an "
                      f"administrator of {tenant.name}, who can grant permissions to this app on your behalf.")


def _declined() -> OAuthError:
    return OAuthError("access_denied", 65004, "User declined to consent to access the app.", subcode="cancel")


def _flow_expired() -> OAuthError:
    return OAuthError("invalid_request", 50089, "Authentication failed due to flow token expired. "
                      "Start the sign-in again from the application.")


def _initials(name: str) -> str:
    parts = [p for p in name.replace("Dr.", "").replace("Prof.", "").split() if p]
    return "".join(p[0] for p in parts[:1] + parts[-1:]).upper() if parts else "?"


def _t(lang: str, de: str, en: str) -> str:
    return de if lang == "de" else en


def _perm(name: str, lang: str, *, app_role: bool = False) -> dict[str, Any]:
    titles = (APP_ROLE_TITLES if app_role else PERMISSION_TITLES).get(name, (name, name))
    return {"name": name, "title": titles[0] if lang == "de" else titles[1]}


#: what ``/error?code=…`` says about the codes this stand-in sends (German, English)
_KNOWN_CODES: dict[str, tuple[str, str]] = {
    "50011": ("Die Redirect-URI ist für die Anwendung nicht registriert.", "The redirect URI is not registered for "
              "the application."),
    "50020": ("Das Konto gehört nicht zu diesem Mandanten.", "The account does not belong to this tenant."),
    "50057": ("Das Benutzerkonto ist deaktiviert.", "The user account is disabled."),
    "50058": ("Stille Anmeldung ohne angemeldeten Benutzer.", "Silent sign-in, but no user is signed in."),
    "50148": ("Der PKCE-code_verifier passt nicht zur code_challenge.", "The PKCE code_verifier does not match the "
              "code_challenge."),
    "50173": ("Die Berechtigung wurde widerrufen (z. B. Kennwort geändert).", "The grant was revoked (e.g. password "
              "changed)."),
    "54005": ("Der Autorisierungscode wurde bereits eingelöst.", "The authorization code was already redeemed."),
    "65001": ("Es liegt keine Zustimmung für die Anwendung vor.", "Nobody has consented to the application."),
    "65004": ("Der Benutzer hat die Zustimmung abgelehnt.", "The user declined to consent."),
    "70008": ("Der Code oder das Aktualisierungstoken ist abgelaufen.", "The code or refresh token has expired."),
    "90094": ("Ein Administrator muss der Anwendung zustimmen.", "An administrator must consent to the application."),
    "700016": ("Die Anwendung ist unbekannt.", "The application is unknown."),
    "700082": ("Das Aktualisierungstoken ist abgelaufen oder wurde widerrufen.", "The refresh token expired or was "
               "revoked."),
    "7000215": ("Ungültiger geheimer Clientschlüssel.", "Invalid client secret."),
    "7000229": ("Die Anwendung hat keinen Dienstprinzipal im Mandanten (keine Zustimmung).", "The application has "
                "no service principal in the tenant (nobody consented)."),
}
