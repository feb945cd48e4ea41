"""Sandbox Outlook UI (being written)."""
from __future__ import annotations

from starlette.routing import BaseRoute

from devtools.sandbox.config import SandboxConfig
from devtools.sandbox.graph.state import GraphState


def ui_routes(state: GraphState, config: SandboxConfig) -> list[BaseRoute]:
    return []
