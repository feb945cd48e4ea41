"""Logs and metrics of the function app: correlation ids, secret redaction, a tiny metrics API.

**Correlation ids.** ``with bind(link="p1|r1", invocation=ctx.invocation_id): ...`` puts ids into a
``contextvars`` context (so they follow ``await`` and the tasks created inside). Every log record
made inside carries them as ``record.correlation`` and its message ends with
``" [link=p1|r1 invocation=…]"``: the Functions worker forwards only the formatted message to
Application Insights, so ids that live only in record attributes would be lost there.

**Redaction.** Every record is scrubbed exactly once: by a log-record factory (covers every logger
and every handler, including handlers added after start-up) and, for records built elsewhere, by a
filter on the root handlers. The message (after ``%`` formatting), the traceback text, the stack
text and string ``extra`` fields lose: bearer tokens and Authorization headers, JWTs and other
``eyJ…`` blobs (connect-link tokens), Entra codes and refresh tokens (``0.A…``/``1.A…``), sandbox
tokens (``sbx-at.…``), ``code=``/``token=``/``validationToken=``/``clientState``/``sig=``/… values
(query strings, JSON, reprs), ``Timum-Signature`` values, ICS feed tokens (``/api/ics/<token>``),
published calendar URLs, URL user-info, and every configured secret value (registered from
``Settings`` at start-up: all of ``SECRET_SETTING_NAMES``).

**No forged lines.** After redaction, CR, LF and every other control character (C0, DEL, C1, the
Unicode line and paragraph separators) in a message, a string ``extra`` field or a bound id is
written as an escape (``\\n``, ``\\x1b``, ``\\u2028``): a value from an anonymous request (an OAuth
callback's ``error_description``, an id, a header) cannot start a line of its own. Tracebacks keep
their own line breaks; the exception messages inside them are escaped like messages.

**Quiet HTTP clients.** The HTTP client libraries log every request line, URL and query included,
at INFO (headers at DEBUG) — and an ICS import URL is a credential. ``configure_logging`` sets
their loggers (``QUIET_LOGGERS``) to WARNING, and the root handlers' filter drops their records
below WARNING even if a level is lowered later, so a request URL does not depend on a redaction
pattern to stay out of the log.

**Metrics.** ``metrics.record(name, value, **dims)`` / ``metrics.increment(name, **dims)`` for the
names in ``METRICS`` (the alerts in ``infra/`` query exactly these). With
``APPLICATIONINSIGHTS_CONNECTION_STRING`` set they go out as OpenTelemetry metrics through
``azure-monitor-opentelemetry`` (imported lazily, in a background thread, never at module import);
otherwise — and until the exporter is ready — each becomes one ``metric {json}`` log line.

Import cost stays at the standard library: this module is imported on every cold start.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import functools
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:
    from shared.config import Settings

__all__ = [
    "METRICS",
    "QUIET_LOGGERS",
    "REDACTED",
    "MetricSpec",
    "Metrics",
    "RedactionFilter",
    "bind",
    "configure_logging",
    "logging_configured",
    "current_ids",
    "escape_controls",
    "metrics",
    "prepare_record",
    "redact",
    "register_secret",
    "register_settings_secrets",
    "unconfigure_logging",
]

REDACTED = "[redacted]"

# --- correlation ids ---------------------------------------------------------------------------

_IDS: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "timum_correlation_ids", default=MappingProxyType({}))
# Shown first and in this order; any other bound key follows alphabetically.
_ID_ORDER = ("link", "subscription", "booking", "invocation")


@contextlib.contextmanager
def bind(**ids: object) -> Iterator[Mapping[str, str]]:
    """Add correlation ids for the duration of the block (nested binds merge; ``None``/"" are ignored)."""
    merged = dict(_IDS.get())
    merged.update({key: str(value) for key, value in ids.items() if value is not None and value != ""})
    token = _IDS.set(MappingProxyType(merged))
    try:
        yield merged
    finally:
        _IDS.reset(token)


def current_ids() -> dict[str, str]:
    """The correlation ids bound right now (a copy), e.g. to carry them into a queue message."""
    return dict(_IDS.get())


def _ids_suffix(ids: Mapping[str, str]) -> str:
    if not ids:
        return ""
    keys = [k for k in _ID_ORDER if k in ids] + sorted(k for k in ids if k not in _ID_ORDER)
    return " [" + " ".join(f"{escape_controls(k)}={escape_controls(redact(ids[k]))}" for k in keys) + "]"


# --- control characters ------------------------------------------------------------------------

def _control_escapes(keep_newline: bool) -> dict[int, str]:
    table: dict[int, str] = {}
    for code in (*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029):
        if code == 0x09 or (keep_newline and code == 0x0A):
            continue  # a tab cannot start a line
        table[code] = {0x0A: "\\n", 0x0D: "\\r"}.get(code) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return table


_ESCAPES = _control_escapes(keep_newline=False)
_ESCAPES_KEEP_NEWLINE = _control_escapes(keep_newline=True)


def escape_controls(text: str, *, keep_newline: bool = False) -> str:
    """``text`` with CR, LF and other control characters written as escapes (``\\n``, ``\\x1b``)."""
    return text.translate(_ESCAPES_KEEP_NEWLINE if keep_newline else _ESCAPES)


def _format_traceback(exc_info: Any) -> str:
    """A traceback whose line breaks are its own: exception messages inside it are escaped."""
    import traceback

    try:
        te = traceback.TracebackException(*exc_info[:3])
    except Exception:  # an odd exc_info still gets the standard rendering
        return escape_controls(_TRACEBACK_FORMATTER.formatException(exc_info), keep_newline=True)
    messages: set[str] = set()
    pending, seen = [te], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        messages.update(current.format_exception_only())
        pending.extend(t for t in (current.__cause__, current.__context__) if t is not None)
        pending.extend(getattr(current, "exceptions", None) or ())
    parts = []
    for chunk in te.format():
        if chunk in messages:
            body, newline = (chunk[:-1], "\n") if chunk.endswith("\n") else (chunk, "")
            chunk = escape_controls(body) + newline
        else:
            chunk = escape_controls(chunk, keep_newline=True)
        parts.append(chunk)
    return "".join(parts).rstrip("\n")


# --- redaction ---------------------------------------------------------------------------------

# Names whose value is a secret wherever it appears as key=value, "key": "value" or 'key': 'value'.
_SECRET_KEYS = (
    r"access_token|refresh_token|id_token|token|validation_?token|client_?state|client_?secret|secret|"
    r"password|passwd|sig|signature|api[_-]?key|x-functions-key|account_?key|shared_?access_?signature|"
    r"client_assertion|assertion|connection_?string"
)
# Query parameters that carry secrets (or one-time values such as OAuth codes and sync cursors).
_QUERY_KEYS = (
    _SECRET_KEYS + r"|code|state|session_state|key|(?:\$|%24)?deltatoken|(?:\$|%24)?skiptoken"
)
# A value already replaced is left alone, so that overlapping rules do not nibble at "[redacted]".
_FRESH = r"(?!\s*\[redacted\])"
_VALUE = _FRESH + r"[^\"'\s&,;<>)}\]]+"
_URL_END = r"[^\s\"'<>]*"


class _Rule(NamedTuple):
    pattern: re.Pattern[str]
    replace: str | Callable[[re.Match[str]], str]


# Patterns are compiled on first use, not at import: compiling them costs more than the rest
# of this module's import together.
@functools.cache
def _pattern(source: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(source, flags)


def _is_plain_code(value: str) -> bool:
    # "code" also labels error codes (needs_reconnect, 429, AADSTS70008): single-case identifiers
    # stay; OAuth codes and function keys are long, mixed-case, dotted or base64 and go.
    return _pattern(r"[a-z0-9_]{1,40}|[A-Z0-9_]{1,40}").fullmatch(value) is not None


def _keep_plain_codes(match: re.Match[str]) -> str:
    return match.group(0) if _is_plain_code(match.group(2)) else match.group(1) + REDACTED


def _build_rules() -> tuple[_Rule, ...]:
    def rule(pattern: str, replace: str | Callable[[re.Match[str]], str], *, ignore_case: bool = True) -> _Rule:
        return _Rule(re.compile(pattern, re.IGNORECASE if ignore_case else 0), replace)

    return (
        # URLs first: their query strings and paths are the most common carriers.
        rule(r"\b((?:https?|webcal)://)[^/\s:@\"'<>]+:[^/\s@\"'<>]+@", r"\1" + REDACTED + "@"),
        rule(r"(/api/ics/)[^/?#\s\"'<>]+", r"\1" + REDACTED),
        rule(r"\b((?:https?|webcal)://[^/\s\"'<>]+)/owa/calendar/" + _URL_END, r"\1/owa/calendar/" + REDACTED),
        rule(r"\b((?:https?|webcal)://[^/\s\"'<>]+)/calendar/ical/" + _URL_END, r"\1/calendar/ical/" + REDACTED),
        # Bounded, so that a long run of URL-like text cannot make this scan quadratic.
        rule(r"\b((?:https?|webcal)://[^/\s\"'<>]{1,255})/[^\s\"'<>]{0,512}?\.ics\b" + _URL_END, r"\1/" + REDACTED),
        rule(r"([?&;](?:" + _QUERY_KEYS + r")=)" + _FRESH + r"[^&#\s\"'<>]+", r"\1" + REDACTED),
        # Headers.
        rule(r"(\bauthorization[\"']?\s*[:=]\s*[\"']?)" + _FRESH + r"[^\"'\s,}][^\"'\r\n,}]*", r"\1" + REDACTED),
        rule(r"\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*", r"\1 " + REDACTED),
        rule(r"(\btimum-signature[\"']?\s*[:=]\s*[\"']?)" + _FRESH + r"[^\"'\s}][^\"'\r\n}]*", r"\1" + REDACTED),
        rule(r"\bv1=[0-9a-f]{16,}", "v1=" + REDACTED),
        # Free-standing tokens.
        rule(r"\beyJ[A-Za-z0-9_\-]{6,}(?:\.[A-Za-z0-9_\-]*)*", REDACTED, ignore_case=False),
        rule(r"\b[01]\.A[A-Za-z0-9_\-]{20,}[A-Za-z0-9_.\-]*", REDACTED, ignore_case=False),
        rule(r"\bsbx-[a-z]{1,10}\.[A-Za-z0-9_\-]{6,}", REDACTED, ignore_case=False),
        # key=value, "key": "value", 'key': 'value' (JSON bodies, dict reprs, log formats).
        rule(r"([\"']?\b(?:" + _SECRET_KEYS + r")\b[\"']?\s*[:=]\s*[\"']?)(" + _VALUE + ")", r"\1" + REDACTED),
        rule(r"([\"']?\bcode\b[\"']?\s*[:=]\s*[\"']?)(" + _VALUE + ")", _keep_plain_codes),
    )


class _Redactor:
    """Compiled rules plus the literal secret values registered at start-up."""

    MIN_SECRET_LENGTH = 8  # shorter values would blank out ordinary words

    def __init__(self) -> None:
        self._rules: tuple[_Rule, ...] | None = None
        self._literals: frozenset[str] = frozenset()
        self._literal_re: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def register(self, values: Iterable[str]) -> None:
        fresh = {v for v in values if isinstance(v, str) and len(v.strip()) >= self.MIN_SECRET_LENGTH}
        with self._lock:
            literals = self._literals | fresh
            if literals == self._literals:
                return
            # Longest first, so a secret that contains another is removed whole.
            ordered = sorted(literals, key=len, reverse=True)
            self._literal_re = re.compile("|".join(re.escape(v) for v in ordered))
            self._literals = frozenset(literals)

    def clear(self) -> None:
        with self._lock:
            self._literals = frozenset()
            self._literal_re = None

    def redact(self, text: str) -> str:
        if not text:
            return text
        rules = self._rules
        if rules is None:
            rules = self._rules = _build_rules()
        literal_re = self._literal_re
        if literal_re is not None:
            text = literal_re.sub(REDACTED, text)
        for rule in rules:
            text = rule.pattern.sub(rule.replace, text)
        return text


_REDACTOR = _Redactor()


def redact(text: str) -> str:
    """``text`` without anything that looks like a credential or a registered secret value."""
    return _REDACTOR.redact(text)


def register_secret(*values: str) -> None:
    """Treat these exact values as secrets from now on (values under 8 characters are ignored)."""
    _REDACTOR.register(values)


def _secret_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
        # A connection string's key may also be logged on its own.
        for part in value.split(";"):
            name, sep, inner = part.partition("=")
            if sep and name.strip().lower() in ("accountkey", "sharedaccesssignature"):
                yield inner
    elif isinstance(value, bytes):
        yield base64.b64encode(value).decode()
        yield base64.urlsafe_b64encode(value).decode()
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _secret_strings(item)


def register_settings_secrets(settings: Settings) -> None:
    """Register the value of every setting named in ``SECRET_SETTING_NAMES``.

    Driven by the list in ``shared.config``, so a secret setting added there is redacted here
    without touching this module.
    """
    from shared.config import SECRET_SETTING_NAMES

    attribute = {"AzureWebJobsStorage": "storage_connection_string"}
    values: list[str] = []
    for name in sorted(SECRET_SETTING_NAMES):
        raw = getattr(settings, attribute.get(name, name.lower()), None)
        values.extend(_secret_strings(raw))
        # TOKEN_ENCRYPTION_KEYS is parsed into (kid, bytes) pairs; the raw "kid:b64" text matters too.
        if name == "TOKEN_ENCRYPTION_KEYS" and isinstance(raw, tuple):
            values.extend(f"{kid}:{base64.b64encode(key).decode()}" for kid, key in raw
                          if isinstance(kid, str) and isinstance(key, bytes))
    _REDACTOR.register(values)


# --- log records -------------------------------------------------------------------------------

_PREPARED = "_timum_prepared"
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "correlation", _PREPARED,
}
_SECRET_FIELD = r"(?:^|_)(?:" + _SECRET_KEYS + r")$"
_CODE_FIELD = r"(?:^|_)code$"
_TRACEBACK_FORMATTER = logging.Formatter()


def prepare_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact ``record`` in place and attach the bound correlation ids.

    Message, traceback and stack are done once (the record factory does it at creation).
    ``extra`` fields are attached only after the factory ran, so they are scrubbed on every call —
    the handler filter's call is the one that sees them; scrubbing twice changes nothing.
    """
    # The marker holds the message we produced: a record whose message was replaced afterwards
    # (logging.makeLogRecord fills a factory-made record) is prepared again.
    if getattr(record, _PREPARED, None) is not record.msg:
        _prepare_message(record)
        setattr(record, _PREPARED, record.msg)
    _scrub_extra_fields(record)
    return record


def _prepare_message(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a broken format string must not lose the record
        message = f"{record.msg!s} (arguments did not fit the format)"
    ids = _IDS.get()
    setattr(record, "correlation", dict(ids))  # noqa: B010 - LogRecord declares no such attribute
    record.msg = escape_controls(redact(message)) + _ids_suffix(ids)
    record.args = ()
    if record.exc_info and not record.exc_text:
        # Formatters reuse exc_text, so the traceback is rendered once, here, redacted and escaped.
        record.exc_text = _format_traceback(record.exc_info)
    if record.exc_text:
        record.exc_text = escape_controls(redact(record.exc_text), keep_newline=True)
    if record.stack_info:
        record.stack_info = escape_controls(redact(record.stack_info), keep_newline=True)


def _scrub_extra_fields(record: logging.LogRecord) -> None:
    for key, value in list(record.__dict__.items()):
        if key in _STANDARD_ATTRS or key.startswith("_") or value in (None, "", REDACTED):
            continue
        secret_field = _pattern(_SECRET_FIELD, re.IGNORECASE).search(key) is not None or (
            _pattern(_CODE_FIELD, re.IGNORECASE).search(key) is not None
            and not (isinstance(value, str | int) and _is_plain_code(str(value))))
        if secret_field:
            setattr(record, key, REDACTED)
        elif isinstance(value, str):
            setattr(record, key, escape_controls(redact(value)))


#: HTTP client loggers: each request's URL (query included) at INFO, headers at DEBUG
QUIET_LOGGERS = ("httpx", "httpcore", "hpack", "urllib3", "azure.core.pipeline.policies.http_logging_policy")


def _quiet(record: logging.LogRecord) -> bool:
    if record.levelno >= logging.WARNING:
        return False
    name = record.name
    return any(name == prefix or name.startswith(prefix + ".") for prefix in QUIET_LOGGERS)


class RedactionFilter(logging.Filter):
    """Handler filter: scrubs ``extra`` fields, and whole records that bypassed the record factory;
    drops the HTTP clients' records below WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _quiet(record):
            return False
        prepare_record(record)
        return True


class _LoggingState:
    def __init__(self) -> None:
        self.factory: Callable[..., logging.LogRecord] | None = None
        self.previous_factory: Callable[..., logging.LogRecord] | None = None
        #: logger name → the level it had before configure_logging raised it
        self.quieted: dict[str, int] = {}


class _QuietFilter(logging.Filter):
    """Logger filter on each ``QUIET_LOGGERS`` logger: its records below WARNING never leave it.

    On the logger itself, not only on the handlers: a handler added after ``configure_logging``
    (a host's, a test's) or a level lowered later would otherwise see httpx's request lines, whose
    URL may be a credential (an ICS import URL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _quiet(record)


_STATE = _LoggingState()
_STATE_LOCK = threading.Lock()
_FILTER = RedactionFilter()
_QUIET_FILTER = _QuietFilter()


def configure_logging(settings: Settings | None = None, *, environ: Mapping[str, str] | None = None) -> None:
    """Install redaction and correlation ids for the whole process; safe to call any number of times.

    Registers the secret values of ``settings``, wraps the log-record factory once, puts the
    redaction filter on every root handler that lacks it (handlers added since the last call
    included) and starts the metrics exporter when Application Insights is configured.
    """
    if settings is not None:
        register_settings_secrets(settings)
    with _STATE_LOCK:
        if _STATE.factory is None:
            previous = logging.getLogRecordFactory()

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                return prepare_record(previous(*args, **kwargs))

            logging.setLogRecordFactory(factory)
            _STATE.factory, _STATE.previous_factory = factory, previous
        for handler in logging.getLogger().handlers:
            if not any(isinstance(f, RedactionFilter) for f in handler.filters):
                handler.addFilter(_FILTER)
        for name in QUIET_LOGGERS:
            # Explicitly, not by inheritance: the host may lower the root logger's level.
            quiet = logging.getLogger(name)
            if quiet.level < logging.WARNING:
                _STATE.quieted.setdefault(name, quiet.level)
                quiet.setLevel(logging.WARNING)
            if _QUIET_FILTER not in quiet.filters:
                quiet.addFilter(_QUIET_FILTER)
    metrics.configure(environ)


def logging_configured() -> bool:
    """Whether ``configure_logging`` is in force in this process (tools and tests that configure
    it for a while must not undo a configuration they did not make)."""
    with _STATE_LOCK:
        return _STATE.factory is not None


def unconfigure_logging() -> None:
    """Undo ``configure_logging`` (tests, tools): factory, root-handler filters, HTTP client logger levels,
    registered secrets, metrics."""
    with _STATE_LOCK:
        if _STATE.factory is not None and logging.getLogRecordFactory() is _STATE.factory:
            assert _STATE.previous_factory is not None
            logging.setLogRecordFactory(_STATE.previous_factory)
        _STATE.factory = _STATE.previous_factory = None
        for handler in logging.getLogger().handlers:
            for f in [f for f in handler.filters if isinstance(f, RedactionFilter)]:
                handler.removeFilter(f)
        for name, level in _STATE.quieted.items():
            logging.getLogger(name).setLevel(level)
        _STATE.quieted.clear()
        for name in QUIET_LOGGERS:
            logging.getLogger(name).removeFilter(_QUIET_FILTER)
    _REDACTOR.clear()
    metrics.reset()


# --- metrics -----------------------------------------------------------------------------------

MetricKind = Literal["counter", "histogram", "gauge"]


class MetricSpec(NamedTuple):
    name: str
    kind: MetricKind
    unit: str
    description: str


METRICS: Mapping[str, MetricSpec] = {spec.name: spec for spec in (
    MetricSpec("notification_to_block_lag_ms", "histogram", "ms",
               "Graph change notification received until the blocked slot is written in timum"),
    MetricSpec("booking_to_event_lag_ms", "histogram", "ms",
               "timum booking webhook received until the Outlook event is written"),
    MetricSpec("graph_requests", "counter", "1", "Requests sent to Microsoft Graph (dims: operation, status)"),
    MetricSpec("graph_throttled", "counter", "1", "Graph answers 429, or 503 with Retry-After"),
    MetricSpec("queue_depth", "gauge", "1", "Approximate number of messages waiting in a queue (dim: queue)"),
    MetricSpec("poison_messages", "counter", "1", "Messages that landed in a -poison queue (dim: queue)"),
    MetricSpec("links_needing_reconnect", "gauge", "1", "Links whose Microsoft sign-in must be renewed by a user"),
    MetricSpec("subscription_renewal_failures", "counter", "1",
               "Graph subscription creations or renewals that failed (dim: reason)"),
    MetricSpec("consent_errors", "counter", "1", "Sign-ins or token requests refused for missing admin consent"),
)}

Dim = str | int | float | bool


class _LogBackend:
    """Metrics as log lines: ``metric {"name": …, "value": …, "dims": {…}}``."""

    def __init__(self) -> None:
        self._log = logging.getLogger("timum.metrics")

    def emit(self, spec: MetricSpec, value: float, dims: Mapping[str, str]) -> None:
        import json

        self._log.info("metric %s", json.dumps({"name": spec.name, "value": value, "unit": spec.unit,
                                                 "dims": dict(dims)}, sort_keys=True))


class _OtelBackend:
    def __init__(self, meter: Any) -> None:
        self._meter = meter
        self._instruments: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _instrument(self, spec: MetricSpec) -> Any:
        instrument = self._instruments.get(spec.name)
        if instrument is None:
            with self._lock:
                instrument = self._instruments.get(spec.name)
                if instrument is None:
                    create = {"counter": self._meter.create_counter, "histogram": self._meter.create_histogram,
                              "gauge": self._meter.create_gauge}[spec.kind]
                    instrument = create(spec.name, unit=spec.unit, description=spec.description)
                    self._instruments[spec.name] = instrument
        return instrument

    def emit(self, spec: MetricSpec, value: float, dims: Mapping[str, str]) -> None:
        instrument = self._instrument(spec)
        if spec.kind == "counter":
            instrument.add(value, attributes=dict(dims))
        elif spec.kind == "histogram":
            instrument.record(value, attributes=dict(dims))
        else:
            instrument.set(value, attributes=dict(dims))


def _monitor_credential(auth: str) -> Any:
    """Credential for ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING`` (``Authorization=AAD;ClientId=…``)."""
    parts = {}
    for part in auth.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            parts[key.strip().lower()] = value.strip()
    if parts.get("authorization", "").upper() != "AAD":
        return None
    from azure.identity import ManagedIdentityCredential

    client_id = parts.get("clientid")
    return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()


def _setup_azure_monitor(connection_string: str, auth: str) -> Any:
    """Configure the Azure Monitor distro for metrics only and return a meter.

    Logs already reach Application Insights through the Functions host and traces are not used,
    so both are disabled here to avoid sending every log line twice.
    """
    from azure.monitor.opentelemetry import configure_azure_monitor
    from opentelemetry import metrics as otel_metrics

    configure_azure_monitor(connection_string=connection_string, credential=_monitor_credential(auth),
                            disable_logging=True, disable_tracing=True, enable_live_metrics=False)
    return otel_metrics.get_meter("timum_outlook_sync")


class Metrics:
    """Process-wide metrics; log lines until (and unless) an OpenTelemetry meter is in place."""

    def __init__(self) -> None:
        self._log_backend = _LogBackend()
        self._backend: _LogBackend | _OtelBackend = self._log_backend
        self._configuring = False
        self._lock = threading.Lock()

    @property
    def exporting(self) -> bool:
        """True once metrics go to OpenTelemetry rather than the log."""
        return isinstance(self._backend, _OtelBackend)

    def use_meter(self, meter: Any) -> None:
        """Send metrics to ``meter`` (an OpenTelemetry ``Meter``) from now on."""
        self._backend = _OtelBackend(meter)

    def reset(self) -> None:
        with self._lock:
            self._backend = self._log_backend
            self._configuring = False

    def configure(self, environ: Mapping[str, str] | None = None, *, background: bool = True,
                  setup: Callable[[str, str], Any] = _setup_azure_monitor) -> None:
        """Start exporting if ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set; at most once per process.

        The Azure Monitor distro takes a while to import, so by default it is set up in a daemon
        thread: a cold start never waits for it, and metrics recorded meanwhile become log lines.
        """
        env = os.environ if environ is None else environ
        connection_string = env.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip()
        if not connection_string:
            return
        with self._lock:
            if self._configuring:
                return
            self._configuring = True
        auth = env.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "")

        def run() -> None:
            try:
                meter = setup(connection_string, auth)
            except Exception as exc:  # missing package or bad config: keep logging metrics
                logging.getLogger(__name__).warning(
                    "metrics stay in the log: the Azure Monitor exporter could not start (%s)", type(exc).__name__)
                return
            self.use_meter(meter)

        if background:
            threading.Thread(target=run, name="azure-monitor-setup", daemon=True).start()
        else:
            run()

    @staticmethod
    def _spec(name: str, kinds: tuple[MetricKind, ...]) -> MetricSpec:
        spec = METRICS.get(name)
        if spec is None:
            raise ValueError(f"unknown metric {name!r}; add it to shared.observability.METRICS first")
        if spec.kind not in kinds:
            raise ValueError(f"metric {name!r} is a {spec.kind}")
        return spec

    @staticmethod
    def _dims(dims: Mapping[str, Dim]) -> dict[str, str]:
        # Dimensions end up as queryable text in Application Insights: the same scrubbing as logs.
        return {key: redact(str(value)) for key, value in sorted(dims.items())}

    def _emit(self, spec: MetricSpec, value: float, dims: Mapping[str, Dim]) -> None:
        clean = self._dims(dims)
        try:
            self._backend.emit(spec, value, clean)
        except Exception:  # telemetry must never break the sync
            logging.getLogger(__name__).warning("metric %s could not be exported", spec.name, exc_info=True)
            self._log_backend.emit(spec, value, clean)

    def record(self, name: str, value: float, /, **dims: Dim) -> None:
        """A measurement: a histogram sample (``*_lag_ms``), a gauge's current value, or a counter's step."""
        self._emit(self._spec(name, ("histogram", "gauge", "counter")), value, dims)

    def increment(self, name: str, amount: int = 1, /, **dims: Dim) -> None:
        """Add ``amount`` (default 1) to a counter."""
        self._emit(self._spec(name, ("counter",)), amount, dims)


metrics = Metrics()
