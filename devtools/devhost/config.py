"""What the local host reads before it serves anything: host.json options, local.settings.json
values, TimeSpan strings and ``%AppSetting%`` references.

Parsing is strict: a value the real host would reject (or silently misread) stops the local host
at start-up with a message naming the key, so a typo in host.json is found here rather than in Azure.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from devtools import jsonc


class DevHostError(Exception):
    """Base of every error the local host raises on purpose."""


class ConfigError(DevHostError):
    """host.json, local.settings.json, an app setting or the app's metadata is unusable."""


# [d.]hh:mm:ss[.fffffff] as .NET prints a TimeSpan; host.json uses this form for every duration.
TIMESPAN_PATTERN = re.compile(
    r"^(?:(?P<days>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{1,2}):(?P<s>\d{1,2})(?:\.(?P<frac>\d{1,7}))?$")


def parse_timespan(text: str) -> timedelta:
    """Parse a .NET TimeSpan string such as ``00:00:05`` or ``1.02:00:00.250``."""
    match = TIMESPAN_PATTERN.match(text.strip())
    if not match:
        raise ConfigError(f"not a TimeSpan (expected [d.]hh:mm:ss[.fff]): {text!r}")
    hours, minutes, seconds = int(match["h"]), int(match["m"]), int(match["s"])
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ConfigError(f"TimeSpan out of range: {text!r}")
    frac = match["frac"] or "0"
    return timedelta(days=int(match["days"] or 0), hours=hours, minutes=minutes, seconds=seconds,
                     microseconds=round(int(frac) * 10 ** (6 - len(frac))))


def _duration(raw: Any, key: str, *, default: timedelta, allow_ms_int: bool = False) -> timedelta:
    if raw is None:
        return default
    if allow_ms_int and isinstance(raw, int) and not isinstance(raw, bool):
        # Version 1 of the queue extension took milliseconds; the host still accepts a bare number.
        return timedelta(milliseconds=raw)
    if not isinstance(raw, str):
        raise ConfigError(f"host.json {key} must be a TimeSpan string, got {raw!r}")
    try:
        return parse_timespan(raw)
    except ConfigError as exc:
        raise ConfigError(f"host.json {key}: {exc}") from None


def _int(raw: Any, key: str, *, default: int, low: int, high: int | None = None) -> int:
    if raw is None:
        return default
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise ConfigError(f"host.json {key} must be an integer, got {raw!r}")
    if raw < low or (high is not None and raw > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ConfigError(f"host.json {key} must be {bound}, got {raw}")
    return raw


@dataclass(frozen=True)
class QueueOptions:
    """``extensions.queues`` with the defaults of the Storage extension 5.x."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout: timedelta = timedelta(0)
    max_polling_interval: timedelta = timedelta(minutes=1)
    message_encoding: str = "base64"  # "base64" or "none"


@dataclass(frozen=True)
class HttpOptions:
    """``extensions.http``; -1 means unbounded, as in the real host."""

    route_prefix: str = "api"
    max_concurrent_requests: int = -1
    max_outstanding_requests: int = -1


@dataclass(frozen=True)
class HostOptions:
    http: HttpOptions = field(default_factory=HttpOptions)
    queues: QueueOptions = field(default_factory=QueueOptions)
    # None: no limit ("-1" in host.json). Flex Consumption defaults to 30 min; 5 min is the
    # strictest plan's default, so a function that fits here fits everywhere.
    function_timeout: timedelta | None = timedelta(minutes=5)


# The queue poller never waits less than this between empty polls, like the real listener.
MIN_POLLING_INTERVAL = timedelta(milliseconds=100)


def _section(data: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"host.json {path} must be an object")
    return value


def parse_host_json(data: Mapping[str, Any]) -> HostOptions:
    """Turn host.json content into typed options; unknown keys are ignored as the real host does."""
    if not isinstance(data, Mapping):
        raise ConfigError("host.json must hold a JSON object")
    extensions = _section(data, "extensions", "extensions")
    http_raw = _section(extensions, "http", "extensions.http")
    prefix = http_raw.get("routePrefix", "api")
    if not isinstance(prefix, str):
        raise ConfigError(f"host.json extensions.http.routePrefix must be a string, got {prefix!r}")
    http = HttpOptions(
        route_prefix=prefix.strip("/"),
        max_concurrent_requests=_int(http_raw.get("maxConcurrentRequests"), "extensions.http.maxConcurrentRequests",
                                     default=-1, low=-1),
        max_outstanding_requests=_int(http_raw.get("maxOutstandingRequests"),
                                      "extensions.http.maxOutstandingRequests", default=-1, low=-1),
    )
    if http.max_concurrent_requests == 0 or http.max_outstanding_requests == 0:
        raise ConfigError("host.json extensions.http request limits must be -1 (unbounded) or positive")

    q_raw = _section(extensions, "queues", "extensions.queues")
    batch = _int(q_raw.get("batchSize"), "extensions.queues.batchSize", default=16, low=1, high=32)
    encoding = q_raw.get("messageEncoding", "base64")
    if not isinstance(encoding, str) or encoding.lower() not in ("base64", "none"):
        raise ConfigError(f"host.json extensions.queues.messageEncoding must be 'base64' or 'none', got {encoding!r}")
    polling = _duration(q_raw.get("maxPollingInterval"), "extensions.queues.maxPollingInterval",
                        default=timedelta(minutes=1), allow_ms_int=True)
    queues = QueueOptions(
        batch_size=batch,
        new_batch_threshold=_int(q_raw.get("newBatchThreshold"), "extensions.queues.newBatchThreshold",
                                 default=batch // 2, low=0),
        max_dequeue_count=_int(q_raw.get("maxDequeueCount"), "extensions.queues.maxDequeueCount", default=5, low=1),
        visibility_timeout=_duration(q_raw.get("visibilityTimeout"), "extensions.queues.visibilityTimeout",
                                     default=timedelta(0)),
        max_polling_interval=max(polling, MIN_POLLING_INTERVAL),
        message_encoding=encoding.lower(),
    )

    raw_timeout = data.get("functionTimeout")
    timeout: timedelta | None
    if raw_timeout in ("-1", -1):
        timeout = None
    else:
        timeout = _duration(raw_timeout, "functionTimeout", default=timedelta(minutes=5))
        if timeout <= timedelta(0):
            raise ConfigError("host.json functionTimeout must be positive or -1")
    return HostOptions(http=http, queues=queues, function_timeout=timeout)


def load_host_json(source: Mapping[str, Any] | str | os.PathLike[str] | None) -> HostOptions:
    """Accept host.json as parsed content, as a path, or None (all defaults)."""
    if source is None:
        return HostOptions()
    if isinstance(source, Mapping):
        return parse_host_json(source)
    path = Path(source)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"host.json not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    return parse_host_json(data)


@dataclass(frozen=True)
class LocalSettings:
    values: dict[str, str]
    local_http_port: int | None = None


def read_local_settings(path: str | os.PathLike[str]) -> LocalSettings:
    """Read local.settings.json the way Core Tools does; a missing file means no settings."""
    file = Path(path)
    if not file.exists():
        return LocalSettings(values={})
    try:
        # Core Tools reads this file with a lenient parser that allows // and /* */ comments.
        data = jsonc.loads(file.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file} is not valid JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{file} must hold a JSON object")
    if data.get("IsEncrypted"):
        raise ConfigError(f"{file} is encrypted; this host reads only plain local settings")
    raw_values = data.get("Values") or {}
    if not isinstance(raw_values, Mapping):
        raise ConfigError(f"{file}: Values must be an object")
    values: dict[str, str] = {}
    for key, value in raw_values.items():
        if isinstance(value, bool):
            values[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            values[key] = str(value)
        elif value is None:
            values[key] = ""
        else:
            raise ConfigError(f"{file}: Values.{key} must be a string")
    host = data.get("Host") or {}
    port = host.get("LocalHttpPort") if isinstance(host, Mapping) else None
    if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535):
        raise ConfigError(f"{file}: Host.LocalHttpPort must be a port number")
    return LocalSettings(values=values, local_http_port=port)


def apply_settings(values: Mapping[str, str], environ: MutableMapping[str, str]) -> list[str]:
    """Copy settings into the environment without overriding what is already set (env wins).

    Returns the names that were applied, never their values.
    """
    applied = []
    for key, value in values.items():
        if key not in environ:
            environ[key] = value
            applied.append(key)
    return applied


_SETTING_REF = re.compile(r"%([^%]+)%")


def resolve_setting_refs(text: str, env: Mapping[str, str], *, what: str) -> str:
    """Replace ``%Name%`` binding expressions with app settings, as the host does for queue names
    and schedules, so a deployment can rename a queue without touching code."""

    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        value = env.get(name)
        if value is None or value == "":
            raise ConfigError(f"{what} refers to app setting %{name}%, which is not set")
        return value

    return _SETTING_REF.sub(repl, text)
