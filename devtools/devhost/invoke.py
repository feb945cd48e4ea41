"""Calling one function the way the Python worker does, and the invocation log.

``async def`` functions run on the host's event loop (a blocking call there stalls every other
invocation, as in Azure); plain functions run in the thread pool. Output bindings are collected
after the function returned and handed to the trigger's delivery step only if it succeeded, so a
failing function never leaves half its messages behind.

Log lines carry the function name, trigger, duration and outcome, never request data, message
bodies or keys: those may hold tokens.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, TypeVar

import azure.functions as func
from azure.functions import _abc as func_abc

from devtools.devhost.metadata import FunctionSpec, QueueOutputSpec

log = logging.getLogger("devtools.devhost")

Outcome = Literal["succeeded", "failed", "timed out", "cancelled"]
_T = TypeVar("_T")


class Spawner(Protocol):
    """Starts a task the host waits for at shutdown."""

    def __call__(self, coro: Coroutine[Any, Any, _T], /) -> asyncio.Task[_T]: ...


@dataclass(frozen=True)
class Invocation:
    """One finished invocation, as tests and the orchestrator see it."""

    function: str
    trigger: Literal["http", "queue", "timer"]
    invocation_id: str
    started_at: datetime
    duration_ms: float
    outcome: Outcome
    dequeue_count: int | None = None
    past_due: bool | None = None
    error: str | None = None  # exception class name only: messages may quote secrets


class InvocationLog:
    """Thread-safe record of finished invocations, with a deadline-bounded wait for tests.

    Keeps the most recent ``limit`` records so a long local session does not grow without bound.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._records: collections.deque[Invocation] = collections.deque(maxlen=limit)
        self._changed = threading.Condition()

    def append(self, record: Invocation) -> None:
        with self._changed:
            self._records.append(record)
            self._changed.notify_all()

    def snapshot(self, function: str | None = None) -> list[Invocation]:
        with self._changed:
            return [r for r in self._records if function is None or r.function == function]

    def wait_for(self, predicate: Callable[[list[Invocation]], bool], timeout: float) -> list[Invocation]:
        """Block until ``predicate(records)`` holds; raise TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self._records)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"condition not met within {timeout} s; {len(self._records)} invocations")
                self._changed.wait(remaining)
            return list(self._records)


class Out(func.Out[Any]):  # type: ignore[misc]  # azure.functions is not type-checked here
    """The value a function sets on an output binding parameter."""

    def __init__(self) -> None:
        self._value: Any = None
        self.is_set = False

    def set(self, val: Any) -> None:
        self._value = val
        self.is_set = True

    def get(self) -> Any:
        return self._value


class _TraceContext(func_abc.TraceContext):  # type: ignore[misc]  # azure.functions is not type-checked here
    def __init__(self, invocation_id: str) -> None:
        # W3C traceparent: version-traceid-parentid-flags; ids derived from the invocation id.
        trace_id = uuid.UUID(invocation_id).hex
        self._parent = f"00-{trace_id}-{trace_id[:16]}-01"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(func_abc.RetryContext):  # type: ignore[misc]  # azure.functions is not type-checked here
    def __init__(self, retry_count: int, max_retry_count: int) -> None:
        self._count = retry_count
        self._max = max_retry_count

    @property
    def retry_count(self) -> int:
        return self._count

    @property
    def max_retry_count(self) -> int:
        return self._max

    @property
    def exception(self) -> Any:
        return None


class Context(func.Context):  # type: ignore[misc]  # azure.functions is not type-checked here
    """``context: func.Context`` for functions that ask for it."""

    def __init__(self, invocation_id: str, function_name: str, function_directory: str,
                 retry_count: int = 0, max_retry_count: int = 0) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._function_directory = function_directory
        self._local = threading.local()
        self._local.invocation_id = invocation_id
        self._trace = _TraceContext(invocation_id)
        self._retry = _RetryContext(retry_count, max_retry_count)

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> Any:
        return self._trace

    @property
    def retry_context(self) -> Any:
        return self._retry


class _FunctionTimedOut(Exception):
    """functionTimeout elapsed (kept apart from a TimeoutError the function raised itself)."""


@dataclass
class RunResult:
    record: Invocation
    response: Any = None  # what ``finish`` made of the HTTP output, for HTTP triggers
    outputs: dict[QueueOutputSpec, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.record.outcome == "succeeded"


Deliver = Callable[[FunctionSpec, dict[QueueOutputSpec, Any]], Awaitable[None]]


class FunctionRunner:
    """Runs invocations, applies functionTimeout, delivers outputs and writes the log."""

    def __init__(self, *, executor: Executor, function_timeout: timedelta | None, log_: InvocationLog,
                 deliver: Deliver, function_directory: str) -> None:
        self._executor = executor
        self._timeout = function_timeout.total_seconds() if function_timeout else None
        self.log = log_
        self._deliver = deliver
        self._directory = function_directory

    async def run(self, spec: FunctionSpec, trigger_value: Any, *, dequeue_count: int | None = None,
                  past_due: bool | None = None, retry_count: int = 0,
                  finish: Callable[[Any], Any] | None = None) -> RunResult:
        """Invoke ``spec`` with its trigger value. ``finish`` turns the HTTP output into a response
        (a bad return type then fails the invocation like any exception)."""
        invocation_id = str(uuid.uuid4())
        started_at = datetime.now(UTC)
        start = time.perf_counter()
        outs = {o.arg_name: Out() for o in spec.queue_outputs if o.arg_name != "$return"}
        if spec.http_output and spec.http_output != "$return":
            outs[spec.http_output] = Out()
        kwargs: dict[str, Any] = {spec.trigger_arg: trigger_value, **outs}
        if spec.wants_context:
            kwargs["context"] = Context(invocation_id, spec.name, self._directory, retry_count,
                                        spec.retry.max_retry_count if spec.retry else 0)
        outcome: Outcome = "succeeded"
        error: str | None = None
        response: Any = None
        outputs: dict[QueueOutputSpec, Any] = {}
        try:
            returned = await self._call(spec, kwargs)
            if spec.http_output:
                http_value = returned if spec.http_output == "$return" else outs[spec.http_output].get()
                response = finish(http_value) if finish else http_value
            for output in spec.queue_outputs:
                if output.arg_name == "$return":
                    if returned is not None:
                        outputs[output] = returned
                elif outs[output.arg_name].is_set:
                    outputs[output] = outs[output.arg_name].get()
            if outputs:
                await self._deliver(spec, outputs)
        except _FunctionTimedOut:
            outcome, error = "timed out", "TimeoutError"
            log.error("Function %s exceeded functionTimeout (%s s) (invocation %s)", spec.name, self._timeout,
                      invocation_id)
        except asyncio.CancelledError:
            outcome, error = "cancelled", "CancelledError"
            self._record(spec, invocation_id, started_at, start, outcome, error, dequeue_count, past_due)
            raise
        except Exception as exc:
            outcome, error = "failed", type(exc).__name__
            log.exception("Function %s failed (invocation %s)", spec.name, invocation_id)
        record = self._record(spec, invocation_id, started_at, start, outcome, error, dequeue_count, past_due)
        return RunResult(record=record, response=response, outputs=outputs)

    async def _call(self, spec: FunctionSpec, kwargs: dict[str, Any]) -> Any:
        scope = asyncio.timeout(self._timeout)
        try:
            async with scope:
                if spec.is_async:
                    return await spec.func(**kwargs)
                loop = asyncio.get_running_loop()
                # copy_context keeps the caller's contextvars visible in the worker thread.
                call = functools.partial(contextvars.copy_context().run, functools.partial(spec.func, **kwargs))
                # On timeout a thread cannot be stopped: the invocation is reported, the thread finishes alone.
                return await loop.run_in_executor(self._executor, call)
        except TimeoutError:
            if scope.expired():
                raise _FunctionTimedOut from None
            raise  # the function's own TimeoutError is an ordinary failure

    def _record(self, spec: FunctionSpec, invocation_id: str, started_at: datetime, start: float,
                outcome: Outcome, error: str | None, dequeue_count: int | None,
                past_due: bool | None) -> Invocation:
        duration_ms = (time.perf_counter() - start) * 1000
        record = Invocation(function=spec.name, trigger=spec.kind, invocation_id=invocation_id,
                            started_at=started_at, duration_ms=duration_ms, outcome=outcome,
                            dequeue_count=dequeue_count, past_due=past_due, error=error)
        extra = ""
        if dequeue_count is not None:
            extra += f", dequeue_count={dequeue_count}"
        if past_due is not None:
            extra += f", past_due={past_due}"
        log.log(logging.INFO if outcome == "succeeded" else logging.WARNING,
                "Executed 'Functions.%s' (%s, trigger=%s, id=%s, duration=%.1fms%s)",
                spec.name, outcome.capitalize(), spec.kind, invocation_id, duration_ms, extra)
        self.log.append(record)
        return record
