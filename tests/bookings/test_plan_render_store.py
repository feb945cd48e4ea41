"""Booking planner (pure), event rendering, and the booking store."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from shared.bookings.plan import CreateEvent, DeleteEvent, MapState, Nothing, UpdateEvent, plan_booking
from shared.bookings.render import draft_hash, render_event
from shared.bookings.store import BookingRepository
from shared.domain import (
    Booking,
    BookingStatus,
    CancelPolicy,
    Customer,
    CustomerPrivacy,
    ProviderSettings,
    booking_transaction_id,
)
from shared.storage import StoragePort

START = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def booking(version: int = 1, status: BookingStatus = BookingStatus.CONFIRMED, minutes: int = 0) -> Booking:
    return Booking(id="bk-1", provider_id="p", resource_id="r", version=version,
                   start=START + timedelta(minutes=minutes), end=START + timedelta(minutes=30 + minutes),
                   status=status, service_name="Manuelle Therapie", customer=Customer("Jörg Müller", "j@x.de", "01"),
                   url="https://timum.example/b/bk-1")


def plan(b: Booking, row: MapState | None, policy: CancelPolicy = CancelPolicy.DELETE) -> object:
    settings = ProviderSettings("p", cancel_policy=policy)
    draft = render_event(b, settings)
    return plan_booking(b, row, draft, draft_hash(draft), policy, render_event(b, settings, cancelled_mark=True))


def test_first_version_creates_with_booking_transaction_id() -> None:
    action = plan(booking(), None)
    assert isinstance(action, CreateEvent)
    assert action.transaction_id == booking_transaction_id("bk-1", "r")
    # Per resource: the same booking at another resource's calendar (same mailbox) is another event.
    assert action.transaction_id != booking_transaction_id("bk-1", "other")


def test_stale_or_replayed_versions_do_nothing() -> None:
    row = MapState("ev-1", 5, "h")
    assert plan(booking(5), row) == Nothing("stale")
    assert plan(booking(4, minutes=60), row) == Nothing("stale")


def test_unchanged_content_does_nothing_changed_content_updates() -> None:
    b1 = booking(1)
    d1 = render_event(b1, ProviderSettings("p"))
    row = MapState("ev-1", 1, draft_hash(d1))
    assert plan(booking(2), row) == Nothing("unchanged")
    moved = plan(booking(2, minutes=60), row)
    assert isinstance(moved, UpdateEvent) and moved.event_id == "ev-1"
    assert moved.draft.start == START + timedelta(minutes=60)


def test_cancel_deletes_or_marks() -> None:
    row = MapState("ev-1", 1, "h")
    assert plan(booking(2, BookingStatus.CANCELLED), row) == DeleteEvent("ev-1")
    marked = plan(booking(2, BookingStatus.CANCELLED), row, CancelPolicy.MARK)
    assert isinstance(marked, UpdateEvent)
    assert marked.draft.subject.startswith("Abgesagt:") and marked.draft.show_as == "free"
    assert plan(booking(2, BookingStatus.CANCELLED), None) == Nothing("cancelled without event")


def test_reconfirmed_after_cancel_recreates_with_fresh_transaction_id() -> None:
    action = plan(booking(3), MapState("", 2, ""))
    assert isinstance(action, CreateEvent)
    assert action.transaction_id != booking_transaction_id("bk-1", "r")


@pytest.mark.parametrize(("privacy", "has_name", "has_mail"), [
    (CustomerPrivacy.NONE, False, False), (CustomerPrivacy.NAME, True, False), (CustomerPrivacy.CONTACT, True, True)])
def test_render_respects_customer_privacy(privacy: CustomerPrivacy, has_name: bool, has_mail: bool) -> None:
    draft = render_event(booking(), ProviderSettings("p", customer_privacy=privacy))
    assert ("Jörg Müller" in draft.subject) is has_name
    assert ("j@x.de" in draft.body_html) is has_mail
    assert draft.booking_id == "bk-1" and draft.categories == ("timum",) and draft.show_as == "busy"


def test_render_escapes_and_localises() -> None:
    hostile = replace(booking(), service_name="<script>x</script>", url='https://t/"><img>')
    de = render_event(hostile, ProviderSettings("p"))
    assert "<script>" not in de.body_html and "&lt;script&gt;" in de.body_html
    assert '"><img>' not in de.body_html
    assert "In timum öffnen" in de.body_html and "09:00" in de.body_html  # Berlin time
    en = render_event(booking(), ProviderSettings("p", locale="en"))
    assert "Open in timum" in en.body_html


async def test_store_keeps_newest_and_counts_moves(storage: StoragePort) -> None:
    store = BookingRepository(storage)
    assert await store.upsert_if_newer(booking(1))
    assert not await store.upsert_if_newer(booking(1))
    assert await store.upsert_if_newer(booking(2))            # same times: sequence stays
    assert await store.upsert_if_newer(booking(4, minutes=30))
    assert not await store.upsert_if_newer(booking(3, minutes=90))  # older version arrives late
    stored = await store.get("p", "r", "bk-1")
    assert stored is not None and stored.booking.version == 4 and stored.sequence == 1
    assert stored.booking.start == START + timedelta(minutes=30)
    assert await store.revision("p", "r") == 3
    assert [s.booking.id for s in await store.list_for_resource("p", "r")] == ["bk-1"]
