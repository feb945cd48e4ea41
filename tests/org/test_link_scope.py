"""The connect link's ``scp`` field: absent for one calendar, ``org`` for the organisation path,
anything else refused; it is covered by the signature like every other field."""

from __future__ import annotations

import time

import pytest

from shared.errors import InvalidSignature
from shared.signing import ConnectLink, sign_connect_link, verify_connect_link

SECRET = "s3cret"
ALLOW = ("http://127.0.0.1:7080/timum/",)


def _link(scope: str) -> ConnectLink:
    return ConnectLink(provider_id="prov-1", resource_id=None, locale="de",
                       return_url="http://127.0.0.1:7080/timum/providers/prov-1", expires_at=int(time.time()) + 600,
                       nonce="n" * 24, scope=scope)


def test_scopes_round_trip_and_unknown_ones_are_refused() -> None:
    for scope in ("", "org"):
        link = verify_connect_link(sign_connect_link(_link(scope), SECRET), [SECRET], now=time.time(), allowlist=ALLOW)
        assert link.scope == scope
    with pytest.raises(InvalidSignature) as refused:
        verify_connect_link(sign_connect_link(_link("admin"), SECRET), [SECRET], now=time.time(), allowlist=ALLOW)
    assert refused.value.code == "link_malformed"


def test_the_scope_cannot_be_added_to_a_signed_link() -> None:
    import base64
    import json

    token = sign_connect_link(_link(""), SECRET)
    payload, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["scp"] = "org"
    forged = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")
    with pytest.raises(InvalidSignature) as refused:
        verify_connect_link(f"{forged}.{sig}", [SECRET], now=time.time(), allowlist=ALLOW)
    assert refused.value.code == "link_tampered"
