"""A function app that exercises every feature of the local host; used only by its tests.

Each ``*_blueprint(recorder)`` call defines fresh functions, so every test builds its own
``FunctionApp`` (``get_functions()`` works once per app) and reads what the functions saw from its
own ``Recorder``. The module-level ``app`` lets tests load the app by module name, as the CLI does.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import azure.functions as func


class Recorder:
    """What the functions saw, shared between the host's threads and the test's."""

    def __init__(self) -> None:
        self._items: list[dict[str, Any]] = []
        self._changed = threading.Condition()

    def add(self, kind: str, **data: Any) -> None:
        with self._changed:
            self._items.append({"kind": kind, "at": time.monotonic(), **data})
            self._changed.notify_all()

    def items(self, kind: str) -> list[dict[str, Any]]:
        with self._changed:
            return [i for i in self._items if i["kind"] == kind]

    def wait_for(self, kind: str, count: int = 1, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len([i for i in self._items if i["kind"] == kind]) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"fewer than {count} {kind!r} records after {timeout} s")
                self._changed.wait(remaining)
            return [i for i in self._items if i["kind"] == kind]


def _json(data: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(data), status_code=status, mimetype="application/json")


def http_blueprint(rec: Recorder) -> func.Blueprint:
    bp = func.Blueprint()

    @bp.route(route="hello/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    def hello(req: func.HttpRequest) -> func.HttpResponse:
        lang = req.params.get("lang", "de")
        greeting = "Hallo" if lang == "de" else "Hello"
        return func.HttpResponse(f"{greeting} {req.route_params['name']}",
                                 headers={"x-thread": threading.current_thread().name})

    @bp.route(route="items/{id:int}/{detail?}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    async def item(req: func.HttpRequest) -> func.HttpResponse:
        await asyncio.sleep(0)
        response = _json(dict(req.route_params))
        response.headers["x-thread"] = threading.current_thread().name
        return response

    @bp.route(route="files/{*path}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    def files(req: func.HttpRequest) -> func.HttpResponse:
        return _json(dict(req.route_params))

    @bp.route(methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    def default_route(req: func.HttpRequest) -> str:
        return "route from the function name"

    @bp.route(route="echo", methods=["POST", "PUT"])  # auth level: the app's default (function)
    async def echo(req: func.HttpRequest) -> func.HttpResponse:
        rec.add("echo", method=req.method, url=req.url, params=dict(req.params),
                content_type=req.headers.get("content-type"), custom=req.headers.get("x-custom"))
        return func.HttpResponse(req.get_body(), mimetype="application/octet-stream")

    @bp.route(route="ops/reset", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
    def ops_reset(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("reset done")

    @bp.route(route="boom", auth_level=func.AuthLevel.ANONYMOUS)
    def boom(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("boom: internal detail")

    @bp.route(route="bad-return", auth_level=func.AuthLevel.ANONYMOUS)
    def bad_return(req: func.HttpRequest) -> Any:
        return 42

    @bp.route(route="go", auth_level=func.AuthLevel.ANONYMOUS)
    def go(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(status_code=302, headers={"Location": "/api/hello/weiter"})

    @bp.route(route="cookies", auth_level=func.AuthLevel.ANONYMOUS)
    def cookies(req: func.HttpRequest) -> func.HttpResponse:
        response = func.HttpResponse("ok")
        response.headers.add("Set-Cookie", "a=1; Path=/; HttpOnly")
        response.headers.add("Set-Cookie", "b=2; Path=/; Secure")
        return response

    @bp.route(route="ctx", auth_level=func.AuthLevel.ANONYMOUS)
    def with_context(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        return _json({"function": context.function_name, "invocation": context.invocation_id})

    @bp.route(route="slow", auth_level=func.AuthLevel.ANONYMOUS)
    async def slow(req: func.HttpRequest) -> func.HttpResponse:
        rec.add("slow-started")
        await asyncio.sleep(float(req.params.get("seconds", "0.5")))
        rec.add("slow-finished")
        return func.HttpResponse("slept")

    @bp.route(route="block", auth_level=func.AuthLevel.ANONYMOUS)
    async def block(req: func.HttpRequest) -> func.HttpResponse:
        # Deliberately blocks the event loop, as a sync call in an async function would.
        time.sleep(float(req.params.get("seconds", "2")))
        return func.HttpResponse("blocked")

    return bp


def queue_blueprint(rec: Recorder) -> func.Blueprint:
    bp = func.Blueprint()

    @bp.queue_trigger(arg_name="msg", queue_name="%DEVHOST_WORK_QUEUE%", connection="AzureWebJobsStorage")
    @bp.queue_output(arg_name="out", queue_name="%DEVHOST_OUT_QUEUE%", connection="AzureWebJobsStorage")
    async def work(msg: func.QueueMessage, out: func.Out[list[str]]) -> None:
        payload = json.loads(msg.get_body())
        rec.add("work", tag=payload["tag"], id=msg.id, dequeue_count=msg.dequeue_count,
                insertion_time=msg.insertion_time, expiration_time=msg.expiration_time,
                time_next_visible=msg.time_next_visible, pop_receipt=msg.pop_receipt)
        rec.add("work-concurrency-start", tag=payload["tag"])
        await asyncio.sleep(float(payload.get("sleep", 0)))
        rec.add("work-concurrency-end", tag=payload["tag"])
        if msg.dequeue_count <= payload.get("fail_times", 0):
            raise RuntimeError(f"failing attempt {msg.dequeue_count} on purpose")
        out.set([f"{payload['tag']}-a", f"{payload['tag']}-b"])

    @bp.queue_trigger(arg_name="text", queue_name="%DEVHOST_TEXT_QUEUE%", connection="AzureWebJobsStorage")
    def text_work(text: str) -> None:
        rec.add("text", text=text, thread=threading.current_thread().name)

    @bp.route(route="enqueue", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
    @bp.queue_output(arg_name="outmsg", queue_name="%DEVHOST_OUT_QUEUE%", connection="AzureWebJobsStorage")
    def enqueue(req: func.HttpRequest, outmsg: func.Out[str]) -> func.HttpResponse:
        outmsg.set(req.get_body().decode("utf-8"))
        if req.params.get("fail"):
            raise RuntimeError("failing after setting the output")
        return func.HttpResponse("queued", status_code=202)

    return bp


def timer_blueprint(rec: Recorder) -> func.Blueprint:
    bp = func.Blueprint()

    @bp.timer_trigger(arg_name="timer", schedule="0 0 0 1 1 *", run_on_startup=True)
    def on_startup(timer: func.TimerRequest) -> None:
        rec.add("startup", past_due=timer.past_due)

    @bp.timer_trigger(arg_name="timer", schedule="%DEVHOST_TICK_SCHEDULE%")
    async def tick(timer: func.TimerRequest) -> None:
        rec.add("tick", past_due=timer.past_due, status=timer.schedule_status)

    return bp


def retry_blueprint(rec: Recorder) -> func.Blueprint:
    bp = func.Blueprint()

    @bp.timer_trigger(arg_name="timer", schedule="0 0 0 1 1 *", run_on_startup=True)
    @bp.retry(strategy="fixed_delay", max_retry_count="2", delay_interval="00:00:00.100")
    def flaky(timer: func.TimerRequest, context: func.Context) -> None:
        attempt = context.retry_context.retry_count
        rec.add("flaky", attempt=attempt)
        if attempt < 2:
            raise RuntimeError("not yet")

    return bp


def build_app(*parts: func.Blueprint, auth_level: func.AuthLevel = func.AuthLevel.FUNCTION) -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=auth_level)
    for part in parts:
        app.register_functions(part)
    return app


BlueprintFactory = Callable[[Recorder], func.Blueprint]

# For loading by module name: HTTP only, so it needs no storage settings.
RECORDER = Recorder()
app = build_app(http_blueprint(RECORDER))
