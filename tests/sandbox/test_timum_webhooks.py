"""The sandbox timum's booking webhooks: signed as documented, retried only where real timum retries,
versions rising with every change, and duplicates / reordering on demand for the service's tests."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from devtools.sandbox.timum.harness import RunningTimum, WebhookRecorder, serve_timum
from shared.domain import Customer
from shared.errors import InvalidSignature
from shared.signing import SIGNATURE_HEADER, verify_webhook

BERLIN = ZoneInfo("Europe/Berlin")
PROVIDER, RESOURCE = "prov-test", "res-test"
START = datetime(2026, 12, 3, 9, 0, tzinfo=BERLIN)


@pytest.fixture(scope="module")
def recorder() -> WebhookRecorder:
    return WebhookRecorder()


@pytest.fixture(scope="module")
def server(recorder: WebhookRecorder) -> Iterator[RunningTimum]:
    with serve_timum(extra_routes=recorder.routes(), webhook_retry_delays=(0.05, 0.05, 0.05),
                     webhook_timeout=0.5) as running:
        yield running


@pytest.fixture
def timum(server: RunningTimum, recorder: WebhookRecorder) -> Iterator[RunningTimum]:
    server.state.reset()
    recorder.reset()
    server.state.add_provider(PROVIDER, "Physiopraxis Sonnenschein")
    server.state.create_resource(PROVIDER, "Dr. Anna Weber", resource_id=RESOURCE)
    yield server
    server.state.reset()


def book(timum: RunningTimum, start: datetime = START) -> str:
    return timum.state.make_booking(PROVIDER, RESOURCE, start, duration=timedelta(minutes=30),
                                    service_name="Krankengymnastik 30 min",
                                    customer=Customer("Jürgen Schäfer", "juergen@example.de", "+49 30 1234567")).id


def test_booking_webhook_is_signed_and_complete(timum: RunningTimum, recorder: WebhookRecorder) -> None:
    booking_id = book(timum)
    [delivery] = timum.state.wait_for_deliveries(1)
    assert delivery.outcome == "delivered" and delivery.status == 202
    [request] = recorder.received
    secrets = timum.config.timum_webhook_secrets
    signed_at = verify_webhook(request.body, request.headers[SIGNATURE_HEADER.lower()], secrets, now=time.time())
    assert abs(signed_at - time.time()) < 300
    event = json.loads(request.body)
    assert request.headers["timum-delivery"] == event["id"] == delivery.delivery_id
    assert event["type"] == "booking.created"
    booking = event["data"]["booking"]
    assert booking["id"] == booking_id and booking["version"] == 1 and booking["status"] == "confirmed"
    assert booking["start"] == "2026-12-03T09:00:00+01:00" and booking["end"] == "2026-12-03T09:30:00+01:00"
    assert booking["timeZone"] == "Europe/Berlin"
    assert booking["customer"] == {"name": "Jürgen Schäfer", "email": "juergen@example.de", "phone": "+49 30 1234567"}
    assert booking["url"].endswith(f"/timum/providers/{PROVIDER}/bookings/{booking_id}")


def test_versions_increase_with_every_change(timum: RunningTimum, recorder: WebhookRecorder) -> None:
    booking_id = book(timum)
    timum.state.reschedule_booking(booking_id, START + timedelta(days=1))
    timum.state.update_booking(booking_id, notes="Bitte Handtuch mitbringen")
    timum.state.cancel_booking(booking_id)
    timum.state.wait_for_deliveries(4)
    events = [json.loads(r.body) for r in recorder.received]
    assert [e["type"] for e in events] == ["booking.created", "booking.updated", "booking.updated",
                                           "booking.cancelled"]
    assert [e["data"]["booking"]["version"] for e in events] == [1, 2, 3, 4]
    assert events[1]["data"]["booking"]["start"] == "2026-12-04T09:00:00+01:00"
    assert events[1]["data"]["booking"]["end"] == "2026-12-04T09:30:00+01:00"
    assert events[3]["data"]["booking"]["status"] == "cancelled"
    assert len({e["id"] for e in events}) == 4


def test_retries_on_5xx_with_the_same_delivery(timum: RunningTimum, recorder: WebhookRecorder) -> None:
    recorder.reset([500, 503])
    book(timum)
    [delivery] = timum.state.wait_for_deliveries(1)
    assert [a.status for a in delivery.attempts] == [500, 503, 202]
    assert delivery.outcome == "delivered"
    first, second, third = recorder.received
    assert first.body == second.body == third.body
    assert first.headers["timum-delivery"] == third.headers["timum-delivery"]
    for request in recorder.received:
        verify_webhook(request.body, request.headers["timum-signature"], timum.config.timum_webhook_secrets,
                       now=time.time())


def test_retries_after_a_timeout(timum: RunningTimum, recorder: WebhookRecorder) -> None:
    recorder.reset(["hang"])
    book(timum)
    [delivery] = timum.state.wait_for_deliveries(1)
    assert [(a.status, a.error) for a in delivery.attempts] == [(None, "timeout"), (202, "")]


def test_gives_up_after_the_last_retry(timum: RunningTimum, recorder: WebhookRecorder) -> None:
    recorder.reset([500, 500, 500, 500])
    book(timum)
    [delivery] = timum.state.wait_for_deliveries(1)
    assert delivery.outcome == "failed" and len(delivery.attempts) == 4


@pytest.mark.parametrize("status", [400, 401, 404, 429])
def test_does_not_retry_other_answers(timum: RunningTimum, recorder: WebhookRecorder, status: int) -> None:
    recorder.reset([status])
    book(timum)
    [delivery] = timum.state.wait_for_deliveries(1)
    assert delivery.outcome == "failed" and [a.status for a in delivery.attempts] == [status]


def test_a_waiting_retry_does_not_hold_up_later_changes(timum: RunningTimum, recorder: WebhookRecorder) -> None:
    recorder.reset([500])
    # Both changes are queued before the first attempt, so the order does not depend on thread timing.
    timum.state.pause_deliveries()
    booking_id = book(timum)
    timum.state.reschedule_booking(booking_id, START + timedelta(hours=2))
    timum.state.resume_deliveries()
    timum.state.wait_for_deliveries(2)
    versions = [json.loads(r.body)["data"]["booking"]["version"] for r in recorder.received]
    assert versions == [1, 2, 1]


def test_resend_repeats_the_delivery(timum: RunningTimum, recorder: WebhookRecorder) -> None:
    book(timum)
    [original] = timum.state.wait_for_deliveries(1)
    duplicate = timum.state.resend_delivery(original.seq)
    assert duplicate.duplicate_of == original.seq
    timum.state.wait_for_deliveries(2)
    first, second = recorder.received
    assert first.body == second.body
    assert first.headers["timum-delivery"] == second.headers["timum-delivery"]


def test_paused_deliveries_can_be_released_out_of_order(timum: RunningTimum, recorder: WebhookRecorder) -> None:
    timum.state.pause_deliveries()
    booking_id = book(timum)
    timum.state.reschedule_booking(booking_id, START + timedelta(hours=1))
    timum.state.cancel_booking(booking_id)
    assert all(d.held for d in timum.state.list_deliveries())
    assert recorder.received == []
    released = timum.state.resume_deliveries(reverse=True)
    assert len(released) == 3
    timum.state.wait_for_deliveries(3)
    versions = [json.loads(r.body)["data"]["booking"]["version"] for r in recorder.received]
    assert versions == [3, 2, 1]


@pytest.mark.parametrize("mode", ["wrong_secret", "stale", "missing"])
def test_signature_faults_for_testing_the_service(timum: RunningTimum, recorder: WebhookRecorder, mode: str) -> None:
    timum.state.set_signature_mode(mode)
    book(timum)
    timum.state.wait_for_deliveries(1)
    [request] = recorder.received
    with pytest.raises(InvalidSignature):
        verify_webhook(request.body, request.headers.get("timum-signature"), timum.config.timum_webhook_secrets,
                       now=time.time())


def test_rotation_signs_with_every_secret() -> None:
    from devtools.sandbox.config import SandboxConfig

    recorder = WebhookRecorder()
    config = SandboxConfig(service_base_url="http://127.0.0.1:9/unused",
                           timum_webhook_secrets=("new-secret", "old-secret"))
    with serve_timum(config, extra_routes=recorder.routes(), webhook_retry_delays=()) as running:
        running.state.webhook_url = running.base_url + recorder.path
        running.state.add_provider(PROVIDER, "Praxis")
        running.state.create_resource(PROVIDER, "Raum", resource_id=RESOURCE)
        running.state.set_signature_mode("all_secrets")
        running.state.make_booking(PROVIDER, RESOURCE, START)
        running.state.wait_for_deliveries(1)
    [request] = recorder.received
    header = request.headers["timum-signature"]
    assert header.count("v1=") == 2
    for secret in ("new-secret", "old-secret"):
        verify_webhook(request.body, header, [secret], now=time.time())


def test_bookings_in_blocked_time_are_refused(timum: RunningTimum) -> None:
    from devtools.sandbox.timum.state import ConflictError

    timum.state.put_slot(PROVIDER, RESOURCE, "ol-1", start=START, end=START + timedelta(hours=1))
    with pytest.raises(ConflictError):
        book(timum, START + timedelta(minutes=30))
    assert timum.state.list_bookings(PROVIDER) == []
    assert timum.state.list_deliveries() == []


def test_control_api_drives_bookings_and_lists_deliveries(timum: RunningTimum, recorder: WebhookRecorder) -> None:
    with httpx.Client(base_url=timum.base_url) as client:
        made = client.post("/_sandbox/timum/bookings", json={
            "providerId": PROVIDER, "resourceId": RESOURCE, "start": "2026-12-05T10:00:00+01:00",
            "durationMinutes": 45, "serviceName": "Manuelle Therapie", "customer": {"name": "Sabine Müller"}})
        assert made.status_code == 201
        booking_id = made.json()["id"]
        moved = client.post(f"/_sandbox/timum/bookings/{booking_id}/reschedule",
                            json={"start": "2026-12-05T11:00:00+01:00"})
        assert moved.json()["version"] == 2 and moved.json()["end"] == "2026-12-05T11:45:00+01:00"
        timum.state.wait_for_deliveries(2)
        listed = client.get("/_sandbox/timum/deliveries").json()["items"]
        assert [(d["type"], d["status"], d["outcome"]) for d in listed] == [
            ("booking.created", 202, "delivered"), ("booking.updated", 202, "delivered")]
        again = client.post(f"/_sandbox/timum/deliveries/{listed[0]['seq']}/resend")
        assert again.status_code == 201 and again.json()["duplicateOf"] == listed[0]["seq"]
        unknown = client.post("/_sandbox/timum/bookings/bk-nope/cancel")
        assert unknown.status_code == 404
        clash = client.post("/_sandbox/timum/bookings", json={
            "providerId": PROVIDER, "resourceId": RESOURCE, "start": "2026-12-05T11:15:00+01:00"})
        assert clash.status_code == 409
