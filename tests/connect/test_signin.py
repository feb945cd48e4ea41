"""Microsoft sign-in against the sandbox identity platform: MSAL auth-code flow with PKCE, state
checks, the encrypted per-account token cache, admin consent."""

from __future__ import annotations

import secrets
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

from devtools.sandbox.server import RunningSandbox
from shared.connect import flow
from shared.connect.msal_client import DELEGATED_SCOPES
from shared.connect.outcomes import ConsentPage, ConsentResultPage, ErrorPage, Redirect
from shared.connect.store import AUTHFLOWS, ConnectContext
from shared.context import Services
from shared.repos.accounts import ACCOUNTS, AccountRepository, TenantRepository
from shared.storage.memory import MemoryStorage
from tests.support.connect_world import SERVICE_URL, MicrosoftSignIn, connect_token

ANNA = "anna.weber@praxis-sonnenschein.example"
TOBIAS = "tobias.wagner@klinik-nord.example"


#: the binding cookie each started sign-in handed to "the browser", by state
_BINDINGS: dict[str, str] = {}


async def _start(services: Services, **link: object) -> str:
    outcome = await flow.start(services, connect_token(**link))  # type: ignore[arg-type]
    assert isinstance(outcome, Redirect) and outcome.status == 302 and outcome.binding is not None
    _BINDINGS[parse_qs(urlsplit(outcome.location).query)["state"][0]] = outcome.binding.value
    return outcome.location


async def _callback(services: Services, params: dict[str, str]) -> object:
    """The callback as the browser that started the sign-in brings it (with its binding cookie)."""
    return await flow.callback(services, params, binding=_BINDINGS.get(params.get("state") or ""))


def _rows(services: Services, table: str) -> list[dict[str, object]]:
    storage = services.storage
    assert isinstance(storage, MemoryStorage)
    return [dict(r) for r in storage.table(table).rows.values()]


async def test_sign_in_stores_an_encrypted_cache_and_opens_a_chooser_session(live: Services,
                                                                             microsoft: MicrosoftSignIn) -> None:
    auth_uri = await _start(live)
    query = parse_qs(urlsplit(auth_uri).query)
    assert query["code_challenge_method"] == ["S256"]
    assert set(query["scope"][0].split()) >= {"User.Read", "Calendars.ReadWrite", "Calendars.ReadWrite.Shared",
                                              "offline_access", "openid", "profile"}
    assert query["redirect_uri"] == [f"{SERVICE_URL}/api/oauth/callback"]
    # the flow (with its PKCE verifier) is stored encrypted, keyed by a hash of the state
    [row] = _rows(live, AUTHFLOWS)
    assert query["state"][0] not in str(row) and str(row["data"]).startswith("v1.k1.")

    params = microsoft.run(auth_uri, ANNA)
    outcome = await _callback(live, params)
    assert isinstance(outcome, Redirect), outcome
    assert outcome.location == f"{SERVICE_URL}/api/connect/calendars" and outcome.session_id
    assert _rows(live, AUTHFLOWS) == []  # single use
    [account] = _rows(live, ACCOUNTS)
    assert str(account["cache"]).startswith("v1.k1.")
    assert "sbx-rt." not in str(account) and "sbx-at." not in str(account)

    # the same answer again: the flow is gone
    again = await _callback(live, params)
    assert isinstance(again, ErrorPage) and again.code == "flow_unknown"


async def test_unknown_or_expired_state_shows_an_error_page(live: Services) -> None:
    outcome = await _callback(live, {"state": "never-issued", "code": "x"})
    assert isinstance(outcome, ErrorPage) and outcome.code == "flow_unknown" and outcome.status == 400
    outcome = await _callback(live, {})
    assert isinstance(outcome, ErrorPage) and outcome.code == "flow_unknown"


async def test_state_mismatch_inside_the_flow_is_refused(live: Services, microsoft: MicrosoftSignIn) -> None:
    auth_uri = await _start(live)
    params = microsoft.run(auth_uri, ANNA)
    # The stored flow says one state, the answer (which found it) another: MSAL must refuse.
    storage = live.storage
    assert isinstance(storage, MemoryStorage)
    store = flow.AuthFlowRepository(storage, flow.cipher_for(live.settings))
    pending = await store.take(params["state"], now=live.clock())
    assert pending is not None
    tampered = {**pending.flow, "state": "another-state"}
    await store.put(params["state"], flow.PendingFlow(kind="signin", context=pending.context, flow=tampered,
                                                      binding_hash=pending.binding_hash),
                    expires_at=live.clock() + flow.FLOW_LIFETIME)
    outcome = await _callback(live, params)
    assert isinstance(outcome, ErrorPage) and outcome.code == "state_mismatch"
    assert _rows(live, ACCOUNTS) == []


async def test_a_code_redeemed_with_another_flows_pkce_verifier_is_refused(live: Services,
                                                                          microsoft: MicrosoftSignIn) -> None:
    first = await _start(live)
    second = await _start(live)
    answer = microsoft.run(first, ANNA)
    other_state = parse_qs(urlsplit(second).query)["state"][0]
    # The code of the first sign-in, delivered with the second flow's state: the identity platform
    # checks the code against the second flow's PKCE verifier and refuses it.
    outcome = await _callback(live, {**answer, "state": other_state})
    assert isinstance(outcome, ErrorPage) and outcome.code == "sign_in_failed"
    assert outcome.return_url.startswith("http://127.0.0.1:7080/timum/")
    assert _rows(live, ACCOUNTS) == []


async def test_declined_consent_gets_its_own_page_with_a_fresh_sign_in(live: Services, sandbox: RunningSandbox,
                                                                       microsoft: MicrosoftSignIn) -> None:
    lena = "lena.hoffmann@praxis-sonnenschein.example"
    sandbox.identity.set_admin_consent("praxis-sonnenschein.example", False)
    sandbox.identity.set_user_consent(lena, False)
    auth_uri = await _start(live, locale="en")
    answer = microsoft.run(auth_uri, lena, decision="cancel")
    assert answer["error"] == "access_denied"
    outcome = await _callback(live, answer)
    # Not "your administrator must consent": the user said no, and may change their mind.
    assert isinstance(outcome, ErrorPage) and outcome.code == "consent_declined" and outcome.locale == "en"
    assert outcome.retry_url.startswith(sandbox.https_base) and outcome.binding is not None
    assert _rows(live, ACCOUNTS) == []
    # The retry is a new sign-in of the same connect context, bound to the same browser.
    _BINDINGS[parse_qs(urlsplit(outcome.retry_url).query)["state"][0]] = outcome.binding.value
    sandbox.identity.set_user_consent(lena, False)
    retried = await _callback(live, microsoft.run(outcome.retry_url, lena, decision="accept"))
    assert isinstance(retried, Redirect) and retried.session_id


async def test_tenant_forbidding_user_consent_gets_an_admin_consent_link(live: Services, sandbox: RunningSandbox,
                                                                        microsoft: MicrosoftSignIn) -> None:
    sandbox.identity.set_admin_consent("klinik-nord.example", False)
    sandbox.identity.set_user_consent(TOBIAS, False)
    auth_uri = await _start(live, provider="prov-nord", return_url="http://127.0.0.1:7080/timum/providers/nord")
    answer = microsoft.run(auth_uri, TOBIAS, leave_without_consent=True)
    assert answer["error"] == "consent_required" and "AADSTS90094" in answer["error_description"]
    outcome = await _callback(live, answer)
    assert isinstance(outcome, ConsentPage) and outcome.locale == "de"
    url = urlsplit(outcome.consent_url)
    assert f"{url.scheme}://{url.netloc}" == sandbox.https_base
    assert url.path == "/organizations/v2.0/adminconsent"  # never /common/
    query = parse_qs(url.query)
    assert query["client_id"] == [live.settings.entra_client_id]
    # Least privilege: the delegated permissions for all users, no application permission.
    assert query["scope"] == [" ".join(f"https://graph.microsoft.com/{p}" for p in DELEGATED_SCOPES)]
    assert query["redirect_uri"] == [f"{SERVICE_URL}/api/oauth/admin-callback"]
    assert outcome.return_url == "http://127.0.0.1:7080/timum/providers/nord"
    # Nothing about the account was stored: there is none yet.
    assert _rows(live, ACCOUNTS) == []

    # The administrator follows the link, consents for the organisation, and comes back.
    client = microsoft.client
    page = client.get(outcome.consent_url)
    petra = sandbox.directory.user("petra.schulz@klinik-nord.example")
    assert petra is not None
    page = microsoft._submit(page, "/adminconsent/select", {"user": petra.id})
    back = microsoft._submit(page, "/adminconsent/consent", {"decision": "accept"})
    assert back.status_code in (302, 303)
    params = dict(parse_qs(urlsplit(back.headers["location"]).query, keep_blank_values=True))
    result = await flow.admin_callback(live, {k: v[0] for k, v in params.items()})
    assert isinstance(result, ConsentResultPage) and result.ok and result.locale == "de"
    assert result.return_url == "http://127.0.0.1:7080/timum/providers/nord"
    # Delegated consent grants no app-only access: nothing is recorded as such.
    assert not await TenantRepository(live.storage).has_admin_consent(petra.tenant_id)
    klinik = sandbox.directory.tenant("klinik-nord.example")
    assert klinik is not None and live.settings.entra_client_id not in klinik.app_role_grants

    # Tobias can connect now without being asked.
    again = microsoft.run(await _start(live, provider="prov-nord",
                                       return_url="http://127.0.0.1:7080/timum/providers/nord"), TOBIAS)
    signed_in = await _callback(live, again)
    assert isinstance(signed_in, Redirect) and signed_in.session_id


async def consent_state(services: Services, tenant: str = "organizations", *, locale: str = "de") -> str:
    """A pending admin-consent request as the consent page leaves it."""
    state = secrets.token_urlsafe(24)
    context = ConnectContext(provider_id="prov-nord", resource_id=None, locale=locale,
                             return_url="http://127.0.0.1:7080/timum/providers/nord")
    await flow.AuthFlowRepository(services.storage, flow.cipher_for(services.settings)).put(
        state, flow.PendingFlow(kind="adminconsent", context=context, flow={}, tenant=tenant),
        expires_at=services.clock() + timedelta(hours=1))
    return state


async def test_admin_consent_claims_are_checked_with_the_identity_platform(live: Services,
                                                                          sandbox: RunningSandbox) -> None:
    tenant = sandbox.directory.tenant("klinik-nord.example")
    assert tenant is not None
    sandbox.identity.set_admin_consent(tenant.id, False)
    # Anyone can call the admin callback; without a request we issued nothing is even checked.
    forged = await flow.admin_callback(live, {"admin_consent": "True", "tenant": tenant.id})
    assert isinstance(forged, ErrorPage) and forged.code == "consent_unknown"
    # With a genuine request but no grant at Microsoft, nothing is recorded either.
    state = await consent_state(live)
    unproven = await flow.admin_callback(live, {"admin_consent": "True", "tenant": tenant.id, "state": state})
    assert isinstance(unproven, ConsentResultPage) and not unproven.ok and unproven.reason == "unverified"
    assert not await TenantRepository(live.storage).has_admin_consent(tenant.id)
    # A malformed tenant is an error page, a refusal from Microsoft explains itself.
    bad = await flow.admin_callback(live, {"admin_consent": "True", "tenant": "../../etc", "state": state})
    assert isinstance(bad, ErrorPage)
    english = await consent_state(live, locale="en")
    denied = await flow.admin_callback(live, {"error": "access_denied", "state": english,
                                              "error_description": "AADSTS65004: User declined to consent."})
    assert isinstance(denied, ConsentResultPage) and denied.reason == "access_denied" and denied.locale == "en"


async def test_account_cache_is_per_microsoft_account(live: Services, microsoft: MicrosoftSignIn) -> None:
    for mail in (ANNA, "jonas.becker@praxis-sonnenschein.example", ANNA):
        answer = microsoft.run(await _start(live), mail)
        assert isinstance(await _callback(live, answer), Redirect)
    repo = AccountRepository(live.storage, flow.cipher_for(live.settings))
    ids = await repo.list_ids()
    assert len(ids) == 2  # Anna's second sign-in replaced her cache
    for account_id in ids:
        stored = await repo.load(account_id)
        assert stored is not None and account_id in stored.cache and stored.tenant_id in account_id


async def test_other_sign_in_errors_get_their_own_page_with_a_fresh_sign_in(live: Services, sandbox: RunningSandbox,
                                                                           microsoft: MicrosoftSignIn) -> None:
    sandbox.identity.fail_next_sign_in("not_assigned")   # access_denied, but not a declined consent
    answer = microsoft.run(await _start(live), ANNA)
    assert answer["error"] == "access_denied" and "AADSTS50105" in answer["error_description"]
    outcome = await _callback(live, answer)
    assert isinstance(outcome, ErrorPage) and outcome.code == "sign_in_failed"
    assert outcome.retry_url.startswith(sandbox.https_base) and outcome.binding is not None
    assert _rows(live, ACCOUNTS) == []


def test_sign_in_problems_are_told_apart() -> None:
    assert flow.sign_in_problem("access_denied", "AADSTS65004: User declined to consent.", "cancel") == "declined"
    assert flow.sign_in_problem("access_denied", "", "cancel") == "declined"
    assert flow.sign_in_problem("consent_required", "AADSTS90094: An administrator ...") == "admin_required"
    assert flow.sign_in_problem("invalid_grant", "AADSTS65001: The user or administrator has not consented") \
        == "admin_required"
    assert flow.sign_in_problem("access_denied", "AADSTS50105: not assigned") == "failed"
    assert flow.sign_in_problem("server_error", "AADSTS50000: error issuing a token") == "failed"
    assert flow.sign_in_problem("\r\nforged log line", "") == "failed"
