"""Graph sends notifications only to https URLs: a plain-http SERVICE_BASE_URL is a start-up error
naming the setting, except with a Graph stand-in (sandbox mode) or on a loopback address."""

from __future__ import annotations

import pytest

from shared.errors import ConfigError
from tests.support.outlook_world import make_settings


@pytest.mark.parametrize("graph", ["https://graph.microsoft.com/v1.0", "https://graph.microsoft.us/v1.0"])
def test_plain_http_against_microsoft_graph_is_refused_naming_the_setting(graph: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(SERVICE_BASE_URL="http://sync.example.com", GRAPH_BASE_URL=graph)
    [problem] = [p for p in caught.value.problems if "SERVICE_BASE_URL" in p]
    assert problem.startswith("SERVICE_BASE_URL:") and "https" in problem


@pytest.mark.parametrize(("base", "graph"), [
    ("https://sync.example.com", "https://graph.microsoft.com/v1.0"),
    ("http://sync.example.com", "https://127.0.0.1:8443/v1.0"),      # sandbox mode: a stand-in Graph
    ("http://127.0.0.1:7071", "https://graph.microsoft.com/v1.0"),   # loopback: local runs and tests
    ("http://localhost:7071", "https://graph.microsoft.com/v1.0"),
])
def test_https_or_sandbox_or_loopback_is_accepted(base: str, graph: str) -> None:
    assert make_settings(SERVICE_BASE_URL=base, GRAPH_BASE_URL=graph).service_base_url == base
