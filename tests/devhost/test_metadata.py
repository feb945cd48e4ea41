"""The host serves exactly what the app declares: read once, validated, nothing configured twice."""

from __future__ import annotations

import socket
from typing import Any

import azure.functions as func
import httpx
import pytest

from devtools.devhost import ConfigError, DevHost, DevHostError, run_in_thread, serving
from devtools.devhost.metadata import HttpTriggerSpec, describe_app, index_functions
from tests.devhost.sample_app import Recorder, build_app, http_blueprint, queue_blueprint
from tests.support.devhost import FAST_HOST_JSON, MASTER_KEY


@pytest.mark.stack
def test_get_functions_is_called_exactly_once_per_app(rec: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    app = build_app(http_blueprint(rec))
    calls: list[int] = []
    original = app.get_functions

    def counting() -> list[func.Function]:
        calls.append(1)
        return list(original())

    monkeypatch.setattr(app, "get_functions", counting)
    for _ in range(2):  # a restarted host over the same app object
        with serving(app, port=0, env={}) as host:
            assert httpx.get(f"{host.base_url}/api/hello/x", timeout=10).status_code == 200
    assert calls == [1]
    assert index_functions(app) is index_functions(app)


@pytest.mark.stack
def test_a_newly_added_function_is_served_with_no_other_change(rec: Recorder) -> None:
    app = build_app(http_blueprint(rec))

    @app.route(route="brand/new/{thing}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    def brand_new(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(f"new {req.route_params['thing']}")

    with serving(app, port=0, env={"MASTER_KEY": MASTER_KEY}) as host:
        assert httpx.get(f"{host.base_url}/api/brand/new/route", timeout=10).text == "new route"
        status = httpx.get(f"{host.base_url}/admin/host/status", headers={"x-functions-key": MASTER_KEY},
                           timeout=10).json()
    assert "brand_new" in status["functions"]


@pytest.mark.stack
def test_function_name_decorator_names_the_function(rec: Recorder) -> None:
    app = build_app()

    @app.function_name("Renamed")
    @app.route(route="renamed", auth_level=func.AuthLevel.ANONYMOUS)
    def original_name(req: func.HttpRequest) -> str:
        return "ok"

    with serving(app, port=0, env={}) as host:
        assert httpx.get(f"{host.base_url}/api/renamed", timeout=10).text == "ok"
        assert [r.function for r in host.records()] == ["Renamed"]


@pytest.mark.stack
def test_route_prefix_comes_from_host_json(rec: Recorder) -> None:
    host_json = {**FAST_HOST_JSON, "extensions": {"http": {"routePrefix": ""}}}
    with serving(build_app(http_blueprint(rec)), port=0, env={}, host_json=host_json) as host:
        assert httpx.get(f"{host.base_url}/hello/ohne", timeout=10).text == "Hallo ohne"
        assert httpx.get(f"{host.base_url}/api/hello/ohne", timeout=10).status_code == 404


def _app_with(decorate: Any) -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    decorate(app)
    return app


def test_unsupported_trigger_is_refused_by_name() -> None:
    def decorate(app: func.FunctionApp) -> None:
        @app.blob_trigger(arg_name="blob", path="c/{name}", connection="AzureWebJobsStorage")
        def on_blob(blob: func.InputStream) -> None:
            return None

    with pytest.raises(ConfigError, match="on_blob.*blobTrigger"):
        DevHost(_app_with(decorate), env={})


def test_unsupported_input_binding_is_refused() -> None:
    def decorate(app: func.FunctionApp) -> None:
        @app.route(route="x")
        @app.table_input(arg_name="row", table_name="t", connection="AzureWebJobsStorage")
        def with_table(req: func.HttpRequest, row: str) -> str:
            return row

    with pytest.raises(ConfigError, match="with_table.*input binding"):
        DevHost(_app_with(decorate), env={})


def test_parameter_without_binding_is_refused() -> None:
    def decorate(app: func.FunctionApp) -> None:
        @app.route(route="x")
        def stray(req: func.HttpRequest, extra: str) -> str:
            return extra

    with pytest.raises(ConfigError, match="stray.*'extra' has no binding"):
        DevHost(_app_with(decorate), env={})


def test_binding_without_parameter_is_refused() -> None:
    def decorate(app: func.FunctionApp) -> None:
        @app.route(route="x")
        @app.queue_output(arg_name="out", queue_name="q-out", connection="AzureWebJobsStorage")
        def forgot(req: func.HttpRequest) -> str:
            return "x"

    with pytest.raises(ConfigError, match="forgot.*'out'"):
        DevHost(_app_with(decorate), env={"AzureWebJobsStorage": "UseDevelopmentStorage=true"})


def test_duplicate_route_is_refused() -> None:
    def decorate(app: func.FunctionApp) -> None:
        @app.route(route="same", methods=["GET"])
        def first(req: func.HttpRequest) -> str:
            return "1"

        @app.route(route="SAME", methods=["GET", "POST"])
        def second(req: func.HttpRequest) -> str:
            return "2"

    with pytest.raises(ConfigError, match="second.*declared twice"):
        DevHost(_app_with(decorate), env={})


def test_missing_app_setting_in_queue_name_is_reported(rec: Recorder) -> None:
    app = build_app(queue_blueprint(rec))
    with pytest.raises(ConfigError, match="DEVHOST_WORK_QUEUE"):
        DevHost(app, env={"AzureWebJobsStorage": "UseDevelopmentStorage=true"})


def test_missing_storage_connection_is_reported_without_values(rec: Recorder) -> None:
    app = build_app(queue_blueprint(rec))
    env = {"DEVHOST_WORK_QUEUE": "work-x", "DEVHOST_OUT_QUEUE": "out-x", "DEVHOST_TEXT_QUEUE": "text-x"}
    with pytest.raises(ConfigError, match="AzureWebJobsStorage__queueServiceUri"):
        DevHost(app, env=env)


def test_invalid_queue_name_is_reported(rec: Recorder) -> None:
    app = build_app(queue_blueprint(rec))
    env = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "DEVHOST_WORK_QUEUE": "Work_Queue",
           "DEVHOST_OUT_QUEUE": "out-x", "DEVHOST_TEXT_QUEUE": "text-x"}
    with pytest.raises(ConfigError, match="not a valid queue name"):
        DevHost(app, env=env)


def test_trigger_queue_name_must_leave_room_for_poison_suffix(rec: Recorder) -> None:
    app = build_app(queue_blueprint(rec))
    env = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "DEVHOST_WORK_QUEUE": "w" * 60,
           "DEVHOST_OUT_QUEUE": "out-x", "DEVHOST_TEXT_QUEUE": "text-x"}
    with pytest.raises(ConfigError, match="-poison"):
        DevHost(app, env=env)


def test_specs_describe_triggers_and_outputs(rec: Recorder) -> None:
    specs = {s.name: s for s in describe_app(build_app(http_blueprint(rec), queue_blueprint(rec)))}
    assert specs["hello"].kind == "http" and not specs["hello"].is_async
    assert specs["item"].is_async
    echo, reset = specs["echo"].trigger, specs["ops_reset"].trigger
    assert isinstance(echo, HttpTriggerSpec) and echo.auth_level == "function"  # the app's default level
    assert isinstance(reset, HttpTriggerSpec) and reset.auth_level == "admin"
    assert specs["work"].kind == "queue"
    assert [o.arg_name for o in specs["work"].queue_outputs] == ["out"]
    assert specs["enqueue"].http_output == "$return"
    assert specs["with_context"].wants_context


def test_load_errors_are_clear() -> None:
    with pytest.raises(ConfigError, match="cannot import"):
        DevHost("tests.devhost.no_such_module", env={})
    with pytest.raises(ConfigError, match="not a func.FunctionApp"):
        DevHost("tests.devhost.sample_app:Recorder", env={})


@pytest.mark.stack
def test_busy_port_is_reported_in_the_callers_thread(rec: Recorder) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(DevHostError, match=f"cannot listen on 127.0.0.1:{port}"):
            run_in_thread(build_app(http_blueprint(rec)), port=port, env={})
