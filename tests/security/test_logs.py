"""Attack: forge log lines through values an anonymous caller controls, and read credentials from logs.

Microsoft's sign-in answers with ``error`` / ``error_description`` in the callback's query string,
and anyone can call the callback with their own. With CR/LF in ``error``, the old code wrote a
second, made-up line into the log. Now every record's control characters are escaped, and the
HTTP client loggers (which print request URLs, ICS import URLs included) stay at WARNING.
"""

from __future__ import annotations

import logging
import uuid
from urllib.parse import parse_qsl, urljoin, urlsplit

import httpx
import pytest

from devtools.stack import Stack

FORGED = "access_denied\r\n2030-01-01 00:00:00 INFO shared.connect.flow admin consent recorded\u2028x"


def _signin_state(stack: Stack, browser: httpx.Client, provider: str, resource: str) -> str:
    """Start a real sign-in (the timum button → /api/connect) and return the state Microsoft would echo."""
    stack.ensure_resource(provider, resource, "Logs")
    url = stack.timum.connect_url(provider, resource)
    for _ in range(10):
        answer = browser.get(url)
        assert answer.is_redirect, answer.text[:300]
        url = urljoin(str(answer.url), answer.headers["location"])
        state = dict(parse_qsl(urlsplit(url).query)).get("state")
        if "/authorize" in urlsplit(url).path and state:
            return state
    raise AssertionError("the connect flow never sent the browser to the sign-in page")


def test_callback_error_values_cannot_forge_log_lines(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with stack.http(follow_redirects=False) as browser:
        state = _signin_state(stack, browser, "sec-logs", f"r-{uuid.uuid4().hex[:6]}")
        answer = browser.get(stack.api_url("oauth/callback"),
                             params={"state": state, "error": FORGED, "error_description": FORGED})
    assert answer.status_code < 500
    app_records = [r for r in caplog.records if r.name.startswith("shared.")]
    # The failed sign-in is logged — by the class the flow sorts the error into, so the anonymous
    # value itself never reaches the log (and, were it logged, the formatter escapes it).
    assert any("sign-in came back with" in r.getMessage() for r in app_records), "the failed sign-in is logged"
    assert not any("2030-01-01 00:00:00" in r.getMessage() for r in app_records)
    for record in caplog.records:
        message = record.getMessage()
        assert "\r" not in message and "\n" not in message and "\u2028" not in message, message
    assert "\n2030-01-01 00:00:00 INFO" not in caplog.text


def test_http_clients_log_no_request_lines(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with stack.http(follow_redirects=False) as browser:
        _signin_state(stack, browser, "sec-logs", f"r-{uuid.uuid4().hex[:6]}")
    noisy = [r for r in caplog.records if r.name.split(".")[0] in ("httpx", "httpcore", "hpack", "urllib3")
             and r.levelno < logging.WARNING]
    assert noisy == []
