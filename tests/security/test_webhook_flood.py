"""Attack: flood the anonymous Graph webhook with notifications for subscriptions that do not exist.

On the old code one POST of 1,000 random subscription ids cost 1,000 table reads (~6 s), and two of
them pushed a normal notification past Graph's 3-second deadline. Now an id that is not a GUID
costs nothing, one POST looks up at most ``MAX_LOOKUPS_PER_POST`` unknown ids (the rest is answered
503, so a real delivery is retried, never lost), and the look-ups are counted here through the
process's own subscription cache (every look-up leaves one entry).
"""

from __future__ import annotations

import json
import secrets
import uuid

import httpx

from devtools.stack import Stack
from shared.domain import LinkKey
from shared.http.graph_bp import DEFERRED_ANSWER
from shared.repos.links import SubscriptionRepository
from shared.services.notifications import MAX_LOOKUPS_PER_POST
from shared.wiring import subscription_cache


def _post(client: httpx.Client, stack: Stack, items: list[dict[str, object]], route: str = "notifications"
          ) -> httpx.Response:
    return client.post(stack.api_url(f"graph/{route}"), content=json.dumps({"value": items}),
                       headers={"Content-Type": "application/json"})


def _random(count: int, make_id: object = None) -> list[dict[str, object]]:
    return [{"subscriptionId": str(uuid.uuid4()) if make_id is None else f"sub-{i}-{secrets.token_hex(4)}",
             "clientState": secrets.token_urlsafe(12), "changeType": "updated",
             "resource": "Users/x/Events/AAMk"} for i in range(count)]


def test_a_thousand_unknown_guids_cost_at_most_the_cap(stack: Stack, client: httpx.Client) -> None:
    cache = subscription_cache()
    before = len(cache)
    for route in ("notifications", "lifecycle"):
        answer = _post(client, stack, _random(1000), route)
        assert answer.status_code == 503, answer.text
        assert answer.text == DEFERRED_ANSWER and int(answer.headers["Retry-After"]) >= 1
    assert len(cache) - before <= 2 * MAX_LOOKUPS_PER_POST


def test_ids_that_are_not_guids_are_dropped_without_a_lookup(stack: Stack, client: httpx.Client) -> None:
    cache = subscription_cache()
    before = len(cache)
    answer = _post(client, stack, _random(1000, make_id=True))
    assert answer.status_code == 202
    assert len(cache) == before


def test_a_real_notification_still_gets_through_between_hostile_posts(stack: Stack, client: httpx.Client) -> None:
    sid, state = str(uuid.uuid4()), secrets.token_urlsafe(32)
    stack.run(SubscriptionRepository(stack.storage).put(sid, LinkKey("flood-p", "flood-r"), state))
    real: list[dict[str, object]] = [{"subscriptionId": sid, "clientState": state, "changeType": "updated",
                                      "resource": "Users/x/Events/1"}]
    for _ in range(3):
        assert _post(client, stack, _random(1000)).status_code == 503
        assert _post(client, stack, real).status_code == 202
    # Mixed into a hostile POST: answered 503 so Graph delivers again (that the real notification is
    # enqueued at once as well is pinned in tests/webhooks/test_notification_limits.py).
    mixed = _post(client, stack, real + _random(200))
    assert mixed.status_code == 503


def test_a_body_over_one_mebibyte_is_refused_by_the_app(stack: Stack, client: httpx.Client) -> None:
    body = json.dumps({"value": _random(1000), "pad": "x" * (1024 * 1024)})
    answer = client.post(stack.api_url("graph/notifications"), content=body,
                         headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert "1048576" in answer.text  # the app's answer, not the host's (whose limit is 8 MiB here)
