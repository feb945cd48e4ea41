"""Contract over the app's own metadata: what the host will serve, and that importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

# name → (trigger type, route or queue or schedule, methods, auth level)
EXPECTED_HTTP = {
    "health": ("health", {"GET"}, "anonymous"),
    "graph_notifications": ("graph/notifications", {"POST"}, "anonymous"),
    "graph_lifecycle": ("graph/lifecycle", {"POST"}, "anonymous"),
    "timum_bookings": ("timum/bookings", {"POST"}, "anonymous"),
    "ics_feed": ("ics/{token}", {"GET", "HEAD"}, "anonymous"),
    "connect_start": ("connect", {"GET"}, "anonymous"),
    "oauth_callback": ("oauth/callback", {"GET", "POST"}, "anonymous"),
    "oauth_admin_callback": ("oauth/admin-callback", {"GET"}, "anonymous"),
    "connect_calendars": ("connect/calendars", {"GET", "POST"}, "anonymous"),
    "connect_organisation": ("connect/organisation", {"GET", "POST"}, "anonymous"),
    "connect_organisation_status": ("connect/organisation/status", {"GET"}, "anonymous"),
    # timum's management API: function key plus a provider-scoped signature
    "provider_links": ("providers/{provider}/links", {"GET"}, "function"),
    "provider_link_delete": ("providers/{provider}/links/{resource}", {"DELETE"}, "function"),
    "provider_link_resync": ("providers/{provider}/links/{resource}/resync", {"POST"}, "function"),
    "provider_settings": ("providers/{provider}/settings", {"GET", "PUT"}, "function"),
    "provider_ics_feed": ("providers/{provider}/links/{resource}/ics-feed", {"POST", "DELETE"}, "function"),
    "provider_ics_import": ("providers/{provider}/links/{resource}/ics-import", {"POST"}, "function"),
    "resource_conflicts": ("providers/{provider}/resources/{resource}/conflicts", {"POST"}, "function"),
}
EXPECTED_QUEUES = {
    "sync_worker": "link-sync",
    "sync_poison": "link-sync-poison",
    "link_admin_worker": "link-admin",
    "link_admin_poison": "link-admin-poison",
    "booking_worker": "booking-changes",
    "booking_poison": "booking-changes-poison",
}
EXPECTED_TIMERS = {
    "renew_subscriptions": "0 */30 * * * *",
    "poll_links": "0 * * * * *",
    "purge_expired_sign_in_state": "0 17 * * * *",
    "watch_links": "0 */5 * * * *",
}


@pytest.fixture(scope="module")
def functions() -> dict[str, dict[str, Any]]:
    import function_app
    from devtools.devhost.metadata import index_functions

    # get_functions() may be called only once per app object, and an in-process local host (the
    # end-to-end tests start one) may already have called it: read the shared, cached index.
    out: dict[str, dict[str, Any]] = {}
    for fn in index_functions(function_app.app):
        bindings = fn.get_bindings_dict()["bindings"]
        trigger = next(b for b in bindings if str(b["type"]).endswith("Trigger"))
        out[fn.get_function_name()] = trigger
    return out


def test_http_routes_methods_and_auth(functions: dict[str, dict[str, Any]]) -> None:
    for name, (route, methods, auth) in EXPECTED_HTTP.items():
        trigger = functions[name]
        assert trigger["type"] == "httpTrigger"
        assert trigger["route"] == route
        assert {str(getattr(m, "value", m)) for m in trigger["methods"]} == methods
        assert str(getattr(trigger["authLevel"], "value", trigger["authLevel"])) == auth


def test_queue_triggers(functions: dict[str, dict[str, Any]]) -> None:
    for name, queue in EXPECTED_QUEUES.items():
        trigger = functions[name]
        assert trigger["type"] == "queueTrigger" and trigger["queueName"] == queue
        assert trigger["connection"] == "AzureWebJobsStorage"
        assert len(queue) <= 63  # Azure queue names; base names stay ≤ 56 so "-poison" fits
    for queue in {q for q in EXPECTED_QUEUES.values() if not q.endswith("-poison")}:
        assert len(queue) <= 56


def test_timers(functions: dict[str, dict[str, Any]]) -> None:
    for name, schedule in EXPECTED_TIMERS.items():
        assert functions[name]["type"] == "timerTrigger"
        assert functions[name]["schedule"] == schedule
        assert len(schedule.split()) == 6  # NCRONTAB with seconds


def test_every_declared_function_is_listed(functions: dict[str, dict[str, Any]]) -> None:
    assert set(functions) == set(EXPECTED_HTTP) | set(EXPECTED_QUEUES) | set(EXPECTED_TIMERS)


def test_import_does_not_load_heavy_sdks() -> None:
    code = ("import sys, function_app; heavy = [m for m in ('msgraph', 'msal', 'httpx', 'jinja2', "
            "'azure.data.tables', 'azure.storage.queue', 'icalendar') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
