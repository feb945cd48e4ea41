"""A resource's rendered feed events, kept per booking revision (table ``icssnapshots``).

Reading and rendering every booking row of a large resource is slow (``bench/`` measures it). A snapshot holds
what the feed is made of — each confirmed booking's VEVENT text with its times, and the newest
booking stamp (Last-Modified) — so that:

* a booking change costs re-reading and re-rendering the bookings the revision log names
  (``Revision.changed_since``), not the whole partition;
* a fresh instance reads one row (PK provider|resource, RK ``head``): the snapshot as
  zlib-compressed JSON split into binary properties of at most 64 KiB (Table Storage's limit per
  property), brought up to date the same way.

Correctness never depends on a stored snapshot being current: it carries the revision it
reflects, and the log names every booking changed since. Readers read the revision *before* any
booking row, so a row newer than that revision can only make a snapshot early, never stale.
Whatever the log cannot cover (too far behind, a writer without a log, other settings, a new
day) leads to a full read. The full read once per day also drops bookings that ended before the
window and bounds any drift a fault could leave.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from typing import Any

from shared.bookings.store import StoredBooking
from shared.domain import LinkKey, ProviderSettings
from shared.errors import Conflict, NotFound, StorageError
from shared.ics.feed import FOOTER, body_of, in_feed, render_event, render_header
from shared.storage.base import StoragePort, encode_key

log = logging.getLogger(__name__)

SNAPSHOTS = "icssnapshots"
HEAD = "head"
#: Row of the last body served (its ETag and when that body first appeared): Last-Modified.
SERVED = "served"
# Raise when render_event's output changes: stored snapshots of the old format are then rebuilt.
FORMAT = 2
PART = 64 * 1024
# Azurite counts binary values base64-encoded against the 1 MiB entity limit (10 parts of 64 KiB
# were accepted, 12 refused); 8 leave room. A larger snapshot (~15,000 events) is kept in
# process only, and a fresh instance reads the partition.
MAX_PARTS = 8
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def shape_of(settings: ProviderSettings) -> str:
    """What rendered events depend on besides the booking (see ``render_event``)."""
    return f"{FORMAT}|{settings.customer_privacy.value}|{settings.locale}"


def _micros(value: datetime) -> int:
    return (value - _EPOCH) // _US


@dataclass(frozen=True)
class Event:
    start: int  # µs since the epoch: exact, and orders like the datetimes do
    end: int
    text: str


@dataclass(frozen=True)
class FeedSnapshot:
    revision: int
    shape: str
    built: date                    # the day of the last full read
    last_modified: datetime | None  # newest booking stamp of all rows read, cancelled ones too
    events: Mapping[str, Event] = field(default_factory=dict)

    @cached_property
    def _ordered(self) -> list[tuple[int, str, Event]]:
        return sorted((e.start, booking_id, e) for booking_id, e in self.events.items())

    def render(self, calendar_name: str, window_start: datetime, window_end: datetime) -> bytes:
        """The same bytes as ``render_feed`` over the bookings this snapshot reflects."""
        lo, hi = _micros(window_start), _micros(window_end)
        chosen = [e.text for start, _, e in self._ordered if e.end > lo and start < hi]
        return "".join([render_header(calendar_name), *body_of(chosen), FOOTER]).encode()

    def patched(self, revision: int, changed: Iterable[tuple[str, StoredBooking | None]],
                settings: ProviderSettings) -> FeedSnapshot:
        """This snapshot with the given bookings' current rows (None: the row is gone) applied."""
        events = dict(self.events)
        last = self.last_modified
        for booking_id, stored in changed:
            events.pop(booking_id, None)
            if stored is None:
                continue
            if in_feed(stored):
                b = stored.booking
                events[booking_id] = Event(_micros(b.start), _micros(b.end), render_event(stored, settings))
            stamp = stored.booking.updated_at
            if stamp is not None and (last is None or stamp > last):
                last = stamp
        return FeedSnapshot(revision, self.shape, self.built, last, events)


def build(revision: int, stored: Iterable[StoredBooking], settings: ProviderSettings, *, day: date,
          window_start: datetime) -> FeedSnapshot:
    """A snapshot from every booking row (a full read). Bookings that ended before the window
    can never enter a later one (the window only moves forward), so they are left out."""
    events: dict[str, Event] = {}
    last: datetime | None = None
    for s in stored:
        b = s.booking
        if in_feed(s) and b.end > window_start:
            events[b.id] = Event(_micros(b.start), _micros(b.end), render_event(s, settings))
        if b.updated_at is not None and (last is None or b.updated_at > last):
            last = b.updated_at
    return FeedSnapshot(revision, shape_of(settings), day, last, events)


def encode(snapshot: FeedSnapshot) -> list[bytes]:
    doc = {"revision": snapshot.revision, "shape": snapshot.shape, "built": snapshot.built.isoformat(),
           "last_modified": snapshot.last_modified.astimezone(UTC).isoformat() if snapshot.last_modified else None,
           "events": [[i, e.start, e.end, e.text] for i, e in snapshot.events.items()]}
    # Level 1: a fifth of the time of the default level for a few percent more bytes.
    packed = zlib.compress(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode(), 1)
    return [packed[i:i + PART] for i in range(0, len(packed), PART)]


def decode(parts: list[bytes]) -> FeedSnapshot | None:
    try:
        doc = json.loads(zlib.decompress(b"".join(parts)))
        last = doc["last_modified"]
        return FeedSnapshot(int(doc["revision"]), str(doc["shape"]), date.fromisoformat(doc["built"]),
                            datetime.fromisoformat(last) if last else None,
                            {str(i): Event(int(s), int(e), str(t)) for i, s, e, t in doc["events"]})
    except (zlib.error, ValueError, KeyError, TypeError):
        return None  # unreadable: rebuilt like a missing one


class SnapshotRepository:
    """Stored snapshots, one row per resource. Written unconditionally: any snapshot is correct
    for the revision it names, so a racing writer's older one only costs its readers a longer
    catch-up, never a wrong feed."""

    def __init__(self, storage: StoragePort) -> None:
        self._table = storage.table(SNAPSHOTS)

    async def load(self, link: LinkKey) -> FeedSnapshot | None:
        row = await self._table.get(encode_key(str(link)), HEAD)
        if row is None:
            return None
        parts = [row.get(f"p{i:02d}") for i in range(int(row.get("parts", 0)))]
        if not all(isinstance(p, bytes) for p in parts):
            return None
        return decode([p for p in parts if isinstance(p, bytes)])

    async def save(self, link: LinkKey, snapshot: FeedSnapshot) -> bool:
        """Store the snapshot if it fits one row; False if it does not or storage refused it
        (the feed is served all the same; a fresh instance then reads the partition)."""
        parts = encode(snapshot)
        if len(parts) > MAX_PARTS:
            log.info("feed snapshot of %d KiB too large to store", sum(map(len, parts)) // 1024)
            return False
        row: dict[str, Any] = {"PartitionKey": encode_key(str(link)), "RowKey": HEAD,
                               "revision": snapshot.revision, "parts": len(parts)}
        row.update({f"p{i:02d}": p for i, p in enumerate(parts)})
        try:
            await self._table.upsert(row)
        except StorageError as exc:
            log.warning("storing a feed snapshot failed: %s", exc)
            return False
        return True

    async def body_modified(self, link: LinkKey, etag: str, now: datetime) -> datetime:
        """When the body with ``etag`` first appeared: Last-Modified changes whenever the body
        does, whatever changed it (a booking, a privacy setting, a booking leaving the window or
        the resource), so date-validating clients never keep a stale feed. Shared by all
        instances through one row; a racing writer's value is adopted."""
        pk = encode_key(str(link))
        now = now.astimezone(UTC).replace(microsecond=0)
        modified = now
        for _ in range(3):
            try:
                row = await self._table.get(pk, SERVED)
                if row is not None and row.get("body_etag") == etag:
                    return datetime.fromisoformat(str(row["modified"]))
                previous = datetime.fromisoformat(str(row["modified"])) if row is not None else None
                # Strictly later than the previous body, at the one-second precision of HTTP dates.
                modified = now if previous is None or now > previous else previous + timedelta(seconds=1)
                entity = {"PartitionKey": pk, "RowKey": SERVED, "body_etag": etag, "modified": modified.isoformat()}
                if row is None:
                    await self._table.insert(entity)
                else:
                    await self._table.update(entity, etag=row.etag)
                return modified
            except (Conflict, NotFound):
                continue
            except (StorageError, KeyError, ValueError) as exc:
                log.warning("feed body stamp unavailable: %s", type(exc).__name__)
                return modified
        return modified
