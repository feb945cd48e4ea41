"""Pure parts of the sandbox server: path classification and masking, language choice, scopes."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from devtools.sandbox import ui
from devtools.sandbox.identity.protocol import OAuthError, parse_scopes
from devtools.sandbox.requestlog import RequestLog, classify, graph_mailbox, scrub


@pytest.mark.parametrize(("listener", "path", "service"), [
    ("https", "/v1.0/users/a@b.example/calendars", "graph"),
    ("https", "/v1.0/$batch", "graph"),
    ("https", "/common/oauth2/v2.0/token", "identity"),
    ("https", "/_sandbox/static/sandbox.css", "control"),
    ("http", "/timum/v1/providers/p1/bookings", "timum"),
    ("http", "/timum/providers/p1", "ui"),
    ("http", "/outlook/published/abc/calendar.ics", "ics"),
    ("http", "/_sandbox/identity/state", "control"),
    ("http", "/", "ui"),
])
def test_classify(listener: str, path: str, service: str) -> None:
    assert classify(listener, path) == service


def test_scrub_masks_secrets_and_keeps_harmless_parameters() -> None:
    masked = scrub("identity", "/t/oauth2/v2.0/authorize",
                   "client_id=abc&code=SECRET1&state=SECRET2&scope=openid profile&code_challenge=SECRET3")
    assert "SECRET" not in masked
    assert "client_id=abc" in masked and "scope=openid profile" in masked and "code=…" in masked
    delta = scrub("graph", "/v1.0/users/x/calendarView/delta", "startDateTime=2026-01-01T00:00:00Z&$deltatoken=TOK")
    assert "startDateTime=2026-01-01T00:00:00Z" in delta and "TOK" not in delta
    ics = scrub("ics", "/outlook/published/very-secret-token/calendar.ics", "")
    assert ics == "/outlook/published/…/calendar.ics"


def test_graph_mailbox_segment() -> None:
    assert graph_mailbox("/v1.0/users/anna%40praxis.example/events") == "anna@praxis.example"
    assert graph_mailbox("/v1.0/users('1234')/calendar") == "1234"
    assert graph_mailbox("/v1.0/me/events") is None


def test_request_log_ring_and_filters() -> None:
    log = RequestLog(capacity=3)
    for i in range(5):
        log.add(listener="https", service="graph" if i % 2 else "identity", method="GET", path=f"/{i}",
                status=200, duration_ms=1.0, mailbox="m@x.example" if i % 2 else None, epoch=1000.0 + i)
    assert [e.path for e in log.entries()] == ["/2", "/3", "/4"]          # oldest dropped
    assert [e.path for e in log.entries(service="graph")] == ["/3"]
    assert [e.seq for e in log.entries(since_seq=4)] == [5]
    assert [e.path for e in log.entries(since_epoch=1003.0)] == ["/3", "/4"]
    assert [e.path for e in log.entries(mailbox="M@X.example")] == ["/3"]
    assert [e.path for e in log.entries(limit=1)] == ["/4"]
    assert log.last_seq == 5
    log.clear()
    assert log.entries() == [] and log.last_seq == 5


def _request(query: str = "", accept_language: str | None = None) -> Request:
    headers = [(b"accept-language", accept_language.encode())] if accept_language else []
    return Request({"type": "http", "method": "GET", "path": "/", "query_string": query.encode(),
                    "headers": headers})


@pytest.mark.parametrize(("query", "header", "lang"), [
    ("", None, "de"),
    ("ui_locales=en-US", "de", "en"),
    ("ui_locales=fr-FR%20en", None, "en"),
    ("lang=de", "en", "de"),
    ("", "fr-CH, en;q=0.8, de;q=0.9", "de"),
    ("", "en-GB,en;q=0.9", "en"),
    ("", "fr", "de"),
])
def test_pick_language(query: str, header: str | None, lang: str) -> None:
    assert ui.pick_language(_request(query, header)) == lang


def test_parse_scopes() -> None:
    scopes = parse_scopes("https://graph.microsoft.com/calendars.readwrite User.Read openid offline_access")
    assert scopes.permissions == ("Calendars.ReadWrite", "User.Read")
    assert scopes.written == ("https://graph.microsoft.com/Calendars.ReadWrite", "User.Read")
    assert scopes.oidc == {"openid", "offline_access"}
    default = parse_scopes("https://graph.microsoft.com/.default")
    assert default.permissions == ("Calendars.ReadWrite", "Calendars.ReadWrite.Shared", "MailboxSettings.Read",
                                   "User.Read")
    with pytest.raises(OAuthError) as mixed:
        parse_scopes("https://graph.microsoft.com/.default User.Read")
    assert mixed.value.code == 70011
    with pytest.raises(OAuthError) as foreign:
        parse_scopes("https://outlook.office.com/Calendars.Read")
    assert foreign.value.error == "invalid_resource"
