"""The sandbox timum's ``writeBlockedSlots`` on the wire: per-item statuses, what fails the whole
request, and that a refused item leaves the others applied."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devtools.sandbox.timum.harness import RunningTimum, serve_timum
from devtools.sandbox.timum.seed import ANNA_WEBER, SONNENSCHEIN

SLOT = {"start": "2026-12-01T08:00:00Z", "end": "2026-12-01T09:00:00Z", "source": "outlook"}


@pytest.fixture(scope="module")
def running() -> Iterator[RunningTimum]:
    with serve_timum(seed=True) as server:
        yield server


def _post(running: RunningTimum, body: Any, resource: str = ANNA_WEBER) -> httpx.Response:
    with httpx.Client(base_url=running.base_url,
                      headers={"Authorization": f"Bearer {running.config.timum_api_key}"}) as client:
        return client.post(f"/timum/v1/providers/{SONNENSCHEIN}/resources/{resource}/blocked-slots/batch", json=body)


def test_each_item_gets_the_status_its_single_call_would_have(running: RunningTimum) -> None:
    answer = _post(running, {"items": [
        {"op": "upsert", "externalId": "b-1", **SLOT},
        {"op": "upsert", "externalId": "b-2", **SLOT, "end": "2026-12-01T07:00:00Z"},
        {"op": "delete", "externalId": "b-never"},
        {"op": "upsert", "externalId": "b 3", **SLOT},
        {"op": "move", "externalId": "b-4"},
        "not an object",
        {"op": "delete", "externalId": "b-5", "start": SLOT["start"]},
    ]})
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["index"] for r in results] == list(range(7))
    assert [r["status"] for r in results] == [201, 422, 404, 422, 422, 422, 422]
    assert [r.get("error", {}).get("field") for r in results] == [None, "end", None, "externalId", "op", "items",
                                                                  "start"]
    assert results[0]["slot"]["externalId"] == "b-1"
    again = _post(running, {"items": [{"op": "upsert", "externalId": "b-1", **SLOT}, {"op": "delete",
                                                                                     "externalId": "b-1x"}]})
    assert [r["status"] for r in again.json()["results"]] == [200, 404]
    assert {s.external_id for s in running.state.list_slots(SONNENSCHEIN, ANNA_WEBER)} >= {"b-1"}
    assert not {"b-2", "b 3"} & {s.external_id for s in running.state.list_slots(SONNENSCHEIN, ANNA_WEBER)}


@pytest.mark.parametrize("body", [
    {"items": []}, {"items": "x"}, {}, {"items": [{"op": "delete", "externalId": f"d-{n}"} for n in range(101)]},
    {"items": [{"op": "delete", "externalId": "d-1"}, {"op": "upsert", "externalId": "d-1", **SLOT}]},
    {"items": [{"op": "delete", "externalId": "d-1"}], "extra": True}, [1, 2],
])
def test_an_unreadable_request_fails_whole_and_applies_nothing(running: RunningTimum, body: Any) -> None:
    before = len(running.state.list_slots(SONNENSCHEIN))
    answer = _post(running, body)
    assert answer.status_code == 400
    assert len(running.state.list_slots(SONNENSCHEIN)) == before


def test_a_missing_resource_fails_whole_with_its_code(running: RunningTimum) -> None:
    answer = _post(running, {"items": [{"op": "delete", "externalId": "x"}]}, resource="res-nope")
    assert answer.status_code == 404 and answer.json()["code"] == "resource_not_found"
