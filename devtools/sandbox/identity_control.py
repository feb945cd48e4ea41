"""Control API and control page of the identity stand-in, on the plain-HTTP listener.

JSON endpoints under ``/_sandbox/identity/`` switch tenant policies (user consent allowed,
admin consent granted), act on tokens (revoke a user's refresh tokens, expire access tokens,
shorten their lifetime), end browser sessions, make the next sign-in fail and add tenants or users — what a test or a
person at the control page needs to provoke every consent and token failure on purpose.

Every endpoint takes JSON (or a url-encoded form from the control page, which is then sent
back to the page with 303). Tenants are named by id or domain, users by id or mail.
Nothing here returns a secret or a token.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from devtools.sandbox import ui
from devtools.sandbox.directory import SandboxTenant, SandboxUser
from devtools.sandbox.identity import IdentityPlatform
from devtools.sandbox.identity.protocol import SIGN_IN_FAILURES

PAGE = "/_sandbox/identity/"

Body = dict[str, Any]
#: a control: the request (for path parameters) and its body → the JSON answer
Action = Callable[[Request, Body], dict[str, Any]]


class BadControlRequest(Exception):
    pass


def control_routes(identity: IdentityPlatform) -> list[BaseRoute]:
    control = _Control(identity)
    # POST endpoints: (path below PAGE, action, status on success)
    actions: list[tuple[str, Action, int]] = [
        ("tenants", control.add_tenant, 201),
        ("users", control.add_user, 201),
        ("tenants/{tenant}/user-consent", control.user_consent_policy, 200),
        ("tenants/{tenant}/admin-consent", control.admin_consent, 200),
        ("users/{user}/consent", control.user_consent, 200),
        ("tenants/{tenant}/application-consent", control.application_consent, 200),
        ("tenants/{tenant}/app-scope", control.app_scope, 200),
        ("tenants/{tenant}/delete-app", control.delete_app, 200),
        ("resource-mailboxes", control.add_resource_mailbox, 201),
        ("users/{user}/enabled", control.account_enabled, 200),
        ("users/{user}/revoke-refresh-tokens", control.revoke, 200),
        ("access-tokens/expire", control.expire, 200),
        ("access-tokens/lifetime", control.lifetime, 200),
        ("access-tokens/refuse", control.refuse, 200),
        ("sessions/sign-out", control.sign_out, 200),
        ("sign-in-failures", control.sign_in_failure, 200),
    ]
    return [
        Route(PAGE, control.page, methods=["GET"]),
        Route(f"{PAGE}state", control.state, methods=["GET"]),
        *(Route(f"{PAGE}{path}", control.endpoint(action, status=status), methods=["POST"])
          for path, action, status in actions),
    ]


def tenant_json(identity: IdentityPlatform, tenant: SandboxTenant) -> dict[str, Any]:
    return {
        "id": tenant.id, "name": tenant.name, "domain": tenant.domain,
        "user_consent_allowed": tenant.user_consent_allowed,
        "admin_consented_apps": sorted(tenant.admin_consented_apps),
        "application_permissions": {cid: sorted(roles) for cid, roles in tenant.app_role_grants.items()},
        "app_mailbox_scope": {cid: sorted(ids) for cid, ids in tenant.app_mailbox_scope.items()},
        "authority": identity.authority(tenant.id),
    }


def user_json(user: SandboxUser) -> dict[str, Any]:
    return {
        "id": user.id, "tenant_id": user.tenant_id, "display_name": user.display_name, "mail": user.mail,
        "is_admin": user.is_admin, "account_enabled": user.account_enabled, "time_zone": user.time_zone,
        "consented_apps": sorted(user.consented_apps), "mailbox_kind": user.mailbox_kind,
    }


class _Control:
    def __init__(self, identity: IdentityPlatform) -> None:
        self.identity = identity
        self.directory = identity.directory

    # --- read ------------------------------------------------------------------------------
    async def state(self, request: Request) -> Response:
        return JSONResponse(self._state())

    def _state(self) -> dict[str, Any]:
        directory = self.directory
        live = list(directory.access_tokens.values())
        return {
            "authority_base": self.identity.base,
            # list() copies in one step, so a tenant added meanwhile cannot break the iteration
            "tenants": [tenant_json(self.identity, t) for t in list(directory.tenants.values())],
            "users": [user_json(u) for u in list(directory.users.values())],
            # registered redirect URIs are public configuration; the client secret is not shown
            "apps": [{"client_id": a.client_id, "name": a.name, "redirect_uris": list(a.redirect_uris)}
                     for a in list(directory.apps.values())],
            "access_tokens": {"total": len(live), "app_only": sum(1 for c in live if c.app_only)},
            "refresh_tokens": {"total": len(directory.refresh_tokens),
                               "revoked": sum(1 for g in list(directory.refresh_tokens.values()) if g.revoked)},
            "sessions": self.identity.session_count(),
            "access_token_lifetime": self.identity.access_token_lifetime or directory.ACCESS_TOKEN_LIFETIME,
        }

    async def page(self, request: Request) -> Response:
        lang = ui.pick_language(request)
        state = self._state()
        tenants = {t["id"]: t for t in state["tenants"]}
        return ui.render(request, "identity/controls.html", lang=lang,
                         title="Identität" if lang == "de" else "Identity", nav="identity",
                         state=state, tenants=tenants, client_id=self.identity.config.client_id,
                         sign_in_failures=sorted(SIGN_IN_FAILURES),
                         message=request.query_params.get("done"))

    # --- write: each action reads the body and answers with JSON (see ``endpoint``) ---------
    def add_tenant(self, request: Request, body: Body) -> dict[str, Any]:
        name, domain = _str(body, "name"), _str(body, "domain").lower()
        if self.directory.tenant(domain) is not None:
            raise BadControlRequest(f"a tenant with domain {domain!r} exists")
        tenant = self.directory.add_tenant(name, domain, tenant_id=body.get("id") or None,
                                           user_consent_allowed=_bool(body, "user_consent_allowed", True))
        return tenant_json(self.identity, tenant)

    def add_user(self, request: Request, body: Body) -> dict[str, Any]:
        tenant, local = self._new_mailbox(body)
        user = self.directory.add_user(tenant.id, _str(body, "display_name"), local,
                                       user_id=body.get("id") or None, is_admin=_bool(body, "is_admin", False),
                                       time_zone=body.get("time_zone") or "W. Europe Standard Time")
        return user_json(user)

    def add_resource_mailbox(self, request: Request, body: Body) -> dict[str, Any]:
        tenant, local = self._new_mailbox(body)
        user = self.directory.add_resource_mailbox(tenant.id, _str(body, "display_name"), local,
                                                   kind=body.get("kind") or "room", user_id=body.get("id") or None)
        return user_json(user)

    def user_consent_policy(self, request: Request, body: Body) -> dict[str, Any]:
        tenant = self._path_tenant(request)
        self.identity.set_user_consent_allowed(tenant.id, _bool(body, "allowed"))
        return tenant_json(self.identity, tenant)

    def admin_consent(self, request: Request, body: Body) -> dict[str, Any]:
        tenant = self._path_tenant(request)
        self.identity.set_admin_consent(tenant.id, _bool(body, "granted"), client_id=_client_id(body))
        return tenant_json(self.identity, tenant)

    def application_consent(self, request: Request, body: Body) -> dict[str, Any]:
        tenant = self._path_tenant(request)
        roles = _names(body, "roles", "roles must be a list of application permission names or null")
        self.identity.set_application_consent(tenant.id, roles, client_id=_client_id(body))
        return tenant_json(self.identity, tenant)

    def app_scope(self, request: Request, body: Body) -> dict[str, Any]:
        tenant = self._path_tenant(request)
        mailboxes = _names(body, "mailboxes", "mailboxes must be a list of user ids / addresses or null")
        try:
            self.identity.set_app_mailbox_scope(tenant.id, mailboxes, client_id=_client_id(body))
        except KeyError as exc:
            # an unknown mailbox in the body is a bad request, not a missing tenant
            raise BadControlRequest(str(exc)) from exc
        return tenant_json(self.identity, tenant)

    def delete_app(self, request: Request, body: Body) -> dict[str, Any]:
        tenant = self._path_tenant(request)
        self.identity.delete_service_principal(tenant.id, client_id=_client_id(body))
        return tenant_json(self.identity, tenant)

    def user_consent(self, request: Request, body: Body) -> dict[str, Any]:
        user = self._path_user(request)
        self.identity.set_user_consent(user.id, _bool(body, "granted"), client_id=_client_id(body))
        return user_json(user)

    def account_enabled(self, request: Request, body: Body) -> dict[str, Any]:
        user = self._path_user(request)
        self.identity.set_account_enabled(user.id, _bool(body, "enabled"))
        return user_json(user)

    def revoke(self, request: Request, body: Body) -> dict[str, Any]:
        user = self._path_user(request)
        reason = body.get("reason") or "revoked"
        count = self.identity.revoke_refresh_tokens(user.id, reason=reason)
        return {"user": user.mail, "revoked": count, "reason": reason}

    # The token and session controls check a named user themselves (unknown → 404).
    def expire(self, request: Request, body: Body) -> dict[str, Any]:
        return {"expired": self.identity.expire_access_tokens(body.get("user") or None)}

    def refuse(self, request: Request, body: Body) -> dict[str, Any]:
        """Revoke live access tokens but keep refresh tokens ({"user"?, "tenant"?, "mode": "revoked" |
        "claims_challenge"}): Graph answers 401 until the client gets a fresh token."""
        who = body.get("user") or None
        if who is not None:
            self.identity.user_or_raise(who)   # an unknown user is reported before an unknown tenant
        tenant = body.get("tenant") or None
        if tenant is not None:
            tenant = self.identity.tenant_or_raise(str(tenant)).id
        mode = str(body.get("mode") or "revoked")
        return {"refused": self.identity.refuse_access_tokens(who, mode=mode, tenant=tenant), "mode": mode}

    def lifetime(self, request: Request, body: Body) -> dict[str, Any]:
        raw = body.get("seconds")
        try:
            seconds = None if raw in (None, "", "default") else float(raw)
            self.identity.set_access_token_lifetime(seconds)
        except (TypeError, ValueError) as exc:
            raise BadControlRequest("seconds must be a positive number or null") from exc
        return {"access_token_lifetime": self.identity.access_token_lifetime or self.directory.ACCESS_TOKEN_LIFETIME}

    def sign_out(self, request: Request, body: Body) -> dict[str, Any]:
        return {"signed_out": self.identity.sign_out(body.get("user") or None)}

    def sign_in_failure(self, request: Request, body: Body) -> dict[str, Any]:
        kind = _str(body, "kind")
        self.identity.fail_next_sign_in(kind)
        return {"next_sign_in_fails_with": kind}

    # --- plumbing --------------------------------------------------------------------------
    def endpoint(self, action: Action, *, status: int) -> Callable[[Request], Awaitable[Response]]:
        """The route handler for ``action``: JSON in and out, or a form from the control page that
        is sent back to the page. Bad input answers 400 and an unknown tenant or user 404."""
        async def handle(request: Request) -> Response:
            from_page = request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
            try:
                result = action(request, await _body(request))
            except (BadControlRequest, ValueError) as exc:
                # ValueError: a control method of the platform or the directory refused a value
                return _answer(from_page, {"error": "bad_request", "message": str(exc)}, 400)
            except LookupError as exc:
                return _answer(from_page, {"error": "not_found", "message": str(exc).strip("'\"")}, 404)
            return _answer(from_page, result, status)
        return handle

    def _path_tenant(self, request: Request) -> SandboxTenant:
        return self.identity.tenant_or_raise(request.path_params["tenant"])

    def _path_user(self, request: Request) -> SandboxUser:
        return self.identity.user_or_raise(request.path_params["user"])

    def _new_mailbox(self, body: Body) -> tuple[SandboxTenant, str]:
        """Tenant and local part of a mailbox to add; refused when the address is taken."""
        tenant = self.identity.tenant_or_raise(_str(body, "tenant"))
        local = _str(body, "local_part").lower()
        if self.directory.user(f"{local}@{tenant.domain}") is not None:
            raise BadControlRequest(f"{local}@{tenant.domain} exists")
        return tenant, local


def _answer(from_page: bool, payload: dict[str, Any], status: int) -> Response:
    if from_page:
        # Post/redirect/get: the control page shows the outcome without a resubmit prompt.
        outcome = "ok" if status < 400 else payload.get("message", "error")
        return RedirectResponse(f"{PAGE}?done={outcome}", status_code=303)
    return JSONResponse(payload, status_code=status)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadControlRequest("body must be JSON") from exc
    if not isinstance(data, dict):
        raise BadControlRequest("body must be a JSON object")
    return data


def _str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadControlRequest(f"{key!r} is required")
    return value.strip()


def _bool(body: dict[str, Any], key: str, default: bool | None = None) -> bool:
    value = body.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
        return False
    raise BadControlRequest(f"{key!r} must be true or false")


def _client_id(body: dict[str, Any]) -> str | None:
    """The app a consent control is about; None means the sandbox's own registration."""
    return body.get("client_id") or None


def _names(body: dict[str, Any], key: str, problem: str) -> list[str] | None:
    """A list of names (permissions, mailboxes) or null, which the controls read as "none" / "no limit"."""
    value = body.get(key)
    if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
        raise BadControlRequest(problem)
    return value
