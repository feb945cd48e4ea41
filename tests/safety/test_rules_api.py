"""The blocking rules through timum's settings API, stored and read back."""

from __future__ import annotations

import json

from shared.repos.links import ProviderSettingsRepository
from tests.connect.test_links_api import _call, _request
from tests.support.connect_world import MemoryWorld


async def test_rules_round_trip_through_the_settings_api(world: MemoryWorld) -> None:
    body = json.dumps({"blocking": {"tentative": False, "workingElsewhere": True}, "allDayBlocksWhenFree": True})
    put = await _call(world, "PUT", "settings", _request("PUT", "prov-1", "settings", body=body.encode()))
    assert put.status_code == 200, put.get_body()
    stored = await ProviderSettingsRepository(world.storage).get("prov-1")
    assert (stored.tentative_blocks, stored.working_elsewhere_blocks, stored.all_day_free_blocks) == (False, True, True)
    got = json.loads((await _call(world, "GET", "settings", _request("GET", "prov-1", "settings"))).get_body())
    assert got["blocking"] == {"free": False, "tentative": False, "busy": True, "oof": True,
                               "workingElsewhere": True, "unknown": True}
    assert got["tentativeBlocks"] is False and got["allDayBlocksWhenFree"] is True


async def test_a_bad_rule_saves_nothing(world: MemoryWorld) -> None:
    body = json.dumps({"locale": "en", "blocking": {"busy": False, "holiday": True}})
    put = await _call(world, "PUT", "settings", _request("PUT", "prov-1", "settings", body=body.encode()))
    assert put.status_code == 400 and json.loads(put.get_body())["field"] == "blocking.holiday"
    stored = await ProviderSettingsRepository(world.storage).get("prov-1")
    assert stored.busy_blocks is True and stored.locale == "de"
