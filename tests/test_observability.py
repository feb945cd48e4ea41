"""Correlation ids, redaction and metrics of the shared/observability package.

Every secret kind is pushed through a real logger and looked for in what pytest's caplog and an
ordinary StreamHandler captured: it must be gone, while the rest of the line survives.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from shared.config import SECRET_SETTING_NAMES, Settings, load_settings
from shared.observability.correlation import bind, current_ids
from shared.observability.metrics import METRICS, _monitor_credential, _setup_azure_monitor, metrics
from shared.observability.redaction import (
    QUIET_LOGGERS,
    REDACTED,
    RedactionFilter,
    configure_logging,
    redact,
    register_secret,
    unconfigure_logging,
)

LOG = logging.getLogger("tests.observability")

JWT = ("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2dyYXBoLm1pY3Jvc29mdC5jb20iLCJzdWIiOiJ1MSJ9"
       ".c2lnbmF0dXJlLWJ5dGVzLWhlcmUtYW5kLW1vcmU")
CONNECT_TOKEN = "eyJ2IjoxLCJwaWQiOiJwMSIsInJpZCI6InIxIn0.TmljZVNpZ25hdHVyZUJ5dGVzMDEyMzQ1Njc4OQ"
ENTRA_CODE = "0.AXoA6V3bWqTkcE2bM5u9xyzABCDEFGHIJKLMNOPQRST-uvwxyz_0123456789"
REFRESH_TOKEN = "1.AXoA9Zc3Lp0qS4tW2mV8nBvCxZaQwErTyUiOpAsDfGhJkL-0123456789abcdef"
SBX_ACCESS = "sbx-at.q4Hn7xWcVbN2mK9pLzR1tY8uE3oA6sD5fG0hJ"
SBX_REFRESH = "sbx-rt.Zx9Cv8Bn7Mm6Ll5Kk4Jj3Hh2Gg1Ff0DdSsAaQq"
CLIENT_STATE = "cs-7f3a9d1e2b4c6a8e0f1d3b5c7a9e"
VALIDATION = "Validation: Testing client application reachability for subscription Request-Id: 42"
TIMUM_SIG = "t=1700000000,v1=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
ICS_TOKEN = "R2VoZWltZXJGZWVkVG9rZW4tMDEyMzQ1Njc4OWFiY2RlZg"
SAS_SIG = "k2Jm%2FQw8zXy1Vb7Nc5Ld3Fe9Gh0Ij4Kl6Mn8Op%3D"
FUNCTION_CODE = "Zm9vYmFyLWZ1bmN0aW9uLWtleS12YWx1ZS0wMTIzNDU2Nzg5QUJDREVGRw=="

# (what, message logged, the secret that must not appear, a neighbour that must survive)
CASES: list[tuple[str, str, str, str]] = [
    ("bearer header", f"GET /me headers={{'Authorization': 'Bearer {JWT}'}}", JWT, "GET /me"),
    ("bearer in text", f"sent Bearer {SBX_ACCESS} to graph", SBX_ACCESS, "to graph"),
    ("sandbox access token", f"token cache holds {SBX_ACCESS}", SBX_ACCESS, "token cache holds"),
    ("sandbox refresh token", f"refresh with {SBX_REFRESH} failed", SBX_REFRESH, "failed"),
    ("jwt", f"claims of {JWT} expired", JWT, "expired"),
    ("oauth code in callback URL",
     f"callback https://sync.example.com/api/oauth/callback?code={ENTRA_CODE}&state=abc123xyz", ENTRA_CODE,
     "https://sync.example.com/api/oauth/callback?code="),
    ("oauth state in callback URL", "callback /api/oauth/callback?code=x&state=st4te-n0nce-Value", "st4te-n0nce-Value",
     "/api/oauth/callback"),
    ("code= outside a URL", f"redeeming code={ENTRA_CODE} now", ENTRA_CODE, "now"),
    ("entra refresh token", f"cache refresh_token {REFRESH_TOKEN} stored", REFRESH_TOKEN, "stored"),
    ("token= connect link", f"opened https://sync.example.com/api/connect?token={CONNECT_TOKEN}&lang=de",
     CONNECT_TOKEN, "&lang=de"),
    ("bare connect-link token", f"verifying link {CONNECT_TOKEN}", CONNECT_TOKEN, "verifying link"),
    ("validationToken", f"POST /api/graph/notifications?validationToken={VALIDATION.replace(' ', '+')}",
     "Testing+client", "/api/graph/notifications"),
    ("clientState in a notification body",
     json.dumps({"value": [{"subscriptionId": "sub-1", "clientState": CLIENT_STATE, "changeType": "updated"}]}),
     CLIENT_STATE, "sub-1"),
    ("client_state key=value", f"mismatch client_state={CLIENT_STATE} for sub-1", CLIENT_STATE, "for sub-1"),
    ("clientState in a dict repr", f"subscription {{'clientState': '{CLIENT_STATE}', 'id': 'sub-2'}}",
     CLIENT_STATE, "sub-2"),
    ("sig= in a SAS URL", f"blob https://st.blob.core.windows.net/c/b?sv=2024-05-04&sig={SAS_SIG}&se=2030",
     SAS_SIG, "&se=2030"),
    ("Timum-Signature header", f"headers: {{'Timum-Signature': '{TIMUM_SIG}', 'Content-Type': 'json'}}",
     TIMUM_SIG.split("v1=")[1], "Content-Type"),
    ("Timum-Signature line", f"Timum-Signature: {TIMUM_SIG}", "9f86d081884c7d659a2f", "Timum-Signature"),
    ("ICS feed token", f"served https://sync.example.com/api/ics/{ICS_TOKEN}.ics 200", ICS_TOKEN, "200"),
    ("ICS feed path", f"GET /api/ics/{ICS_TOKEN}?x=1", ICS_TOKEN, "GET /api/ics/"),
    ("published Outlook calendar URL",
     "import https://outlook.office365.com/owa/calendar/0f1e2d3c@contoso.com/a1b2c3d4e5f6secret/calendar.ics failed",
     "a1b2c3d4e5f6secret", "failed"),
    ("function key in URL", f"probe https://func.azurewebsites.net/api/ops?code={FUNCTION_CODE}",
     FUNCTION_CODE.rstrip("="), "/api/ops"),
    ("api key query", "GET https://api.timum.de/v1/x?api_key=tk_live_51Hx9s&page=2", "tk_live_51Hx9s", "&page=2"),
    ("delta cursor", "delta https://graph.microsoft.com/v1.0/users/u/calendarView/delta?$deltatoken=Q1w2E3r4T5y6",
     "Q1w2E3r4T5y6", "calendarView/delta"),
    ("URL user info", "proxy https://svc:pa55w0rd-x@proxy.internal:8443/", "pa55w0rd-x", "proxy.internal:8443"),
    ("password key", "login password: hunter2-extra-long", "hunter2-extra-long", "login"),
]


@pytest.fixture(autouse=True)
def clean_state() -> Iterator[None]:
    unconfigure_logging()
    yield
    unconfigure_logging()


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """A real handler on the root logger, added after configure_logging (so without its filter)."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)


def settings_env() -> dict[str, str]:
    key = base64.b64encode(bytes(range(32))).decode()
    old = base64.b64encode(bytes(range(32, 64))).decode()
    return {
        "SERVICE_BASE_URL": "https://sync.example.com",
        "ENTRA_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
        "ENTRA_CLIENT_SECRET": "Xy8Q~client-secret-value.0123456789",
        "TOKEN_ENCRYPTION_KEYS": f"k2:{key},k1:{old}",
        "TIMUM_API_BASE_URL": "https://api.timum.example",
        "TIMUM_API_KEY": "timum-api-key-0123456789",
        "TIMUM_WEBHOOK_SECRETS": "whsec-new-0123456789,whsec-old-9876543210",
        "TIMUM_CONNECT_SECRETS": "connect-secret-aaaaaaaa,connect-secret-bbbbbbbb",
        "TIMUM_RETURN_URL_ALLOWLIST": "https://app.timum.example/",
        "FUNCTION_KEY": "function-key-value-0123",
        "AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountName=stx;"
                               "AccountKey=QWNjb3VudEtleVZhbHVlMDEyMzQ1Njc4OQ==;EndpointSuffix=core.windows.net",
    }


def configured_settings() -> Settings:
    return load_settings(settings_env())


# --- redaction ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("what", "message", "secret", "neighbour"), CASES, ids=[c[0] for c in CASES])
def test_secret_kind_never_reaches_a_handler(what: str, message: str, secret: str, neighbour: str,
                                             caplog: pytest.LogCaptureFixture, stream: io.StringIO) -> None:
    configure_logging()
    caplog.set_level(logging.INFO)
    LOG.info(message)
    LOG.warning("as an argument: %s", message)
    for captured in (caplog.text, stream.getvalue(), "\n".join(caplog.messages)):
        assert secret not in captured, f"{what} leaked"
        assert neighbour in captured, f"{what}: redaction ate the surrounding text"
    assert REDACTED in caplog.text


@pytest.mark.parametrize("name", sorted(SECRET_SETTING_NAMES))
def test_configured_secret_values_are_redacted(name: str, caplog: pytest.LogCaptureFixture,
                                               stream: io.StringIO) -> None:
    settings = configured_settings()
    configure_logging(settings)
    caplog.set_level(logging.INFO)
    raw = settings_env()[name]
    pieces = {raw, *raw.split(",")}
    if name == "TOKEN_ENCRYPTION_KEYS":
        pieces |= {p.partition(":")[2] for p in raw.split(",")}
    if name == "AzureWebJobsStorage":
        pieces.add("QWNjb3VudEtleVZhbHVlMDEyMzQ1Njc4OQ==")
    for piece in sorted(pieces):
        # Plain prose around the value: no key=value shape for the patterns to latch on to.
        LOG.info("the value is %s right here", piece)
    for captured in (caplog.text, stream.getvalue()):
        for piece in pieces:
            assert piece not in captured, f"{name}: {piece!r} leaked"
        assert "right here" in captured


def test_every_secret_setting_is_covered_by_the_configured_values() -> None:
    # The test above feeds one value per SECRET_SETTING_NAMES entry: a new secret setting fails here
    # until it is given a value, and so gets a redaction test.
    assert set(settings_env()) >= SECRET_SETTING_NAMES


def test_traceback_and_exception_message_are_redacted(caplog: pytest.LogCaptureFixture, stream: io.StringIO) -> None:
    configure_logging()
    caplog.set_level(logging.INFO)
    try:
        raise RuntimeError(f"token refresh failed for Bearer {SBX_ACCESS}")
    except RuntimeError:
        LOG.exception("graph call failed")
    for captured in (caplog.text, stream.getvalue()):
        assert SBX_ACCESS not in captured
        assert "RuntimeError: token refresh failed for Bearer" in captured
        assert "graph call failed" in captured


def test_extra_fields_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    configure_logging()
    caplog.set_level(logging.INFO)
    LOG.info("webhook", extra={"client_state": CLIENT_STATE, "detail": f"Authorization: Bearer {JWT}",
                               "code": "needs_reconnect", "auth_code": ENTRA_CODE, "link_id": "p1|r1"})
    (record,) = caplog.records
    assert record.client_state == REDACTED
    assert JWT not in record.detail and record.detail.startswith("Authorization:")
    assert record.code == "needs_reconnect"
    assert record.auth_code == REDACTED
    assert record.link_id == "p1|r1"


def test_records_that_bypass_the_factory_are_filtered_by_root_handlers() -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        configure_logging()  # the handler exists now, so it gets the filter
        record = logging.makeLogRecord({"name": "elsewhere", "levelno": logging.INFO, "levelname": "INFO",
                                        "msg": "forwarded %s", "args": (f"Bearer {SBX_ACCESS}",)})
        handler.handle(record)
    finally:
        root.removeHandler(handler)
    assert SBX_ACCESS not in buffer.getvalue()
    assert "forwarded Bearer" in buffer.getvalue()


def test_error_codes_and_ordinary_words_survive() -> None:
    text = ("link p1|r1 state=needs_reconnect code=needs_reconnect code=429 code=AADSTS70008 "
            "status code=sync_state_expired Authorization header missing, token count 3")
    assert redact(text) == text


@given(st.lists(st.sampled_from([
    "code=", "token=", "clientState", ": ", "'", '"', "Bearer ", "?", "&", "sig=", "/api/ics/", "abc", "XYZ123",
    "eyJhbGciOi", ".", "sbx-at.", "0123456789abcdef", " ", "Timum-Signature: ", "v1=", "[redacted]", "https://h/",
]), max_size=12).map("".join))
def test_redaction_is_idempotent(text: str) -> None:
    once = redact(text)
    assert redact(once) == once


def test_short_configured_values_are_not_treated_as_secrets() -> None:
    register_secret("abc", "")
    assert redact("abc is a word") == "abc is a word"


# --- correlation ids ----------------------------------------------------------------------------

def test_bound_ids_are_on_the_record_and_in_the_message(caplog: pytest.LogCaptureFixture,
                                                       stream: io.StringIO) -> None:
    configure_logging()
    caplog.set_level(logging.INFO)
    with bind(link="p1|r1", subscription="sub-9", booking="b-7", invocation="inv-3"):
        LOG.info("synced %d events", 4)
    LOG.info("outside")
    inside, outside = caplog.records
    assert inside.correlation == {"link": "p1|r1", "subscription": "sub-9", "booking": "b-7", "invocation": "inv-3"}
    assert inside.getMessage() == "synced 4 events [link=p1|r1 subscription=sub-9 booking=b-7 invocation=inv-3]"
    assert "synced 4 events [link=p1|r1 subscription=sub-9 booking=b-7 invocation=inv-3]" in stream.getvalue()
    assert outside.correlation == {}
    assert outside.getMessage() == "outside"


def test_binds_nest_and_restore() -> None:
    with bind(link="p1|r1"):
        with bind(invocation="inv-1", booking=None):
            assert current_ids() == {"link": "p1|r1", "invocation": "inv-1"}
        assert current_ids() == {"link": "p1|r1"}
    assert current_ids() == {}


async def test_ids_follow_tasks_and_do_not_leak_between_them(caplog: pytest.LogCaptureFixture) -> None:
    configure_logging()
    caplog.set_level(logging.INFO)

    async def work(link: str, started: asyncio.Event, go: asyncio.Event) -> None:
        with bind(link=link):
            started.set()
            await go.wait()
            LOG.info("done")

    go = asyncio.Event()
    a_started, b_started = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(work("p1|a", a_started, go)), asyncio.create_task(work("p1|b", b_started, go))]
    await a_started.wait()
    await b_started.wait()
    go.set()
    await asyncio.gather(*tasks)
    assert sorted(r.correlation["link"] for r in caplog.records) == ["p1|a", "p1|b"]


def test_correlation_values_are_redacted_too(caplog: pytest.LogCaptureFixture) -> None:
    configure_logging()
    caplog.set_level(logging.INFO)
    with bind(invocation=f"Bearer {SBX_ACCESS}"):
        LOG.info("x")
    assert SBX_ACCESS not in caplog.text


# --- configure_logging --------------------------------------------------------------------------

def test_configure_is_idempotent(caplog: pytest.LogCaptureFixture) -> None:
    root = logging.getLogger()
    configure_logging(configured_settings())
    factory = logging.getLogRecordFactory()
    configure_logging(configured_settings())
    configure_logging()
    assert logging.getLogRecordFactory() is factory
    for handler in root.handlers:
        assert sum(isinstance(f, RedactionFilter) for f in handler.filters) == 1
    caplog.set_level(logging.INFO)
    with bind(link="p1|r1"):
        LOG.info("once")
    assert caplog.messages == ["once [link=p1|r1]"]


def test_configure_covers_handlers_added_later_and_unconfigure_restores() -> None:
    before = logging.getLogRecordFactory()
    configure_logging()
    late = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(late)
    try:
        configure_logging()
        assert any(isinstance(f, RedactionFilter) for f in late.filters)
        unconfigure_logging()
        assert logging.getLogRecordFactory() is before
        assert not any(isinstance(f, RedactionFilter) for f in late.filters)
    finally:
        logging.getLogger().removeHandler(late)


def test_importing_the_modules_loads_the_standard_library_only() -> None:
    # Every cold start imports them: no telemetry SDK, nor any other installed package, may come along.
    code = ("import sys; before = set(sys.modules); "
            "import shared.observability.correlation, shared.observability.redaction, shared.observability.metrics; "
            "print(sorted(m for m in set(sys.modules) - before "
            "if m.partition('.')[0] not in sys.stdlib_module_names and not m.startswith('shared.observability')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['shared']"


# --- metrics ------------------------------------------------------------------------------------

def exported(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    data = reader.get_metrics_data()
    points: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:
                        value = (point.count, point.sum)
                    points.setdefault(metric.name, []).append((dict(point.attributes or {}), value))
    return points


def test_metric_names_are_the_documented_set() -> None:
    assert {"notification_to_block_lag_ms", "booking_to_event_lag_ms", "graph_requests", "graph_throttled",
            "queue_depth", "poison_messages", "links_needing_reconnect"} <= set(METRICS)
    assert all(spec.name == name for name, spec in METRICS.items())


def test_without_application_insights_metrics_are_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    configure_logging(environ={})
    caplog.set_level(logging.INFO, logger="timum.metrics")
    metrics.increment("graph_requests", operation="delta", status=200)
    metrics.record("notification_to_block_lag_ms", 1834.5, link="p1|r1")
    metrics.record("queue_depth", 12, queue="sync")
    assert not metrics.exporting
    lines = [json.loads(m.removeprefix("metric ")) for m in caplog.messages]
    assert lines == [
        {"name": "graph_requests", "value": 1, "unit": "1", "dims": {"operation": "delta", "status": "200"}},
        {"name": "notification_to_block_lag_ms", "value": 1834.5, "unit": "ms", "dims": {"link": "p1|r1"}},
        {"name": "queue_depth", "value": 12, "unit": "1", "dims": {"queue": "sync"}},
    ]


def test_metric_dimensions_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="timum.metrics")
    metrics.increment("consent_errors", detail=f"code={ENTRA_CODE}")
    assert ENTRA_CODE not in caplog.text


def test_unknown_metric_or_wrong_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.increment("graph_request")
    with pytest.raises(ValueError, match="is a gauge"):
        metrics.increment("queue_depth")


def test_metrics_go_to_opentelemetry_when_a_meter_is_set() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        metrics.use_meter(provider.get_meter("test"))
        assert metrics.exporting
        metrics.increment("graph_throttled", operation="patch")
        metrics.increment("graph_throttled", 2, operation="patch")
        metrics.record("booking_to_event_lag_ms", 250.0, source="webhook")
        metrics.record("booking_to_event_lag_ms", 750.0, source="webhook")
        metrics.record("links_needing_reconnect", 3)
        metrics.record("links_needing_reconnect", 2)
        points = exported(reader)
    finally:
        provider.shutdown()
    assert points["graph_throttled"] == [({"operation": "patch"}, 3)]
    assert points["booking_to_event_lag_ms"] == [({"source": "webhook"}, (2, 1000.0))]
    assert points["links_needing_reconnect"] == [({}, 2)]


def test_a_failing_exporter_falls_back_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def create_counter(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("exporter down")

    caplog.set_level(logging.INFO)
    metrics.use_meter(Broken())
    metrics.increment("poison_messages", queue="sync-poison")
    assert any(m.startswith("metric ") and "poison_messages" in m for m in caplog.messages)


def test_configure_sets_up_azure_monitor_only_with_a_connection_string() -> None:
    calls: list[tuple[str, str]] = []
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])

    def setup(connection_string: str, auth: str) -> Any:
        calls.append((connection_string, auth))
        return provider.get_meter("test")

    try:
        metrics.configure({}, background=False, setup=setup)
        assert calls == [] and not metrics.exporting
        env = {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000",
               "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Authorization=AAD;ClientId=abc"}
        metrics.configure(env, background=False, setup=setup)
        metrics.configure(env, background=False, setup=setup)  # once per process
        assert calls == [(env["APPLICATIONINSIGHTS_CONNECTION_STRING"], "Authorization=AAD;ClientId=abc")]
        assert metrics.exporting
    finally:
        provider.shutdown()


def test_background_setup_does_not_block_and_switches_when_ready(caplog: pytest.LogCaptureFixture) -> None:
    release, switched = threading.Event(), threading.Event()
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    original = metrics.use_meter

    def setup(connection_string: str, auth: str) -> Any:
        release.wait(timeout=30)
        return provider.get_meter("test")

    def use_meter(meter: Any) -> None:
        original(meter)
        switched.set()

    caplog.set_level(logging.INFO, logger="timum.metrics")
    try:
        metrics.use_meter = use_meter  # type: ignore[method-assign]
        metrics.configure({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"}, setup=setup)
        metrics.increment("graph_requests")  # exporter not ready: a log line, no waiting
        assert caplog.messages and not metrics.exporting
        release.set()
        assert switched.wait(timeout=30)
        assert metrics.exporting
    finally:
        del metrics.use_meter
        release.set()
        provider.shutdown()


def test_setup_failure_keeps_metrics_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    def setup(connection_string: str, auth: str) -> Any:
        raise ModuleNotFoundError("azure.monitor.opentelemetry")

    caplog.set_level(logging.WARNING)
    metrics.configure({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"}, background=False,
                      setup=setup)
    assert not metrics.exporting
    assert "Azure Monitor exporter could not start (ModuleNotFoundError)" in caplog.text


def test_azure_monitor_is_configured_for_metrics_only_with_entra_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    seen: dict[str, Any] = {}
    fake = types.ModuleType("azure.monitor.opentelemetry")
    fake.configure_azure_monitor = lambda **kwargs: seen.update(kwargs)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "azure.monitor.opentelemetry", fake)
    meter = _setup_azure_monitor("InstrumentationKey=x;IngestionEndpoint=https://x/",
                                               "Authorization=AAD;ClientId=00000000-1111-2222-3333-444444444444")
    assert meter is not None
    assert seen["connection_string"] == "InstrumentationKey=x;IngestionEndpoint=https://x/"
    assert seen["disable_logging"] is True and seen["disable_tracing"] is True
    assert type(seen["credential"]).__name__ == "ManagedIdentityCredential"


def test_monitor_credential_is_none_without_entra_auth() -> None:
    assert _monitor_credential("") is None
    assert _monitor_credential("Authorization=Key") is None


# --- forged lines and HTTP client loggers -------------------------------------------------------

FORGERY = "denied\r\n2026-01-01 00:00:00 INFO shared.connect admin signed in\u2028\x1b[2Jx\x85y"


def _lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().split("\n") if line]


def test_control_characters_in_a_logged_value_cannot_start_a_line(caplog: pytest.LogCaptureFixture,
                                                                     stream: io.StringIO) -> None:
    configure_logging()
    caplog.set_level(logging.INFO)
    LOG.info("sign-in refused: error=%s", FORGERY)
    LOG.warning(FORGERY)
    assert len(_lines(stream)) == 2
    for captured in (stream.getvalue(), caplog.text):
        assert "\r" not in captured and "\u2028" not in captured and "\x1b" not in captured and "\x85" not in captured
        assert "denied\\r\\n2026-01-01" in captured and "\\u2028\\x1b[2Jx\\x85y" in captured
    assert all(line.startswith(("INFO tests.observability", "WARNING tests.observability"))
               for line in _lines(stream))


def test_extra_fields_and_bound_ids_are_escaped_too(caplog: pytest.LogCaptureFixture, stream: io.StringIO) -> None:
    configure_logging()
    caplog.set_level(logging.INFO)
    with bind(link="p1|r1\nFAKE line"):
        LOG.info("sync done", extra={"detail": "a\nb"})
    record = caplog.records[-1]
    assert getattr(record, "detail") == "a\\nb"  # noqa: B009 - extra fields are not declared attributes
    assert record.getMessage().endswith("[link=p1|r1\\nFAKE line]")
    assert len(_lines(stream)) == 1


def test_tracebacks_keep_their_lines_but_not_forged_ones(caplog: pytest.LogCaptureFixture,
                                                        stream: io.StringIO) -> None:
    configure_logging()
    caplog.set_level(logging.INFO)
    try:
        try:
            raise KeyError("first\nCRITICAL forged")
        except KeyError as exc:
            raise ValueError("bad value\r\nERROR also forged") from exc
    except ValueError:
        LOG.exception("request failed")
    text = stream.getvalue()
    assert "ValueError: bad value\\r\\nERROR also forged" in text
    assert "first\\nCRITICAL forged" in text
    assert "\nCRITICAL" not in text and "\nERROR" not in text
    assert "Traceback (most recent call last):\n" in text and "\n  File " in text
    assert "The above exception was the direct cause of the following exception:" in text


# A published-calendar URL of a shape no redaction pattern knows: only the logger levels keep it out.
ICS_URL = "https://calendar.example.net/export/abc/Zx81kq0Secret/reachcalendar"


def _fetch_with_httpx(url: str) -> None:
    import httpx

    with httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200, text="BEGIN:VCALENDAR"))) as c:
        c.get(url, headers={"Authorization": "Bearer " + SBX_ACCESS})


def test_http_client_loggers_are_held_at_warning(caplog: pytest.LogCaptureFixture, stream: io.StringIO) -> None:
    configure_logging()
    caplog.set_level(logging.DEBUG)
    for name in QUIET_LOGGERS:
        assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING
    _fetch_with_httpx(ICS_URL + "?token=q")
    for captured in (stream.getvalue(), caplog.text):
        assert "Zx81kq0Secret" not in captured and "reachcalendar" not in captured and "HTTP Request" not in captured


def test_http_client_records_are_dropped_even_if_a_level_is_lowered_later(caplog: pytest.LogCaptureFixture,
                                                                         stream: io.StringIO) -> None:
    configure_logging()
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "azure.core.pipeline.policies.http_logging_policy"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        _fetch_with_httpx(ICS_URL)
        logging.getLogger("httpcore.http11").debug("send_request_headers.started request=%s", ICS_URL)
        logging.getLogger("azure.core.pipeline.policies.http_logging_policy").info("Request URL: '%s'", ICS_URL)
        logging.getLogger("httpx").warning("client trouble")
    finally:
        for name in ("httpx", "httpcore", "azure.core.pipeline.policies.http_logging_policy"):
            logging.getLogger(name).setLevel(logging.NOTSET)
    for captured in (stream.getvalue(), caplog.text):
        assert "Zx81kq0Secret" not in captured and "reachcalendar" not in captured
        assert "client trouble" in captured  # warnings and errors still come through


def test_unconfigure_gives_the_http_client_loggers_their_levels_back() -> None:
    logging.getLogger("httpcore").setLevel(logging.ERROR)  # already quieter: left alone
    try:
        configure_logging()
        assert logging.getLogger("httpx").level == logging.WARNING
        assert logging.getLogger("httpcore").level == logging.ERROR
        unconfigure_logging()
        assert logging.getLogger("httpx").level == logging.NOTSET
        assert logging.getLogger("httpcore").level == logging.ERROR
    finally:
        logging.getLogger("httpcore").setLevel(logging.NOTSET)
