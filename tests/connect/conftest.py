"""Fixtures of the connect-flow tests (the organisation and safety packages share them); what
they build is ``tests/support/connect_world.py`` and, for the browser tests,
``tests/support/browser.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.sandbox import server as sandbox_server
from devtools.sandbox.server import RunningSandbox
from shared.context import Services
from tests.support import browser as browser_support
from tests.support.browser import BrowserStack
from tests.support.connect_world import MemoryWorld, MicrosoftSignIn, live_services, make_memory_world, sandbox_config


@pytest.fixture
def world() -> MemoryWorld:
    return make_memory_world()


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    # Through the module: the fast tier replaces ``start_in_thread`` to refuse it.
    running = sandbox_server.start_in_thread(sandbox_config(Path(tmp_path_factory.mktemp("sandbox"))))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def live(sandbox: RunningSandbox) -> Services:
    return live_services(sandbox)


@pytest.fixture
def microsoft(sandbox: RunningSandbox) -> Iterator[MicrosoftSignIn]:
    walker = MicrosoftSignIn(sandbox)
    try:
        yield walker
    finally:
        walker.close()


# --- the browser tests: the service in the local host, and Chromium ----------------------------------

@pytest.fixture(scope="module")
def stack(sandbox: RunningSandbox) -> Iterator[BrowserStack]:
    with browser_support.browser_stack(sandbox) as running:
        yield running


@pytest.fixture(scope="module")
def browser(stack: BrowserStack) -> Iterator[Any]:
    with browser_support.chromium() as chromium:
        yield chromium


@pytest.fixture
def page_factory(browser: Any) -> Iterator[Any]:
    with browser_support.page_factory(browser) as make:
        yield make
