"""The test tiers: which tests need a running server (``stack``), and the fast tier's refusal to
start one. ``tests/conftest.py`` applies both from its hooks."""

from __future__ import annotations

from typing import Any

import pytest

#: Fixtures that start (or stand for) a running server; any test asking for one is a stack test.
STACK_FIXTURES = frozenset({
    "azurite", "azure_storage", "stack", "fuzz_stack", "sandbox", "graph_env", "queues", "storage_env",
    "live", "microsoft", "sandbox_harness", "webhook_receiver",
})
#: Values of parametrised fixtures (``storage``, ``graph``, ...) that select the real backend.
STACK_PARAMS = frozenset({"azure", "sandbox"})


def needs_stack(item: pytest.Item) -> bool:
    if STACK_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return True
    callspec = getattr(item, "callspec", None)
    params: dict[str, Any] = callspec.params if callspec is not None else {}
    return any(isinstance(value, str) and value in STACK_PARAMS for value in params.values())


def _refuse(what: str) -> Any:
    def start(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError(f"the fast test tier starts no {what}: mark this test 'stack' "
                           "(or ask for a fixture in tests/support/tiers.py STACK_FIXTURES)")
    return start


def refuse_servers() -> None:
    """Make every way to start Azurite, the sandbox or the local host fail with a message naming
    the marker. Helpers elsewhere call these through their modules, so the refusal reaches them."""
    from devtools import azurite as azurite_mod
    from devtools.devhost import host as devhost_host
    from devtools.sandbox import server as sandbox_server

    azurite_mod.start = _refuse("Azurite")
    sandbox_server.start_in_thread = _refuse("sandbox")
    devhost_host.DevHost.start = _refuse("local Functions host")  # type: ignore[method-assign]
