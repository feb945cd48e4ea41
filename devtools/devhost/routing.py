"""HTTP route templates as the Functions host reads them (ASP.NET Core routing syntax).

Supported: literal segments (case-insensitive), ``{name}``, optional ``{name?}``, defaults
``{name=value}``, catch-all ``{*rest}`` / ``{**rest}``, several parameters in one segment
(``{file}.{ext}``) and the common inline constraints (``int``, ``long``, ``bool``, ``guid``,
``alpha``, ``double``/``float``/``decimal``, ``datetime``, ``required``, ``min``/``max``/``range``,
``minlength``/``maxlength``/``length``, ``regex``). A template the host would reject is rejected
here at start-up, not at the first request.

When several templates match a path, the more specific one wins: literal before a constrained
parameter before a plain parameter before a catch-all, segment by segment, then declaration order.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar
from urllib.parse import unquote

from devtools.devhost.config import ConfigError

T = TypeVar("T")

# Rank of one segment kind; lower is more specific (the ASP.NET precedence digits).
_LITERAL, _COMPLEX, _CONSTRAINED, _PARAM, _CATCH_ALL = 1, 2, 3, 4, 5

_PARAM_TOKEN = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


def _as_int(value: str, bounds: tuple[int, int]) -> int | None:
    if not re.fullmatch(r"[+-]?\d+", value):
        return None
    number = int(value)
    return number if bounds[0] <= number <= bounds[1] else None


def _is_float(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def _is_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _split_constraints(spec: str) -> list[str]:
    """Split ``int:min(1):regex(^a:b$)`` at colons outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in spec:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == ":" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _int_args(name: str, raw: str | None, count: tuple[int, ...], template: str) -> list[int]:
    args = [a.strip() for a in raw.split(",")] if raw else []
    if len(args) not in count or not all(re.fullmatch(r"-?\d+", a) for a in args):
        raise ConfigError(f"route {template!r}: constraint {name} needs {' or '.join(map(str, count))} integer(s)")
    return [int(a) for a in args]


def _constraint(text: str, template: str) -> Callable[[str], bool]:
    match = re.fullmatch(r"([A-Za-z]+)(?:\((.*)\))?", text, flags=re.DOTALL)
    if not match:
        raise ConfigError(f"route {template!r}: cannot read constraint {text!r}")
    name, arg = match.group(1).lower(), match.group(2)
    simple: dict[str, Callable[[str], bool]] = {
        "int": lambda v: _as_int(v, _INT32) is not None,
        "long": lambda v: _as_int(v, _INT64) is not None,
        "bool": lambda v: v.lower() in ("true", "false"),
        "guid": _is_guid,
        "alpha": lambda v: re.fullmatch(r"[A-Za-z]+", v) is not None,
        "double": _is_float,
        "float": _is_float,
        "decimal": _is_float,
        "datetime": _is_datetime,
        "required": lambda v: v != "",
    }
    if name in simple:
        if arg is not None:
            raise ConfigError(f"route {template!r}: constraint {name} takes no argument")
        return simple[name]
    if name in ("min", "max"):
        (bound,) = _int_args(name, arg, (1,), template)
        if name == "min":
            return lambda v: (n := _as_int(v, _INT64)) is not None and n >= bound
        return lambda v: (n := _as_int(v, _INT64)) is not None and n <= bound
    if name == "range":
        low, high = _int_args(name, arg, (2,), template)
        return lambda v: (n := _as_int(v, _INT64)) is not None and low <= n <= high
    if name in ("minlength", "maxlength"):
        (size,) = _int_args(name, arg, (1,), template)
        return (lambda v: len(v) >= size) if name == "minlength" else (lambda v: len(v) <= size)
    if name == "length":
        sizes = _int_args(name, arg, (1, 2), template)
        low, high = (sizes[0], sizes[0]) if len(sizes) == 1 else (sizes[0], sizes[1])
        return lambda v: low <= len(v) <= high
    if name == "regex":
        if not arg:
            raise ConfigError(f"route {template!r}: regex constraint needs a pattern")
        try:
            pattern = re.compile(arg, re.IGNORECASE)
        except re.error as exc:
            raise ConfigError(f"route {template!r}: bad regex constraint: {exc}") from None
        # ASP.NET's regex constraint is a search unless the pattern anchors itself.
        return lambda v: pattern.search(v) is not None
    raise ConfigError(f"route {template!r}: unknown route constraint {name!r}")


@dataclass(frozen=True)
class _Param:
    name: str
    group: str
    optional: bool
    catch_all: bool
    default: str | None
    checks: tuple[Callable[[str], bool], ...]
    constraints: tuple[str, ...]  # as written, lower-cased: part of what makes two routes the same


@dataclass(frozen=True)
class RouteTemplate:
    """One compiled template; ``match`` gives the route parameters or None."""

    template: str
    pattern: re.Pattern[str]
    params: tuple[_Param, ...]
    precedence: tuple[int, ...]

    @property
    def signature(self) -> tuple[str, tuple[tuple[str, ...], ...]]:
        """Equal for templates that match exactly the same paths (names of parameters aside)."""
        return self.pattern.pattern.lower(), tuple(p.constraints for p in self.params)

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.match(_normalise_path(path))
        if not found:
            return None
        values: dict[str, str] = {}
        for param in self.params:
            raw = found.group(param.group)
            if raw is None or raw == "":
                if param.default is not None:
                    values[param.name] = param.default
                elif not (param.optional or param.catch_all):
                    return None
                continue
            value = re.sub("%2f", "/", raw, flags=re.IGNORECASE)
            if not all(check(value) for check in param.checks):
                return None
            values[param.name] = value
        return values


def _normalise_path(path: str) -> str:
    """Decode every segment but keep an encoded slash inside its segment."""
    segments = path.split("/")
    decoded = [unquote(re.sub("%2f", "%252F", s, flags=re.IGNORECASE)) for s in segments]
    joined = "/".join(decoded)
    return joined.rstrip("/") if joined not in ("", "/") else ""


def _parse_param(token: str, template: str, index: int) -> _Param:
    body = token
    catch_all = False
    if body.startswith("**"):
        body, catch_all = body[2:], True
    elif body.startswith("*"):
        body, catch_all = body[1:], True
    optional = body.endswith("?")
    if optional:
        body = body[:-1]
    default = None
    if "=" in body:
        body, default = body.split("=", 1)
    name, *constraint_specs = _split_constraints(body) if ":" in body else [body]
    if not _NAME.match(name):
        raise ConfigError(f"route {template!r}: bad parameter name {name!r}")
    checks = tuple(_constraint(spec, template) for spec in constraint_specs if spec)
    return _Param(name=name, group=f"p{index}", optional=optional, catch_all=catch_all, default=default,
                  checks=checks, constraints=tuple(spec.lower() for spec in constraint_specs if spec))


def _split_segment(segment: str, template: str) -> tuple[list[str], list[str]]:
    """A segment's literals and parameter tokens (literal, param, literal, …, literal)."""
    if segment == "":
        raise ConfigError(f"route {template!r}: empty path segment")
    pieces = _PARAM_TOKEN.split(segment)
    literals, tokens = pieces[0::2], pieces[1::2]
    if any("{" in lit or "}" in lit for lit in literals):
        raise ConfigError(f"route {template!r}: unbalanced braces in segment {segment!r}")
    if any(tok == "" for tok in tokens):
        raise ConfigError(f"route {template!r}: empty parameter in segment {segment!r}")
    if any(literals[i] == "" for i in range(1, len(tokens))):
        raise ConfigError(f"route {template!r}: two parameters need a literal between them")
    return literals, tokens


def _segment_pattern(segment: str, literals: list[str], parsed: list[_Param], whole: bool) -> tuple[str, int]:
    """The regex of one segment (with its leading slash) and its precedence rank."""
    if not parsed:
        return "/" + re.escape(segment), _LITERAL
    if whole:
        param = parsed[0]
        if param.catch_all:
            return f"(?:/(?P<{param.group}>.*))?", _CATCH_ALL
        if param.optional or param.default is not None:
            return f"(?:/(?P<{param.group}>[^/]+))?", _PARAM
        return f"/(?P<{param.group}>[^/]+)", _CONSTRAINED if param.checks else _PARAM
    inner = "".join(re.escape(literals[i]) + f"(?P<{param.group}>[^/]+)" for i, param in enumerate(parsed))
    return "/" + inner + re.escape(literals[-1]), _COMPLEX


def compile_route(template: str, prefix: str = "") -> RouteTemplate:
    """Compile ``template`` below ``prefix`` (host.json routePrefix, without slashes)."""
    full = "/".join(part for part in (prefix.strip("/"), template.strip("/")) if part)
    segments = full.split("/") if full else []
    regex = "^"
    params: list[_Param] = []
    precedence: list[int] = []
    seen: set[str] = set()
    previous_optional = False
    for pos, segment in enumerate(segments):
        literals, tokens = _split_segment(segment, template)
        parsed = [_parse_param(tok, template, len(params) + i) for i, tok in enumerate(tokens)]
        for param in parsed:
            if param.name.lower() in seen:
                raise ConfigError(f"route {template!r}: parameter {param.name!r} appears twice")
            seen.add(param.name.lower())
        is_last = pos == len(segments) - 1
        whole = len(parsed) == 1 and literals == ["", ""]
        if any(p.catch_all for p in parsed) and not (whole and is_last):
            raise ConfigError(f"route {template!r}: a catch-all parameter must be the whole last segment")
        if any(p.optional or p.default is not None for p in parsed) and not whole:
            raise ConfigError(f"route {template!r}: an optional parameter must be a whole segment")
        optional_segment = whole and (parsed[0].optional or parsed[0].catch_all or parsed[0].default is not None)
        if previous_optional and not optional_segment:
            # An optional segment followed by a required one could never be left out.
            raise ConfigError(f"route {template!r}: optional parameters must come last")
        previous_optional = optional_segment
        piece, rank = _segment_pattern(segment, literals, parsed, whole)
        regex += piece
        precedence.append(rank)
        params.extend(parsed)
    return RouteTemplate(template=template, pattern=re.compile(regex + "$", re.IGNORECASE | re.DOTALL),
                         params=tuple(params), precedence=tuple(precedence))


@dataclass(frozen=True)
class RouteMatch(Generic[T]):
    target: T
    route_params: dict[str, str]


@dataclass(frozen=True)
class MethodNotAllowed:
    allowed: frozenset[str]


@dataclass
class _Entry(Generic[T]):
    route: RouteTemplate
    methods: frozenset[str] | None  # None: every method
    target: T
    order: int


@dataclass
class Router(Generic[T]):
    """Templates plus allowed methods; the app's function metadata is its only source."""

    prefix: str = ""
    _entries: list[_Entry[T]] = field(default_factory=list)

    def add(self, template: str, methods: Iterable[str] | None, target: T) -> RouteTemplate:
        route = compile_route(template, self.prefix)
        allowed = frozenset(m.upper() for m in methods) if methods else None
        for entry in self._entries:
            if entry.route.signature == route.signature and (
                    entry.methods is None or allowed is None or entry.methods & allowed):
                raise ConfigError(f"route {template!r} is declared twice for the same method")
        self._entries.append(_Entry(route, allowed, target, len(self._entries)))
        self._entries.sort(key=lambda e: (e.route.precedence, e.order))
        return route

    def resolve(self, method: str, path: str) -> RouteMatch[T] | MethodNotAllowed | None:
        """The most specific match allowing ``method``; else 405 data if some route matched; else None."""
        other_methods: set[str] = set()
        for entry in self._entries:
            params = entry.route.match(path)
            if params is None:
                continue
            if entry.methods is None or method.upper() in entry.methods:
                return RouteMatch(entry.target, params)
            other_methods |= entry.methods
        return MethodNotAllowed(frozenset(other_methods)) if other_methods else None
