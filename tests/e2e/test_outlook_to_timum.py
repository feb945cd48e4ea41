"""Outlook → timum through the real stack: events changed in the sandbox Outlook become the right
blocked slots in the sandbox timum — via Graph's notification, the webhook, the queue, the delta
worker and the timum API — including Graph's awkward sides (duplicates, replays, throttling,
lost delta state)."""

from __future__ import annotations

import functools
import json
import re
import time
from datetime import datetime, timedelta

import httpx

from devtools.sandbox.graph.model import Delivery
from devtools.sandbox.timum.state import Slot
from devtools.stack import Stack
from shared.adapters.graph_constants import BOOKING_PROPERTY_ID
from shared.domain import ProviderSettings, TitlePrivacy, slot_external_id
from shared.repos.links import ProviderSettingsRepository
from tests.support.e2e import (
    ANNA,
    BERLIN,
    DEADLINE,
    LOG,
    Names,
    berlin,
    berlin_day,
    by_id,
    fresh_user,
    link_own_calendar,
    slots,
    utc,
    wait_slots,
)


def test_create_move_delete_single_event(stack: Stack, names: Names) -> None:
    linked = stack.link_app_only(ANNA, names.calendar, names.provider, names.resource)
    start, end = berlin(3, 10), berlin(3, 11)
    began = time.monotonic()
    ids = stack.graph.create_event(ANNA, "Zahnarzt", start, end, calendar_id=linked.calendar_id)
    expected = slot_external_id(names.key, ids.immutable_id)
    found = wait_slots(stack, names, lambda s: len(s) == 1, what="create", started=began)
    assert found[0].external_id == expected
    assert (found[0].start, found[0].end) == (utc(start), utc(end))
    assert not found[0].all_day
    assert found[0].title == ""  # the provider's default: no titles from Outlook

    began = time.monotonic()
    stack.graph.move_event(ids.immutable_id, berlin(4, 14), berlin(4, 15, 30))
    found = wait_slots(stack, names, lambda s: len(s) == 1 and s[0].start == utc(berlin(4, 14)), what="move",
                       started=began)
    assert (found[0].external_id, found[0].end) == (expected, utc(berlin(4, 15, 30)))

    began = time.monotonic()
    stack.graph.delete_event(ids.immutable_id)
    wait_slots(stack, names, lambda s: not s, what="delete", started=began)


def test_recurring_series_blocks_each_occurrence(stack: Stack, names: Names) -> None:
    linked = stack.link_app_only(ANNA, names.calendar, names.provider, names.resource)
    first = berlin_day(7)
    recurrence = {"pattern": {"type": "daily", "interval": 2},
                  "range": {"type": "numbered", "numberOfOccurrences": 3, "startDate": first.isoformat()}}
    began = time.monotonic()
    series = stack.graph.create_event(ANNA, "Kurs", berlin(7, 8), berlin(7, 9), calendar_id=linked.calendar_id,
                                      recurrence=recurrence)
    days = [first + timedelta(days=2 * i) for i in range(3)]
    expected = {slot_external_id(names.key, series.occurrence_id(d)): d for d in days}
    found = wait_slots(stack, names, lambda s: len(s) == 3, what="series", started=began)
    assert set(by_id(found)) == set(expected)
    for external_id, day in expected.items():
        slot = by_id(found)[external_id]
        assert slot.start == utc(datetime(day.year, day.month, day.day, 8, tzinfo=BERLIN))
        assert slot.end - slot.start == timedelta(hours=1)

    # One occurrence moved, one deleted: the slots follow, the third stays as it was.
    moved_id, gone_id, kept_id = list(expected)
    began = time.monotonic()
    stack.graph.modify_occurrence(series.immutable_id, days[0], start=berlin(7, 17), end=berlin(7, 18))
    stack.graph.cancel_occurrence(series.immutable_id, days[1])
    found = wait_slots(stack, names, lambda s: len(s) == 2 and by_id(s).get(moved_id) is not None
                       and by_id(s)[moved_id].start == utc(berlin(7, 17)), what="series exception", started=began)
    assert set(by_id(found)) == {moved_id, kept_id}
    assert gone_id not in by_id(found)


def test_all_day_event_blocks_whole_days(stack: Stack, names: Names) -> None:
    linked = stack.link_app_only(ANNA, names.calendar, names.provider, names.resource)
    day = berlin_day(10)
    began = time.monotonic()
    ids = stack.graph.create_event(ANNA, "Fortbildung", day, day + timedelta(days=2), all_day=True, show_as="oof",
                                   calendar_id=linked.calendar_id)
    found = wait_slots(stack, names, lambda s: len(s) == 1, what="all-day", started=began)
    slot = found[0]
    assert slot.external_id == slot_external_id(names.key, ids.immutable_id)
    assert slot.all_day
    # Midnight to midnight in the mailbox's zone, two days long.
    assert slot.start == utc(datetime(day.year, day.month, day.day, tzinfo=BERLIN))
    after = day + timedelta(days=2)
    assert slot.end == utc(datetime(after.year, after.month, after.day, tzinfo=BERLIN))


def test_free_tentative_and_private_events(stack: Stack, names: Names) -> None:
    # Titles switched on for this provider, so the private event's title can be checked.
    provider = f"{names.provider}-titles"
    names = Names(provider, names.resource, names.calendar)
    stack.ensure_resource(provider, names.resource)
    stack.run(ProviderSettingsRepository(stack.storage).save(
        ProviderSettings(provider, title_privacy=TitlePrivacy.SUBJECT)))
    linked = stack.link_app_only(ANNA, names.calendar, provider, names.resource)
    cal = linked.calendar_id
    began = time.monotonic()
    free = stack.graph.create_event(ANNA, "Mittagspause", berlin(5, 12), berlin(5, 13), show_as="free",
                                    calendar_id=cal)
    tentative = stack.graph.create_event(ANNA, "Vielleicht Hausbesuch", berlin(5, 15), berlin(5, 16),
                                         show_as="tentative", calendar_id=cal)
    private = stack.graph.create_event(ANNA, "Arzttermin privat", berlin(5, 17), berlin(5, 18),
                                       sensitivity="private", calendar_id=cal)
    busy = stack.graph.create_event(ANNA, "Teamsitzung", berlin(5, 9), berlin(5, 10), calendar_id=cal)

    def slot_of(event_id: str) -> str:
        return slot_external_id(names.key, event_id)

    found = wait_slots(stack, names, lambda s: len(s) == 3, what="free/tentative/private", started=began)
    slots_by_id = by_id(found)
    assert set(slots_by_id) == {slot_of(tentative.immutable_id), slot_of(private.immutable_id),
                                slot_of(busy.immutable_id)}
    assert slots_by_id[slot_of(busy.immutable_id)].title == "Teamsitzung"
    assert slots_by_id[slot_of(tentative.immutable_id)].title == "Vielleicht Hausbesuch"
    # A private event never leaves Outlook with its subject.
    assert slots_by_id[slot_of(private.immutable_id)].title == "Outlook"

    # free → busy blocks; busy → free unblocks.
    began = time.monotonic()
    stack.graph.update_event(free.immutable_id, show_as="busy")
    stack.graph.update_event(busy.immutable_id, show_as="free")
    found = wait_slots(stack, names, lambda s: slot_of(free.immutable_id) in by_id(s)
                       and slot_of(busy.immutable_id) not in by_id(s), what="free/busy switch", started=began)
    assert len(found) == 3


def _notification(stack: Stack, subscription_id: str, event_id: str, change_type: str) -> dict[str, object]:
    """A change notification exactly as the sandbox Graph sends it for this subscription."""
    sub = stack.graph.subscriptions[subscription_id]
    resource = f"Users/{sub.mailbox_id}/Events/{event_id}"
    return {"subscriptionId": sub.id, "subscriptionExpirationDateTime": sub.expiration.isoformat(),
            "changeType": change_type, "resource": resource, "clientState": sub.client_state,
            "tenantId": sub.tenant_id,
            "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "@odata.id": resource, "id": event_id}}


def test_duplicated_and_reordered_notifications_give_one_slot_each(stack: Stack, names: Names) -> None:
    linked = stack.link_app_only(ANNA, names.calendar, names.provider, names.resource)
    behaviour = stack.graph.behaviour
    behaviour.duplicate_probability = 1.0   # every notification twice (created also as updated)
    behaviour.replay_probability = 1.0      # every incremental delta round repeats a known item
    delivered_before = _last_delivery(stack)
    began = time.monotonic()
    first = stack.graph.create_event(ANNA, "Erster", berlin(6, 8), berlin(6, 9), calendar_id=linked.calendar_id)
    second = stack.graph.create_event(ANNA, "Zweiter", berlin(6, 10), berlin(6, 11), calendar_id=linked.calendar_id)
    stack.graph.move_event(first.immutable_id, berlin(6, 12), berlin(6, 13))
    third = stack.graph.create_event(ANNA, "Dritter", berlin(6, 14), berlin(6, 15), calendar_id=linked.calendar_id)
    stack.graph.delete_event(second.immutable_id)

    # The same changes once more, newest first, as a late and reordered delivery would bring them.
    sub_id = linked.link.subscription_id
    reordered = [_notification(stack, sub_id, second.immutable_id, "deleted"),
                 _notification(stack, sub_id, third.immutable_id, "created"),
                 _notification(stack, sub_id, first.immutable_id, "updated"),
                 _notification(stack, sub_id, second.immutable_id, "created"),
                 _notification(stack, sub_id, first.immutable_id, "created")]
    with stack.http() as client:
        answer = client.post(stack.api_url("graph/notifications"), content=json.dumps({"value": reordered}),
                             headers={"Content-Type": "application/json"})
    assert answer.status_code == 202

    wanted = {slot_external_id(names.key, first.immutable_id): (berlin(6, 12), berlin(6, 13)),
              slot_external_id(names.key, third.immutable_id): (berlin(6, 14), berlin(6, 15))}

    def converged(found: list[Slot]) -> bool:
        current = {s.external_id: (s.start, s.end) for s in found}
        return current == {k: (utc(a), utc(b)) for k, (a, b) in wanted.items()}

    wait_slots(stack, names, converged, what="duplicates and reordering", started=began)
    # The sandbox really did send duplicates: more notifications than changes reached the app
    # (its own deliveries may still be under way when our reordered POST already converged).
    def duplicated(deliveries: list[Delivery]) -> bool:
        return sum(d.count for d in deliveries if d.id > delivered_before and d.kind == "change"
                   and sub_id in d.subscription_ids) > 5

    stack.graph.wait_for_deliveries(duplicated, timeout=DEADLINE)
    # Settled: later rounds (replays included) change nothing.
    assert set(by_id(slots(stack, names))) == set(wanted)


def _last_delivery(stack: Stack) -> int:
    """Id of the newest delivery so far. Deliveries are compared by id, never by list position:
    the sandbox keeps only the newest 2,000, and the e2e tests share one sandbox."""
    return max((d.id for d in stack.graph.list_deliveries()), default=0)


def _booking_event_in(stack: Stack, calendar_id: str, booking_id: str) -> bool:
    tag = BOOKING_PROPERTY_ID.lower()
    return any(e.ext_props.get(tag, ("", ""))[1] == booking_id for e in stack.graph.calendar_events(calendar_id))


def _has_exactly(wanted: set[str], found: list[Slot]) -> bool:
    return set(by_id(found)) == wanted


def test_throttling_storm_and_mailbox_concurrency(stack: Stack, names: Names) -> None:
    """Four calendars of one mailbox change at once and bookings of their resources arrive, while
    Graph and timum answer 429 now and then and Graph answers slowly: more work than Graph's four
    concurrent requests per mailbox allow. Everything arrives, and the service keeps to the four."""
    owner = fresh_user(stack, name="Storm")
    count = 4
    links = [stack.link_app_only(owner.mail, f"{names.calendar} {i}", names.provider, f"{names.resource}-{i}")
             for i in range(count)]
    # App-only links address the mailbox by object id once migrated, by address before.
    mailbox = f"(?:{re.escape(owner.mail)}|{re.escape(owner.id)})"
    graph_429 = stack.graph.add_fault("429", path=mailbox + ".*/delta", rate=0.5, count=6, retry_after=1.0)
    # Slow answers keep requests in flight long enough to overlap.
    stack.graph.add_fault("slow", path=mailbox, delay=0.3)
    timum_api_before = len(stack.timum.api_calls())
    stack.timum.inject_fault(429, rate=0.4, count=6, retry_after=1, path_contains="/blocked-slots/")
    seq = stack.request_seq()
    began = time.monotonic()
    expected: dict[str, set[str]] = {}
    bookings: list[tuple[str, str]] = []
    for i, linked in enumerate(links):
        key = Names(names.provider, f"{names.resource}-{i}", "").key
        expected[key.resource_id] = set()
        for n in range(6):
            ids = stack.graph.create_event(owner.id, f"Termin {i}/{n}", berlin(8 + n, 8 + i), berlin(8 + n, 9 + i),
                                           calendar_id=linked.calendar_id)
            expected[key.resource_id].add(slot_external_id(key, ids.immutable_id))
        booking = stack.timum.make_booking(names.provider, key.resource_id, berlin(20, 8 + i), force=True)
        bookings.append((linked.calendar_id, booking.id))

    for resource, wanted in expected.items():
        target = Names(names.provider, resource, "")
        wait_slots(stack, target, functools.partial(_has_exactly, wanted), what=f"storm {resource[-2:]}",
                   started=began, timeout=90)
    for calendar_id, booking_id in bookings:
        stack.wait_for(functools.partial(_booking_event_in, stack, calendar_id, booking_id), 60,
                       what="storm booking event")
    graph_throttled = [e for m in (owner.mail, owner.id)
                       for e in stack.graph_requests(since_seq=seq, mailbox=m) if e.status == 429]
    timum_throttled = [c for c in stack.timum.api_calls()[timum_api_before:] if c[2] == 429]
    over_limit = len(graph_throttled) - graph_429.hits
    LOG.info("storm: %d Graph 429s (%d injected, %d over the mailbox's concurrency), %d timum 429s",
             len(graph_throttled), graph_429.hits, over_limit, len(timum_throttled))
    assert graph_429.hits > 0 and timum_throttled, "the storm did not happen"
    # However much work is queued for one mailbox, the service keeps to Graph's four at a time.
    assert over_limit == 0


def test_lost_delta_state_full_resync_converges(stack: Stack, names: Names) -> None:
    owner, linked = link_own_calendar(stack, names, name="Delta")
    keep = stack.graph.create_event(owner.id, "Bleibt", berlin(9, 8), berlin(9, 9), calendar_id=linked.calendar_id)
    drop = stack.graph.create_event(owner.id, "Geht", berlin(9, 10), berlin(9, 11), calendar_id=linked.calendar_id)
    wait_slots(stack, names, lambda s: len(s) == 2, what="before 410")

    assert stack.graph.lose_delta_state(owner.id) > 0
    seq = stack.request_seq()
    began = time.monotonic()
    stack.graph.delete_event(drop.immutable_id)
    new = stack.graph.create_event(owner.id, "Neu", berlin(9, 12), berlin(9, 13), calendar_id=linked.calendar_id)
    wanted = {slot_external_id(names.key, keep.immutable_id), slot_external_id(names.key, new.immutable_id)}
    wait_slots(stack, names, lambda s: set(by_id(s)) == wanted, what="410 resync", started=began)
    # The stored delta link really was refused, and a fresh round replaced it.
    assert any(e.status == 410 and "delta" in e.path for e in stack.graph_requests(since_seq=seq))


def test_lifecycle_reauthorization_required(stack: Stack, names: Names) -> None:
    owner, linked = link_own_calendar(stack, names, name="Reauth")
    sub_id = linked.link.subscription_id
    seq = stack.request_seq()
    stack.graph.trigger_lifecycle(sub_id, "reauthorizationRequired")

    def reauthorized() -> bool:
        return any(e.method in ("POST", "PATCH") and sub_id in e.path and e.status < 300
                   for e in stack.graph_requests(since_seq=seq))

    stack.wait_for(reauthorized, what="reauthorize or renew of the subscription")
    link = stack.link(names.provider, names.resource)
    assert link is not None and link.subscription_id == sub_id
    assert stack.graph.subscription(sub_id) is not None
    # Notifications still flow through the same subscription.
    began = time.monotonic()
    stack.graph.create_event(owner.id, "Nach Reauth", berlin(11, 9), berlin(11, 10), calendar_id=linked.calendar_id)
    wait_slots(stack, names, lambda s: len(s) == 1, what="after reauthorization", started=began)


def test_lifecycle_subscription_removed(stack: Stack, names: Names) -> None:
    owner, linked = link_own_calendar(stack, names, name="Removed")
    old = linked.link.subscription_id
    began = time.monotonic()
    stack.graph.trigger_lifecycle(old, "subscriptionRemoved")

    def resubscribed() -> str | None:
        link = stack.link(names.provider, names.resource)
        if link is None or link.subscription_id in ("", old):
            return None
        return link.subscription_id if stack.graph.subscription(link.subscription_id) is not None else None

    new = stack.wait_for(resubscribed, what="a new subscription")
    LOG.info("lag resubscribe: %.2f s", time.monotonic() - began)
    assert stack.graph.subscription(old) is None
    began = time.monotonic()
    stack.graph.create_event(owner.id, "Nach Neuanmeldung", berlin(12, 9), berlin(12, 10),
                             calendar_id=linked.calendar_id)
    wait_slots(stack, names, lambda s: len(s) == 1, what="through the new subscription", started=began)
    assert new != old


def test_lifecycle_missed_triggers_catch_up(stack: Stack, names: Names) -> None:
    owner, linked = link_own_calendar(stack, names, name="Missed")
    sub = stack.graph.subscriptions[linked.link.subscription_id]
    url = sub.notification_url
    stack.graph.behaviour.max_delivery_attempts = 1
    delivered = _last_delivery(stack)
    # Graph cannot reach us for a while: the change notification is lost.
    stack.graph.change_subscription(sub.id, notification_url="http://127.0.0.1:9/unreachable")
    try:
        ids = stack.graph.create_event(owner.id, "Verpasst", berlin(13, 9), berlin(13, 10),
                                       calendar_id=linked.calendar_id)
        stack.graph.wait_for_deliveries(lambda ds: any(d.kind == "change" and sub.id in d.subscription_ids
                                                       for d in ds if d.id > delivered))
    finally:
        stack.graph.change_subscription(sub.id, notification_url=url)
    lost = [d for d in stack.graph.list_deliveries()
            if d.id > delivered and d.kind == "change" and sub.id in d.subscription_ids]
    assert lost and all(d.outcome != "ok" for d in lost)
    assert slots(stack, names) == []

    began = time.monotonic()
    stack.graph.trigger_lifecycle(sub.id, "missed")
    found = wait_slots(stack, names, lambda s: len(s) == 1, what="missed catch-up", started=began)
    assert found[0].external_id == slot_external_id(names.key, ids.immutable_id)


def test_notification_endpoint_answers_graph_validation(stack: Stack) -> None:
    token = "Validation: Testing client application reachability for subscription Request-Id: 42"
    with httpx.Client(timeout=10) as client:
        for route in ("graph/notifications", "graph/lifecycle"):
            answer = client.post(stack.api_url(route), params={"validationToken": token})
            assert answer.status_code == 200
            assert answer.text == token
            assert answer.headers["content-type"].split(";")[0] == "text/plain"
