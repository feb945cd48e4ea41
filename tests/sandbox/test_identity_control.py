"""The identity control API (JSON and the control page) through the composed sandbox."""

from __future__ import annotations

import httpx
import pytest

from devtools.sandbox.client import ControlError, SandboxControl
from devtools.sandbox.directory import TokenError
from devtools.sandbox.server import RunningSandbox
from tests.support.sandbox_tenants import TenantFactory


def test_state_lists_tenants_users_and_app_without_secrets(sandbox: RunningSandbox,
                                                           sandbox_control: SandboxControl) -> None:
    state = sandbox_control.identity_state()
    domains = {t["domain"]: t for t in state["tenants"]}
    assert domains["praxis-sonnenschein.example"]["user_consent_allowed"] is True
    assert domains["klinik-nord.example"]["user_consent_allowed"] is False
    mails = {u["mail"]: u for u in state["users"]}
    assert mails["anna.weber@praxis-sonnenschein.example"]["is_admin"] is True
    assert mails["anna.weber@praxis-sonnenschein.example"]["display_name"] == "Dr. Anna Weber"
    assert mails["jonas.becker@praxis-sonnenschein.example"]["is_admin"] is False
    assert mails["petra.schulz@klinik-nord.example"]["is_admin"] is True
    assert "tobias.wagner@klinik-nord.example" in mails
    assert "lena.hoffmann@praxis-sonnenschein.example" in mails
    app = next(a for a in state["apps"] if a["client_id"] == sandbox.config.client_id)
    assert app["redirect_uris"] == sandbox.config.redirect_uris
    raw = httpx.get(f"{sandbox.http_base}/_sandbox/identity/state").text
    assert sandbox.config.client_secret not in raw


def test_policy_and_consent_switches(sandbox: RunningSandbox, sandbox_control: SandboxControl,
                                     tenant_factory: TenantFactory) -> None:
    tenant = tenant_factory()
    cid = sandbox.config.client_id
    assert sandbox_control.set_user_consent_allowed(tenant.tenant.domain, False)["user_consent_allowed"] is False
    assert tenant.tenant.user_consent_allowed is False
    assert cid in sandbox_control.set_admin_consent(tenant.id)["admin_consented_apps"]
    assert sandbox.directory.has_service_principal(tenant.id, cid)
    assert cid not in sandbox_control.set_admin_consent(tenant.id, False)["admin_consented_apps"]
    assert not sandbox.directory.has_service_principal(tenant.id, cid)
    assert sandbox_control.set_user_consent(tenant.user.mail, True)["consented_apps"] == [cid]
    assert sandbox.directory.has_delegated_consent(tenant.user.id, cid)
    assert sandbox_control.set_account_enabled(tenant.user.id, False)["account_enabled"] is False


def test_token_controls(sandbox: RunningSandbox, sandbox_control: SandboxControl,
                        tenant_factory: TenantFactory) -> None:
    tenant = tenant_factory()
    directory = sandbox.directory
    cid = sandbox.config.client_id
    token, _ = directory.issue_access_token(tenant_id=tenant.id, client_id=cid, user_id=tenant.user.id,
                                            scopes=frozenset({"Calendars.ReadWrite"}))
    directory.issue_refresh_token(tenant_id=tenant.id, client_id=cid, user_id=tenant.user.id,
                                  scopes=frozenset({"Calendars.ReadWrite", "offline_access"}))
    assert sandbox_control.expire_access_tokens(tenant.user.mail) == 1
    with pytest.raises(TokenError):
        directory.verify_access_token(token)
    assert sandbox_control.revoke_refresh_tokens(tenant.user.mail, reason="password_changed") == 1
    assert all(g.revoked_code == 50173 for g in directory.refresh_tokens.values() if g.user_id == tenant.user.id)
    assert sandbox_control.set_access_token_lifetime(90) == 90
    assert sandbox_control.set_access_token_lifetime(None) == directory.ACCESS_TOKEN_LIFETIME
    assert sandbox_control.sign_out(tenant.user.mail) == 0


def test_add_tenant_and_user(sandbox: RunningSandbox, sandbox_control: SandboxControl) -> None:
    tenant = sandbox_control.add_tenant("Praxis am See", "praxis-am-see.example", user_consent_allowed=False)
    assert tenant["user_consent_allowed"] is False
    assert tenant["authority"] == f"{sandbox.https_base}/{tenant['id']}"
    user = sandbox_control.add_user("praxis-am-see.example", "Sabine Krüger", "sabine.krueger", is_admin=True)
    assert user["mail"] == "sabine.krueger@praxis-am-see.example" and user["is_admin"] is True
    assert sandbox.directory.user(user["id"]) is not None
    with pytest.raises(ControlError) as duplicate:
        sandbox_control.add_tenant("Doppelt", "praxis-am-see.example")
    assert duplicate.value.status == 400


def test_bad_requests_change_nothing(sandbox: RunningSandbox, sandbox_control: SandboxControl,
                                     tenant_factory: TenantFactory) -> None:
    tenant = tenant_factory()
    with pytest.raises(ControlError) as unknown:
        sandbox_control.revoke_refresh_tokens("nobody@nowhere.example")
    assert unknown.value.status == 404
    with pytest.raises(ControlError) as bad_reason:
        sandbox_control.revoke_refresh_tokens(tenant.user.mail, reason="because")
    assert bad_reason.value.status == 400
    with pytest.raises(ControlError) as not_bool:
        sandbox_control.request("POST", f"/_sandbox/identity/tenants/{tenant.id}/user-consent",
                                json={"allowed": "maybe"})
    assert not_bool.value.status == 400
    assert tenant.tenant.user_consent_allowed is True
    not_json = httpx.post(f"{sandbox.http_base}/_sandbox/identity/tenants/{tenant.id}/admin-consent",
                          content=b"{oops", headers={"content-type": "application/json"})
    assert not_json.status_code == 400
    assert tenant.tenant.admin_consented_apps == set()


def test_control_page_renders_and_its_forms_post_back(sandbox: RunningSandbox,
                                                      tenant_factory: TenantFactory) -> None:
    tenant = tenant_factory()
    page = httpx.get(f"{sandbox.http_base}/_sandbox/identity/")
    assert page.status_code == 200
    assert "Mandanten und Richtlinien" in page.text and tenant.tenant.name in page.text
    assert sandbox.config.client_secret not in page.text
    english = httpx.get(f"{sandbox.http_base}/_sandbox/identity/?lang=en")
    assert "Tenants and policies" in english.text
    answer = httpx.post(f"{sandbox.http_base}/_sandbox/identity/tenants/{tenant.id}/user-consent",
                        data={"allowed": "false"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/_sandbox/identity/?done=ok"
    assert tenant.tenant.user_consent_allowed is False
