"""The connect flow's tables on both storage implementations (in-memory twin and Azurite):
nonces, pending flows, chooser sessions, accounts, tenants, teardown snapshots, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.connect.store import (
    AUTHFLOWS,
    NONCES,
    SESSIONS,
    AuthFlowRepository,
    ConnectContext,
    NonceRepository,
    PendingFlow,
    SessionRepository,
    purge_expired,
)
from shared.connect.teardown import TeardownRepository, account_in_use
from shared.crypto import Cipher
from shared.domain import Link, LinkKey, LinkMode
from shared.errors import Conflict, InvalidSignature
from shared.repos.accounts import AccountRepository, StoredCache, TenantRepository
from shared.storage import StoragePort

CIPHER = Cipher((("k1", b"\x07" * 32),))
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
CONTEXT = ConnectContext(provider_id="prov-1", resource_id=None, locale="en", return_url="https://timum.example/p")


async def test_nonce_is_single_use(storage: StoragePort) -> None:
    nonces = NonceRepository(storage)
    await nonces.use("nonce-aaaaaaaaaaaaaaaa", expires_at=NOW + timedelta(minutes=10), now=NOW)
    with pytest.raises(InvalidSignature) as caught:
        await nonces.use("nonce-aaaaaaaaaaaaaaaa", expires_at=NOW + timedelta(minutes=10), now=NOW)
    assert caught.value.code == "link_reused"
    await nonces.use("nonce-bbbbbbbbbbbbbbbb", expires_at=NOW + timedelta(minutes=10), now=NOW)


async def test_pending_flow_is_taken_once_and_expires(storage: StoragePort) -> None:
    flows = AuthFlowRepository(storage, CIPHER)
    flow = {"state": "s1", "code_verifier": "verifier-secret", "auth_uri": "https://login/x"}
    await flows.put("s1", PendingFlow("signin", CONTEXT, flow), expires_at=NOW + timedelta(minutes=15))
    rows = await storage.table(AUTHFLOWS).query()
    assert len(rows) == 1 and "verifier-secret" not in str(dict(rows[0])) and rows[0].pk != "s1"
    assert await flows.peek("s1", now=NOW) is not None
    taken = await flows.take("s1", now=NOW)
    assert taken is not None and taken.flow == flow and taken.context == CONTEXT and taken.kind == "signin"
    assert await flows.take("s1", now=NOW) is None
    await flows.put("s2", PendingFlow("adminconsent", CONTEXT, {}, tenant="organizations"),
                    expires_at=NOW + timedelta(minutes=1))
    assert await flows.take("s2", now=NOW + timedelta(minutes=2)) is None
    assert await flows.take("", now=NOW) is None


async def test_chooser_session(storage: StoragePort) -> None:
    sessions = SessionRepository(storage, CIPHER, b"csrf-key")
    sid = await sessions.create(CONTEXT, account_id="acc", tenant_id="tid", account_name="Anna", now=NOW)
    rows = await storage.table(SESSIONS).query()
    assert [r.pk for r in rows] != [sid] and sid not in str(dict(rows[0]))
    session = await sessions.get(sid, now=NOW + timedelta(minutes=5))
    assert session is not None and (session.account_id, session.context) == ("acc", CONTEXT)
    assert sessions.csrf_ok(sid, sessions.csrf_token(sid)) and not sessions.csrf_ok(sid, "x")
    assert not sessions.csrf_ok(sid, None)
    await sessions.set_busy(session, True)
    stale = await sessions.get(sid, now=NOW)
    assert stale is not None and stale.busy
    with pytest.raises(Conflict):
        await sessions.set_busy(stale, True)
    await sessions.set_busy(session, False)
    assert await sessions.get(sid, now=NOW + timedelta(hours=1)) is None   # expired, and removed
    assert await storage.table(SESSIONS).query() == []
    assert await sessions.get("unknown", now=NOW) is None and await sessions.get(None, now=NOW) is None


async def test_purge_removes_only_expired_rows(storage: StoragePort) -> None:
    await NonceRepository(storage).use("nonce-cccccccccccccccc", expires_at=NOW, now=NOW)
    await NonceRepository(storage).use("nonce-dddddddddddddddd", expires_at=NOW + timedelta(hours=1), now=NOW)
    await AuthFlowRepository(storage, CIPHER).put("s", PendingFlow("signin", CONTEXT, {}), expires_at=NOW)
    await SessionRepository(storage, CIPHER, b"k").create(CONTEXT, account_id="a", tenant_id="t", account_name="",
                                                     now=NOW)
    removed = await purge_expired(storage, now=NOW + timedelta(minutes=1))
    assert removed == 2
    assert len(await storage.table(NONCES).query()) == 1 and len(await storage.table(SESSIONS).query()) == 1


async def test_accounts_tenants_and_teardown_snapshots(storage: StoragePort) -> None:
    accounts = AccountRepository(storage, CIPHER)
    stored = await accounts.save(StoredCache("oid.tid", "tid", "anna@x", "{}"))
    stored.cache = '{"changed": true}'
    await accounts.save(stored)
    stale = StoredCache("oid.tid", "tid", "anna@x", "{}", etag="W/\"datetime'2000-01-01T00%3A00%3A00Z'\"")
    with pytest.raises(Conflict):
        await accounts.save(stale)
    loaded = await accounts.load("oid.tid")
    assert loaded is not None and loaded.cache == '{"changed": true}'

    tenants = TenantRepository(storage)
    assert not await tenants.has_admin_consent("tid")
    await tenants.record_admin_consent("tid", now=NOW)
    consent = await tenants.get("tid")
    assert consent is not None and consent.admin_consent and consent.consented_at == NOW
    await tenants.revoke_admin_consent("tid")
    assert not await tenants.has_admin_consent("tid") and not await tenants.has_admin_consent("")

    link = Link(provider_id="prov-1", resource_id="res/1", mode=LinkMode.DELEGATED, tenant_id="tid",
                mailbox_id="anna", calendar_id="AAMk/x=", calendar_name="Kalender", calendar_owner="",
                account_id="oid.tid", subscription_id="sub-1", created_at=NOW)
    assert not await account_in_use(storage, "oid.tid")
    await TeardownRepository(storage).put(link)
    assert await account_in_use(storage, "oid.tid")
    snapshot = await TeardownRepository(storage).get(LinkKey("prov-1", "res/1"), "sub-1")
    assert snapshot == link
    await TeardownRepository(storage).remove(link.key, "sub-1")
    assert await TeardownRepository(storage).get(link.key, "sub-1") is None
