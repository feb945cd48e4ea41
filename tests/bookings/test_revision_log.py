"""The revision log on a resource's ``~meta`` row: which booking each recent revision stands for,
and a retried delivery that raises a revision its crashed predecessor did not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.bookings.store import BookingRepository, Revision
from shared.domain import Booking, BookingStatus, Customer
from shared.storage import StoragePort
from shared.storage.memory import MemoryStorage


def booking(version: int = 1, *, hours: int = 0) -> Booking:
    start = datetime(2026, 11, 24, 8, 0, tzinfo=UTC) + timedelta(hours=hours)
    return Booking(id="bk-1", provider_id="p", resource_id="r", version=version, start=start,
                   end=start + timedelta(minutes=45), status=BookingStatus.CONFIRMED, service_name="Massage",
                   customer=Customer("Jörg Müller"))


def test_revision_log_names_every_revision_or_nothing() -> None:
    rev = Revision(5, ((3, "a", 1), (4, "b", 2), (5, "a", 2)))
    assert rev.changed_since(5) == []
    assert rev.changed_since(3) == ["b", "a"]
    assert rev.changed_since(2) == ["a", "b"]
    assert rev.changed_since(1) is None   # revision 2 is not in the log
    assert rev.changed_since(6) is None   # ahead of the store: the table was reset
    assert rev.logged("a", 2) and not rev.logged("b", 1)


async def test_a_retry_after_a_crash_before_the_revision_rose_raises_it() -> None:
    storage = MemoryStorage()

    class Crashing(BookingRepository):
        async def _bump(self, pk: str, booking_id: str, version: int) -> None:
            raise ConnectionError("process died")

    store = BookingRepository(storage)
    await store.upsert_if_newer(booking(1))
    with pytest.raises(ConnectionError):
        await Crashing(storage).upsert_if_newer(booking(2, hours=1))
    assert await store.revision("p", "r") == 1
    assert not await store.upsert_if_newer(booking(2, hours=1))  # the host's retry
    log = await store.revision_log("p", "r")
    assert log.number == 2 and log.changed_since(1) == ["bk-1"]
    assert not await store.upsert_if_newer(booking(2, hours=1))  # a plain duplicate: nothing
    assert await store.revision("p", "r") == 2


async def test_each_revision_is_logged_with_its_booking(storage: StoragePort) -> None:
    store = BookingRepository(storage)
    for version in (1, 2, 3):
        assert await store.upsert_if_newer(booking(version, hours=version))
    log = await store.revision_log("p", "r")
    assert log.number == 3 and log.changes == ((1, "bk-1", 1), (2, "bk-1", 2), (3, "bk-1", 3))
    assert log.changed_since(0) == ["bk-1"]


async def test_the_log_stays_bounded() -> None:
    from shared.bookings import store as store_mod

    store = BookingRepository(MemoryStorage())
    for version in range(1, store_mod.LOG_ENTRIES + 20):
        await store.upsert_if_newer(booking(version))
    log = await store.revision_log("p", "r")
    assert len(log.changes) == store_mod.LOG_ENTRIES and log.changes[-1][0] == log.number
    assert log.changed_since(log.number - 10) == ["bk-1"] and log.changed_since(1) is None
