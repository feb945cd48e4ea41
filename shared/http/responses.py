"""Small helpers every HTTP trigger uses: HTML pages, JSON errors, security headers, bodies.

* ``render_page`` renders a template from ``shared/templates`` (autoescaped, translated) into
  an HTML response with a strict Content-Security-Policy: no script or style runs unless it
  carries the response's nonce, the page cannot be framed, and no Referer leaves it (connect
  URLs carry signed tokens, callback URLs carry authorisation codes).
* ``status_for`` maps the exception tree (``shared.errors``) to one status code each
  (``ERROR_STATUS``); ``error_response`` answers it as RFC 9457 problem JSON with the error's
  stable ``code``, ``plain_error`` as text for callers that read no JSON.
* ``read_body`` enforces a size limit before anything parses the body: the caller's, and never
  more than ``MAX_REQUEST_BODY_BYTES`` (1 MiB) — the app's own ceiling, whatever the host in
  front of it accepts (the Functions host takes far larger bodies by default).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import azure.functions as func

from shared.errors import (
    AuthError,
    BadRequest,
    ConfigError,
    Conflict,
    InvalidSignature,
    NotFound,
    PayloadTooLarge,
    RemoteGone,
    StorageError,
    SyncError,
    Throttled,
    TransientError,
)
from shared.i18n import normalize, translator

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"
DEFAULT_BODY_LIMIT = 64 * 1024
#: no HTTP trigger of this app reads a larger body, whatever limit it asks for
MAX_REQUEST_BODY_BYTES = 1024 * 1024

#: Headers for every response we generate, HTML or JSON.
BASE_SECURITY_HEADERS: Mapping[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@lru_cache(maxsize=1)
def _environment() -> Any:
    # jinja2 is imported on first render only: the webhook triggers never pay for it.
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=select_autoescape(enabled_extensions=("html", "htm", "xml"), default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def content_security_policy(nonce: str, *, form_targets: Iterable[str] = ()) -> str:
    """CSP for our pages. ``form_targets`` are origins a form may end up at: Chrome applies
    ``form-action`` to the redirect that follows a POST too (the chooser redirects to timum)."""
    origins = sorted({o for o in (origin_of(u) for u in form_targets) if o})
    form_action = " ".join(["'self'", *origins])
    return ("default-src 'none'; "
            f"style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; img-src 'self' data:; "
            f"form-action {form_action}; frame-ancestors 'none'; base-uri 'none'")


def security_headers(nonce: str | None = None, *, form_targets: Iterable[str] = ()) -> dict[str, str]:
    headers = dict(BASE_SECURITY_HEADERS)
    headers["Content-Security-Policy"] = (content_security_policy(nonce, form_targets=form_targets) if nonce
                                          else "default-src 'none'; frame-ancestors 'none'")
    return headers


def render(template: str, *, locale: str, nonce: str = "", **context: Any) -> str:
    """Render ``template`` in ``locale`` (de/en); ``_`` translates inside templates."""
    lang = normalize(locale)
    return str(_environment().get_template(template).render(lang=lang, _=translator(lang), csp_nonce=nonce,
                                                            **context))


def render_page(template: str, *, locale: str, status: int = 200, form_targets: Iterable[str] = (),
                headers: Mapping[str, str] | None = None, **context: Any) -> func.HttpResponse:
    """An HTML response from a template that extends ``base.html``, with security headers."""
    nonce = secrets.token_urlsafe(18)
    body = render(template, locale=locale, nonce=nonce, **context)
    all_headers = security_headers(nonce, form_targets=form_targets)
    all_headers["Content-Language"] = normalize(locale)
    if headers:
        all_headers.update(headers)
    return func.HttpResponse(body, status_code=status, mimetype="text/html", charset="utf-8", headers=all_headers)


def redirect(location: str, *, status: int = 303, headers: Mapping[str, str] | None = None) -> func.HttpResponse:
    all_headers = dict(BASE_SECURITY_HEADERS)
    all_headers["Location"] = location
    if headers:
        all_headers.update(headers)
    return func.HttpResponse(status_code=status, headers=all_headers)


def json_response(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None,
                  mimetype: str = "application/json") -> func.HttpResponse:
    all_headers = security_headers()
    if headers:
        all_headers.update(headers)
    return func.HttpResponse(json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str),
                             status_code=status, mimetype=mimetype, charset="utf-8", headers=all_headers)


#: The one mapping from the exception tree to an HTTP status, most specific class first. Every
#: blueprint answers through it; docs/ARCHITECTURE.md ("Exception tree") and
#: docs/openapi-service.yaml (``x-error-status``) say the same, held together by
#: tests/test_error_mapping.py.
ERROR_STATUS: tuple[tuple[type[SyncError], int], ...] = (
    (InvalidSignature, 401),
    (PayloadTooLarge, 413),
    (BadRequest, 400),
    (NotFound, 404),
    (Conflict, 409),
    (Throttled, 429),
    (TransientError, 503),
    (StorageError, 503),
    (AuthError, 502),      # a remote refused our credentials: not the caller's fault
    (RemoteGone, 502),     # a remote's calendar or resource is gone, not what the caller addressed
    (ConfigError, 500),
)


def status_for(exc: BaseException) -> int:
    """The one HTTP status each class of the exception tree maps to (``ERROR_STATUS``)."""
    for cls, status in ERROR_STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def retry_after(exc: BaseException) -> str | None:
    """``Retry-After`` for an error a retry may fix (seconds), else None."""
    if isinstance(exc, TransientError):
        return str(max(1, round(exc.retry_after))) if exc.retry_after else "5"
    if isinstance(exc, StorageError):
        return "5"
    return None


def error_response(exc: BaseException, *, status: int | None = None) -> func.HttpResponse:
    """RFC 9457 problem JSON for an error; unknown exceptions say nothing about their cause."""
    code = status or status_for(exc)
    if isinstance(exc, SyncError) and not isinstance(exc, ConfigError):
        problem: dict[str, Any] = {"type": f"urn:problem-type:timum-outlook:{exc.code}", "title": exc.code,
                                   "status": code, "code": exc.code, "detail": exc.message}
        if isinstance(exc, BadRequest) and exc.field:
            problem["field"] = exc.field
    else:
        problem = {"type": "urn:problem-type:timum-outlook:internal", "title": "internal", "status": code,
                   "code": "internal", "detail": "internal error"}
    wait = retry_after(exc)
    headers = {"Retry-After": wait} if wait else {}
    return json_response(problem, status=code, headers=headers, mimetype="application/problem+json")


def plain_error(exc: BaseException, text: str, *, headers: Mapping[str, str] | None = None) -> func.HttpResponse:
    """A text/plain error for callers that read no JSON (Graph's webhooks, calendar clients):
    the status and ``Retry-After`` of ``error_response``, with ``text`` as the body."""
    all_headers = {"X-Content-Type-Options": "nosniff"}
    wait = retry_after(exc)
    if wait:
        all_headers["Retry-After"] = wait
    all_headers.update(headers or {})
    return func.HttpResponse(text, status_code=status_for(exc), mimetype="text/plain", headers=all_headers)


def read_body(req: func.HttpRequest, limit: int = DEFAULT_BODY_LIMIT) -> bytes:
    """The raw body, or ``PayloadTooLarge`` if it (or its declared length) exceeds ``limit``."""
    limit = min(limit, MAX_REQUEST_BODY_BYTES)
    declared = req.headers.get("Content-Length")
    if declared and declared.strip().isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    body = req.get_body() or b""
    if len(body) > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    return body


def read_json(req: func.HttpRequest, limit: int = DEFAULT_BODY_LIMIT) -> Any:
    body = read_body(req, limit)
    try:
        return json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("body is not valid JSON") from exc


def read_form(req: func.HttpRequest, limit: int = DEFAULT_BODY_LIMIT, *, max_fields: int = 50) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict (first value of each field)."""
    from urllib.parse import parse_qsl

    ctype = (req.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise BadRequest("expected a form submission", code="bad_form")
    body = read_body(req, limit)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                           max_num_fields=max_fields)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("the form is malformed", code="bad_form") from exc
    form: dict[str, str] = {}
    for key, value in pairs:
        form.setdefault(key, value)
    return form


def cookie_value(req: func.HttpRequest, name: str) -> str | None:
    """One cookie of the request (the first of that name)."""
    raw = req.headers.get("Cookie") or ""
    for part in raw.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None
