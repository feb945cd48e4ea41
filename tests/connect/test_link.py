"""The signed connect link: tampering, expiry, replay and return address — refused with a page in
the user's language, and nothing stored."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from devtools.azurite import free_port
from shared.connect import flow
from shared.connect.outcomes import ErrorPage, Redirect
from shared.connect.store import AUTHFLOWS, NONCES
from shared.context import Services
from shared.storage.memory import MemoryStorage
from tests.support.connect_world import RETURN_BASE, MemoryWorld, connect_token, make_settings


def _stored(services: Services) -> int:
    storage = services.storage
    assert isinstance(storage, MemoryStorage)
    return sum(len(t.rows) for t in storage.tables.values())


def _flip(token: str, index: int) -> str:
    chars = list(token)
    chars[index] = "A" if chars[index] != "A" else "B"
    return "".join(chars)


@pytest.mark.parametrize(("make", "code"), [
    (lambda: _flip(connect_token(), 5), "link_tampered"),                    # payload changed
    (lambda: _flip(connect_token(), -3), "link_tampered"),                   # signature changed
    (lambda: connect_token(secret="not-timums-secret"), "link_tampered"),
    (lambda: connect_token(now=time.time() - 3600), "link_expired"),
    (lambda: connect_token(lifetime=3 * 3600), "link_malformed"),            # lives longer than allowed
    (lambda: connect_token(return_url="https://evil.example/timum/"), "link_return_url"),
    (lambda: connect_token(return_url=RETURN_BASE.rstrip("/") + ".evil.example/"), "link_return_url"),
    (lambda: connect_token(nonce="short"), "link_malformed"),
    (lambda: connect_token(provider_name="P" * 121), "link_malformed"),           # a name, not a payload
    (lambda: connect_token(provider_name="Praxis\nForged: line"), "link_malformed"),
    (lambda: "no-dot-in-here", "link_malformed"),
    (lambda: "", "link_malformed"),
])
async def test_refused_links_change_nothing(world: MemoryWorld, make: object, code: str) -> None:
    token = make()  # type: ignore[operator]
    outcome = await flow.start(world.services, token)
    assert isinstance(outcome, ErrorPage)
    assert (outcome.code, outcome.status) == (code, 400)
    assert _stored(world.services) == 0


async def test_error_page_language_and_way_back_come_from_the_link_only_when_safe(world: MemoryWorld) -> None:
    expired = connect_token(locale="en", now=time.time() - 3600)
    outcome = await flow.start(world.services, expired)
    assert isinstance(outcome, ErrorPage) and outcome.locale == "en"
    assert outcome.return_url == RETURN_BASE + "providers/prov-1"
    evil = connect_token(locale="en", return_url="https://evil.example/")
    outcome = await flow.start(world.services, evil, accept_language="de-DE")
    # not the link's address: timum's home, the first allowed return address
    assert isinstance(outcome, ErrorPage) and outcome.return_url == RETURN_BASE
    garbage = await flow.start(world.services, "xx.yy", accept_language="en-US,en;q=0.8")
    assert isinstance(garbage, ErrorPage) and garbage.locale == "en"
    default = await flow.start(world.services, "xx.yy")
    assert isinstance(default, ErrorPage) and default.locale == "de"


async def test_a_link_works_once(live: Services) -> None:
    token = connect_token()
    first = await flow.start(live, token)
    assert isinstance(first, Redirect) and first.status == 302
    assert first.location.startswith(live.settings.entra_authority_host + "/organizations/oauth2/v2.0/authorize?")
    storage = live.storage
    assert isinstance(storage, MemoryStorage)
    flows = len(storage.table(AUTHFLOWS).rows)
    second = await flow.start(live, token)
    assert isinstance(second, ErrorPage) and second.code == "link_reused"
    assert second.return_url == RETURN_BASE + "providers/prov-1"
    assert len(storage.table(AUTHFLOWS).rows) == flows == 1
    assert len(storage.table(NONCES).rows) == 1


async def test_the_identity_platform_being_down_does_not_use_up_the_link(world: MemoryWorld) -> None:
    # Nothing listens on this port: the connection is refused at once.
    down = replace(world.services, settings=make_settings(ENTRA_AUTHORITY_HOST=f"https://127.0.0.1:{free_port()}"))
    token = connect_token()
    outcome = await flow.start(down, token)
    assert isinstance(outcome, ErrorPage) and (outcome.code, outcome.status) == ("unavailable", 503)
    assert outcome.return_url == RETURN_BASE + "providers/prov-1"
    assert _stored(down) == 0


def test_the_provider_name_travels_signed_in_the_link() -> None:
    from shared.signing import verify_connect_link
    from tests.support.connect_world import CONNECT_SECRET

    token = connect_token(provider_name="Physiopraxis Sonnenschein")
    link = verify_connect_link(token, [CONNECT_SECRET], now=time.time(), allowlist=[RETURN_BASE])
    assert link.provider_name == "Physiopraxis Sonnenschein"
    assert verify_connect_link(connect_token(), [CONNECT_SECRET], now=time.time(),
                               allowlist=[RETURN_BASE]).provider_name == ""
