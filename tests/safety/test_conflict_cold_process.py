"""The conflict check in a fresh process: the live read's code loads in a thread of its own, the
read waits for it within its budget, and nothing of it is imported on the event loop (where it
would block the loop and with it the budget). Answer times are measured in
``bench/scenarios/conflict_check.py``, not asserted here."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.safety import conflicts, preload
from tests.safety.test_conflicts import interval, put, seed
from tests.support.connect_world import MemoryWorld

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_preload() -> Iterator[None]:
    preload.reset()
    try:
        yield
    finally:
        preload.reset()


async def test_a_live_read_waits_for_its_code_and_past_the_budget_falls_back(world: MemoryWorld) -> None:
    await seed(world)
    put(world, "Zahnarzt", *conflicts.parse_interval(interval()))
    loaded = asyncio.Event()
    before = world.graph.request_count
    answer = await conflicts.check_conflicts(world.services, "prov-1", "res-1", interval(), live_budget=0.05,
                                             ready=loaded.wait)
    # Still loading: no Graph client is built (its imports would block the loop), the synced
    # state answers.
    assert (answer["checkedLive"], answer["fallbackReason"]) == (False, "timeout")
    assert world.graph.request_count == before
    loaded.set()
    answer = await conflicts.check_conflicts(world.services, "prov-1", "res-1", interval(), ready=loaded.wait)
    assert (answer["checkedLive"], answer["free"]) == (True, False)


async def test_a_check_giving_up_leaves_the_loading_running_for_the_next(fresh_preload: None) -> None:
    release = threading.Event()
    calls: list[str] = []

    def loader() -> float:
        calls.append(threading.current_thread().name)
        release.wait(10)
        return 0.0

    preload.start(loader)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(preload.ready(), timeout=0.01)
    release.set()
    await asyncio.wait_for(preload.ready(), timeout=10)
    preload.start(loader)
    assert calls == ["conflict-check-preload"]  # once per process, never on the caller's thread


async def test_a_failed_loading_fails_the_waiting_read_and_is_tried_again(fresh_preload: None) -> None:
    attempts: list[int] = []

    def loader() -> float:
        attempts.append(1)
        if len(attempts) == 1:
            raise ImportError("kiota_http")
        return 0.0

    with pytest.raises(ImportError):
        await asyncio.wait_for(asyncio.wrap_future(preload.start(loader)), timeout=10)
    await asyncio.wait_for(asyncio.wrap_future(preload.start(loader)), timeout=10)
    assert len(attempts) == 2


# What the first live read of a process imports; none of it may be imported on the loop's thread.
HEAVY = ("msgraph", "kiota_", "msal", "azure.identity", "icalendar")

_FRESH_PROCESS = r"""
import asyncio, json, sys, threading

imported_on_loop = []

class Recorder:
    phase = ""
    def find_spec(self, name, path=None, target=None):
        if self.phase and threading.current_thread() is threading.main_thread():
            imported_on_loop.append(name)
        return None

recorder = Recorder()
sys.meta_path.insert(0, recorder)

import function_app  # noqa: F401 - as the worker starts
from dataclasses import replace
from shared import wiring
from shared.connect.credentials import RealGraphProvider
from shared.domain import LinkMode
from shared.http.safety_bp import resource_conflicts
from tests.safety.test_conflicts import interval, request, seed
from tests.support.connect_world import make_memory_world, make_settings

async def main():
    world = make_memory_world()
    # The real provider; Graph and the identity platform at a closed port: the read fails fast.
    closed = "https://127.0.0.1:9"
    settings = make_settings(GRAPH_BASE_URL=closed + "/v1.0", ENTRA_AUTHORITY_HOST=closed)
    world.services = replace(world.services, settings=settings,
                             graph=RealGraphProvider(settings, world.storage))
    await seed(world, mode=LinkMode.APP_ONLY)
    wiring._services = world.services  # what the trigger's get_services() hands out
    recorder.phase = "check"
    response = await resource_conflicts(request(interval()))
    recorder.phase = ""
    from shared.safety import preload
    await preload.ready()  # a loaded machine may have answered at the budget, still loading
    print(json.dumps({"status": response.status_code, "answer": json.loads(response.get_body()),
                      "on_loop": imported_on_loop, "loaded": sorted(m for m in sys.modules
                                                                    if m.split(".")[0] in ("msgraph", "msal"))}))

asyncio.run(main())
"""


def test_in_a_fresh_process_nothing_heavy_is_imported_on_the_event_loop() -> None:
    out = subprocess.run([sys.executable, "-c", _FRESH_PROCESS], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert lines, out.stderr[-3000:]
    result = json.loads(lines[-1])
    assert result["status"] == 200 and result["answer"]["checkedLive"] is False
    assert result["answer"]["fallbackReason"] in ("graph_failed", "timeout")
    assert "msgraph" in result["loaded"] and "msal" in result["loaded"]
    assert [m for m in result["on_loop"] if m.startswith(HEAVY)] == []



async def test_time_the_request_spent_before_the_read_comes_off_the_live_budget(world: MemoryWorld) -> None:
    await seed(world)
    before = world.graph.request_count
    # A fresh process spent the whole live share building its clients before the read could start.
    arrived = asyncio.get_running_loop().time() - conflicts.LIVE_BUDGET_SECONDS
    answer = await conflicts.check_conflicts(world.services, "prov-1", "res-1", interval(), received=arrived)
    assert (answer["checkedLive"], answer["fallbackReason"]) == (False, "timeout")
    assert world.graph.request_count == before
    answer = await conflicts.check_conflicts(world.services, "prov-1", "res-1", interval(),
                                             received=asyncio.get_running_loop().time())
    assert answer["checkedLive"] is True
