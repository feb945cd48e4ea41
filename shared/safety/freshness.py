"""Freshness of a link: up to which instant Outlook's changes are known to be in timum.

Pure: the caller passes the link, the clock and whether a round is running now.

* **push** (a live subscription): Graph tells us about every change, so when no round is
  running, everything up to *now* is known; while a round runs (a notification is being worked
  off) only what the last completed round saw. Graph's own delivery delay (seconds, rarely
  minutes) is not visible to us; it is what ``stale`` thresholds allow for.
* **polling**: the last completed poll.
* **ICS import**: the last fetch.

A link that needs a reconnect or is in error, or whose subscription lapsed, falls back to the
last completed round: nothing newer reaches us until it is fixed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.domain import Link, LinkHealth, LinkMode, SyncMode


def synced_through(link: Link, now: datetime, *, round_running: bool) -> datetime | None:
    """The instant up to which the link's Outlook changes are in timum (None: never synced)."""
    last = link.last_sync_at
    if last is None:
        return None
    if link.mode is LinkMode.ICS or link.sync_mode is not SyncMode.PUSH:
        return last
    if link.health is not LinkHealth.OK or round_running:
        return last
    if link.subscription_expires_at is None or link.subscription_expires_at <= now:
        return last
    return max(last, now)


def age(synced: datetime | None, now: datetime) -> timedelta | None:
    return None if synced is None else max(timedelta(0), now - synced)


def is_stale(synced: datetime | None, now: datetime, threshold: timedelta) -> bool:
    """Whether ``synced`` lags ``now`` by more than ``threshold`` (a zero threshold: never)."""
    if threshold <= timedelta(0) or synced is None:
        return False
    return now - synced > threshold


def link_is_stale(link: Link, now: datetime, threshold: timedelta) -> bool:
    """A link that never completed a sync counts from its creation: a new link is not stale at
    once, but one whose first sync never happens becomes so."""
    through = synced_through(link, now, round_running=False)
    return is_stale(through if through is not None else link.created_at, now, threshold)
