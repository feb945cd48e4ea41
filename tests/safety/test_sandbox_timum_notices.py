"""The sandbox timum as timum would act on the service's notices: a ``stale`` resource shows a
banner and pauses online booking until ``fresh``; conflicts are listed until resolved; a
block-only calendar's status does not replace the resource's own link status."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from devtools.sandbox.timum.harness import RunningTimum, WebhookRecorder, serve_timum
from devtools.sandbox.timum.seed import ANNA_WEBER, SONNENSCHEIN
from shared.signing import sign_webhook

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture(scope="module")
def timum() -> Iterator[RunningTimum]:
    recorder = WebhookRecorder()
    with serve_timum(extra_routes=recorder.routes(), webhook_retry_delays=()) as running:
        running.sandbox.seed_demo()
        yield running


def notify(timum: RunningTimum, client: httpx.Client, event_id: str, **data: object) -> None:
    event = {"id": event_id, "type": "link.status_changed", "occurredAt": "2026-12-01T08:00:00Z",
             "data": {"providerId": SONNENSCHEIN, "resourceId": ANNA_WEBER, "status": "ok", "mode": "delegated",
                      "reason": "", "calendarName": "Praxis", **data}}
    body = json.dumps(event).encode()
    headers = {"Timum-Signature": sign_webhook(body, [timum.config.timum_webhook_secrets[0]],
                                               timestamp=int(time.time())),
               "Timum-Delivery": event_id, "Content-Type": "application/json"}
    assert client.post("/timum/v1/webhooks/link-status", content=body, headers=headers).status_code == 202


def book(client: httpx.Client) -> httpx.Response:
    day = (datetime.now(BERLIN) + timedelta(days=40)).date().isoformat()
    return client.post(f"/timum/providers/{SONNENSCHEIN}/bookings",
                       data={"resourceId": ANNA_WEBER, "date": day, "time": "07:15", "duration": "30",
                             "customerName": "Erika", "lang": "de"})


def test_stale_pauses_online_booking_until_fresh(timum: RunningTimum) -> None:
    with httpx.Client(base_url=timum.base_url) as client:
        notify(timum, client, "n-stale-1", kind="stale", staleAfterMinutes=60)
        page = client.get(f"/timum/providers/{SONNENSCHEIN}").text
        assert f'data-stale="{ANNA_WEBER}"' in page and "Die Online-Buchung ist pausiert" in page
        refused = book(client)
        assert refused.status_code == 409 and "Online-Buchung für diese Ressource ist pausiert" in refused.text
        notify(timum, client, "n-fresh-2", kind="fresh", staleAfterMinutes=60)
        assert f'data-stale="{ANNA_WEBER}"' not in client.get(f"/timum/providers/{SONNENSCHEIN}").text
        assert book(client).status_code == 303


def test_conflicts_are_listed_until_resolved(timum: RunningTimum) -> None:
    with httpx.Client(base_url=timum.base_url) as client:
        notify(timum, client, "n-c-1", kind="conflict", conflictId="cf-1", bookingId="bk_42",
               start="2026-12-03T09:00:00Z", end="2026-12-03T10:00:00Z")
        page = client.get(f"/timum/providers/{SONNENSCHEIN}").text
        assert f'data-conflicts="{ANNA_WEBER}"' in page and "Buchung bk_42" in page
        notify(timum, client, "n-r-1", kind="resolved", conflictId="cf-1", bookingId="bk_42",
               start="2026-12-03T09:00:00Z", end="2026-12-03T10:00:00Z")
        assert f'data-conflicts="{ANNA_WEBER}"' not in client.get(f"/timum/providers/{SONNENSCHEIN}").text


def test_conflict_notices_arriving_out_of_order_keep_the_newest_opening(timum: RunningTimum) -> None:
    slot = {"bookingId": "bk_43", "start": "2026-12-04T09:00:00Z", "end": "2026-12-04T10:00:00Z"}
    with httpx.Client(base_url=timum.base_url) as client:
        # The overlap opened, went and came back; the first opening's "resolved" arrives last.
        notify(timum, client, "n-c2-1", kind="conflict", conflictId="cf-2", generation=1, **slot)
        notify(timum, client, "n-c2-2", kind="conflict", conflictId="cf-2", generation=2, **slot)
        notify(timum, client, "n-r2-1", kind="resolved", conflictId="cf-2", generation=1, **slot)
        assert "Buchung bk_43" in client.get(f"/timum/providers/{SONNENSCHEIN}").text
        # A "resolved" that overtook its own "conflict": the late conflict does not open it again.
        other = {**slot, "bookingId": "bk_44"}
        notify(timum, client, "n-r3-1", kind="resolved", conflictId="cf-3", generation=1, **other)
        notify(timum, client, "n-c3-1", kind="conflict", conflictId="cf-3", generation=1, **other)
        assert "Buchung bk_44" not in client.get(f"/timum/providers/{SONNENSCHEIN}").text


def test_a_block_only_calendars_status_is_not_the_resources(timum: RunningTimum) -> None:
    with httpx.Client(base_url=timum.base_url) as client:
        before = timum.state.resource(SONNENSCHEIN, ANNA_WEBER).link
        notify(timum, client, "n-b-1", status="needs_reconnect", calendarRole="block_only",
               linkId=f"{ANNA_WEBER}~block~abc")
        assert timum.state.resource(SONNENSCHEIN, ANNA_WEBER).link == before
