"""timum's link management API: provider scope (A never sees or changes B's links), listing,
unlinking with teardown, resync, provider settings."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import azure.functions as func
import pytest

from shared.connect.links_api import sign_api_request
from shared.connect.status import LINK_STATUS
from shared.connect.teardown import TeardownRepository, finish
from shared.crypto import Cipher
from shared.domain import Link, LinkHealth, LinkKey, LinkMode, ProviderSettings, TitlePrivacy
from shared.http.connect_bp import handle_links_api
from shared.messages import LINK_ADMIN_QUEUE, SYNC_QUEUE, AdminAction, AdminMessage, SyncMessage, SyncReason
from shared.repos.accounts import AccountRepository, StoredCache
from shared.repos.links import LinkRepository, ProviderSettingsRepository, SubscriptionRepository
from shared.storage.base import encode_key
from tests.support.connect_world import SERVICE_URL, WEBHOOK_SECRET, MemoryWorld

OPERATIONS = {("GET", "links"): "list", ("DELETE", "link"): "delete", ("POST", "resync"): "resync",
              ("GET", "settings"): "get_settings", ("PUT", "settings"): "put_settings"}


def _path(provider: str, what: str, resource: str = "") -> str:
    return {"links": f"/api/providers/{provider}/links", "link": f"/api/providers/{provider}/links/{resource}",
            "resync": f"/api/providers/{provider}/links/{resource}/resync",
            "settings": f"/api/providers/{provider}/settings"}[what]


def _request(method: str, provider: str, what: str, *, resource: str = "", body: bytes = b"",
             params: dict[str, str] | None = None, signer: str | None = None, sign_path: str | None = None,
             secret: str = WEBHOOK_SECRET, timestamp: float | None = None,
             header_provider: str | None = None) -> func.HttpRequest:
    path = _path(provider, what, resource)
    query = urlencode(params or {})
    target = path + (f"?{query}" if query else "")
    headers = sign_api_request(method, sign_path or target, signer or provider, body, [secret],
                               timestamp=int(time.time() if timestamp is None else timestamp))
    if header_provider is not None:
        headers["X-Timum-Provider"] = header_provider
    headers["Content-Type"] = "application/json"
    route = {"provider": provider, **({"resource": resource} if resource else {})}
    return func.HttpRequest(method=method, url=SERVICE_URL + target, headers=headers, params=params or {},
                            route_params=route, body=body)


async def _call(world: MemoryWorld, method: str, what: str, req: func.HttpRequest) -> func.HttpResponse:
    return await handle_links_api(world.services, req, OPERATIONS[(method, what)])


async def _seed(world: MemoryWorld) -> tuple[Link, Link]:
    repo = LinkRepository(world.storage)
    a = Link(provider_id="prov-1", resource_id="res-1", mode=LinkMode.DELEGATED, tenant_id="tid-1",
             mailbox_id="anna", calendar_id="cal-room1", calendar_name="Behandlungsraum 1",
             calendar_owner="anna@praxis.example", account_id="acc-a", subscription_id="sub-a",
             health=LinkHealth.NEEDS_RECONNECT, last_error="needs_reconnect")
    b = Link(provider_id="prov-2", resource_id="res-9", mode=LinkMode.DELEGATED, tenant_id="tid-2",
             mailbox_id="bert", calendar_id="cal-b", calendar_name="Praxis B", calendar_owner="", account_id="acc-b")
    for link in (a, b):
        await repo.claim_calendar(link)
        await repo.save(link)
    await SubscriptionRepository(world.storage).put("sub-a", a.key, "state")
    cipher = Cipher(world.services.settings.token_encryption_keys)
    for account in ("acc-a", "acc-b"):
        await AccountRepository(world.storage, cipher).save(StoredCache(account, "tid", "u", "{}"))
    return await repo.require(a.key), await repo.require(b.key)


async def test_listing_shows_the_providers_links_only(world: MemoryWorld) -> None:
    await _seed(world)
    response = await _call(world, "GET", "links", _request("GET", "prov-1", "links"))
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    data = json.loads(response.get_body())
    assert data["providerId"] == "prov-1"
    [link] = data["links"]
    assert link == {"resourceId": "res-1", "linkId": "res-1", "calendarRole": "bookings",
                    "calendarName": "Behandlungsraum 1", "calendarOwner": "anna@praxis.example",
                    "mode": "delegated", "syncMode": "push", "subscriptionExpiresAt": None, "lastSyncAt": None,
                    "lastError": "needs_reconnect", "lastErrorAt": None, "needsReconnect": True,
                    "health": "needs_reconnect", "icsHost": None, "createdAt": None,
                    "skipped": {"count": 0, "sample": None}, "subscriptionResource": "calendar",
                    "linkedBy": None, "syncedThrough": None}


@pytest.mark.parametrize(("method", "what", "body"), [
    ("GET", "links", b""), ("DELETE", "link", b""), ("POST", "resync", b""), ("GET", "settings", b""),
    ("PUT", "settings", b'{"titlePrivacy": "subject"}'),
])
async def test_provider_a_can_never_reach_provider_b(world: MemoryWorld, method: str, what: str,
                                                     body: bytes) -> None:
    await _seed(world)
    before = {name: dict(t.rows) for name, t in world.storage.tables.items()}
    resource = "res-9" if what in ("link", "resync") else ""
    attempts = [
        # A's identity on B's route
        (_request(method, "prov-2", what, resource=resource, body=body, signer="prov-1"), 403),
        # B's header without a signature for it (A's signed request, replayed on B's route)
        (_request(method, "prov-2", what, resource=resource, body=body, signer="prov-1",
                  sign_path=_path("prov-1", what, resource), header_provider="prov-2"), 401),
        # a signature made with a secret timum does not have
        (_request(method, "prov-2", what, resource=resource, body=body, secret="guess"), 401),
        # an old signature
        (_request(method, "prov-2", what, resource=resource, body=body, timestamp=time.time() - 3600), 401),
    ]
    for req, status in attempts:
        response = await _call(world, method, what, req)
        assert response.status_code == status, (req.url, response.get_body())
        assert json.loads(response.get_body())["code"] in ("provider_scope", "invalid_signature", "stale_signature")
    no_header = _request(method, "prov-2", what, resource=resource, body=body)
    no_header.headers.__http_headers__.pop("x-timum-provider")  # type: ignore[attr-defined]
    assert (await _call(world, method, what, no_header)).status_code == 403
    after = {name: dict(t.rows) for name, t in world.storage.tables.items()}
    assert after == before
    assert world.storage.queue(LINK_ADMIN_QUEUE).drain() == [] and world.storage.queue(SYNC_QUEUE).drain() == []


async def test_the_body_is_part_of_the_signature(world: MemoryWorld) -> None:
    req = _request("PUT", "prov-1", "settings", body=b'{"titlePrivacy": "none"}')
    tampered = func.HttpRequest(method="PUT", url=req.url, headers=dict(req.headers), params={},
                                route_params={"provider": "prov-1"}, body=b'{"titlePrivacy": "subject"}')
    assert (await _call(world, "PUT", "settings", tampered)).status_code == 401
    assert (await ProviderSettingsRepository(world.storage).get("prov-1")).title_privacy is TitlePrivacy.NONE


async def test_unlinking_releases_the_calendar_and_queues_the_teardown(world: MemoryWorld) -> None:
    a, b = await _seed(world)
    response = await _call(world, "DELETE", "link", _request("DELETE", "prov-1", "link", resource="res-1",
                                                             params={"deleteOutlookEvents": "true"}))
    assert response.status_code == 204
    repo = LinkRepository(world.storage)
    assert await repo.get(a.key) is None
    assert await repo.calendar_owner("tid-1", "anna", "cal-room1") is None
    assert await SubscriptionRepository(world.storage).get("sub-a") is None
    [message] = [AdminMessage.parse(json.loads(m)) for m in world.storage.queue(LINK_ADMIN_QUEUE).drain()]
    assert message == AdminMessage(link="prov-1|res-1", action=AdminAction.TEARDOWN, subscription_id="sub-a",
                                   delete_outlook_events=True)
    assert (encode_key("prov-1|res-1"), "") not in world.storage.table(LINK_STATUS).rows
    # The worker still needs the old link's credentials; they go when it finishes.
    cipher = Cipher(world.services.settings.token_encryption_keys)
    accounts = AccountRepository(world.storage, cipher)
    snapshot = await TeardownRepository(world.storage).get(a.key, "sub-a")
    assert snapshot is not None and snapshot.account_id == "acc-a" and await accounts.exists("acc-a")
    await finish(world.services, a.key, "sub-a")
    assert await TeardownRepository(world.storage).get(a.key, "sub-a") is None
    assert not await accounts.exists("acc-a") and await accounts.exists("acc-b")
    # Unknown links are 404, and B's link is untouched.
    missing = await _call(world, "DELETE", "link", _request("DELETE", "prov-1", "link", resource="res-1"))
    assert missing.status_code == 404 and json.loads(missing.get_body())["code"] == "not_found"
    assert await repo.get(b.key) is not None


async def test_tokens_another_link_uses_are_kept(world: MemoryWorld) -> None:
    await _seed(world)
    repo = LinkRepository(world.storage)
    sibling = Link(provider_id="prov-1", resource_id="res-2", mode=LinkMode.DELEGATED, tenant_id="tid-1",
                   mailbox_id="anna", calendar_id="cal-other", calendar_name="Kalender", calendar_owner="",
                   account_id="acc-b")
    await repo.save(sibling)
    # res-9 of prov-2 has no subscription: nothing for Graph to clean up, tokens are checked at once
    response = await _call(world, "DELETE", "link", _request("DELETE", "prov-2", "link", resource="res-9"))
    assert response.status_code == 204
    accounts = AccountRepository(world.storage, Cipher(world.services.settings.token_encryption_keys))
    assert await accounts.exists("acc-b")                    # res-2 still uses it
    await _call(world, "DELETE", "link", _request("DELETE", "prov-1", "link", resource="res-2"))
    assert not await accounts.exists("acc-b")


async def test_resync_queues_a_full_sync(world: MemoryWorld) -> None:
    await _seed(world)
    response = await _call(world, "POST", "resync", _request("POST", "prov-1", "resync", resource="res-1"))
    assert response.status_code == 202
    [message] = [SyncMessage.parse(json.loads(m)) for m in world.storage.queue(SYNC_QUEUE).drain()]
    assert (message.link, message.reason, message.full) == ("prov-1|res-1", SyncReason.RESYNC, True)
    unknown = await _call(world, "POST", "resync", _request("POST", "prov-1", "resync", resource="res-404"))
    assert unknown.status_code == 404


async def test_settings_are_validated(world: MemoryWorld) -> None:
    got = await _call(world, "GET", "settings", _request("GET", "prov-1", "settings"))
    assert json.loads(got.get_body()) == {"titlePrivacy": "none", "tentativeBlocks": True, "customerPrivacy": "name",
                                          "cancelPolicy": "delete", "locale": "de", "bookingEventEdits": "restore",
                                          "blocking": {"free": False, "tentative": True, "busy": True, "oof": True,
                                                       "workingElsewhere": False, "unknown": True},
                                          "allDayBlocksWhenFree": False, "staleAfterMinutes": 60,
                                          "reconnectReminderDays": [1, 3, 7]}
    body = b'{"titlePrivacy": "label", "tentativeBlocks": false, "locale": "en"}'
    put = await _call(world, "PUT", "settings", _request("PUT", "prov-1", "settings", body=body))
    assert put.status_code == 200 and json.loads(put.get_body())["tentativeBlocks"] is False
    assert await ProviderSettingsRepository(world.storage).get("prov-1") == ProviderSettings(
        "prov-1", title_privacy=TitlePrivacy.LABEL, tentative_blocks=False, locale="en")
    for bad, field in [(b'{"titlePrivacy": "everything"}', "titlePrivacy"), (b'{"locale": "fr"}', "locale"),
                       (b'{"tentativeBlocks": "yes"}', "tentativeBlocks"), (b'{"colour": "red"}', "colour"),
                       (b'["not", "an", "object"]', None), (b"{not json", None)]:
        response = await _call(world, "PUT", "settings", _request("PUT", "prov-1", "settings", body=bad))
        problem = json.loads(response.get_body())
        assert response.status_code == 400 and problem.get("field") == field, bad
        assert response.mimetype == "application/problem+json"
    assert (await ProviderSettingsRepository(world.storage).get("prov-1")).locale == "en"
    huge = b'{"locale": "' + b"x" * 70_000 + b'"}'
    too_big = await _call(world, "PUT", "settings", _request("PUT", "prov-1", "settings", body=huge))
    assert too_big.status_code == 413


async def test_bad_query_flag_changes_nothing(world: MemoryWorld) -> None:
    a, _ = await _seed(world)
    response = await _call(world, "DELETE", "link", _request("DELETE", "prov-1", "link", resource="res-1",
                                                             params={"deleteOutlookEvents": "maybe"}))
    assert response.status_code == 400
    kept = await LinkRepository(world.storage).require(LinkKey("prov-1", "res-1"))
    assert kept.health is LinkHealth.NEEDS_RECONNECT and kept.calendar_id == a.calendar_id
