"""HTTP triggers served by the local host over a real socket."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devtools.devhost import HostHandle, run_in_thread, serving
from tests.devhost.sample_app import Recorder, build_app, http_blueprint
from tests.support.devhost import FAST_HOST_JSON, FUNCTION_KEY, MASTER_KEY

# Every test here serves an app through the local host.
pytestmark = pytest.mark.stack

BODY_LIMIT = 4096


@pytest.fixture(scope="module")
def module_rec() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def handle(module_rec: Recorder) -> Iterator[HostHandle]:
    env = {"FUNCTION_KEY": FUNCTION_KEY, "MASTER_KEY": MASTER_KEY}
    host = run_in_thread(build_app(http_blueprint(module_rec)), port=0, host_json=FAST_HOST_JSON, env=env,
                         max_body_bytes=BODY_LIMIT)
    try:
        yield host
    finally:
        host.stop()


@pytest.fixture
def client(handle: HostHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=handle.base_url, timeout=10) as c:
        yield c


def test_route_parameter_and_query_reach_the_function(client: httpx.Client) -> None:
    response = client.get("/api/hello/J%C3%BCrgen", params={"lang": "en"})
    assert response.status_code == 200
    assert response.text == "Hello Jürgen"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_constrained_and_optional_parameters(client: httpx.Client) -> None:
    assert client.get("/api/items/42").json() == {"id": "42"}
    assert client.get("/api/items/42/details").json() == {"id": "42", "detail": "details"}
    assert client.get("/api/ITEMS/7/").json() == {"id": "7"}  # literals ignore case, trailing slash too
    assert client.get("/api/items/abc").status_code == 404  # {id:int} does not match


def test_catch_all_parameter_takes_the_rest_of_the_path(client: httpx.Client) -> None:
    assert client.get("/api/files/a/b/c.ics").json() == {"path": "a/b/c.ics"}
    assert client.get("/api/files").json() == {}


def test_route_defaults_to_the_function_name(client: httpx.Client) -> None:
    response = client.get("/api/default_route")
    assert response.status_code == 200
    assert response.text == "route from the function name"


def test_unknown_route_is_404_and_wrong_method_is_405_with_allow(client: httpx.Client) -> None:
    assert client.get("/api/nothing-here").status_code == 404
    assert client.get("/hello/x").status_code == 404  # the /api prefix from host.json is required
    response = client.delete("/api/hello/x")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    response = client.get("/api/echo")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST, PUT"


def test_function_level_needs_a_key_in_query_or_header(client: httpx.Client) -> None:
    assert client.post("/api/echo", content=b"x").status_code == 401
    assert client.post("/api/echo", content=b"x", params={"code": "wrong"}).status_code == 401
    assert client.post("/api/echo", content=b"x", headers={"x-functions-key": "wrong"}).status_code == 401
    assert client.post("/api/echo", content=b"x", params={"code": FUNCTION_KEY}).status_code == 200
    assert client.post("/api/echo", content=b"x", headers={"x-functions-key": FUNCTION_KEY}).status_code == 200
    # The master key opens every level.
    assert client.post("/api/echo", content=b"x", params={"code": MASTER_KEY}).status_code == 200


def test_admin_level_accepts_only_the_master_key(client: httpx.Client) -> None:
    assert client.post("/api/ops/reset").status_code == 401
    assert client.post("/api/ops/reset", headers={"x-functions-key": FUNCTION_KEY}).status_code == 401
    response = client.post("/api/ops/reset", headers={"x-functions-key": MASTER_KEY})
    assert response.status_code == 200
    assert response.text == "reset done"


def test_request_is_built_from_method_url_headers_params_and_body(client: httpx.Client,
                                                                  module_rec: Recorder) -> None:
    payload = bytes(range(256)) * 4
    response = client.put("/api/echo", content=payload, params={"code": FUNCTION_KEY, "a": "1"},
                          headers={"content-type": "application/x-test", "x-custom": "yes"})
    assert response.status_code == 200
    assert response.content == payload
    assert response.headers["content-type"] == "application/octet-stream"
    seen = module_rec.wait_for("echo")[-1]
    assert seen["method"] == "PUT"
    assert seen["url"].startswith(client.base_url.join("/api/echo?").__str__())
    assert seen["params"] == {"code": FUNCTION_KEY, "a": "1"}
    assert seen["content_type"] == "application/x-test"
    assert seen["custom"] == "yes"


def test_sync_functions_run_in_the_pool_and_async_ones_on_the_loop(client: httpx.Client) -> None:
    sync_thread = client.get("/api/hello/a").headers["x-thread"]
    async_thread = client.get("/api/items/1").headers["x-thread"]
    assert sync_thread.startswith("devhost-fn")
    assert async_thread == "devhost"


def test_body_over_the_limit_is_413_and_the_function_is_not_called(handle: HostHandle,
                                                                    client: httpx.Client) -> None:
    before = len(handle.records("echo"))
    headers = {"x-functions-key": FUNCTION_KEY}
    assert client.post("/api/echo", content=b"x" * (BODY_LIMIT + 1), headers=headers).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        for _ in range(8):
            yield b"y" * 1024

    assert client.post("/api/echo", content=chunks(), headers=headers).status_code == 413
    assert client.post("/api/echo", content=b"x" * BODY_LIMIT, headers=headers).status_code == 200
    assert len(handle.records("echo")) == before + 1


def test_exception_gives_a_generic_500_and_is_logged_without_request_data(
        handle: HostHandle, client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="devtools.devhost"):
        response = client.get("/api/boom", params={"token": "query-secret"},
                              headers={"authorization": "Bearer header-secret"})
        handle.invocations.wait_for(lambda rs: any(r.function == "boom" for r in rs), timeout=10)
    assert response.status_code == 500
    assert "internal detail" not in response.text
    failure = [r for r in caplog.records if r.levelno >= logging.ERROR and "boom" in r.getMessage()]
    assert failure and failure[0].exc_info is not None
    assert "boom: internal detail" in caplog.text  # the traceback is there for the developer
    assert "query-secret" not in caplog.text
    assert "header-secret" not in caplog.text
    record = handle.records("boom")[-1]
    assert (record.outcome, record.error, record.trigger) == ("failed", "RuntimeError", "http")


def test_unsupported_return_type_is_a_failed_invocation(handle: HostHandle, client: httpx.Client) -> None:
    assert client.get("/api/bad-return").status_code == 500
    assert handle.records("bad_return")[-1].error == "TypeError"


def test_redirect_keeps_status_and_location(client: httpx.Client) -> None:
    response = client.get("/api/go", follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == "/api/hello/weiter"


def test_several_set_cookie_headers_survive(client: httpx.Client) -> None:
    response = client.get("/api/cookies")
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/; HttpOnly", "b=2; Path=/; Secure"]
    assert response.cookies["a"] == "1"


def test_context_parameter_is_injected(client: httpx.Client, handle: HostHandle) -> None:
    data = client.get("/api/ctx").json()
    assert data["function"] == "with_context"
    assert data["invocation"] == handle.records("with_context")[-1].invocation_id


def test_each_invocation_is_logged_without_query_or_key(handle: HostHandle, client: httpx.Client,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="devtools.devhost"):
        client.get("/api/hello/log", params={"code": FUNCTION_KEY, "lang": "de"})
        handle.invocations.wait_for(lambda rs: any(r.function == "hello" for r in rs), timeout=10)
    lines = [r.getMessage() for r in caplog.records if "Functions.hello" in r.getMessage()]
    assert lines and "Succeeded" in lines[-1] and "trigger=http" in lines[-1] and "duration=" in lines[-1]
    assert FUNCTION_KEY not in caplog.text
    assert "lang=de" not in caplog.text


def test_invocation_records_carry_name_trigger_duration_and_outcome(handle: HostHandle,
                                                                    client: httpx.Client) -> None:
    client.get("/api/hello/rec")
    record = handle.invocations.wait_for(lambda rs: any(r.function == "hello" for r in rs), timeout=10)[-1]
    assert record.function == "hello"
    assert record.trigger == "http"
    assert record.outcome == "succeeded"
    assert record.duration_ms >= 0
    assert record.dequeue_count is None


def test_host_admin_endpoints(client: httpx.Client) -> None:
    assert client.get("/admin/host/ping").status_code == 200
    assert client.get("/admin/host/status").status_code == 401
    status = client.get("/admin/host/status", headers={"x-functions-key": MASTER_KEY}).json()
    assert status["state"] == "Running"
    assert "hello" in status["functions"]
    # HTTP functions are not run through the admin API, only non-HTTP triggers.
    assert client.post("/admin/functions/hello", headers={"x-functions-key": MASTER_KEY}).status_code == 404


def test_function_timeout_ends_the_wait_with_500(rec: Recorder) -> None:
    with serving(build_app(http_blueprint(rec)), port=0, host_json={**FAST_HOST_JSON, "functionTimeout": "00:00:01"},
                 env={}) as host, httpx.Client(base_url=host.base_url, timeout=10) as c:
        response = c.get("/api/slow", params={"seconds": "5"})
        assert response.status_code == 500
        record = host.records("slow")[-1]
        assert (record.outcome, record.error) == ("timed out", "TimeoutError")
    assert rec.items("slow-finished") == []


def test_outstanding_request_limit_answers_429(rec: Recorder) -> None:
    limited = {**FAST_HOST_JSON, "extensions": {**FAST_HOST_JSON["extensions"],
                                                "http": {"routePrefix": "api", "maxOutstandingRequests": 1}}}
    with serving(build_app(http_blueprint(rec)), port=0, host_json=limited, env={}) as host:
        results: list[int] = []
        slow = threading.Thread(target=lambda: results.append(
            httpx.get(f"{host.base_url}/api/slow", params={"seconds": "1"}, timeout=10).status_code))
        slow.start()
        rec.wait_for("slow-started")
        assert httpx.get(f"{host.base_url}/api/hello/x", timeout=10).status_code == 429
        slow.join()
        assert results == [200]
        assert httpx.get(f"{host.base_url}/api/hello/x", timeout=10).status_code == 200


def test_graceful_shutdown_lets_running_requests_finish(rec: Recorder) -> None:
    host = run_in_thread(build_app(http_blueprint(rec)), port=0, host_json=FAST_HOST_JSON, env={})
    results: list[Any] = []

    def call() -> None:
        results.append(httpx.get(f"{host.base_url}/api/slow", params={"seconds": "0.5"}, timeout=10))

    caller = threading.Thread(target=call)
    caller.start()
    rec.wait_for("slow-started")
    host.stop()
    caller.join()
    assert results[0].status_code == 200
    assert results[0].text == "slept"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{host.base_url}/api/hello/x", timeout=2)


def test_load_app_by_module_name() -> None:
    with serving("tests.devhost.sample_app", port=0, env={}) as host:
        assert httpx.get(f"{host.base_url}/api/hello/modul", timeout=10).text == "Hallo modul"
    with serving("tests.devhost.sample_app:app", port=0, env={}) as host:
        assert httpx.get(f"{host.base_url}/api/hello/attr", timeout=10).text == "Hallo attr"
