"""Booking webhook: signature, validation and enqueueing (nothing enqueued for rejects)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.bookings.payload import booking_from_json
from shared.bookings.webhook import accept_booking_webhook
from shared.config import Settings
from shared.domain import BookingStatus
from shared.errors import BadRequest, InvalidSignature
from shared.messages import BOOKING_QUEUE
from shared.signing import sign_webhook
from shared.storage.memory import MemoryStorage
from tests.support.settings import make_settings

NOW = 1_790_000_000


def settings(secrets: str = "old-secret,new-secret") -> Settings:
    return make_settings(TIMUM_WEBHOOK_SECRETS=secrets)


def payload(**booking: Any) -> dict[str, Any]:
    b = {"id": "bk-1", "providerId": "prov-1", "resourceId": "res-1", "version": 3,
         "start": "2026-12-01T09:00:00+01:00", "end": "2026-12-01T09:30:00+01:00", "timeZone": "Europe/Berlin",
         "status": "confirmed", "serviceName": "Krankengymnastik 30 min",
         "customer": {"name": "Jörg Müller", "email": "j@example.org", "phone": "+49 30 1234"},
         "notes": "", "url": "https://timum.example/b/bk-1"}
    b.update(booking)
    return {"id": "dlv-1", "type": "booking.created", "occurredAt": "2026-11-23T10:00:00Z", "data": {"booking": b}}


def signed(body: bytes, secret: str = "new-secret", ts: int = NOW) -> str:
    return sign_webhook(body, [secret], timestamp=ts)


async def test_valid_webhook_is_enqueued_with_the_booking() -> None:
    storage = MemoryStorage()
    body = json.dumps(payload()).encode()
    event = await accept_booking_webhook(storage, settings(), body, signed(body, "old-secret"), now=NOW + 10)
    assert event.booking.version == 3 and event.booking.customer.name == "Jörg Müller"
    [raw] = storage.queue(BOOKING_QUEUE).drain()
    msg = json.loads(raw)
    assert msg["delivery"] == "dlv-1"
    restored = booking_from_json(msg["booking"])
    assert restored == event.booking


async def test_cancelled_type_forces_cancelled_status() -> None:
    storage = MemoryStorage()
    data = payload()
    data["type"] = "booking.cancelled"
    body = json.dumps(data).encode()
    event = await accept_booking_webhook(storage, settings(), body, signed(body), now=NOW)
    assert event.booking.status is BookingStatus.CANCELLED


@pytest.mark.parametrize("header", [None, "", "t=abc,v1=00", f"t={NOW}", f"t={NOW},v1=zz",
                                    sign_webhook(b"{}", ["new-secret"], timestamp=NOW)])
async def test_bad_signatures_rejected_and_nothing_enqueued(header: str | None) -> None:
    storage = MemoryStorage()
    body = json.dumps(payload()).encode()
    with pytest.raises(InvalidSignature):
        await accept_booking_webhook(storage, settings(), body, header, now=NOW)
    assert storage.queue(BOOKING_QUEUE).drain() == []


async def test_stale_and_future_timestamps_rejected() -> None:
    storage = MemoryStorage()
    body = json.dumps(payload()).encode()
    for ts in (NOW - 301, NOW + 301):
        with pytest.raises(InvalidSignature) as err:
            await accept_booking_webhook(storage, settings(), body, signed(body, ts=ts), now=NOW)
        assert err.value.code == "stale_signature"
    assert storage.queue(BOOKING_QUEUE).drain() == []


async def test_unknown_secret_rejected() -> None:
    body = json.dumps(payload()).encode()
    with pytest.raises(InvalidSignature):
        await accept_booking_webhook(MemoryStorage(), settings(), body, signed(body, "retired"), now=NOW)


@pytest.mark.parametrize(("mutation", "field"), [
    ({"version": -1}, "data.booking.version"),
    ({"version": "3"}, "data.booking.version"),
    ({"start": "tomorrow"}, "data.booking.start"),
    ({"start": "2026-12-01T09:00:00"}, "data.booking.start"),
    ({"end": "2026-12-01T08:00:00+01:00"}, "data.booking.end"),
    ({"timeZone": "Mars/Olympus"}, "data.booking.timeZone"),
    ({"status": "maybe"}, "data.booking.status"),
    ({"id": "a/b"}, "data.booking.id"),
    ({"id": ""}, "data.booking.id"),
    ({"resourceId": 7}, "data.booking.resourceId"),
    ({"url": "javascript:alert(1)"}, "data.booking.url"),
    ({"customer": "Jörg"}, "data.booking.customer"),
    ({"serviceName": "x" * 201}, "data.booking.serviceName"),
])
async def test_malformed_payload_names_the_field(mutation: dict[str, Any], field: str) -> None:
    storage = MemoryStorage()
    body = json.dumps(payload(**mutation)).encode()
    with pytest.raises(BadRequest) as err:
        await accept_booking_webhook(storage, settings(), body, signed(body), now=NOW)
    assert err.value.field == field
    assert storage.queue(BOOKING_QUEUE).drain() == []


@pytest.mark.parametrize("body", [b"", b"[]", b"{", json.dumps({"id": "d", "type": "booking.moved"}).encode(),
                                  json.dumps({"id": "d", "type": "booking.created", "data": {}}).encode()])
async def test_structurally_broken_bodies_are_400(body: bytes) -> None:
    storage = MemoryStorage()
    with pytest.raises(BadRequest):
        await accept_booking_webhook(storage, settings(), body, signed(body), now=NOW)
    assert storage.queue(BOOKING_QUEUE).drain() == []
