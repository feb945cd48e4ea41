"""What the engine relies on in the Graph twin beyond the shared port contract
(``tests/contract/test_graph_port.py``): series expansion, delta semantics, failures, notifications."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from shared.adapters.graph_memory import MemoryGraph, MemoryGraphProvider, Recurrence
from shared.domain import DeltaPage, EventDraft, Link, LinkMode
from shared.errors import BadRequest, NeedsReconnect, RemoteGone, SyncStateExpired, Throttled, TransientError

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 11, 23, 8, tzinfo=UTC)
START, END = datetime(2026, 11, 22, tzinfo=UTC), datetime(2027, 11, 23, tzinfo=UTC)


@pytest.fixture
def graph() -> MemoryGraph:
    g = MemoryGraph(seed=11, clock=lambda: NOW)
    g.add_mailbox("anna", time_zone="Europe/Berlin")
    g.sign_in("anna")
    return g


async def full_round(g: MemoryGraph, link: str = "", page_size: int = 100) -> tuple[list[DeltaPage], str]:
    cal = g.default_calendar("anna")
    pages = [await g.delta("anna", cal, start=START, end=END, link=link, page_size=page_size)]
    while pages[-1].next_link:
        pages.append(await g.delta("anna", cal, start=START, end=END, link=pages[-1].next_link, page_size=page_size))
    return pages, pages[-1].delta_link


def test_weekly_rule_on_several_days_with_an_end_date() -> None:
    rule = Recurrence("weekly", interval=2, days_of_week=(0, 3), until=date(2026, 12, 24))
    assert list(rule.local_days(date(2026, 11, 26))) == [  # a Thursday
        date(2026, 11, 26), date(2026, 12, 7), date(2026, 12, 10), date(2026, 12, 21), date(2026, 12, 24)]
    assert list(Recurrence("daily", interval=3, count=3).local_days(date(2026, 1, 30))) == [
        date(2026, 1, 30), date(2026, 2, 2), date(2026, 2, 5)]
    with pytest.raises(ValueError):
        Recurrence("monthly")


async def test_series_keep_their_wall_clock_time_across_dst(graph: MemoryGraph) -> None:
    cal = graph.default_calendar("anna")
    start = datetime(2027, 3, 22, 9, tzinfo=BERLIN)  # CET; the next week is CEST
    series = graph.put_event("anna", cal, start=start, end=start + timedelta(hours=1),
                             recurrence=Recurrence("weekly", count=2))
    items = [i for i in graph.calendar_view("anna", cal, START, END) if i.series_master_id == series]
    assert [i.start.astimezone(BERLIN).hour for i in items] == [9, 9]
    assert [i.start.astimezone(UTC).hour for i in items] == [8, 7]


async def test_delta_reports_exceptions_deleted_occurrences_and_moves_out_of_the_window(graph: MemoryGraph) -> None:
    cal = graph.default_calendar("anna")
    t = datetime(2026, 11, 24, 9, tzinfo=UTC)
    series = graph.put_event("anna", cal, start=t, end=t + timedelta(hours=1), recurrence=Recurrence("daily", count=3))
    single = graph.put_event("anna", cal, start=t, end=t + timedelta(hours=2))
    pages, link = await full_round(graph)
    first = [e for p in pages for e in p.events]
    assert sorted(e.type for e in first) == ["occurrence"] * 3 + ["seriesMaster", "singleInstance"]
    occurrences = graph.occurrence_ids(series, START, END)
    graph.modify_occurrence(occurrences[0], subject="anders")
    graph.user_delete(occurrences[1])
    graph.edit_event(single, start=t + timedelta(days=500), end=t + timedelta(days=500, hours=1))
    pages, link2 = await full_round(graph, link)
    events = [e for p in pages for e in p.events]
    removed = [r for p in pages for r in p.removed]
    assert [(e.id, e.type, e.subject) for e in events] == [(occurrences[0], "exception", "anders")]
    assert sorted(removed) == sorted([occurrences[1], single])
    # A delta link can be followed again (a replay) and still gives the same changes.
    again, _ = await full_round(graph, link)
    assert [e.id for p in again for e in p.events] == [occurrences[0]]
    # Nothing changed since the newest link.
    quiet, _ = await full_round(graph, link2)
    assert [(p.events, p.removed) for p in quiet] == [([], [])]


async def test_all_day_events_are_midnight_in_the_asking_mailbox(graph: MemoryGraph) -> None:
    graph.add_mailbox("tokyo", time_zone="Asia/Tokyo")
    cal = graph.default_calendar("anna")
    graph.share_calendar(cal, "tokyo")
    graph.put_event("anna", cal, subject="Urlaub", start=date(2026, 12, 1), end=date(2026, 12, 2), all_day=True)
    graph.app_only = True
    [mine] = (await graph.delta("anna", cal, start=START, end=END)).events
    [theirs] = (await graph.delta("tokyo", cal, start=START, end=END)).events
    assert mine.start == datetime(2026, 12, 1, tzinfo=BERLIN) and mine.is_all_day
    assert theirs.start == datetime(2026, 12, 1, tzinfo=ZoneInfo("Asia/Tokyo"))


async def test_pages_empty_pages_and_next_links(graph: MemoryGraph) -> None:
    cal = graph.default_calendar("anna")
    t = datetime(2026, 11, 24, 9, tzinfo=UTC)
    ids = {graph.put_event("anna", cal, start=t + timedelta(hours=i), end=t + timedelta(hours=i + 1))
           for i in range(5)}
    graph.empty_page_rate = 1.0
    pages, _ = await full_round(graph, page_size=2)
    assert [len(p.events) for p in pages] == [0, 2, 0, 2, 0, 1]
    assert {e.id for p in pages for e in p.events} == ids
    assert all(p.next_link and not p.delta_link for p in pages[:-1]) and pages[-1].delta_link
    # A next link may be requested twice (a retried page).
    again = await graph.delta("anna", cal, start=START, end=END, link=pages[1].next_link)
    assert again == await graph.delta("anna", cal, start=START, end=END, link=pages[1].next_link)
    with pytest.raises(BadRequest):
        await graph.delta("anna", cal, start=START, end=END, page_size=0)


async def test_replays_and_unchanged_saves(graph: MemoryGraph) -> None:
    cal = graph.default_calendar("anna")
    t = datetime(2026, 11, 24, 9, tzinfo=UTC)
    eid = graph.put_event("anna", cal, start=t, end=t + timedelta(hours=1))
    _, link = await full_round(graph)
    graph.edit_event(eid)  # saved without a change: a new change key
    pages, link = await full_round(graph, link)
    assert [e.id for p in pages for e in p.events] == [eid]
    graph.replay_rate = 1.0
    pages, _ = await full_round(graph, link)
    assert [e.id for p in pages for e in p.events] == [eid]


async def test_lost_state_and_foreign_links_expire(graph: MemoryGraph) -> None:
    pages, link = await full_round(graph)
    graph.lose_state()
    with pytest.raises(SyncStateExpired):
        await full_round(graph, link)
    with pytest.raises(SyncStateExpired):
        await full_round(graph, "https://elsewhere.example/v1.0/users/anna/calendarView/delta?$deltatoken=1")


async def test_injected_failures_are_seeded_and_counted() -> None:
    async def outcomes(seed: int) -> list[str]:
        g = MemoryGraph(seed=seed, clock=lambda: NOW)
        g.add_mailbox("anna")
        g.rates.throttled, g.rates.transient, g.rates.needs_reconnect = 0.2, 0.2, 0.1
        g.rates.retry_after = 4.0
        seen = []
        for _ in range(40):
            try:
                await g.mailbox_time_zone("anna")
                seen.append("ok")
            except Throttled as exc:
                assert exc.retry_after == 4.0
                seen.append("throttled")
            except NeedsReconnect:
                seen.append("reconnect")
            except TransientError:
                seen.append("transient")
        assert g.requests["mailbox_time_zone"] == 40
        return seen

    first, second = await outcomes(5), await outcomes(5)
    assert first == second
    assert {"ok", "throttled", "transient", "reconnect"} <= set(first)


async def test_more_than_four_concurrent_requests_are_throttled(graph: MemoryGraph) -> None:
    results = await asyncio.gather(*(graph.mailbox_time_zone("anna") for _ in range(6)), return_exceptions=True)
    assert sum(isinstance(r, Throttled) for r in results) == 2
    assert graph.max_in_flight > graph.concurrency_limit  # demand beyond the limit is visible


async def test_notifications_and_lifecycle(graph: MemoryGraph) -> None:
    cal = graph.default_calendar("anna")
    sub = await graph.create_subscription("anna", cal, notification_url="https://x/n", lifecycle_url="https://x/l",
                                          client_state="state", expires_at=NOW + timedelta(minutes=10))
    assert sub.expires_at == NOW + timedelta(minutes=45)  # Graph rounds short lifetimes up
    graph.duplicate_notification_rate = 1.0
    eid = graph.put_event("anna", cal, start=NOW, end=NOW + timedelta(hours=1))
    notes = graph.drain_notifications()
    assert [(n["changeType"], n["resourceData"]["id"], n["clientState"]) for n in notes] == [
        ("created", eid, "state"), ("updated", eid, "state")]
    graph.remove_subscription(sub.id)
    assert graph.lifecycle_notifications[-1]["lifecycleEvent"] == "subscriptionRemoved"
    with pytest.raises(RemoteGone):
        await graph.renew_subscription(sub.id, NOW + timedelta(hours=1))
    await graph.delete_subscription(sub.id)  # already gone: fine


async def test_expired_subscriptions_are_gone(graph: MemoryGraph) -> None:
    now = [NOW]
    graph.clock = lambda: now[0]
    sub = await graph.create_subscription("anna", graph.default_calendar("anna"), notification_url="https://x/n",
                                          lifecycle_url="https://x/l", client_state="s",
                                          expires_at=NOW + timedelta(hours=2))
    now[0] += timedelta(hours=3)
    with pytest.raises(RemoteGone):
        await graph.reauthorize_subscription(sub.id)


async def test_transaction_ids_and_booking_tags(graph: MemoryGraph) -> None:
    cal = graph.default_calendar("anna")
    draft = EventDraft(subject="Buchung", body_html="<p>x</p>", start=NOW, end=NOW + timedelta(minutes=30),
                       time_zone="Europe/Berlin", booking_id="bk-9")
    first = await graph.create_event("anna", cal, draft, transaction_id="timum-abc")
    assert await graph.create_event("anna", cal, draft, transaction_id="timum-abc") == first
    assert await graph.find_event_by_booking("anna", cal, "bk-9") == first
    [item] = (await graph.delta("anna", cal, start=START, end=END)).events
    assert item.transaction_id == "timum-abc" and item.booking_id == ""  # delta cannot expand it


async def test_provider_refuses_revoked_accounts(graph: MemoryGraph) -> None:
    provider = MemoryGraphProvider(graph)
    link = Link(provider_id="p", resource_id="r", mode=LinkMode.DELEGATED, tenant_id="t", mailbox_id="anna",
                calendar_id="c", calendar_name="K", calendar_owner="anna", account_id="acc")
    assert await provider.for_link(link) is graph
    provider.revoked.add("acc")
    with pytest.raises(NeedsReconnect):
        await provider.for_link(link)
