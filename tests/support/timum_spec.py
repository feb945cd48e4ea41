"""``docs/timum-api.yaml`` as the tests read it: the loaded document, and a check of a value against
one of its schemas (JSON Schema 2020-12, formats checked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parents[2] / "docs" / "timum-api.yaml"
SPEC_URI = "urn:timum-api"


def load_spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    return loaded


def schema_validator(spec: dict[str, Any], pointer: str) -> Draft202012Validator:
    registry: Registry[Any] = Registry().with_resource(
        SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012))
    return Draft202012Validator({"$ref": f"{SPEC_URI}#{pointer}"}, registry=registry,
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def check(spec: dict[str, Any], pointer: str, instance: Any) -> None:
    """``instance`` is valid against the schema at ``pointer`` (e.g. ``/components/schemas/X``)."""
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in schema_validator(spec, pointer).iter_errors(instance)]
    assert not errors, errors
