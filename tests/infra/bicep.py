"""Reading the Bicep templates in tests: parse with pycep (no Bicep CLI here) and render expressions.

pycep turns a template into nested dicts. Identifiers and string literals both come out as plain
strings, and expressions as ``{"operator": …}`` / ``{"function": …}`` trees; ``render`` turns
those back into compact text (``identity.properties.principalId``) so tests can compare them.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from pycep import BicepParser

INFRA = Path(__file__).resolve().parents[2] / "infra"


@cache
def template(name: str) -> dict[str, Any]:
    """Parsed ``infra/<name>.bicep``."""
    parsed: dict[str, Any] = BicepParser().parse(file_path=INFRA / f"{name}.bicep")
    return parsed


def render(node: Any) -> str:
    if node is None:
        return "null"
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, int | float | str):
        return str(node)
    if isinstance(node, list):
        return "[" + ", ".join(render(item) for item in node) + "]"
    if isinstance(node, dict):
        if "operator" in node:
            op = node["operator"]
            operands = op.get("operands", {})
            if op["type"] == "property_accessor":
                return f"{render(operands['operand_1'])}.{render(operands['operand_2'])}"
            return f"{op['type']}(" + ", ".join(render(v) for v in operands.values()) + ")"
        if "function" in node:
            fn = node["function"]
            args = [render(v) for v in fn.get("parameters", {}).values() if v is not None]
            return f"{fn['type']}(" + ", ".join(args) + ")"
        return "{" + ", ".join(f"{k}: {render(v)}" for k, v in node.items()) + "}"
    raise TypeError(f"unexpected node {node!r}")


def resources(name: str, type_: str) -> dict[str, dict[str, Any]]:
    """Resources of one type in ``infra/<name>.bicep``: symbolic name → body (condition unwrapped)."""
    found = {}
    for symbol, res in template(name)["resources"].items():
        if res["type"] == type_:
            config = res["config"]
            # Conditional (`= if (…) {…}`) and loop resources nest their body one level deeper.
            while "config" in config and ("condition" in config or "loop_type" in config):
                config = config["config"]
            found[symbol] = config
    return found


def resource(name: str, type_: str) -> dict[str, Any]:
    (only,) = resources(name, type_).values()
    return only


def walk(node: Any) -> Any:
    """Every nested value of a parsed template, depth first."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)
