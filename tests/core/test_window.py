"""The sync window: yesterday 00:00 UTC to +365 days, sliding once a day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.core.window import SyncWindow, sync_window, window_changed


def test_default_window() -> None:
    w = sync_window(datetime(2026, 11, 23, 17, 45, tzinfo=UTC))
    assert w.start == datetime(2026, 11, 22, tzinfo=UTC)
    assert w.end == datetime(2026, 11, 23, tzinfo=UTC) + timedelta(days=365)


def test_window_uses_the_utc_date() -> None:
    # 00:30 in Berlin on the 24th is still the 23rd in UTC.
    berlin = timezone(timedelta(hours=1))
    w = sync_window(datetime(2026, 11, 24, 0, 30, tzinfo=berlin), past_days=0, future_days=10)
    assert w.start == datetime(2026, 11, 23, tzinfo=UTC)
    assert w.end == datetime(2026, 12, 3, tzinfo=UTC)


def test_window_slides_daily_only() -> None:
    morning = sync_window(datetime(2026, 11, 23, 0, 0, tzinfo=UTC))
    evening = sync_window(datetime(2026, 11, 23, 23, 59, 59, tzinfo=UTC))
    tomorrow = sync_window(datetime(2026, 11, 24, 0, 0, tzinfo=UTC))
    assert morning == evening
    assert not window_changed(morning.start, morning.end, evening)
    assert window_changed(morning.start, morning.end, tomorrow)
    assert tomorrow.start - morning.start == timedelta(days=1)


def test_no_stored_window_means_changed() -> None:
    w = sync_window(datetime(2026, 11, 23, tzinfo=UTC))
    assert window_changed(None, None, w)
    assert window_changed(w.start, None, w)


def test_overlap_and_history() -> None:
    w = SyncWindow(datetime(2026, 11, 22, tzinfo=UTC), datetime(2026, 12, 22, tzinfo=UTC))
    assert w.overlaps(datetime(2026, 11, 21, 23, tzinfo=UTC), datetime(2026, 11, 22, 1, tzinfo=UTC))
    assert not w.overlaps(datetime(2026, 11, 21, 23, tzinfo=UTC), datetime(2026, 11, 22, tzinfo=UTC))
    assert not w.overlaps(datetime(2026, 12, 22, tzinfo=UTC), datetime(2026, 12, 22, 1, tzinfo=UTC))
    assert w.ended_before(datetime(2026, 11, 22, tzinfo=UTC))
    assert not w.ended_before(datetime(2026, 11, 22, 0, 1, tzinfo=UTC))


@pytest.mark.parametrize("kwargs", [{"past_days": -1}, {"future_days": 0}])
def test_bad_settings_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        sync_window(datetime(2026, 11, 23, tzinfo=UTC), **kwargs)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError):
        sync_window(datetime(2026, 11, 23))
    with pytest.raises(ValueError):
        SyncWindow(datetime(2026, 11, 23), datetime(2026, 11, 24))
    with pytest.raises(ValueError):
        SyncWindow(datetime(2026, 11, 24, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC))
