"""The link watch: one ``stale`` and one ``fresh`` notice per switch, reconnect reminders on the
provider's days — each exactly once, under retries, failed POSTs and two sweeps at once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.connect import status
from shared.domain import Link, LinkHealth, LinkKey, LinkMode, ProviderSettings, SyncMode
from shared.errors import TransientError
from shared.repos.links import LinkRepository, ProviderSettingsRepository
from shared.safety.freshness import link_is_stale, synced_through
from shared.safety.watch import FRESH, STALE, Freshness, due_reminder, next_freshness, sweep
from tests.support.connect_world import MemoryWorld

T0 = datetime(2031, 4, 7, 6, 0, tzinfo=UTC)
KEY = LinkKey("prov-1", "res-1")


def link_of(**changes: Any) -> Link:
    values: dict[str, Any] = {
        "provider_id": "prov-1", "resource_id": "res-1", "mode": LinkMode.DELEGATED, "tenant_id": "tid-1",
        "mailbox_id": "anna", "calendar_id": "cal-room1", "calendar_name": "Behandlungsraum 1",
        "calendar_owner": "anna@praxis.example", "account_id": "anna-oid.tid-1", "sync_mode": SyncMode.POLLING,
        "last_sync_at": T0, "created_at": T0 - timedelta(days=3)}
    values.update(changes)
    return Link(**values)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def notices(w: MemoryWorld, kind: str | None = None) -> list[dict[str, Any]]:
    return [e["data"] for e in w.timum.status_webhooks if "kind" in e["data"]
            and (kind is None or e["data"]["kind"] == kind)]


# --- pure ------------------------------------------------------------------------------------------

def test_freshness_switches_only_on_a_change() -> None:
    assert next_freshness(Freshness(), stale=False) is None
    assert next_freshness(Freshness(), stale=True) == Freshness(STALE, 1)
    assert next_freshness(Freshness(STALE, 1), stale=True) is None
    assert next_freshness(Freshness(STALE, 1), stale=False) == Freshness(FRESH, 2)


def test_due_reminder_is_the_latest_due_day() -> None:
    days = [1, 3, 7]
    assert due_reminder(T0, T0 + timedelta(hours=23), days) is None
    assert due_reminder(T0, T0 + timedelta(days=1), days) == 1
    assert due_reminder(T0, T0 + timedelta(days=5), days) == 3
    assert due_reminder(T0, T0 + timedelta(days=30), days) == 7
    assert due_reminder(T0, T0 + timedelta(days=30), []) is None


def test_synced_through_per_mode() -> None:
    now = T0 + timedelta(hours=2)
    live = T0 + timedelta(days=1)
    push = link_of(sync_mode=SyncMode.PUSH, subscription_expires_at=live)
    assert synced_through(push, now, round_running=False) == now
    assert synced_through(push, now, round_running=True) == T0
    assert synced_through(link_of(sync_mode=SyncMode.PUSH, subscription_expires_at=T0), now,
                          round_running=False) == T0, "a lapsed subscription hears nothing"
    assert synced_through(link_of(sync_mode=SyncMode.PUSH, subscription_expires_at=live,
                                  health=LinkHealth.NEEDS_RECONNECT), now, round_running=False) == T0
    assert synced_through(link_of(), now, round_running=False) == T0
    assert synced_through(link_of(mode=LinkMode.ICS), now, round_running=False) == T0
    assert synced_through(link_of(last_sync_at=None), now, round_running=False) is None


def test_staleness() -> None:
    hour = timedelta(hours=1)
    assert link_is_stale(link_of(), T0 + 2 * hour, hour)
    assert not link_is_stale(link_of(), T0 + hour / 2, hour)
    assert not link_is_stale(link_of(), T0 + 2 * hour, timedelta(0)), "0 switches the check off"
    new = link_of(last_sync_at=None, created_at=T0)
    assert not link_is_stale(new, T0 + hour / 2, hour), "a new link gets time for its first sync"
    assert link_is_stale(new, T0 + 2 * hour, hour)


# --- the sweep -------------------------------------------------------------------------------------

async def test_one_stale_then_one_fresh(world: MemoryWorld) -> None:
    clock = Clock(T0 + timedelta(minutes=30))
    world.services.clock = clock
    link = await LinkRepository(world.storage).save(link_of())
    assert (await sweep(world.services)).stale == 0
    clock.now = T0 + timedelta(minutes=61)
    assert (await sweep(world.services)).stale == 1
    assert (await sweep(world.services)).stale == 0
    [stale] = notices(world)
    assert stale["kind"] == "stale" and stale["syncedThrough"] == "2031-04-07T06:00:00Z"
    assert stale["staleAfterMinutes"] == 60 and stale["status"] == "ok"

    link.last_sync_at = clock.now
    await LinkRepository(world.storage).save(link)
    outcome = await sweep(world.services)
    assert (outcome.fresh, outcome.stale) == (1, 0)
    await sweep(world.services)
    assert [n["kind"] for n in notices(world)] == ["stale", "fresh"]
    ids = [e["id"] for e in world.timum.status_webhooks if "kind" in e["data"]]
    assert len(set(ids)) == 2


async def test_the_threshold_is_the_providers(world: MemoryWorld) -> None:
    world.services.clock = Clock(T0 + timedelta(hours=5))
    await LinkRepository(world.storage).save(link_of())
    await ProviderSettingsRepository(world.storage).save(ProviderSettings("prov-1", stale_after_minutes=0))
    assert (await sweep(world.services)).stale == 0
    await ProviderSettingsRepository(world.storage).save(ProviderSettings("prov-1", stale_after_minutes=600))
    assert (await sweep(world.services)).stale == 0
    await ProviderSettingsRepository(world.storage).save(ProviderSettings("prov-1", stale_after_minutes=240))
    assert (await sweep(world.services)).stale == 1


async def test_a_failed_post_is_sent_by_the_next_sweep_once(world: MemoryWorld) -> None:
    world.services.clock = Clock(T0 + timedelta(hours=2))
    await LinkRepository(world.storage).save(link_of())
    world.timum.fail_next(TransientError("timum answered 503"), op="send_link_status")
    outcome = await sweep(world.services)
    assert outcome.failed == ["prov-1|res-1"] and notices(world) == []
    assert (await sweep(world.services)).stale == 1
    await sweep(world.services)
    assert [n["kind"] for n in notices(world)] == ["stale"]


async def test_two_sweeps_at_once_send_one_notice(world: MemoryWorld) -> None:
    world.services.clock = Clock(T0 + timedelta(hours=2))
    await LinkRepository(world.storage).save(link_of())
    await asyncio.gather(sweep(world.services), sweep(world.services), sweep(world.services))
    assert [n["kind"] for n in notices(world)] == ["stale"]


async def test_reminders_on_the_providers_days_until_reconnected(world: MemoryWorld) -> None:
    clock = Clock(T0)
    world.services.clock = clock
    await ProviderSettingsRepository(world.storage).save(ProviderSettings("prov-1", stale_after_minutes=0))
    link = await LinkRepository(world.storage).save(link_of(sync_mode=SyncMode.PUSH,
                                                           reconnect_url="https://timum.example/providers/prov-1"))
    link = await status.set_health(world.services, link, LinkHealth.NEEDS_RECONNECT, "needs_reconnect")
    sent: list[int] = []
    for hours in (1, 12, 24, 25, 47, 72, 100, 24 * 7, 24 * 7 + 5, 24 * 20):
        clock.now = T0 + timedelta(hours=hours)
        await sweep(world.services)
    sent = [n["reminderDay"] for n in notices(world, "reminder")]
    assert sent == [1, 3, 7]
    reminder = notices(world, "reminder")[0]
    assert reminder["status"] == "needs_reconnect" and reminder["reason"]
    assert reminder["reconnectUrl"] == "https://timum.example/providers/prov-1"

    # Reconnected: no more reminders; a new failure starts a new episode from day 1.
    link = await status.set_health(world.services, await LinkRepository(world.storage).require(KEY), LinkHealth.OK)
    clock.now += timedelta(days=2)
    await sweep(world.services)
    assert len(notices(world, "reminder")) == 3
    await status.set_health(world.services, await LinkRepository(world.storage).require(KEY),
                            LinkHealth.NEEDS_RECONNECT, "needs_reconnect")
    clock.now += timedelta(days=1)
    await sweep(world.services)
    assert [n["reminderDay"] for n in notices(world, "reminder")] == [1, 3, 7, 1]


async def test_after_a_gap_only_the_latest_reminder(world: MemoryWorld) -> None:
    clock = Clock(T0)
    world.services.clock = clock
    link = await LinkRepository(world.storage).save(link_of(sync_mode=SyncMode.PUSH))
    await status.set_health(world.services, link, LinkHealth.NEEDS_RECONNECT, "needs_reconnect")
    clock.now = T0 + timedelta(days=8)
    await sweep(world.services)
    await sweep(world.services)
    assert [n["reminderDay"] for n in notices(world, "reminder")] == [7]


async def test_unlinking_forgets_the_notices(world: MemoryWorld) -> None:
    world.services.clock = Clock(T0 + timedelta(hours=2))
    link = await LinkRepository(world.storage).save(link_of())
    await sweep(world.services)
    assert world.storage.table(status.LINK_NOTICES).rows
    await status.forget(world.services, link)
    assert world.storage.table(status.LINK_NOTICES).rows == {}


@pytest.mark.parametrize(("body", "field"), [({"staleAfterMinutes": -1}, "staleAfterMinutes"),
                                             ({"staleAfterMinutes": 1.5}, "staleAfterMinutes"),
                                             ({"staleAfterMinutes": True}, "staleAfterMinutes"),
                                             ({"reconnectReminderDays": [0]}, "reconnectReminderDays"),
                                             ({"reconnectReminderDays": "1,3"}, "reconnectReminderDays"),
                                             ({"reconnectReminderDays": list(range(1, 12))}, "reconnectReminderDays")])
def test_bad_watch_settings_are_refused(body: dict[str, Any], field: str) -> None:
    from shared.errors import BadRequest
    from shared.safety.rules import parse_rules

    with pytest.raises(BadRequest) as refused:
        parse_rules(body, ProviderSettings("p"))
    assert refused.value.field == field


def test_watch_settings_round_trip() -> None:
    from shared.safety.rules import parse_rules, rules_json

    changed = parse_rules({"staleAfterMinutes": 30, "reconnectReminderDays": [7, 2, 2]}, ProviderSettings("p"))
    got = rules_json(changed)
    assert (got["staleAfterMinutes"], got["reconnectReminderDays"]) == (30, [2, 7])
    assert rules_json(parse_rules({"reconnectReminderDays": []}, changed))["reconnectReminderDays"] == []
