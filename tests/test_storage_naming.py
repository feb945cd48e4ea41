"""Every class that opens tables of a ``StoragePort`` is a ``…Repository`` (docs/ARCHITECTURE.md,
"Storage layout"); classes that are handed a ``StoragePort`` only to pass it on are not judged."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _classes_opening_tables() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted((ROOT / "shared").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef):
                continue
            inits = [item for item in node.body if isinstance(item, ast.FunctionDef) and item.name == "__init__"]
            if any(isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "table"
                   for init in inits for call in ast.walk(init)):
                found[node.name] = str(path.relative_to(ROOT))
    return found


def test_every_class_that_opens_tables_is_a_repository() -> None:
    classes = _classes_opening_tables()
    assert "LinkRepository" in classes  # the scan sees the classes it is meant to judge
    assert {name: where for name, where in classes.items() if not name.endswith("Repository")} == {}
