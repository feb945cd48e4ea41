"""The identity stand-in, driven by the real MSAL and azure-identity through the composed sandbox.

Each test that changes consent or tokens works in a fresh tenant of its own (``tenant_factory``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import msal
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from devtools.sandbox.browser import FormBrowser, response_params, sign_in
from devtools.sandbox.directory import TokenError
from devtools.sandbox.identity.protocol import APPLICATION_ROLES
from devtools.sandbox.server import RunningSandbox
from tests.support.sandbox_tenants import TenantFactory

CAL = "https://graph.microsoft.com/Calendars.ReadWrite"
SHARED = "https://graph.microsoft.com/Calendars.ReadWrite.Shared"
GRAPH_DEFAULT = "https://graph.microsoft.com/.default"

MsalFactory = Callable[..., msal.ConfidentialClientApplication]
T = TypeVar("T")


def _flow(app: msal.ConfidentialClientApplication, redirect_uri: str, **kwargs: Any) -> dict[str, Any]:
    # form_post is what MSAL recommends (it warns otherwise); the sandbox supports all three modes.
    flow: dict[str, Any] = app.initiate_auth_code_flow([CAL, SHARED], redirect_uri=redirect_uri,
                                                       response_mode="form_post", **kwargs)
    return flow


def _connect(app: msal.ConfidentialClientApplication, browser: FormBrowser, redirect_uri: str,
             mail: str, **kwargs: Any) -> dict[str, Any]:
    flow = _flow(app, redirect_uri)
    params = sign_in(browser, flow["auth_uri"], mail, **kwargs)
    result: dict[str, Any] = app.acquire_token_by_auth_code_flow(flow, params)
    return result


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


# --- discovery ---------------------------------------------------------------------------------

def test_openid_configuration_for_tenant_id_domain_and_aliases(sandbox: RunningSandbox,
                                                               sandbox_http: httpx.Client) -> None:
    tenant = sandbox.directory.tenant("praxis-sonnenschein.example")
    assert tenant is not None
    for path in (tenant.id, tenant.domain):
        doc = sandbox_http.get(f"{sandbox.https_base}/{path}/v2.0/.well-known/openid-configuration").json()
        assert doc["issuer"] == f"{sandbox.https_base}/{tenant.id}/v2.0"
        assert doc["token_endpoint"] == f"{sandbox.https_base}/{tenant.id}/oauth2/v2.0/token"
        assert doc["authorization_endpoint"] == f"{sandbox.https_base}/{tenant.id}/oauth2/v2.0/authorize"
    for alias in ("common", "organizations"):
        doc = sandbox_http.get(f"{sandbox.https_base}/{alias}/v2.0/.well-known/openid-configuration").json()
        # Tenant-independent endpoints advertise a placeholder issuer, as Entra does.
        assert doc["issuer"] == f"{sandbox.https_base}/{{tenantid}}/v2.0"
        assert doc["token_endpoint"] == f"{sandbox.https_base}/{alias}/oauth2/v2.0/token"
    unknown = sandbox_http.get(f"{sandbox.https_base}/nobody.example/v2.0/.well-known/openid-configuration")
    assert unknown.status_code == 400
    assert unknown.json()["error_codes"] == [90002]


def test_http_authority_is_refused_by_msal(sandbox: RunningSandbox) -> None:
    # MSAL insists on https; this is why the identity stand-in serves TLS with its own CA.
    with pytest.raises(ValueError, match="https"):
        msal.ConfidentialClientApplication(sandbox.config.client_id, client_credential=sandbox.config.client_secret,
                                           authority=f"{sandbox.http_base}/common", instance_discovery=False)


def test_requests_ca_bundle_variable_overrides_msal_verify(sandbox: RunningSandbox, tenant_factory: TenantFactory,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """requests lets REQUESTS_CA_BUNDLE override a session's verify=, so MSAL(verify=ca) fails where
    that variable is set (common in containers and CI). A session with trust_env=False keeps it."""
    import certifi
    import requests

    tenant = tenant_factory()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    config = sandbox.config
    with pytest.raises(requests.exceptions.SSLError):
        msal.ConfidentialClientApplication(config.client_id, client_credential=config.client_secret,
                                           authority=f"{sandbox.https_base}/{tenant.id}",
                                           instance_discovery=False, verify=sandbox.ca_path)
    session = requests.Session()
    session.trust_env = False
    session.verify = sandbox.ca_path
    try:
        app = msal.ConfidentialClientApplication(config.client_id, client_credential=config.client_secret,
                                                 authority=f"{sandbox.https_base}/{tenant.id}",
                                                 instance_discovery=False, http_client=session)
        # Discovery and a token request both went through TLS: the error is the server's answer.
        assert app.acquire_token_for_client([GRAPH_DEFAULT])["error_codes"] == [7000229]
    finally:
        session.close()


# --- authorization code flow -------------------------------------------------------------------

def test_auth_code_flow_with_consent_pkce_and_nonce(sandbox: RunningSandbox, tenant_factory: TenantFactory,
                                                    msal_app: MsalFactory, form_browser: FormBrowser,
                                                    redirect_uri: str, sandbox_http: httpx.Client) -> None:
    tenant = tenant_factory()
    user = tenant.user
    app = msal_app(tenant.id)
    flow = _flow(app, redirect_uri)

    picker = form_browser.open(flow["auth_uri"])
    assert picker.status == 200
    assert "Konto auswählen" in picker.text          # German by default
    assert tenant.admin.mail in picker.text and user.mail in picker.text
    consent = form_browser.submit(picker.form(user.mail))
    assert "Angeforderte Berechtigungen" in consent.text
    assert "Calendars.ReadWrite" in consent.text
    assert "Im Namen Ihrer Organisation" not in consent.text  # offered to administrators only
    final = form_browser.submit(consent.form(action_contains="/consent"), "accept")
    params = response_params(final)
    assert params is not None and params["state"] == flow["state"]
    assert set(params) >= {"code", "state", "session_state", "client_info"}

    result = app.acquire_token_by_auth_code_flow(flow, params)
    assert "access_token" in result, result
    assert result["token_type"] == "Bearer" and result["expires_in"] > 0 and result["ext_expires_in"] > 0
    assert CAL in result["scope"].split() and SHARED in result["scope"].split()
    claims = sandbox.directory.verify_access_token(result["access_token"])
    assert claims.user_id == user.id and claims.tenant_id == tenant.id and not claims.app_only
    assert {"Calendars.ReadWrite", "Calendars.ReadWrite.Shared", "offline_access"} <= claims.scopes
    assert claims.client_id == sandbox.config.client_id

    id_claims = result["id_token_claims"]
    assert id_claims["aud"] == sandbox.config.client_id
    assert id_claims["iss"] == f"{sandbox.https_base}/{tenant.id}/v2.0"
    assert id_claims["tid"] == tenant.id and id_claims["oid"] == user.id
    assert id_claims["preferred_username"] == user.mail
    # MSAL sends the SHA-256 of its nonce and checks the ID token echoes it.
    assert id_claims["nonce"] == hashlib.sha256(flow["nonce"].encode()).hexdigest()

    account = app.get_accounts()[0]
    assert account["home_account_id"] == f"{user.id}.{tenant.id}"
    assert account["username"] == user.mail
    assert user.consented_apps == {sandbox.config.client_id}

    # The ID token is a real RS256 JWT signed with the key published at jwks_uri.
    header_b64, payload_b64, signature_b64 = result["id_token"].split(".")
    header = json.loads(_b64decode(header_b64))
    keys = sandbox_http.get(f"{sandbox.https_base}/{tenant.id}/discovery/v2.0/keys").json()["keys"]
    jwk = next(k for k in keys if k["kid"] == header["kid"])
    public = rsa.RSAPublicNumbers(int.from_bytes(_b64decode(jwk["e"]), "big"),
                                  int.from_bytes(_b64decode(jwk["n"]), "big")).public_key()
    public.verify(_b64decode(signature_b64), f"{header_b64}.{payload_b64}".encode(), padding.PKCS1v15(),
                  hashes.SHA256())
    assert header["alg"] == "RS256"


def test_wrong_pkce_verifier_fails_and_spends_the_code(tenant_factory: TenantFactory, msal_app: MsalFactory,
                                                        form_browser: FormBrowser, redirect_uri: str) -> None:
    tenant = tenant_factory()
    app = msal_app(tenant.id)
    flow = _flow(app, redirect_uri)
    params = sign_in(form_browser, flow["auth_uri"], tenant.user.mail)
    honest_verifier = flow["code_verifier"]
    flow["code_verifier"] = "x" * 64
    result = app.acquire_token_by_auth_code_flow(flow, params)
    assert result["error"] == "invalid_grant"
    assert result["error_codes"] == [50148]
    assert result["error_description"].startswith("AADSTS50148:")
    # A code is single-use even when its redemption failed.
    flow["code_verifier"] = honest_verifier
    again = app.acquire_token_by_auth_code_flow(flow, params)
    assert again["error"] == "invalid_grant" and again["error_codes"] == [54005]


def test_state_is_checked_by_msal(tenant_factory: TenantFactory, msal_app: MsalFactory, form_browser: FormBrowser,
                                  redirect_uri: str) -> None:
    tenant = tenant_factory()
    app = msal_app(tenant.id)
    flow = _flow(app, redirect_uri)
    params = sign_in(form_browser, flow["auth_uri"], tenant.user.mail)
    assert params["state"] == flow["state"]
    with pytest.raises(ValueError, match="state mismatch"):
        app.acquire_token_by_auth_code_flow(flow, {**params, "state": "forged"})


def test_query_response_mode_redirects_with_code(tenant_factory: TenantFactory, msal_app: MsalFactory,
                                                 form_browser: FormBrowser, redirect_uri: str) -> None:
    tenant = tenant_factory()
    app = msal_app(tenant.id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MSAL nudges towards form_post
        flow = app.initiate_auth_code_flow([CAL], redirect_uri=redirect_uri)
    page = form_browser.open(flow["auth_uri"])
    page = form_browser.submit(page.form(tenant.user.mail))
    page = form_browser.submit(page.form(action_contains="/consent"), "accept")
    assert page.status == 302 and page.location is not None
    assert page.location.startswith(redirect_uri + "?code=")
    params = response_params(page)
    assert params is not None
    result = app.acquire_token_by_auth_code_flow(flow, params)
    assert "access_token" in result, result


def test_session_single_sign_on_prompts_and_sign_out(sandbox: RunningSandbox, tenant_factory: TenantFactory,
                                                     msal_app: MsalFactory, form_browser: FormBrowser,
                                                     redirect_uri: str) -> None:
    tenant = tenant_factory()
    app = msal_app(tenant.id)
    first = _connect(app, form_browser, redirect_uri, tenant.user.mail)
    assert "access_token" in first

    # Same browser, consent remembered: straight back to the app, no picker, no consent screen.
    flow = _flow(app, redirect_uri)
    again = form_browser.open(flow["auth_uri"])
    params = response_params(again)
    assert params is not None and "code" in params
    assert "access_token" in app.acquire_token_by_auth_code_flow(flow, params)

    # prompt=select_account shows the picker despite the session; prompt=none answers silently.
    flow = _flow(app, redirect_uri, prompt="select_account")
    assert response_params(form_browser.open(flow["auth_uri"])) is None
    flow = _flow(app, redirect_uri, prompt="none")
    silent = response_params(form_browser.open(flow["auth_uri"]))
    assert silent is not None and "code" in silent

    # prompt=login insists on the picker as well.
    flow = _flow(app, redirect_uri, prompt="login")
    assert "Konto auswählen" in form_browser.open(flow["auth_uri"]).text

    assert sandbox.identity.sign_out(tenant.user.mail) == 1
    flow = _flow(app, redirect_uri, prompt="none")
    params = response_params(form_browser.open(flow["auth_uri"]))
    assert params is not None
    assert params["error"] == "login_required"
    assert params["error_description"].startswith("AADSTS50058:")
    assert params["state"] == flow["state"]


def test_logout_endpoint_ends_the_session(sandbox: RunningSandbox, tenant_factory: TenantFactory,
                                          msal_app: MsalFactory, form_browser: FormBrowser, redirect_uri: str) -> None:
    tenant = tenant_factory()
    app = msal_app(tenant.id)
    assert "access_token" in _connect(app, form_browser, redirect_uri, tenant.user.mail)
    out = form_browser.open(f"{sandbox.https_base}/{tenant.id}/oauth2/v2.0/logout"
                            f"?post_logout_redirect_uri={redirect_uri}")
    assert out.status == 302 and out.location == redirect_uri
    flow = _flow(app, redirect_uri, prompt="none")
    params = response_params(form_browser.open(flow["auth_uri"]))
    assert params is not None and params["error"] == "login_required"
    # An unregistered post-logout target is not followed.
    stay = form_browser.open(f"{sandbox.https_base}/common/oauth2/v2.0/logout"
                             f"?post_logout_redirect_uri=https://attacker.example/")
    assert stay.status == 200 and stay.location is None


def test_login_hint_marks_the_account_and_domain_hint_narrows_common(
        sandbox: RunningSandbox, tenant_factory: TenantFactory, msal_app: MsalFactory,
        form_browser: FormBrowser, redirect_uri: str) -> None:
    tenant = tenant_factory()
    other = tenant_factory(name="Andere Praxis")
    app = msal_app("organizations")
    flow = _flow(app, redirect_uri, login_hint=tenant.users[1].mail, domain_hint=tenant.tenant.domain)
    page = form_browser.open(flow["auth_uri"])
    assert tenant.users[1].mail in page.text
    assert other.user.mail not in page.text
    assert 'class="account hinted"' in page.html
    params = sign_in(form_browser, flow["auth_uri"], tenant.users[1].mail)
    result = app.acquire_token_by_auth_code_flow(flow, params)
    assert result["id_token_claims"]["tid"] == tenant.id


def test_pages_speak_english_when_asked(tenant_factory: TenantFactory, msal_app: MsalFactory,
                                        form_browser: FormBrowser, redirect_uri: str) -> None:
    tenant = tenant_factory()
    app = msal_app(tenant.id)
    flow = _flow(app, redirect_uri)
    # MSAL has no ui_locales argument; an app appends it to the authorize URL.
    assert "Pick an account" in form_browser.open(flow["auth_uri"] + "&ui_locales=en-GB").text
    flow = _flow(app, redirect_uri)
    page = form_browser.open(flow["auth_uri"], headers={"Accept-Language": "en-US,en;q=0.9,de;q=0.5"})
    assert "Pick an account" in page.text
    page = form_browser.open(flow["auth_uri"], headers={"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"})
    assert "Konto auswählen" in page.text


# --- refresh tokens ----------------------------------------------------------------------------

def test_refresh_rotates_and_revocation_gives_invalid_grant(sandbox: RunningSandbox, tenant_factory: TenantFactory,
                                                            msal_app: MsalFactory, form_browser: FormBrowser,
                                                            redirect_uri: str, sandbox_http: httpx.Client) -> None:
    tenant = tenant_factory()
    app = msal_app(tenant.id)
    first = _connect(app, form_browser, redirect_uri, tenant.user.mail)
    old_rt = first["refresh_token"]
    account = app.get_accounts()[0]

    cached = app.acquire_token_silent([CAL], account=account)
    assert cached is not None and cached["token_source"] == "cache"
    refreshed = app.acquire_token_silent_with_error([CAL], account=account, force_refresh=True)
    assert refreshed is not None and refreshed["token_source"] == "identity_provider"
    assert refreshed["access_token"] != first["access_token"]
    rts = list(app.token_cache.search(msal.TokenCache.CredentialType.REFRESH_TOKEN))
    assert len(rts) == 1 and rts[0]["secret"] != old_rt            # rotated in MSAL's cache
    assert sandbox.directory.verify_access_token(refreshed["access_token"]).user_id == tenant.user.id

    # As with Entra, the previous refresh token stays usable after rotation.
    token_url = f"{sandbox.https_base}/{tenant.id}/oauth2/v2.0/token"
    raw = sandbox_http.post(token_url, data={
        "grant_type": "refresh_token", "refresh_token": old_rt, "client_id": sandbox.config.client_id,
        "client_secret": sandbox.config.client_secret, "scope": f"{CAL} offline_access"})
    assert raw.status_code == 200 and raw.json()["refresh_token"] not in (old_rt, rts[0]["secret"])

    assert sandbox.identity.revoke_refresh_tokens(tenant.user.mail) >= 2
    with pytest.raises(TokenError):
        sandbox.directory.verify_access_token(refreshed["access_token"])   # access tokens dropped too
    failed = app.acquire_token_silent_with_error([CAL], account=account, force_refresh=True)
    assert failed is not None
    assert failed["error"] == "invalid_grant"
    assert 700082 in failed["error_codes"]
    assert failed["error_description"].startswith("AADSTS700082:")
    assert {"timestamp", "trace_id", "correlation_id"} <= set(failed)


@pytest.mark.parametrize(("action", "code"), [("password_changed", 50173), ("disable", 50057),
                                              ("withdraw_consent", 65001)])
def test_other_refresh_failures(sandbox: RunningSandbox, tenant_factory: TenantFactory, msal_app: MsalFactory,
                                form_browser: FormBrowser, redirect_uri: str, action: str, code: int) -> None:
    tenant = tenant_factory()
    app = msal_app(tenant.id)
    _connect(app, form_browser, redirect_uri, tenant.user.mail)
    account = app.get_accounts()[0]
    if action == "password_changed":
        sandbox.identity.revoke_refresh_tokens(tenant.user.id, reason="password_changed")
    elif action == "disable":
        sandbox.identity.set_account_enabled(tenant.user.id, False)
    else:
        sandbox.identity.set_user_consent(tenant.user.id, False)
    failed = app.acquire_token_silent_with_error([CAL], account=account, force_refresh=True)
    assert failed is not None and failed["error"] == "invalid_grant"
    assert failed["error_codes"] == [code]
    assert failed["error_description"].startswith(f"AADSTS{code}:")


# --- consent policies --------------------------------------------------------------------------

def test_tenant_without_user_consent_needs_admin_approval(sandbox: RunningSandbox, tenant_factory: TenantFactory,
                                                          msal_app: MsalFactory, form_browser: FormBrowser,
                                                          redirect_uri: str) -> None:
    tenant = tenant_factory(user_consent_allowed=False)
    app = msal_app(tenant.id)
    flow = _flow(app, redirect_uri)
    page = form_browser.open(flow["auth_uri"])
    page = form_browser.submit(page.form(tenant.user.mail))
    assert page.status == 200
    assert "Genehmigung durch Administrator erforderlich" in page.text
    assert "AADSTS90094" in page.text
    params = response_params(form_browser.submit(page.form(action_contains="/return")))
    assert params is not None
    assert params["error"] == "consent_required"
    assert params["error_description"].startswith("AADSTS90094:")
    assert params["state"] == flow["state"]
    result = app.acquire_token_by_auth_code_flow(flow, params)
    assert result["error"] == "consent_required"
    assert tenant.user.consented_apps == set()

    # With a session but still no consent, a silent request says consent_required / AADSTS65001.
    flow = _flow(app, redirect_uri, prompt="none")
    params = response_params(form_browser.open(flow["auth_uri"]))
    assert params is not None and params["error"] == "consent_required"
    assert params["error_description"].startswith("AADSTS65001:")


def test_admin_on_the_user_consent_screen_can_consent_for_the_organization(
        sandbox: RunningSandbox, tenant_factory: TenantFactory, msal_app: MsalFactory,
        form_browser: FormBrowser, redirect_uri: str, sandbox_tls: ssl.SSLContext) -> None:
    tenant = tenant_factory(user_consent_allowed=False)
    app = msal_app(tenant.id)
    flow = _flow(app, redirect_uri)
    page = form_browser.open(flow["auth_uri"])
    page = form_browser.submit(page.form(tenant.user.mail))
    # "Have an admin account?" switches to a picker of administrators.
    page = form_browser.submit(page.form(action_contains="/admin"))
    assert tenant.admin.mail in page.text and tenant.user.mail not in page.text
    page = form_browser.submit(page.form(tenant.admin.mail))
    assert "Im Namen Ihrer Organisation zustimmen" in page.text
    params = response_params(form_browser.submit(page.form(action_contains="/consent"), "accept",
                                                  extra={"org_consent": "1"}))
    assert params is not None and "code" in params
    assert sandbox.config.client_id in tenant.tenant.admin_consented_apps

    # Now an ordinary user of the tenant gets in without any consent screen.
    with httpx.Client(verify=sandbox_tls) as client:
        other_browser = FormBrowser(client)
        flow = _flow(app, redirect_uri)
        page = other_browser.open(flow["auth_uri"])
        params = response_params(other_browser.submit(page.form(tenant.users[1].mail)))
    assert params is not None and "code" in params
    assert tenant.users[1].consented_apps == set()


def test_user_cancelling_consent_is_access_denied(tenant_factory: TenantFactory, msal_app: MsalFactory,
                                                  form_browser: FormBrowser, redirect_uri: str) -> None:
    tenant = tenant_factory()
    app = msal_app(tenant.id)
    flow = _flow(app, redirect_uri)
    params = sign_in(form_browser, flow["auth_uri"], tenant.user.mail, consent="cancel")
    assert params["error"] == "access_denied"
    assert params["error_subcode"] == "cancel"
    assert params["error_description"].startswith("AADSTS65004:")
    assert params["state"] == flow["state"]
    assert tenant.user.consented_apps == set()


def _app_credential(kind: Callable[..., T], sandbox: RunningSandbox, tenant_id: str) -> T:
    """azure-identity's ``ClientSecretCredential`` (sync or aio: ``kind``) for the app in the tenant,
    pointed at the sandbox as the service points it."""
    config = sandbox.config
    return kind(tenant_id, config.client_id, config.client_secret,
                authority=sandbox.https_base, disable_instance_discovery=True, connection_verify=sandbox.ca_path)


def test_admin_consent_enables_app_tokens_sync_and_aio(sandbox: RunningSandbox, tenant_factory: TenantFactory,
                                                       form_browser: FormBrowser, redirect_uri: str) -> None:
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import ClientSecretCredential

    tenant = tenant_factory(user_consent_allowed=False)
    config = sandbox.config

    def credential() -> ClientSecretCredential:
        return _app_credential(ClientSecretCredential, sandbox, tenant.id)

    before = credential()
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000229"):
        before.get_token(GRAPH_DEFAULT)
    before.close()

    url = (f"{sandbox.https_base}/{tenant.id}/v2.0/adminconsent?client_id={config.client_id}"
           f"&scope={GRAPH_DEFAULT}&redirect_uri={redirect_uri}&state=abc123")
    picker = form_browser.open(url)
    assert picker.status == 200
    assert tenant.admin.mail in picker.text and tenant.user.mail not in picker.text
    # Only administrators may grant, even if a non-admin posts the picker form directly.
    forged = form_browser.submit(picker.form(tenant.admin.mail), extra={"user": tenant.user.id})
    assert forged.status == 403 and forged.location is None
    consent = form_browser.submit(picker.form(tenant.admin.mail))
    assert "Kalender in allen Postfächern lesen und schreiben" in consent.text
    params = response_params(form_browser.submit(consent.form(action_contains="/consent"), "accept"))
    assert params == {"admin_consent": "True", "tenant": tenant.id, "state": "abc123", "scope": GRAPH_DEFAULT}

    sync_credential = credential()
    token = sync_credential.get_token(GRAPH_DEFAULT)
    sync_credential.close()
    claims = sandbox.directory.verify_access_token(token.token)
    assert claims.app_only and claims.tenant_id == tenant.id
    assert claims.roles == APPLICATION_ROLES


async def test_app_token_with_azure_identity_aio(sandbox: RunningSandbox, tenant_factory: TenantFactory) -> None:
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity.aio import ClientSecretCredential

    tenant = tenant_factory(user_consent_allowed=False)

    def credential() -> ClientSecretCredential:
        return _app_credential(ClientSecretCredential, sandbox, tenant.id)

    async with credential() as before:
        with pytest.raises(ClientAuthenticationError, match="AADSTS7000229"):
            await before.get_token(GRAPH_DEFAULT)
    sandbox.identity.set_admin_consent(tenant.id)
    async with credential() as after:
        token = await after.get_token(GRAPH_DEFAULT)
    claims = sandbox.directory.verify_access_token(token.token)
    assert claims.app_only and claims.roles == APPLICATION_ROLES
    assert token.expires_on > 0

    sandbox.identity.set_admin_consent(tenant.id, False)
    async with credential() as revoked:
        with pytest.raises(ClientAuthenticationError, match="AADSTS7000229"):
            await revoked.get_token(GRAPH_DEFAULT)


def test_user_consent_alone_gives_an_app_token_without_roles(sandbox: RunningSandbox,
                                                              tenant_factory: TenantFactory,
                                                              msal_app: MsalFactory, form_browser: FormBrowser,
                                                              redirect_uri: str) -> None:
    """One user's consent creates the app's service principal, so client credentials succeed —
    but, as in Entra, the token carries no roles until an admin grants application permissions."""
    tenant = tenant_factory()
    app = msal_app(tenant.id)
    assert "error" in app.acquire_token_for_client([GRAPH_DEFAULT])
    _connect(app, form_browser, redirect_uri, tenant.user.mail)
    result = msal_app(tenant.id).acquire_token_for_client([GRAPH_DEFAULT])
    assert "access_token" in result, result
    assert sandbox.directory.verify_access_token(result["access_token"]).roles == frozenset()


def test_admin_consent_at_organizations_grants_for_the_admins_tenant(
        sandbox: RunningSandbox, tenant_factory: TenantFactory, form_browser: FormBrowser,
        redirect_uri: str) -> None:
    tenant = tenant_factory(user_consent_allowed=False)
    other = tenant_factory(user_consent_allowed=False)
    cid = sandbox.config.client_id
    url = (f"{sandbox.https_base}/organizations/v2.0/adminconsent?client_id={cid}"
           f"&scope={GRAPH_DEFAULT}&redirect_uri={sandbox.config.redirect_uris[1]}&state=org")
    params = sign_in(form_browser, url, other.admin.mail)
    assert params["admin_consent"] == "True" and params["tenant"] == other.id and params["state"] == "org"
    assert cid in other.tenant.admin_consented_apps
    assert cid not in tenant.tenant.admin_consented_apps


def test_admin_consent_declined_and_common_refused(sandbox: RunningSandbox, tenant_factory: TenantFactory,
                                                   form_browser: FormBrowser, redirect_uri: str) -> None:
    tenant = tenant_factory(user_consent_allowed=False)
    cid = sandbox.config.client_id
    url = (f"{sandbox.https_base}/{tenant.tenant.domain}/v2.0/adminconsent?client_id={cid}"
           f"&scope={GRAPH_DEFAULT}&redirect_uri={redirect_uri}&state=s1")
    params = sign_in(form_browser, url, tenant.admin.mail, consent="cancel")
    assert params["error"] == "access_denied"
    assert params["error_description"].startswith("AADSTS65004:")
    assert params["state"] == "s1"
    assert cid not in tenant.tenant.admin_consented_apps

    common = form_browser.open(f"{sandbox.https_base}/common/v2.0/adminconsent?client_id={cid}"
                               f"&scope={GRAPH_DEFAULT}&redirect_uri={redirect_uri}")
    assert common.status == 400 and common.location is None


def test_unregistered_redirect_uri_or_client_shows_an_error_page(sandbox: RunningSandbox,
                                                                 form_browser: FormBrowser) -> None:
    cid = sandbox.config.client_id
    evil = "https://attacker.example/callback"
    for url, code in [
        (f"{sandbox.https_base}/common/oauth2/v2.0/authorize?client_id={cid}&response_type=code"
         f"&redirect_uri={evil}&scope=openid&state=x", "AADSTS50011"),
        (f"{sandbox.https_base}/common/oauth2/v2.0/authorize?client_id=unknown-app&response_type=code"
         f"&redirect_uri={evil}&scope=openid", "AADSTS700016"),
        (f"{sandbox.https_base}/organizations/v2.0/adminconsent?client_id={cid}&redirect_uri={evil}",
         "AADSTS50011"),
    ]:
        page = form_browser.open(url)
        assert page.status == 400
        assert page.location is None, "must never redirect to an unchecked URI"
        assert code in page.text
        assert "attacker.example/callback?" not in page.html


def test_authorize_parameter_errors_redirect_to_the_registered_uri(sandbox: RunningSandbox,
                                                                   form_browser: FormBrowser,
                                                                   redirect_uri: str) -> None:
    base = (f"{sandbox.https_base}/common/oauth2/v2.0/authorize?client_id={sandbox.config.client_id}"
            f"&redirect_uri={redirect_uri}&state=st")
    cases = {
        "&response_type=token&scope=openid": "unsupported_response_type",
        "&response_type=code&scope=Mail.Send": "invalid_scope",
        "&response_type=code": "invalid_request",
        "&response_type=code&scope=openid&code_challenge=short&code_challenge_method=S256": "invalid_request",
        "&response_type=code&scope=openid&prompt=sometimes": "invalid_request",
    }
    for suffix, error in cases.items():
        page = form_browser.open(base + suffix)
        assert page.status == 302 and page.location is not None and page.location.startswith(redirect_uri)
        params = response_params(page)
        assert params is not None and params["error"] == error and params["state"] == "st", suffix
        assert params["error_description"].startswith("AADSTS")


# --- token endpoint ----------------------------------------------------------------------------

def test_token_endpoint_errors_have_the_documented_shape(sandbox: RunningSandbox, tenant_factory: TenantFactory,
                                                         sandbox_http: httpx.Client) -> None:
    tenant = tenant_factory()
    sandbox.identity.set_admin_consent(tenant.id)
    config = sandbox.config
    url = f"{sandbox.https_base}/{tenant.id}/oauth2/v2.0/token"

    def post(data: dict[str, str], **kwargs: Any) -> httpx.Response:
        return sandbox_http.post(url, data=data, headers={"client-request-id": "corr-1"}, **kwargs)

    wrong = post({"grant_type": "client_credentials", "client_id": config.client_id, "client_secret": "nope",
                  "scope": GRAPH_DEFAULT})
    assert wrong.status_code == 401
    body = wrong.json()
    assert set(body) >= {"error", "error_description", "error_codes", "timestamp", "trace_id", "correlation_id"}
    assert body["error"] == "invalid_client" and body["error_codes"] == [7000215]
    assert body["correlation_id"] == "corr-1"
    assert "nope" not in wrong.text

    basic = post({"grant_type": "client_credentials", "scope": GRAPH_DEFAULT},
                 auth=(config.client_id, config.client_secret))
    assert basic.status_code == 200
    token = basic.json()
    assert set(token) == {"token_type", "expires_in", "ext_expires_in", "access_token"}
    assert token["token_type"] == "Bearer"

    cases = [
        ({"client_id": config.client_id, "client_secret": config.client_secret}, "invalid_request", 900144),
        ({"grant_type": "password", "client_id": config.client_id}, "unsupported_grant_type", 70003),
        ({"grant_type": "client_credentials", "client_id": "someone-else", "client_secret": "x",
          "scope": GRAPH_DEFAULT}, "unauthorized_client", 700016),
        ({"grant_type": "client_credentials", "client_id": config.client_id,
          "client_secret": config.client_secret, "scope": CAL}, "invalid_scope", 1002012),
        ({"grant_type": "authorization_code", "client_id": config.client_id,
          "client_secret": config.client_secret, "code": "made-up", "redirect_uri": config.redirect_uris[0]},
         "invalid_grant", 9002313),
        ({"grant_type": "refresh_token", "client_id": config.client_id,
          "client_secret": config.client_secret, "refresh_token": "made-up"}, "invalid_grant", 9002313),
    ]
    for data, error, code in cases:
        answer = post(data).json()
        assert (answer["error"], answer["error_codes"]) == (error, [code]), data
        assert answer["error_description"].startswith(f"AADSTS{code}:")

    common = sandbox_http.post(f"{sandbox.https_base}/common/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": config.client_id, "client_secret": config.client_secret,
        "scope": GRAPH_DEFAULT})
    assert common.status_code == 400 and common.json()["error_codes"] == [50059]


def test_code_redemption_checks_redirect_uri_and_tenant(sandbox: RunningSandbox, tenant_factory: TenantFactory,
                                                        form_browser: FormBrowser, redirect_uri: str,
                                                        sandbox_http: httpx.Client) -> None:
    tenant = tenant_factory()
    other = tenant_factory()
    config = sandbox.config
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    authorize = (f"{sandbox.https_base}/{tenant.id}/oauth2/v2.0/authorize?client_id={config.client_id}"
                 f"&response_type=code&redirect_uri={redirect_uri}&scope=openid%20offline_access%20{CAL}"
                 f"&code_challenge={challenge}&code_challenge_method=S256&response_mode=form_post")

    def redeem(at_tenant: str, **overrides: str) -> httpx.Response:
        code = sign_in(form_browser, authorize, tenant.user.mail)["code"]
        data = {"grant_type": "authorization_code", "client_id": config.client_id,
                "client_secret": config.client_secret, "code": code, "redirect_uri": redirect_uri,
                "code_verifier": verifier, **overrides}
        return sandbox_http.post(f"{sandbox.https_base}/{at_tenant}/oauth2/v2.0/token", data=data)

    assert redeem(tenant.id).status_code == 200
    assert redeem("organizations").status_code == 200
    wrong_uri = redeem(tenant.id, redirect_uri=config.redirect_uris[1])
    assert wrong_uri.json()["error_codes"] == [500112]
    wrong_tenant = redeem(other.id)
    assert wrong_tenant.json()["error"] == "invalid_grant" and wrong_tenant.json()["error_codes"] == [700005]


def test_token_lifetime_and_expiry_controls(sandbox: RunningSandbox, tenant_factory: TenantFactory,
                                            sandbox_http: httpx.Client) -> None:
    tenant = tenant_factory()
    config = sandbox.config
    sandbox.identity.set_user_consent(tenant.user.id)
    refresh = sandbox.directory.issue_refresh_token(tenant_id=tenant.id, client_id=config.client_id,
                                                    user_id=tenant.user.id,
                                                    scopes=frozenset({"Calendars.ReadWrite", "offline_access"}))
    url = f"{sandbox.https_base}/{tenant.id}/oauth2/v2.0/token"
    data = {"grant_type": "refresh_token", "client_id": config.client_id, "client_secret": config.client_secret,
            "refresh_token": refresh, "scope": CAL}
    sandbox.identity.set_access_token_lifetime(120)
    try:
        token = sandbox_http.post(url, data=data).json()
    finally:
        sandbox.identity.set_access_token_lifetime(None)
    assert 100 <= token["expires_in"] <= 120
    assert "refresh_token" in token   # the grant allowed offline access; refreshing keeps it
    assert token["scope"].split()[0] == CAL
    claims = sandbox.directory.verify_access_token(token["access_token"])
    assert claims.user_id == tenant.user.id and "Calendars.ReadWrite" in claims.scopes

    assert sandbox.identity.expire_access_tokens(tenant.user.mail) == 1
    with pytest.raises(TokenError) as expired:
        sandbox.directory.verify_access_token(token["access_token"])
    assert expired.value.reason == "expired"
    # Expired access tokens are what refresh tokens are for.
    again = sandbox_http.post(url, data=data).json()
    assert sandbox.directory.verify_access_token(again["access_token"]).user_id == tenant.user.id


@pytest.mark.parametrize(("kind", "error", "code"), [
    ("not_assigned", "access_denied", 50105), ("server_error", "server_error", 50000),
    ("temporarily_unavailable", "temporarily_unavailable", 90033),
])
def test_control_api_makes_the_next_sign_in_fail_once(sandbox: RunningSandbox, tenant_factory: TenantFactory,
                                                      msal_app: MsalFactory, form_browser: FormBrowser,
                                                      redirect_uri: str, kind: str, error: str, code: int) -> None:
    tenant = tenant_factory()
    app = msal_app(tenant.id)
    with httpx.Client(base_url=sandbox.http_base) as control:
        assert control.post("/_sandbox/identity/sign-in-failures", json={"kind": "nonsense"}).status_code == 400
        answer = control.post("/_sandbox/identity/sign-in-failures", json={"kind": kind})
        assert answer.status_code == 200 and answer.json() == {"next_sign_in_fails_with": kind}
    flow = _flow(app, redirect_uri)
    params = sign_in(form_browser, flow["auth_uri"], tenant.user.mail)
    assert params["error"] == error and params["error_description"].startswith(f"AADSTS{code}:")
    assert params["state"] == flow["state"] and "code" not in params
    # once only: the next sign-in works
    assert "access_token" in _connect(app, form_browser, redirect_uri, tenant.user.mail)


def test_app_only_tokens_are_jwts_naming_tenant_and_roles(sandbox: RunningSandbox, tenant_factory: TenantFactory,
                                                         msal_app: MsalFactory) -> None:
    tenant = tenant_factory()
    sandbox.identity.set_admin_consent(tenant.id, True)
    app = msal_app(tenant.id)
    token = app.acquire_token_for_client([GRAPH_DEFAULT])["access_token"]
    header, payload, _ = token.split(".")
    claims = json.loads(_b64decode(payload))
    assert claims["tid"] == tenant.id and "Calendars.ReadWrite" in claims["roles"]
    assert json.loads(_b64decode(header))["alg"] == "RS256"
    # Graph takes it like any other token
    with httpx.Client(verify=ssl.create_default_context(cafile=sandbox.ca_path)) as graph:
        me = graph.get(f"{sandbox.config.graph_base_url}/users/{tenant.user.id}/calendars",
                       headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text[:300]
