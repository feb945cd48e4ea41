"""Fixtures of the connect-flow tests; what they build is ``tests/support/connect_world.py`` (its
names are re-exported here for older imports)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.sandbox.server import RunningSandbox, start_in_thread
from shared.context import Services
from tests.support.connect_world import (
    CONNECT_SECRET,
    JONAS,
    KEY_ONE,
    RETURN_BASE,
    ROOM,
    SERVICE_PORT,
    SERVICE_URL,
    WEBHOOK_SECRET,
    AppOnlyView,
    MemoryWorld,
    MicrosoftSignIn,
    ModeAwareProvider,
    connect_token,
    http_request,
    live_services,
    make_key,
    make_memory_world,
    make_settings,
    open_session,
    query_of,
    sandbox_config,
    sandbox_settings,
    settings_env,
)

__all__ = ["CONNECT_SECRET", "JONAS", "KEY_ONE", "RETURN_BASE", "ROOM", "SERVICE_PORT", "SERVICE_URL",
           "WEBHOOK_SECRET", "AppOnlyView", "MemoryWorld", "MicrosoftSignIn", "ModeAwareProvider", "connect_token",
           "http_request", "make_key", "make_settings", "open_session", "query_of", "sandbox_settings",
           "settings_env"]


@pytest.fixture
def world() -> MemoryWorld:
    return make_memory_world()


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    running = start_in_thread(sandbox_config(Path(tmp_path_factory.mktemp("sandbox"))))
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
