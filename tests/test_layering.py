"""The sync run's layout holds: the round machinery sits below both runs, the choice of run per
link mode above both, and neither run imports the other (docs/ARCHITECTURE.md, "Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OUTLOOK_RUN, ICS_RUN = "shared.services.outlook_sync", "shared.ics.run"
ROUNDS, WORKER = "shared.sync.rounds", "shared.sync.worker"


def _imports(module: str) -> set[str]:
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):  # module level and inside functions alike
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize(("module", "forbidden"), [
    (OUTLOOK_RUN, {ICS_RUN, WORKER}),
    (ICS_RUN, {OUTLOOK_RUN, WORKER}),
    (ROUNDS, {OUTLOOK_RUN, ICS_RUN, WORKER}),
])
def test_the_runs_and_the_rounds_import_nothing_above_or_beside_them(module: str, forbidden: set[str]) -> None:
    assert not _imports(module) & forbidden


def test_the_worker_chooses_between_both_runs_over_the_shared_rounds() -> None:
    assert {OUTLOOK_RUN, ICS_RUN, ROUNDS} <= _imports(WORKER)
