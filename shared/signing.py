"""Signatures shared with timum (documented in ``docs/timum-api.yaml``).

Webhooks (both directions) — header ``Timum-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]``
where each ``v1`` is ``HMAC-SHA256(secret, "<t>." + raw body)``. Several ``v1`` values
may be sent while a secret rotates; any match with any configured secret verifies.
The timestamp must lie within ``tolerance`` seconds of our clock (default 5 min).

Connect links — ``/api/connect?token=<payload>.<sig>`` with ``payload`` the base64url of
compact JSON ``{"v":1,"pid","rid","loc","ret","exp","nonce"}`` (plus ``"pnm"``, the provider's display name,
and ``"scp":"org"`` for a link that
connects the provider's whole Microsoft 365 organisation) and ``sig`` the base64url
``HMAC-SHA256(secret, payload)``. Links live at most ``MAX_LINK_LIFETIME`` seconds; the
nonce makes each link single-use (the caller stores used nonces until ``exp``).

Pure functions: the clock is a parameter.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from shared.errors import InvalidSignature
from shared.ids import id_problem

SIGNATURE_HEADER = "Timum-Signature"
DEFAULT_TOLERANCE = 300
MAX_LINK_LIFETIME = 15 * 60
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def _mac(secret: str, data: bytes) -> bytes:
    return hmac.new(secret.encode(), data, hashlib.sha256).digest()


def sign_webhook(body: bytes, secrets: Sequence[str], *, timestamp: int) -> str:
    """Header value signing ``body`` with every given secret (normally just the first)."""
    if not secrets:
        raise ValueError("no secret to sign with")
    sigs = ",".join(f"v1={_mac(s, f'{timestamp}.'.encode() + body).hex()}" for s in secrets)
    return f"t={timestamp},{sigs}"


def verify_webhook(body: bytes, header: str | None, secrets: Sequence[str], *, now: float,
                   tolerance: int = DEFAULT_TOLERANCE) -> int:
    """Return the signed timestamp, or raise ``InvalidSignature`` with a reason safe to show."""
    if not header:
        raise InvalidSignature(f"missing {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates: list[bytes] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise InvalidSignature("signature timestamp is not a number") from None
        elif key == "v1":
            try:
                candidates.append(bytes.fromhex(value))
            except ValueError:
                continue
    if timestamp is None or not candidates:
        raise InvalidSignature("signature header lacks t= or v1=")
    if abs(now - timestamp) > tolerance:
        raise InvalidSignature("signature timestamp is outside the tolerance window", code="stale_signature")
    signed = f"{timestamp}.".encode() + body
    ok = False
    for secret in secrets:
        expected = _mac(secret, signed)
        for candidate in candidates:
            # compare_digest on every pair: no early exit that leaks which secret matched
            ok |= hmac.compare_digest(expected, candidate)
    if not ok:
        raise InvalidSignature("signature does not match")
    return timestamp


@dataclass(frozen=True)
class ConnectLink:
    provider_id: str
    resource_id: str | None
    locale: str
    return_url: str
    expires_at: int
    nonce: str
    #: "" connects one calendar; "org" connects the whole organisation (an administrator's consent)
    scope: str = ""
    #: the provider's name as timum shows it, so our pages can say where a calendar goes (optional)
    provider_name: str = ""


#: the longest provider name a connect link may carry (a display name, never an id)
MAX_PROVIDER_NAME = 120
#: the scopes a connect link may carry
LINK_SCOPES = frozenset({"", "org"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_connect_link(link: ConnectLink, secret: str) -> str:
    data: dict[str, object] = {"v": 1, "pid": link.provider_id, "rid": link.resource_id, "loc": link.locale,
                               "ret": link.return_url, "exp": link.expires_at, "nonce": link.nonce}
    if link.scope:
        data["scp"] = link.scope
    if link.provider_name:
        data["pnm"] = link.provider_name
    payload = _b64(json.dumps(data, separators=(",", ":")).encode())
    return f"{payload}.{_b64(_mac(secret, payload.encode()))}"


def return_url_allowed(url: str, allowlist: Sequence[str]) -> bool:
    """Prefix match on full origins+paths; a prefix must end the origin (no evil.com suffix tricks)."""
    for prefix in allowlist:
        if not prefix:
            continue
        if url == prefix:
            return True
        base = prefix if prefix.endswith(("/", "?")) else prefix + "/"
        if url.startswith(base) or url.startswith(prefix + "?"):
            return True
    return False


def verify_connect_link(token: str | None, secrets: Sequence[str], *, now: float,
                        allowlist: Sequence[str]) -> ConnectLink:
    """Check signature, expiry and return URL; the caller checks the nonce for replay."""
    if not token or token.count(".") != 1 or len(token) > 4096:
        raise InvalidSignature("the link is incomplete", code="link_malformed")
    payload, sig = token.split(".")
    try:
        given = _unb64(sig)
    except ValueError:
        raise InvalidSignature("the link is incomplete", code="link_malformed") from None
    if not any(hmac.compare_digest(_mac(s, payload.encode()), given) for s in secrets):
        raise InvalidSignature("the link's signature does not match", code="link_tampered")
    try:
        data = json.loads(_unb64(payload))
        link = ConnectLink(provider_id=str(data["pid"]), resource_id=(str(data["rid"]) if data.get("rid") else None),
                           locale=str(data.get("loc") or ""), return_url=str(data["ret"]), expires_at=int(data["exp"]),
                           nonce=str(data["nonce"]), scope=str(data.get("scp") or ""),
                           provider_name=str(data.get("pnm") or ""))
    except (ValueError, KeyError, TypeError):
        raise InvalidSignature("the link's content is malformed", code="link_malformed") from None
    if data.get("v") != 1:
        raise InvalidSignature("the link has an unknown version", code="link_malformed")
    if link.expires_at < now:
        raise InvalidSignature("the link has expired", code="link_expired")
    if link.expires_at - now > MAX_LINK_LIFETIME + 60:
        raise InvalidSignature("the link lives longer than allowed", code="link_malformed")
    if link.scope not in LINK_SCOPES:
        raise InvalidSignature("the link has an unknown scope", code="link_malformed")
    if len(link.provider_name) > MAX_PROVIDER_NAME or not link.provider_name.isprintable():
        raise InvalidSignature("the link's provider name is malformed", code="link_malformed")
    if not _NONCE.match(link.nonce):
        raise InvalidSignature("the link's nonce is malformed", code="link_malformed")
    if id_problem(link.provider_id) or (link.resource_id is not None and id_problem(link.resource_id)):
        raise InvalidSignature("the link names no valid provider", code="link_malformed")
    if not return_url_allowed(link.return_url, allowlist):
        raise InvalidSignature("the link's return address is not allowed", code="link_return_url")
    return link
