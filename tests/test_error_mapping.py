"""One HTTP mapping of the exception tree: ``responses.ERROR_STATUS`` is what every blueprint
answers, and docs/openapi-service.yaml (``x-error-status``) and docs/ARCHITECTURE.md ("Exception
tree") say the same. A class added to the tree without a documented status fails here too."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import yaml

from shared import errors
from shared.errors import (
    AuthError,
    BadRequest,
    InvalidSignature,
    NeedsReconnect,
    PayloadTooLarge,
    RemoteGone,
    StorageError,
    SyncError,
    SyncStateExpired,
    Throttled,
    TransientError,
)
from shared.http.responses import ERROR_STATUS, error_response, plain_error, status_for

ROOT = Path(__file__).resolve().parent.parent


def _tree() -> list[type[SyncError]]:
    return [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
            if issubclass(cls, SyncError) and cls is not SyncError]


def test_the_openapi_list_is_the_table() -> None:
    spec = yaml.safe_load((ROOT / "docs" / "openapi-service.yaml").read_text(encoding="utf-8"))
    assert spec["info"]["x-error-status"] == {cls.__name__: status for cls, status in ERROR_STATUS}


def test_the_architecture_table_says_the_same() -> None:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text[text.index("### Exception tree"):text.index("### Link health")]
    documented: dict[str, int] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not re.match(r"\d{3}", cells[1]):
            continue
        names = re.findall(r"`(\w+)`", cells[0])
        statuses = [int(s) for s in re.findall(r"\d{3}", cells[1])]
        # "BadRequest (+ InvalidSignature, PayloadTooLarge) | 400 / 401 / 413": one status per name.
        if len(statuses) == len(names):
            documented.update(zip(names, statuses, strict=True))
        else:
            documented.update(dict.fromkeys(names, statuses[0]))
    for name, status in documented.items():
        assert status_for(getattr(errors, name)("x")) == status, name
    assert {cls.__name__ for cls, _ in ERROR_STATUS} <= set(documented)


@pytest.mark.parametrize("cls", _tree(), ids=lambda c: c.__name__)
def test_every_class_of_the_tree_has_a_status_through_its_table_entry(cls: type[SyncError]) -> None:
    # A class inherits its base's status unless it has its own entry; none falls through to 500
    # by accident (ConfigError is 500 on purpose; SyncStateExpired is RemoteGone's).
    assert any(issubclass(cls, listed) for listed, _ in ERROR_STATUS), cls


def test_the_specific_class_wins_over_its_base() -> None:
    assert status_for(InvalidSignature("x")) == 401
    assert status_for(PayloadTooLarge("x")) == 413
    assert status_for(Throttled("x")) == 429
    assert status_for(NeedsReconnect("x")) == status_for(AuthError("x")) == 502
    assert status_for(SyncStateExpired("x")) == status_for(RemoteGone("x")) == 502
    assert status_for(ValueError("a bug")) == 500


def test_problem_json_and_plain_text_share_status_and_retry_after() -> None:
    for exc in (Throttled("slow down", retry_after=7.4), TransientError("later"), StorageError("down"),
                BadRequest("no", field="value")):
        problem, plain = error_response(exc), plain_error(exc, "text")
        assert problem.status_code == plain.status_code == status_for(exc)
        assert problem.headers.get("Retry-After") == plain.headers.get("Retry-After")
    assert error_response(Throttled("x", retry_after=7.4)).headers["Retry-After"] == "7"
    assert "Retry-After" not in error_response(BadRequest("x")).headers
    assert plain_error(StorageError("x"), "t", headers={"Retry-After": "60"}).headers["Retry-After"] == "60"
