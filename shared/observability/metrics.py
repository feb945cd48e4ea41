"""Metrics of the function app: the names operators alert on and where their values go.

``metrics.record(name, value, **dims)`` / ``metrics.increment(name, **dims)`` for the names in
``METRICS`` (the alerts in ``infra/`` query exactly these). With
``APPLICATIONINSIGHTS_CONNECTION_STRING`` set they go out as OpenTelemetry metrics through
``azure-monitor-opentelemetry`` (imported lazily, in a background thread, never at module import);
otherwise — and until the exporter is ready — each becomes one ``metric {json}`` log line.
Dimensions are redacted like log messages (``shared.observability.redaction``).

Import cost stays at the standard library: this module is imported on every cold start.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

from shared.observability.redaction import redact

__all__ = ["METRICS", "MetricSpec", "Metrics", "metrics"]

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
            raise ValueError(f"unknown metric {name!r}; add it to shared.observability.metrics.METRICS first")
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
