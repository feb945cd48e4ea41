"""Every HTTP endpoint, fed generated bad and unauthenticated input (short run; the long one is
``python -m bench.fuzz``): never a 5xx, only documented answers, and no stored change."""

from __future__ import annotations

import httpx
import pytest
import yaml
from openapi_spec_validator import validate

from devtools.fuzz import (
    SPEC_PATH,
    FuzzRequest,
    Operation,
    World,
    app_routes,
    check_response,
    described_routes,
    diff,
    fit_query,
    fuzz_operation,
    operations,
    snapshot,
)
from devtools.stack import Stack

EXAMPLES = 8


def test_the_description_is_valid_openapi() -> None:
    validate(yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8")))


def test_the_description_covers_exactly_the_routes_the_app_declares() -> None:
    app, described = app_routes(), described_routes()
    assert app - described == set(), "routes the description lacks"
    assert described - app == set(), "described routes the app does not declare"


def test_every_operation_that_takes_input_documents_a_client_error() -> None:
    for op in operations():
        if op.parameters or op.bodies:
            assert any(400 <= s < 500 for s in op.statuses), op


@pytest.mark.parametrize("op", operations(), ids=lambda op: op.operation_id)
def test_generated_unauthenticated_requests_are_refused_safely(fuzz_stack: tuple[Stack, World],
                                                               op: Operation) -> None:
    stack, world = fuzz_stack
    result = fuzz_operation(stack, op, world, examples=EXAMPLES)
    assert result.failures == [], result.line()
    assert result.requests >= EXAMPLES
    assert all(status < 500 for status in result.statuses)


def test_the_state_check_notices_a_stored_change(fuzz_stack: tuple[Stack, World]) -> None:
    stack, _ = fuzz_stack
    before = snapshot(stack.azurite.connection_string)
    table = stack.storage.table("fuzzprobe")
    stack.run(table.upsert({"PartitionKey": "p", "RowKey": "r", "v": 1}))
    try:
        changes = diff(before, snapshot(stack.azurite.connection_string))
        assert any("fuzzprobe" in change for change in changes)
    finally:
        stack.run(table.delete("p", "r"))


def test_a_server_error_or_an_undocumented_answer_counts_as_a_failure() -> None:
    op = next(o for o in operations() if o.operation_id == "timumBookings")
    request = FuzzRequest("POST", "/api/timum/bookings", [], {}, b"{}")

    class Answer:
        def __init__(self, status: int) -> None:
            self.status_code = status

    assert check_response(op, request, Answer(401)) is None  # type: ignore[arg-type]
    assert check_response(op, request, Answer(500)) is not None  # type: ignore[arg-type]
    assert check_response(op, request, Answer(418)) is not None  # type: ignore[arg-type]


def test_generated_queries_stay_sendable_and_long() -> None:
    """The longest values the generator makes (thousands of four-byte characters, twelve encoded
    characters each) would overflow the client's URL limit together; fitted, they are still long."""
    query = [("token", "😀" * 3000), ("😀" * 3000, "%" * 3000), ("state", "ä" * 3000)]
    with pytest.raises(httpx.InvalidURL):
        httpx.URL("http://127.0.0.1/", params=query)
    fitted = fit_query(query)
    url = httpx.URL("http://127.0.0.1/api/oauth/admin-callback", params=fitted)
    assert 16_000 < len(url.query) <= 65_536
    assert [k for k, _ in fitted][0] == "token"
