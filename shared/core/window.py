"""The sync window: which part of the calendar is mirrored into timum.

It starts at 00:00 UTC ``past_days`` before today and ends ``future_days`` after today's
midnight, so it changes once a day. A delta link is bound to the window it was made for
(Graph encodes start/end inside its tokens): a new window means a fresh, full round with
reconciliation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class SyncWindow:
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError("window end must be after its start")

    def overlaps(self, start: datetime, end: datetime) -> bool:
        """Whether [start, end) shares time with the window — the calendarView rule."""
        return end > self.start and start < self.end

    def ended_before(self, end: datetime) -> bool:
        """Whether something ending at ``end`` is history: it lies wholly before the window."""
        return end <= self.start


def sync_window(now: datetime, *, past_days: int = 1, future_days: int = 365) -> SyncWindow:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if past_days < 0 or future_days < 1:
        raise ValueError("past_days must be >= 0 and future_days >= 1")
    utc = now.astimezone(UTC)
    midnight = datetime(utc.year, utc.month, utc.day, tzinfo=UTC)
    return SyncWindow(midnight - timedelta(days=past_days), midnight + timedelta(days=future_days))


def window_changed(stored_start: datetime | None, stored_end: datetime | None, window: SyncWindow) -> bool:
    """True when the stored delta link was made for another window (or none): start a full round."""
    if stored_start is None or stored_end is None:
        return True
    return stored_start != window.start or stored_end != window.end
