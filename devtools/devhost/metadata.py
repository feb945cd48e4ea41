"""Reads what a ``func.FunctionApp`` declares, once, into plain specs the host serves.

The app's own decorators are the single source of truth: there is no second routing table, so a
function added to the app (or to one of its Blueprints) is served with no other change.
``FunctionApp.get_functions()`` raises on a second call, so its result is cached per app object.

Bindings this host cannot serve faithfully are refused at start-up with the function's name,
instead of being silently skipped: a function that runs in Azure but never locally would hide bugs.
"""

from __future__ import annotations

import importlib
import inspect
import threading
import typing
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import azure.functions as func
from azure.functions.decorators.core import BindingDirection

from devtools.devhost.config import ConfigError, parse_timespan

_INDEX_LOCK = threading.Lock()
_INDEX: weakref.WeakKeyDictionary[func.FunctionApp, list[func.Function]] = weakref.WeakKeyDictionary()

AuthLevel = Literal["anonymous", "function", "admin"]
TriggerKind = Literal["http", "queue", "timer"]


def _plain(value: Any) -> Any:
    """Decorator enums (AuthLevel, HttpMethod) carry their string in ``.value``."""
    return getattr(value, "value", value)


@dataclass(frozen=True)
class HttpTriggerSpec:
    route: str
    methods: frozenset[str] | None  # None: any method
    auth_level: AuthLevel


@dataclass(frozen=True)
class QueueTriggerSpec:
    queue_name: str  # may still hold %AppSetting% references
    connection: str


@dataclass(frozen=True)
class TimerTriggerSpec:
    schedule: str  # may still hold %AppSetting% references
    run_on_startup: bool


@dataclass(frozen=True)
class QueueOutputSpec:
    arg_name: str  # a parameter name, or "$return"
    queue_name: str
    connection: str


@dataclass(frozen=True)
class RetrySpec:
    strategy: Literal["fixed_delay", "exponential_backoff"]
    max_retry_count: int
    delay_interval: str | None
    minimum_interval: str | None
    maximum_interval: str | None


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    func: Callable[..., Any]
    is_async: bool
    kind: TriggerKind
    trigger_arg: str
    trigger: HttpTriggerSpec | QueueTriggerSpec | TimerTriggerSpec
    trigger_annotation: Any  # the trigger parameter's resolved annotation, or None
    queue_outputs: tuple[QueueOutputSpec, ...]
    http_output: str | None  # "$return" or the name of a func.Out[func.HttpResponse] parameter
    wants_context: bool
    retry: RetrySpec | None


def load_app(target: func.FunctionApp | str) -> func.FunctionApp:
    """``"function_app"`` or ``"package.module:attr"`` → the module's FunctionApp (``app`` by default)."""
    if isinstance(target, func.FunctionApp):
        return target
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import app module {module_name!r}: {exc}") from exc
    app = getattr(module, attr or "app", None)
    if not isinstance(app, func.FunctionApp):
        raise ConfigError(f"{module_name}.{attr or 'app'} is not a func.FunctionApp")
    return app


def index_functions(app: func.FunctionApp) -> list[func.Function]:
    """``app.get_functions()`` exactly once per app object, however many hosts serve it."""
    with _INDEX_LOCK:
        cached = _INDEX.get(app)
        if cached is None:
            cached = list(app.get_functions())
            _INDEX[app] = cached
        return cached


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # an unresolvable string annotation only loses the hint
        return {}


def _read_retry(function: func.Function) -> RetrySpec | None:
    raw = function.get_settings_dict("retry_policy")
    if not raw:
        return None
    name = function.get_function_name()

    def field(snake: str, camel: str) -> Any:
        # The decorator stores snake_case keys; function.json spells them in camelCase.
        return raw.get(snake, raw.get(camel))

    strategy = str(_plain(raw.get("strategy", ""))).lower()
    if strategy not in ("fixed_delay", "exponential_backoff"):
        raise ConfigError(f"function {name}: unknown retry strategy {strategy!r}")
    try:
        count = int(field("max_retry_count", "maxRetryCount"))
    except (TypeError, ValueError):
        raise ConfigError(f"function {name}: max_retry_count must be an integer") from None
    if count < -1:
        raise ConfigError(f"function {name}: max_retry_count must be -1 (forever) or more")
    spec = RetrySpec(strategy=typing.cast(Literal["fixed_delay", "exponential_backoff"], strategy),
                     max_retry_count=count, delay_interval=field("delay_interval", "delayInterval"),
                     minimum_interval=field("minimum_interval", "minimumInterval"),
                     maximum_interval=field("maximum_interval", "maximumInterval"))
    needed = ["delay_interval"] if strategy == "fixed_delay" else ["minimum_interval", "maximum_interval"]
    for key in needed:
        value = getattr(spec, key)
        try:
            parse_timespan(str(value))
        except ConfigError:
            raise ConfigError(f"function {name}: retry {key} must be a TimeSpan, got {value!r}") from None
    return spec


TriggerSpec = HttpTriggerSpec | QueueTriggerSpec | TimerTriggerSpec


def _http_trigger(name: str, trigger: Any) -> HttpTriggerSpec:
    methods = getattr(trigger, "methods", None)
    level = str(_plain(getattr(trigger, "auth_level", None) or "function")).lower()
    if level not in ("anonymous", "function", "admin"):
        raise ConfigError(f"function {name}: unknown auth level {level!r}")
    route = getattr(trigger, "route", None)
    return HttpTriggerSpec(route=name if route is None else str(route),
                           methods=frozenset(str(_plain(m)).upper() for m in methods) if methods else None,
                           auth_level=typing.cast(AuthLevel, level))


def _queue_trigger(name: str, trigger: Any) -> QueueTriggerSpec:
    return QueueTriggerSpec(queue_name=str(trigger.queue_name),
                            connection=str(getattr(trigger, "connection", "") or "AzureWebJobsStorage"))


def _timer_trigger(name: str, trigger: Any) -> TimerTriggerSpec:
    return TimerTriggerSpec(schedule=str(trigger.schedule),
                            run_on_startup=bool(getattr(trigger, "run_on_startup", False)))


# The trigger types this host serves: binding type → (kind, reader of the decorator's trigger).
_TRIGGERS: dict[str, tuple[TriggerKind, Callable[[str, Any], TriggerSpec]]] = {
    "httpTrigger": ("http", _http_trigger),
    "queueTrigger": ("queue", _queue_trigger),
    "timerTrigger": ("timer", _timer_trigger),
}


def _read_outputs(name: str, function: func.Function, kind: TriggerKind) -> tuple[list[QueueOutputSpec], str | None]:
    """The function's queue outputs and its HTTP output's name; any other binding is refused."""
    trigger = function.get_trigger()
    queue_outputs: list[QueueOutputSpec] = []
    http_output: str | None = None
    for binding in function.get_bindings():
        if binding is trigger:
            continue
        btype = str(binding.type)
        if binding.direction != BindingDirection.OUT.value:
            raise ConfigError(f"function {name}: input binding {btype!r} is not supported by the local host")
        if btype == "queue":
            queue_outputs.append(QueueOutputSpec(arg_name=binding.name, queue_name=str(binding.queue_name),
                                                 connection=str(getattr(binding, "connection", "")
                                                                or "AzureWebJobsStorage")))
        elif btype == "http":
            if kind != "http":
                raise ConfigError(f"function {name}: an HTTP output needs an HTTP trigger")
            http_output = binding.name
        else:
            raise ConfigError(f"function {name}: output binding {btype!r} is not supported by the local host")
    if kind == "http" and http_output is None:
        raise ConfigError(f"function {name}: an HTTP trigger needs an HTTP output binding")
    return queue_outputs, http_output


def _check_parameters(name: str, params: typing.Mapping[str, inspect.Parameter], trigger_arg: str,
                      queue_outputs: list[QueueOutputSpec], http_output: str | None) -> None:
    """The worker refuses a function whose parameters and bindings disagree; so does this host."""
    bound_names = {trigger_arg} | {o.arg_name for o in queue_outputs}
    if http_output:
        bound_names.add(http_output)
    bound_names.discard("$return")
    for pname, param in params.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(f"function {name}: *args/**kwargs cannot be bound")
        if pname not in bound_names and pname != "context":
            raise ConfigError(f"function {name}: parameter {pname!r} has no binding")
    missing = bound_names - set(params)
    if missing:
        raise ConfigError(f"function {name}: bindings {sorted(missing)} have no parameter")
    if http_output == "$return" and any(o.arg_name == "$return" for o in queue_outputs):
        raise ConfigError(f"function {name}: $return cannot be both the HTTP response and a queue output")


def describe(function: func.Function) -> FunctionSpec:
    """One function's metadata as a spec; raises ConfigError for what this host cannot serve."""
    name = function.get_function_name() or function.get_user_function().__name__
    fn = function.get_user_function()
    trigger = function.get_trigger()
    if trigger is None:
        raise ConfigError(f"function {name} has no trigger")
    trigger_type = str(trigger.type)
    if trigger_type not in _TRIGGERS:
        raise ConfigError(f"function {name}: trigger type {trigger_type!r} is not supported by the local host")
    kind, read_trigger = _TRIGGERS[trigger_type]
    spec = read_trigger(name, trigger)
    queue_outputs, http_output = _read_outputs(name, function, kind)
    params = inspect.signature(fn).parameters
    _check_parameters(name, params, trigger.name, queue_outputs, http_output)

    hints = _type_hints(fn)
    return FunctionSpec(name=name, func=fn, is_async=inspect.iscoroutinefunction(fn), kind=kind,
                        trigger_arg=trigger.name, trigger=spec, trigger_annotation=hints.get(trigger.name),
                        queue_outputs=tuple(queue_outputs), http_output=http_output,
                        wants_context="context" in params, retry=_read_retry(function))


def describe_app(app: func.FunctionApp) -> list[FunctionSpec]:
    specs = [describe(f) for f in index_functions(app)]
    names = [s.name.lower() for s in specs]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ConfigError(f"function names must be unique (case-insensitive): {sorted(duplicates)}")
    return specs
