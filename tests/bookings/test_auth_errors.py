"""What timum hears when Graph refuses the writer: a 401 that survived a fresh token means the
sign-in must be renewed (``needs_reconnect``), never a raw code promising retries; so does a 403
(the one rule, ``shared.connect.status.health_for``), in words that say to check the sharing."""

from __future__ import annotations

import pytest

from shared.connect.status import reason_text
from shared.domain import LinkHealth
from shared.errors import AuthError
from shared.repos.links import LinkRepository
from tests.support.booking_world import KEY, World, booking


async def test_persistent_401_needs_reconnect(world: World) -> None:
    world.graph.fail_next(AuthError("create event: Graph answered 401", code="graph_unauthorized"),
                          op="create_event")
    assert await world.send(booking(1)) == "needs_reconnect"
    link = await LinkRepository(world.services.storage).require(KEY)
    assert link.health is LinkHealth.NEEDS_RECONNECT
    [status] = [e["data"] for e in world.timum.status_webhooks]
    assert status["status"] == "needs_reconnect"
    assert "graph_unauthorized" not in status["reason"] and "verbinden" in status["reason"]


async def test_403_needs_reconnect_in_words(world: World) -> None:
    world.graph.fail_next(AuthError("create event: Graph answered 403", code="graph_forbidden"), op="create_event")
    assert await world.send(booking(1)) == "needs_reconnect"
    link = await LinkRepository(world.services.storage).require(KEY)
    assert link.health is LinkHealth.NEEDS_RECONNECT
    [status] = [e["data"] for e in world.timum.status_webhooks]
    assert status["status"] == "needs_reconnect" and "graph_forbidden" not in status["reason"]
    assert "Freigabe" in status["reason"]


@pytest.mark.parametrize("code", ["graph_unauthorized", "graph_forbidden"])
@pytest.mark.parametrize("locale", ["de", "en"])
def test_auth_reasons_have_words_not_codes(code: str, locale: str) -> None:
    for health in (LinkHealth.ERROR, LinkHealth.NEEDS_RECONNECT):
        text = reason_text(locale, health, f"{code}: create event: Graph answered 401")
        assert text and code not in text
