"""The adapter's one call path answers Graph's 401 with one fresh token and one retry: the
credential is asked to ``invalidate()`` its token, the request goes again with the new one, and
only a second 401 (or a refused refresh, raised by the credential) reaches the caller."""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken

from shared.adapters.graph_sdk import GraphSdkAdapter
from shared.errors import AuthError, NeedsReconnect
from tests.support.graph_stub import GraphStub, error, stub_adapter

MAILBOX = "anna@praxis.example"


class RotatingCredential:
    """Hands out token-1, then after ``invalidate()`` token-2, …; ``refuse`` makes the refresh fail."""

    def __init__(self, refuse: bool = False) -> None:
        self.generation = 1
        self.invalidations = 0
        self.refuse = refuse
        self.claims: list[str | None] = []

    async def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                        enable_cae: bool = False, **kwargs: Any) -> AccessToken:
        self.claims.append(claims)
        if self.refuse and self.invalidations:
            raise NeedsReconnect("refresh token revoked (AADSTS700082)")
        return AccessToken(f"token-{self.generation}", int(time.time()) + 3600)

    async def invalidate(self) -> None:
        self.invalidations += 1
        self.generation += 1

    async def close(self) -> None:
        return None


def _adapter(stub: GraphStub, credential: RotatingCredential) -> GraphSdkAdapter:
    return stub_adapter(stub, credential)


def _me(request: httpx.Request) -> httpx.Response:
    if request.headers.get("authorization") != "Bearer token-2":
        return error(401, "InvalidAuthenticationToken", "Access token has been revoked.")
    return httpx.Response(200, json={"id": "u1", "displayName": "Anna", "mail": MAILBOX, "userPrincipalName": MAILBOX})


async def test_a_revoked_token_is_replaced_once_and_the_call_succeeds() -> None:
    stub, credential = GraphStub(), RotatingCredential()
    stub.on("GET", r"/me$", _me)
    graph = _adapter(stub, credential)
    try:
        assert (await graph.me())["id"] == "u1"
    finally:
        await graph.close()
    assert credential.invalidations == 1
    assert [r.headers["authorization"] for r in stub.requests] == ["Bearer token-1", "Bearer token-2"]


async def test_a_second_401_is_an_auth_error_without_a_loop() -> None:
    stub, credential = GraphStub(), RotatingCredential()
    stub.on("GET", r"/me$", error(401, "InvalidAuthenticationToken", "Access token validation failure."))
    graph = _adapter(stub, credential)
    try:
        with pytest.raises(AuthError) as caught:
            await graph.me()
    finally:
        await graph.close()
    assert caught.value.code == "graph_unauthorized"
    assert credential.invalidations == 1 and len(stub.requests) == 2


async def test_a_refused_refresh_is_needs_reconnect() -> None:
    stub, credential = GraphStub(), RotatingCredential(refuse=True)
    stub.on("GET", r"/me$", _me)
    graph = _adapter(stub, credential)
    try:
        with pytest.raises(NeedsReconnect):
            await graph.me()
    finally:
        await graph.close()
    assert len(stub.requests) == 1


async def test_a_claims_challenge_reaches_the_credential() -> None:
    claims = '{"access_token":{"nbf":{"essential":true,"value":"1767225600"}}}'
    encoded = base64.b64encode(claims.encode()).decode()

    def challenge(request: httpx.Request) -> httpx.Response:
        if len(stub.requests) == 1:
            return error(401, "InvalidAuthenticationToken", "CAE", headers={
                "WWW-Authenticate": f'Bearer realm="", error="insufficient_claims", claims="{encoded}"'})
        return httpx.Response(200, json={"id": "u1"})

    stub, credential = GraphStub(), RotatingCredential()
    stub.on("GET", r"/me$", challenge)
    graph = _adapter(stub, credential)
    try:
        assert (await graph.me())["id"] == "u1"
    finally:
        await graph.close()
    assert claims in credential.claims
