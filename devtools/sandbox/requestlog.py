"""Request log of the sandbox: which stand-in was called, how, how fast, for which mailbox.

An ASGI middleware on both listeners appends one entry per request to a bounded in-memory
ring; ``GET /_sandbox/requests`` returns entries as JSON (the benchmark counts Graph calls
from it) and ``/_sandbox/requests/page`` shows them. Entries never contain secrets: query
values other than a short allow-list are masked, and the secret path segments of published
calendars (ICS) are masked too — an ICS URL is a credential.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: query parameters whose values are harmless and useful when reading the log
_SAFE_QUERY_KEYS = frozenset({
    "startdatetime", "enddatetime", "$select", "$top", "$filter", "$expand", "$orderby", "$count", "$search",
    "response_type", "response_mode", "prompt", "scope", "client_id", "redirect_uri", "ui_locales", "lang",
    "domain_hint", "code_challenge_method", "api-version", "admin_consent", "tenant", "service", "since",
    "limit", "page", "view", "mailbox", "calendar", "status",
})
_MASK = "…"
_USER_SEGMENT = re.compile(r"^/v1\.0/users/([^/]+)", re.IGNORECASE)
_USER_FN_SEGMENT = re.compile(r"^/v1\.0/users\('([^']+)'\)", re.IGNORECASE)
_ME = re.compile(r"^/v1\.0/me(/|$)", re.IGNORECASE)

#: the request log's own endpoints are not recorded: polling them would flood it
_SKIP_PREFIXES = ("/_sandbox/requests", "/_sandbox/static/", "/favicon.ico")


@dataclass(frozen=True)
class RequestEntry:
    seq: int
    timestamp: str        # ISO 8601, UTC, milliseconds
    epoch: float
    listener: str         # "https" | "http"
    service: str          # identity | graph | timum | control | ics | ui
    method: str
    path: str             # with secrets masked
    status: int
    duration_ms: float
    mailbox: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def classify(listener: str, path: str) -> str:
    """Which stand-in a path belongs to. Graph REST lives under /v1.0 on the HTTPS listener,
    everything else there is the identity platform; on the HTTP listener, /timum/v1 is the
    timum API, /_sandbox the control API, *.ics published calendars, the rest pages."""
    low = path.lower()
    if listener == "https":
        if low.startswith(("/v1.0/", "/beta/")) or low in ("/v1.0", "/beta"):
            return "graph"
        if low.startswith("/_sandbox/"):
            return "control"
        return "identity"
    if low.endswith(".ics") or low.startswith(("/owa/calendar/", "/ics/")):
        return "ics"
    if low.startswith("/timum/v1/") or low == "/timum/v1":
        return "timum"
    if low.startswith("/_sandbox/"):
        return "control"
    return "ui"


def scrub(service: str, path: str, query: str) -> str:
    """``path?query`` with secret-bearing parts masked."""
    if service == "ics":
        # /owa/calendar/<id>@<domain>/<secret>/calendar.ics → keep the shape, not the secret
        parts = path.split("/")
        path = "/".join(p if i <= 2 or i == len(parts) - 1 else _MASK for i, p in enumerate(parts))
    if not query:
        return path
    parts = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        shown = quote(value, safe="$/:,.()@ '") if key.lower() in _SAFE_QUERY_KEYS else _MASK
        parts.append(f"{quote(key, safe='$')}={shown}")
    return f"{path}?{'&'.join(parts)}"


class RequestLog:
    """Thread-safe ring buffer of :class:`RequestEntry`."""

    def __init__(self, capacity: int = 20_000) -> None:
        self._entries: deque[RequestEntry] = deque(maxlen=capacity)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._last_seq = 0

    def add(self, *, listener: str, service: str, method: str, path: str, status: int, duration_ms: float,
            mailbox: str | None, epoch: float | None = None) -> RequestEntry:
        epoch = time.time() if epoch is None else epoch
        stamp = dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        with self._lock:
            seq = next(self._seq)
            entry = RequestEntry(seq, stamp, epoch, listener, service, method, path, status,
                                 round(duration_ms, 2), mailbox)
            self._entries.append(entry)
            self._last_seq = seq
            return entry

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._last_seq

    def entries(self, *, service: str | None = None, since_seq: int | None = None, since_epoch: float | None = None,
                mailbox: str | None = None, limit: int | None = None) -> list[RequestEntry]:
        """Oldest first. ``since_seq`` is exclusive, ``since_epoch`` inclusive; ``limit`` keeps the newest."""
        with self._lock:
            items = list(self._entries)
        if service:
            wanted = set(service.split(","))
            items = [e for e in items if e.service in wanted]
        if since_seq is not None:
            items = [e for e in items if e.seq > since_seq]
        if since_epoch is not None:
            items = [e for e in items if e.epoch >= since_epoch]
        if mailbox:
            low = mailbox.lower()
            items = [e for e in items if (e.mailbox or "").lower() == low]
        if limit is not None and limit >= 0:
            items = items[-limit:] if limit else []
        return items

    def count(self, *, service: str | None = None, since_seq: int | None = None) -> int:
        return len(self.entries(service=service, since_seq=since_seq))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


MailboxResolver = Callable[[str, dict[str, str]], str | None]
"""(path, lower-cased headers) → mailbox (mail address) or None."""


class RequestLogMiddleware:
    """Pure ASGI middleware (no response buffering, so streamed bodies stay streamed)."""

    def __init__(self, app: ASGIApp, *, log: RequestLog, listener: str,
                 mailbox_resolver: MailboxResolver | None = None) -> None:
        self.app = app
        self.log = log
        self.listener = listener
        self.mailbox_resolver = mailbox_resolver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if path.startswith(_SKIP_PREFIXES):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        epoch = time.time()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self._record(scope, path, status, (time.perf_counter() - started) * 1000, epoch)

    def _record(self, scope: Scope, path: str, status: int, duration_ms: float, epoch: float) -> None:
        service = classify(self.listener, path)
        query = scope.get("query_string", b"").decode("latin-1")
        mailbox = None
        if service == "graph":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            mailbox = graph_mailbox(path) if self.mailbox_resolver is None else self.mailbox_resolver(path, headers)
        self.log.add(listener=self.listener, service=service, method=scope.get("method", "GET"),
                     path=scrub(service, path, query), status=status, duration_ms=duration_ms, mailbox=mailbox,
                     epoch=epoch)


def graph_mailbox(path: str) -> str | None:
    """The user segment of a Graph path (/users/{id|upn}/… or /users('{id}')/…), or None."""
    for pattern in (_USER_FN_SEGMENT, _USER_SEGMENT):
        match = pattern.match(path)
        if match:
            return unquote(match.group(1))
    return None


def is_me_path(path: str) -> bool:
    return bool(_ME.match(path))
