"""The HTTP front of the local host: an ASGI application that uvicorn serves.

Per request: route (404 / 405 with ``Allow``), authorise by the function's auth level (401),
read the body within the size limit (413), build a ``func.HttpRequest``, run the function, and send
its ``func.HttpResponse`` (a str becomes a 200 text/plain reply, None an empty 204). A failing or
timed-out function gives a bare 500; the exception goes to the log, the request's headers and body
never do. Paths and query strings
are not logged either: signed links and keys travel in them.

Keys: ``function`` level accepts ``FUNCTION_KEY`` or ``MASTER_KEY``; ``admin`` level only
``MASTER_KEY``; supplied in the ``x-functions-key`` header or the ``code`` query parameter.

The host's own admin endpoints are served too: ``/admin/host/ping`` (anonymous),
``/admin/host/status`` and ``POST /admin/functions/{name}`` (master key) — the latter runs a timer
or queue function on demand with ``{"input": "..."}``, as Core Tools does.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import azure.functions as func
from azure.functions import _abc as func_abc
from azure.functions.queue import QueueMessage as FuncQueueMessage
from azure.functions.timer import TimerRequest

from devtools.devhost.config import HttpOptions
from devtools.devhost.invoke import FunctionRunner, Spawner
from devtools.devhost.metadata import AuthLevel, FunctionSpec, HttpTriggerSpec
from devtools.devhost.routing import MethodNotAllowed, Router

log = logging.getLogger("devtools.devhost")

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Keys:
    function_key: str | None
    master_key: str | None

    def allows(self, level: AuthLevel, supplied: str | None) -> bool:
        if level == "anonymous":
            return True
        if not supplied:
            return False
        # Constant-time comparison: the key is a secret an attacker could probe byte by byte.
        if self.master_key and hmac.compare_digest(supplied.encode(), self.master_key.encode()):
            return True
        return bool(level == "function" and self.function_key
                    and hmac.compare_digest(supplied.encode(), self.function_key.encode()))


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


@dataclass(frozen=True)
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    #: Content-Length the function declared; honoured only for HEAD with an empty body, where it
    #: states the size a GET would send (RFC 9110 9.3.2), as the real host passes it on
    declared_length: int | None = None


def _plain(status: int, text: str = "", headers: Iterable[tuple[str, str]] = ()) -> Reply:
    return Reply(status, [("content-type", "text/plain; charset=utf-8"), *headers], text.encode())


def to_reply(value: Any) -> Reply:
    """A function's HTTP output → the reply, as the worker converts it. Raises TypeError otherwise."""
    if value is None:
        return Reply(204, [], b"")
    if isinstance(value, str):
        return _plain(200, value)
    if not isinstance(value, func_abc.HttpResponse):
        raise TypeError(f"an HTTP function must return func.HttpResponse or str, not {type(value).__name__}")
    headers: list[tuple[str, str]] = []
    has_type = False
    declared: int | None = None
    for name, header_value in value.headers.items():
        lowered = name.lower()
        if lowered == "content-length" and str(header_value).strip().isdigit():
            declared = int(str(header_value).strip())
        if lowered in ("content-length", "transfer-encoding"):
            continue  # framing is the server's business; a wrong value would corrupt the reply
        has_type = has_type or lowered == "content-type"
        headers.append((name, str(header_value)))
    if not has_type:
        mimetype = value.mimetype
        headers.append(("content-type", f"{mimetype}; charset={value.charset}" if mimetype.startswith("text/")
                        else mimetype))
    return Reply(int(value.status_code), headers, value.get_body() or b"", declared)


def _header_bytes(value: str) -> bytes:
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _join_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name_b, value_b in raw:
        name, value = name_b.decode("latin-1").lower(), value_b.decode("latin-1")
        if name in headers:
            headers[name] += ("; " if name == "cookie" else ", ") + value
        else:
            headers[name] = value
    return headers


def _query(query_string: str) -> dict[str, str]:
    # Repeated keys are joined with commas, as ASP.NET's query collection hands them to the worker.
    params: dict[str, str] = {}
    for key, value in parse_qsl(query_string, keep_blank_values=True):
        params[key] = f"{params[key]},{value}" if key in params else value
    return params


class HttpFrontend:
    """ASGI app over the app's HTTP functions plus the host's admin endpoints."""

    def __init__(self, *, router: Router[FunctionSpec], runner: FunctionRunner, keys: Keys,
                 options: HttpOptions, max_body_bytes: int, functions: Mapping[str, FunctionSpec],
                 is_stopping: Callable[[], bool], spawn: Spawner) -> None:
        self._router = router
        self._runner = runner
        self._keys = keys
        self._max_body = max_body_bytes
        self._functions = {name.lower(): spec for name, spec in functions.items()}
        self._is_stopping = is_stopping
        self._spawn = spawn
        self._max_outstanding = options.max_outstanding_requests
        self._outstanding = 0
        self._concurrency = (asyncio.Semaphore(options.max_concurrent_requests)
                             if options.max_concurrent_requests > 0 else None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if 0 < self._max_outstanding <= self._outstanding:
            await self._send(send, scope, _plain(429, "Too Many Requests"))
            return
        self._outstanding += 1
        try:
            reply = await self._handle(scope, receive)
        except _ClientGone:
            return
        except Exception:
            log.exception("The local host failed to handle a request")
            reply = _plain(500, "Internal Server Error")
        finally:
            self._outstanding -= 1
        await self._send(send, scope, reply)

    async def _handle(self, scope: Scope, receive: Receive) -> Reply:
        method = str(scope["method"]).upper()
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else str(scope["path"])
        path = path.partition("?")[0]  # some servers keep the query in raw_path
        query_string = bytes(scope.get("query_string", b"")).decode("latin-1")
        headers = _join_headers(scope.get("headers", []))
        params = _query(query_string)
        supplied_key = headers.get("x-functions-key") or params.get("code")

        if path.rstrip("/").lower().startswith("/admin/"):
            return await self._admin(method, path.rstrip("/"), supplied_key, scope, receive, headers)

        found = self._router.resolve(method, path)
        if found is None:
            return _plain(404, "Not Found")
        if isinstance(found, MethodNotAllowed):
            return _plain(405, "Method Not Allowed", [("allow", ", ".join(sorted(found.allowed)))])
        spec = found.target
        trigger = spec.trigger
        if not isinstance(trigger, HttpTriggerSpec) or not self._keys.allows(trigger.auth_level, supplied_key):
            return _plain(401, "Unauthorized")
        try:
            body = await self._read_body(receive, headers)
        except _BodyTooLarge:
            return _plain(413, "Payload Too Large")
        host = headers.get("host") or "{}:{}".format(*scope.get("server", ("localhost", 80)))
        url = f"{scope.get('scheme', 'http')}://{host}{path}" + (f"?{query_string}" if query_string else "")
        request = func.HttpRequest(method=method, url=url, headers=headers, params=params,
                                   route_params=found.route_params, body=body)
        if self._concurrency is None:
            result = await self._runner.run(spec, request, finish=to_reply)
        else:
            async with self._concurrency:
                result = await self._runner.run(spec, request, finish=to_reply)
        if not result.ok:
            return _plain(500, "Internal Server Error")
        reply: Reply = result.response
        return reply

    async def _read_body(self, receive: Receive, headers: Mapping[str, str]) -> bytes:
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_body:
            raise _BodyTooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _admin(self, method: str, path: str, supplied_key: str | None, scope: Scope, receive: Receive,
                     headers: Mapping[str, str]) -> Reply:
        lowered = path.lower()
        if lowered == "/admin/host/ping":
            if method not in ("GET", "POST"):
                return _plain(405, "Method Not Allowed", [("allow", "GET, POST")])
            return _plain(503 if self._is_stopping() else 200)
        if not self._keys.allows("admin", supplied_key):
            return _plain(401, "Unauthorized")
        if lowered == "/admin/host/status":
            state = "Stopping" if self._is_stopping() else "Running"
            body = json.dumps({"state": state, "functions": sorted(s.name for s in self._functions.values())})
            return Reply(200, [("content-type", "application/json; charset=utf-8")], body.encode())
        prefix = "/admin/functions/"
        if lowered.startswith(prefix) and "/" not in lowered[len(prefix):]:
            if method != "POST":
                return _plain(405, "Method Not Allowed", [("allow", "POST")])
            spec = self._functions.get(lowered[len(prefix):])
            if spec is None or spec.kind == "http":
                return _plain(404, "Not Found")
            try:
                raw = await self._read_body(receive, headers)
            except _BodyTooLarge:
                return _plain(413, "Payload Too Large")
            try:
                payload = json.loads(raw or b"{}")
                text = payload.get("input", "") if isinstance(payload, dict) else None
            except ValueError:
                text = None
            if not isinstance(text, str):
                return _plain(400, 'Expected a JSON body like {"input": "..."}')
            value: Any
            if spec.kind == "timer":
                value = TimerRequest(past_due=False)
            elif spec.trigger_annotation is str:
                value = text
            elif spec.trigger_annotation is bytes:
                value = text.encode()
            else:
                value = FuncQueueMessage(body=text.encode(), dequeue_count=1)
            # Like the real host: accepted at once, the function runs in the background.
            self._spawn(self._runner.run(spec, value, dequeue_count=1 if spec.kind == "queue" else None))
            return Reply(202, [], b"")
        return _plain(404, "Not Found")

    async def _send(self, send: Send, scope: Scope, reply: Reply) -> None:
        head = scope.get("method") == "HEAD"
        body = b"" if head else reply.body
        length = len(reply.body)
        if head and not reply.body and reply.declared_length is not None:
            length = reply.declared_length
        headers = [(k.lower().encode("latin-1"), _header_bytes(v)) for k, v in reply.headers]
        headers.append((b"content-length", str(length).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
