"""What a log record of the function app may carry: no credential, no forged line, its correlation ids.

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

**Correlation ids.** The ids bound with ``shared.observability.correlation.bind`` are attached to
each record here (``record.correlation``) and appended to its message, escaped and redacted like it.

``configure_logging`` installs all of this for the process and starts the metrics exporter
(``shared.observability.metrics``). Import cost stays at the standard library: this module is
imported on every cold start.
"""

from __future__ import annotations

import base64
import functools
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from shared.observability.correlation import current_ids

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.observability.metrics import Metrics

__all__ = [
    "QUIET_LOGGERS",
    "REDACTED",
    "RedactionFilter",
    "configure_logging",
    "escape_controls",
    "logging_configured",
    "prepare_record",
    "redact",
    "register_secret",
    "register_settings_secrets",
    "unconfigure_logging",
]

REDACTED = "[redacted]"

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

# Shown first and in this order; any other bound key follows alphabetically.
_ID_ORDER = ("link", "subscription", "booking", "invocation")


def _ids_suffix(ids: Mapping[str, str]) -> str:
    if not ids:
        return ""
    keys = [k for k in _ID_ORDER if k in ids] + sorted(k for k in ids if k not in _ID_ORDER)
    return " [" + " ".join(f"{escape_controls(k)}={escape_controls(redact(ids[k]))}" for k in keys) + "]"


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
    ids = current_ids()
    setattr(record, "correlation", ids)  # noqa: B010 - LogRecord declares no such attribute
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


def _metrics() -> Metrics:
    # Imported on use: the metrics module scrubs its dimensions with ``redact`` from here.
    from shared.observability.metrics import metrics

    return metrics


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
    _metrics().configure(environ)


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
    _metrics().reset()
