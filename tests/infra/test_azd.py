"""azure.yaml and infra/main.parameters.json: what `azd up` reads before it touches Azure."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.infra.bicep import template

ROOT = Path(__file__).resolve().parents[2]


def azure_yaml() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    return data


def parameters() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "infra" / "main.parameters.json").read_text(encoding="utf-8"))
    return data["parameters"]


def test_azure_yaml_deploys_this_repository_as_a_python_function_app() -> None:
    config = azure_yaml()
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", config["name"])
    api = config["services"]["api"]
    assert api["language"] == "python"
    assert api["host"] == "function"
    assert (ROOT / api["project"] / "function_app.py").exists() or api["project"] == "."
    assert (ROOT / api["project"] / "requirements.txt").exists()
    infra = config["infra"]
    assert infra["provider"] == "bicep"
    assert (ROOT / infra["path"] / f"{infra['module']}.bicep").exists()


def test_parameters_file_maps_azd_environment_values() -> None:
    params = parameters()
    assert params["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert params["location"]["value"] == "${AZURE_LOCATION}"
    assert params["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
    for name, entry in params.items():
        assert re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*(=[^}]*)?\}", entry["value"]), f"{name}: {entry['value']}"


def test_parameters_file_and_main_bicep_agree() -> None:
    declared = template("main")["parameters"]
    given = parameters()
    assert set(given) <= set(declared), f"parameters main.bicep does not declare: {set(given) - set(declared)}"
    required = {name for name, spec in declared.items() if spec["default"] is None}
    assert required <= set(given), f"required parameters azd would not fill: {required - set(given)}"
    # Numbers are left to the Bicep defaults: the file passes strings only.
    numeric = {name for name, spec in declared.items() if spec["type"] == "int"}
    assert not numeric & set(given)


def test_no_secret_is_an_azd_parameter() -> None:
    text = (ROOT / "infra" / "main.parameters.json").read_text(encoding="utf-8").lower()
    for word in ("secret", "password", "api_key", "encryption"):
        assert word not in text
