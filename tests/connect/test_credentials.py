"""Token caches at rest (encryption, row binding, key rotation), the delegated credential against
the sandbox identity platform, app-only access, and the real Graph provider."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest

from devtools.sandbox.server import RunningSandbox
from shared.connect import flow
from shared.connect.credentials import AppOnlyCredential, DelegatedCredential, RealGraphProvider, jwt_roles
from shared.connect.outcomes import Redirect
from shared.connect.status import set_health
from shared.context import Services
from shared.crypto import Cipher, DecryptionError
from shared.domain import Link, LinkHealth, LinkMode
from shared.errors import NeedsReconnect
from shared.repos.accounts import ACCOUNTS, AccountRepository, StoredCache
from shared.repos.links import LinkRepository
from shared.storage.base import encode_key
from shared.storage.memory import MemoryStorage
from tests.support.connect_world import MicrosoftSignIn, connect_token, make_key

ANNA = "anna.weber@praxis-sonnenschein.example"


def _keys(*kids: str) -> dict[str, tuple[str, bytes]]:
    return {kid: (kid, base64.b64decode(make_key())) for kid in kids}


async def test_cache_round_trip_is_encrypted_and_bound_to_its_account() -> None:
    storage = MemoryStorage()
    cipher = Cipher((("k1", b"\x01" * 32),))
    repo = AccountRepository(storage, cipher)
    await repo.save(StoredCache("acc-1.tid", "tid", "anna@x", '{"RefreshToken": {"secret": "rt-value"}}'))
    row = storage.table(ACCOUNTS).rows[(encode_key("acc-1.tid"), "")]
    assert "rt-value" not in json.dumps({k: str(v) for k, v in row.items()})
    loaded = await repo.load("acc-1.tid")
    assert loaded is not None and loaded.cache == '{"RefreshToken": {"secret": "rt-value"}}'
    # The same ciphertext on another account's row does not decrypt.
    storage.table(ACCOUNTS).rows[(encode_key("acc-2.tid"), "")] = type(row)({**row, "PartitionKey": "acc-2.tid"},
                                                                            etag=row.etag)
    with pytest.raises(DecryptionError):
        await repo.load("acc-2.tid")


async def test_key_rotation_reads_old_caches_and_reseals_them_with_the_new_key() -> None:
    storage = MemoryStorage()
    old, new = _keys("old")["old"], _keys("new")["new"]
    await AccountRepository(storage, Cipher((old,))).save(StoredCache("acc.tid", "tid", "a@x", "cache-json"))
    assert str(storage.table(ACCOUNTS).rows[("acc.tid", "")]["cache"]).startswith("v1.old.")

    rotated = AccountRepository(storage, Cipher((new, old)))   # new encrypts, both decrypt
    loaded = await rotated.load("acc.tid")
    assert loaded is not None and loaded.cache == "cache-json"
    row = storage.table(ACCOUNTS).rows[("acc.tid", "")]
    assert str(row["cache"]).startswith("v1.new.") and row["key_id"] == "new"
    # The old key can be retired now.
    only_new = await AccountRepository(storage, Cipher((new,))).load("acc.tid")
    assert only_new is not None and only_new.cache == "cache-json"
    with pytest.raises(DecryptionError):
        await AccountRepository(storage, Cipher((old,))).load("acc.tid")


def test_jwt_roles_reads_app_permissions_and_ignores_opaque_tokens() -> None:
    def jwt(claims: dict[str, object]) -> str:
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        return f"eyJhbGciOiJSUzI1NiJ9.{body}.c2ln"

    assert jwt_roles(jwt({"roles": ["Calendars.ReadWrite"]})) == frozenset({"Calendars.ReadWrite"})
    assert jwt_roles(jwt({"scp": "User.Read"})) == frozenset()
    assert jwt_roles("sbx-at.opaque") is None


# --- against the sandbox ---------------------------------------------------------------------

@pytest.fixture
def short_tokens(sandbox: RunningSandbox) -> Iterator[None]:
    """Access tokens that MSAL considers due for refresh at once (under its 5-minute margin)."""
    sandbox.identity.set_access_token_lifetime(120)
    try:
        yield
    finally:
        sandbox.identity.set_access_token_lifetime(None)


async def _sign_in(live: Services, microsoft: MicrosoftSignIn, mail: str = ANNA) -> str:
    start = await flow.start(live, connect_token())
    assert isinstance(start, Redirect)
    assert start.binding is not None
    done = await flow.callback(live, microsoft.run(start.location, mail), binding=start.binding.value)
    assert isinstance(done, Redirect)
    [account_id] = [a for a in await AccountRepository(live.storage, flow.cipher_for(live.settings)).list_ids()
                    if a.startswith(str(microsoft.sandbox.directory.user(mail).id))]  # type: ignore[union-attr]
    return account_id


def _link(account_id: str, tenant_id: str, mailbox: str = "") -> Link:
    return Link(provider_id="prov-1", resource_id="res-1", mode=LinkMode.DELEGATED, tenant_id=tenant_id,
                mailbox_id=mailbox, calendar_id="", calendar_name="Kalender", calendar_owner="", account_id=account_id)


async def test_delegated_credential_refreshes_and_writes_the_cache_back_only_when_changed(
        live: Services, microsoft: MicrosoftSignIn, short_tokens: None) -> None:
    account_id = await _sign_in(live, microsoft)
    repo = AccountRepository(live.storage, flow.cipher_for(live.settings))
    before = await repo.load(account_id)
    assert before is not None
    credential = DelegatedCredential(live.settings, live.storage, account_id)
    first = await credential.get_token("https://graph.microsoft.com/.default")
    after = await repo.load(account_id)
    assert after is not None and after.etag != before.etag    # refreshed → written back
    assert first.token.startswith("sbx-at.")


async def test_cache_hit_does_not_rewrite_the_cache(live: Services, microsoft: MicrosoftSignIn) -> None:
    account_id = await _sign_in(live, microsoft)
    repo = AccountRepository(live.storage, flow.cipher_for(live.settings))
    before = await repo.load(account_id)
    credential = DelegatedCredential(live.settings, live.storage, account_id)
    token = await credential.get_token("x")
    after = await repo.load(account_id)
    assert token.token.startswith("sbx-at.") and before is not None and after is not None
    assert after.etag == before.etag
    # reused in memory while valid
    assert await credential.get_token("y") == token


async def test_revoked_refresh_token_needs_reconnect_and_tells_timum_once(
        live: Services, sandbox: RunningSandbox, microsoft: MicrosoftSignIn, short_tokens: None) -> None:
    account_id = await _sign_in(live, microsoft)
    user = sandbox.directory.user(ANNA)
    assert user is not None
    link = await LinkRepository(live.storage).save(_link(account_id, user.tenant_id))
    sandbox.identity.revoke_refresh_tokens(user.id)
    credential = DelegatedCredential(live.settings, live.storage, account_id)
    with pytest.raises(NeedsReconnect) as caught:
        await credential.get_token("https://graph.microsoft.com/.default")
    assert "AADSTS700082" in caught.value.message and "sbx-" not in caught.value.message

    # Two workers (or one retrying) report the same failure: one webhook.
    saved = await set_health(live, link, LinkHealth.NEEDS_RECONNECT, caught.value.code)
    stale = await LinkRepository(live.storage).require(link.key)
    await set_health(live, saved, LinkHealth.NEEDS_RECONNECT, caught.value.code)
    await set_health(live, stale, LinkHealth.NEEDS_RECONNECT, caught.value.code)
    timum = live.timum
    webhooks = timum.status_webhooks  # type: ignore[attr-defined]
    assert len(webhooks) == 1
    assert webhooks[0]["data"]["status"] == "needs_reconnect" and webhooks[0]["data"]["mode"] == "delegated"
    assert "Microsoft" in webhooks[0]["data"]["reason"]   # German text for the provider

    # Signing in again repairs the link and says so once.
    await _sign_in(live, microsoft)
    repaired = await LinkRepository(live.storage).require(link.key)
    assert repaired.health is LinkHealth.OK
    assert [w["data"]["status"] for w in webhooks] == ["needs_reconnect", "ok"]


async def test_no_stored_account_needs_reconnect(live: Services) -> None:
    with pytest.raises(NeedsReconnect):
        await DelegatedCredential(live.settings, live.storage, "nobody.tid").get_token("x")
    with pytest.raises(NeedsReconnect):
        await RealGraphProvider(live.settings, live.storage).for_link(_link("nobody.tid", "tid"))
    with pytest.raises(NeedsReconnect):
        await RealGraphProvider(live.settings, live.storage).for_link(_link("", "tid"))


async def test_graph_provider_reads_calendars_with_delegated_and_app_only_access(
        live: Services, sandbox: RunningSandbox, microsoft: MicrosoftSignIn) -> None:
    account_id = await _sign_in(live, microsoft)
    user = sandbox.directory.user(ANNA)
    assert user is not None
    provider = RealGraphProvider(live.settings, live.storage)
    graph = await provider.for_link(_link(account_id, user.tenant_id))
    try:
        me = await graph.me()
        names = {c.name for c in await graph.list_calendars(me["id"])}
    finally:
        await graph.close()
    assert {"Behandlungsraum 1", "Behandlungsraum 2"} <= names

    sandbox.identity.set_admin_consent(user.tenant_id, True)
    app_link = Link(provider_id="prov-1", resource_id="res-2", mode=LinkMode.APP_ONLY, tenant_id=user.tenant_id,
                    mailbox_id=user.mail, calendar_id="", calendar_name="", calendar_owner="")
    app = await provider.for_link(app_link)
    try:
        own = {c.name for c in await app.list_calendars(user.mail) if not c.is_shared}
    finally:
        await app.close()
    assert {"Behandlungsraum 1", "Behandlungsraum 2"} <= own <= names


async def test_app_only_credential_without_consent_is_refused(live: Services, sandbox: RunningSandbox) -> None:
    tenant = sandbox.directory.tenant("klinik-nord.example")
    assert tenant is not None
    sandbox.identity.set_admin_consent(tenant.id, False)
    for user in ("petra.schulz@klinik-nord.example", "tobias.wagner@klinik-nord.example"):
        sandbox.identity.set_user_consent(user, False)
    from shared.errors import AuthError

    async with AppOnlyCredential(live.settings, tenant.id) as credential:
        with pytest.raises(AuthError):
            await credential.get_token("https://graph.microsoft.com/.default")
