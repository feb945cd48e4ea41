"""Where test code lives: conftest files hold fixtures and pytest hooks only; what the fixtures build,
and every helper a test module shares, lives in ``tests/support`` — so no test module imports from
a conftest (pytest loads those itself; importing one gives a second copy of its fixtures and hides
where a helper really lives). A package that needs another package's fixtures imports them into
its own conftest and names them in ``__all__``."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"

def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _modules() -> list[Path]:
    return sorted(TESTS.rglob("*.py"))


def _conftests() -> list[Path]:
    return [p for p in _modules() if p.name == "conftest.py"]


def _imported_module(node: ast.ImportFrom, path: Path) -> str:
    """The absolute dotted name a ``from … import`` reads from (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = path.relative_to(ROOT).parent.parts
    base = package[:len(package) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def _conftest_imports(path: Path, source: str | None = None) -> Iterator[tuple[int, str, list[str]]]:
    """(line, conftest module, names) for every import from a conftest in ``path`` (or in
    ``source``, read as if it were at ``path``)."""
    text = path.read_text(encoding="utf-8") if source is None else source
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[-1] == "conftest":
                    yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            module = _imported_module(node, path)
            names = [alias.name for alias in node.names]
            if module.split(".")[-1] == "conftest":
                yield node.lineno, module, names
            elif "conftest" in names:
                yield node.lineno, f"{module}.conftest", []


def _is_fixture(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr == "fixture":
            return True
        if isinstance(target, ast.Name) and target.id == "fixture":
            return True
    return False


def _fixtures_defined(path: Path, source: str | None = None) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source)
    return {node.name for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _is_fixture(node)}


def _module_path(dotted: str) -> Path:
    return ROOT.joinpath(*dotted.split(".")).with_suffix(".py")


def _all_names(node: ast.stmt) -> list[str] | None:
    if not (isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"]):
        return None
    if not isinstance(node.value, ast.List | ast.Tuple):
        return []
    return [e.value for e in node.value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]


def _layout_faults(path: Path, source: str | None = None) -> list[str]:
    """What in a conftest is neither a fixture, a hook, an import, nor ``__all__`` of fixtures."""
    text = path.read_text(encoding="utf-8") if source is None else source
    tree = ast.parse(text)
    faults: list[str] = []
    fixtures = _fixtures_defined(path, text)
    imported_fixtures: set[str] = set()
    for line, module, names in _conftest_imports(path, text):
        origin = _module_path(module)
        offered = _fixtures_defined(origin) if origin.exists() else set()
        for name in names:
            if name in offered:
                imported_fixtures.add(name)
            else:
                faults.append(f"line {line}: imports {name!r} from {module}, which is not a fixture there")
    for index, node in enumerate(tree.body):
        where = f"line {node.lineno}"
        if index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue                                      # the module docstring
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if not (_is_fixture(node) or node.name.startswith("pytest_")):
                faults.append(f"{where}: {node.name}() is neither a fixture nor a pytest hook")
            continue
        exported = _all_names(node)
        if exported is not None:
            for name in exported:
                if name not in imported_fixtures | fixtures:
                    faults.append(f"{where}: __all__ names {name!r}, which is not a fixture")
            continue
        kind = type(node).__name__
        name = getattr(node, "name", "") or ast.unparse(node).split("=")[0].strip()
        faults.append(f"{where}: {kind} {name!r} belongs in tests/support")
    return faults


def test_the_import_finder_sees_every_spelling() -> None:
    # The rules below are only as good as this finder.
    source = ("from tests.services.conftest import KEY\nfrom .conftest import World\n"
              "from tests.connect import conftest\nimport tests.org.conftest\nfrom tests.support import twins\n"
              "def f() -> None:\n    from ..connect.conftest import world\n")
    found = sorted(_conftest_imports(TESTS / "services" / "test_example.py", source))
    assert found == [(1, "tests.services.conftest", ["KEY"]), (2, "tests.services.conftest", ["World"]),
                     (3, "tests.connect.conftest", []), (4, "tests.org.conftest", []),
                     (7, "tests.connect.conftest", ["world"])]


def test_the_layout_check_names_each_helper_in_a_conftest() -> None:
    source = ('"""Doc."""\nimport pytest\nfrom tests.connect.conftest import sandbox, make_settings\n'
              'LIMIT = 3\n__all__ = ["sandbox", "LIMIT"]\n\n'
              "class Harness:\n    pass\n\n"
              "def helper() -> int:\n    return 1\n\n"
              "@pytest.fixture\ndef harness() -> Harness:\n    return Harness()\n\n"
              "def pytest_configure(config: object) -> None:\n    pass\n")
    faults = _layout_faults(TESTS / "example" / "conftest.py", source)
    assert faults == [
        "line 3: imports 'make_settings' from tests.connect.conftest, which is not a fixture there",
        "line 4: Assign 'LIMIT' belongs in tests/support",
        "line 5: __all__ names 'LIMIT', which is not a fixture",
        "line 7: ClassDef 'Harness' belongs in tests/support",
        "line 10: helper() is neither a fixture nor a pytest hook",
    ]


@pytest.mark.parametrize("path", [p for p in _modules() if p.name != "conftest.py"], ids=_rel)
def test_no_test_module_imports_from_a_conftest(path: Path) -> None:
    found = [(line, module) for line, module, _names in _conftest_imports(path)]
    assert not found, (f"{_rel(path)} imports from a conftest at "
                       + ", ".join(f"line {line} ({module})" for line, module in found)
                       + ": import the helper from tests/support instead")


@pytest.mark.parametrize("path", _conftests(), ids=_rel)
def test_a_conftest_holds_only_fixtures_and_hooks(path: Path) -> None:
    faults = _layout_faults(path)
    assert not faults, f"{_rel(path)}:\n  " + "\n  ".join(faults)


def test_support_modules_define_no_fixtures() -> None:
    # Fixtures in tests/support would be found only where imported by name: they stay in conftest files.
    found = {_rel(p): sorted(_fixtures_defined(p)) for p in sorted((TESTS / "support").rglob("*.py"))}
    assert {path: names for path, names in found.items() if names} == {}
