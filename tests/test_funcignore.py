"""The in-memory twins stay out of the deployed package (``.funcignore``), so nothing that is
deployed may import them: a deployed module importing one would fail at start in Azure only."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TWINS = {"shared.adapters.graph_memory": "shared/adapters/graph_memory.py",
         "shared.adapters.timum_memory": "shared/adapters/timum_memory.py",
         "shared.storage.memory": "shared/storage/memory.py",
         "shared.adapters.ics_memory": "shared/adapters/ics_memory.py"}


def _ignored() -> set[str]:
    lines = (ROOT / ".funcignore").read_text(encoding="utf-8").splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_twins_are_not_deployed() -> None:
    assert set(TWINS.values()) <= _ignored()


def test_no_deployed_module_imports_a_twin() -> None:
    deployed = [ROOT / "function_app.py", *sorted((ROOT / "shared").rglob("*.py"))]
    offenders = {}
    for path in deployed:
        relative = path.relative_to(ROOT).as_posix()
        if relative in TWINS.values():
            continue
        twins = {name for name in TWINS if name in _imports(path)}
        if twins:
            offenders[relative] = sorted(twins)
    assert offenders == {}
