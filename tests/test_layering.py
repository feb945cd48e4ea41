"""The sync run's layout holds: the round machinery sits below both runs, the choice of run per
link mode above both, neither run imports the other, and each run lives in its feature's package
(docs/ARCHITECTURE.md, "Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OUTLOOK_RUN, ICS_RUN = "shared.outlook.run", "shared.ics.run"
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


def _package_modules(package: str) -> list[str]:
    folder = ROOT / package.replace(".", "/")
    return [f"{package}.{path.stem}" for path in sorted(folder.glob("*.py")) if path.stem != "__init__"]


def test_the_outlook_run_has_its_own_package_and_the_services_keep_no_copy() -> None:
    assert OUTLOOK_RUN.startswith("shared.outlook.")
    assert {OUTLOOK_RUN, "shared.outlook.mailbox_ids"} <= set(_package_modules("shared.outlook"))
    assert not [m for m in _package_modules("shared.services") if "outlook" in m or "mailbox" in m]


@pytest.mark.parametrize("module", _package_modules("shared.outlook"))
def test_the_outlook_package_knows_neither_the_ics_package_nor_the_worker(module: str) -> None:
    assert not {m for m in _imports(module) if m == "shared.ics" or m.startswith("shared.ics.") or m == WORKER}


@pytest.mark.parametrize("folder", ["shared", "devtools", "tests"])
def test_only_the_benchmarks_import_bench(folder: str) -> None:
    """Benchmarks report on what devtools drives; tests and tools never depend on the reports."""
    importers = sorted(
        str(path.relative_to(ROOT)) for path in (ROOT / folder).rglob("*.py")
        if any(m == "bench" or m.startswith("bench.")
               for m in _imports(str(path.relative_to(ROOT).with_suffix("")).replace("/", ".")))
    )
    assert importers == []
