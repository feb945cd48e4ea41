"""The sandbox's mid-life token faults: Graph refuses unexpired access tokens (plain 401, or a
Continuous Access Evaluation claims challenge) while refresh tokens keep working."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from devtools.sandbox.directory import Directory, TokenError
from devtools.sandbox.server import RunningSandbox
from tests.support.sandbox_tenants import TenantFactory


def _directory() -> tuple[Directory, str]:
    directory = Directory()
    tenant = directory.add_tenant("Praxis", "praxis.example")
    user = directory.add_user(tenant.id, "Anna", "anna")
    return directory, user.id


def test_revoked_access_token_is_refused_and_a_fresh_one_works() -> None:
    directory, uid = _directory()
    token, _ = directory.issue_access_token(tenant_id="t", client_id="c", user_id=uid)
    assert directory.refuse_access_tokens(user_id=uid) == 1
    with pytest.raises(TokenError) as caught:
        directory.verify_access_token(token)
    assert caught.value.reason == "revoked"
    fresh, _ = directory.issue_access_token(tenant_id="t", client_id="c", user_id=uid)
    directory.issued_by_refresh(fresh, None)
    assert directory.verify_access_token(fresh).user_id == uid


def test_claims_challenge_is_lifted_only_by_a_request_with_claims() -> None:
    directory, uid = _directory()
    token, _ = directory.issue_access_token(tenant_id="t", client_id="c", user_id=uid)
    directory.refuse_access_tokens(user_id=uid, mode="claims_challenge")
    challenge = directory.claims_challenge_for(token)
    assert challenge is not None
    assert "nbf" in json.loads(base64.b64decode(challenge))["access_token"]
    without, _ = directory.issue_access_token(tenant_id="t", client_id="c", user_id=uid)
    directory.issued_by_refresh(without, None)
    with pytest.raises(TokenError):
        directory.verify_access_token(without)
    with_claims, _ = directory.issue_access_token(tenant_id="t", client_id="c", user_id=uid)
    directory.issued_by_refresh(with_claims, base64.b64decode(challenge).decode())
    assert directory.verify_access_token(with_claims).user_id == uid
    assert not directory.claims_challenges


def test_unknown_mode_is_refused() -> None:
    directory, uid = _directory()
    with pytest.raises(ValueError):
        directory.refuse_access_tokens(user_id=uid, mode="everything")


def test_control_endpoint_refuses_one_users_tokens(sandbox: RunningSandbox, tenant_factory: TenantFactory) -> None:
    tenant = tenant_factory()
    directory = sandbox.directory
    token, _ = directory.issue_access_token(tenant_id=tenant.id, client_id="c", user_id=tenant.user.id)
    other, _ = directory.issue_access_token(tenant_id=tenant.id, client_id="c", user_id=tenant.admin.id)
    url = f"{sandbox.http_base}/_sandbox/identity/access-tokens/refuse"
    answer = httpx.post(url, json={"user": tenant.user.mail, "mode": "claims_challenge"})
    assert answer.status_code == 200 and answer.json() == {"refused": 1, "mode": "claims_challenge"}
    with pytest.raises(TokenError):
        directory.verify_access_token(token)
    assert directory.verify_access_token(other).user_id == tenant.admin.id
    assert httpx.post(url, json={"tenant": tenant.id}).json()["refused"] == 2  # every live token of the tenant
    assert httpx.post(url, json={"mode": "everything", "tenant": tenant.id}).status_code == 400
