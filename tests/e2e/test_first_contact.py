"""What a new user meets first, through the real stack: bookings made before the link reach
Outlook and a new ICS feed; unlinking tells timum; a token Graph refuses mid-life is renewed
instead of forcing a reconnect; a shared calendar (polling) syncs at once after linking."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

import httpx

from devtools.connect_walker import ConnectWalker
from devtools.sandbox.timum.state import ReceivedStatus
from devtools.stack import Stack
from shared.connect.links_api import sign_api_request
from shared.domain import Customer, LinkHealth, SyncMode
from shared.ics.feed import event_uid
from tests.support.e2e import (
    ANNA,
    LOG,
    Names,
    berlin,
    booking_events,
    fresh_user,
    link_own_calendar,
    slots,
    times,
    utc,
    wait_event,
)


def api(stack: Stack, method: str, provider: str, path: str, body: bytes = b"") -> httpx.Response:
    """Call the service's provider API as timum does (signed request, function key)."""
    target = f"/api/providers/{provider}/{path}"
    secret = stack.env["TIMUM_WEBHOOK_SECRETS"].split(",")[0]
    headers = {**sign_api_request(method, target, provider, body, [secret], timestamp=int(time.time())),
               "x-functions-key": stack.env["MASTER_KEY"], "Content-Type": "application/json"}
    with httpx.Client(timeout=30.0) as client:
        return client.request(method, f"{stack.base_url}{target}", content=body, headers=headers)


def statuses(stack: Stack, names: Names, status: str | None = None) -> list[ReceivedStatus]:
    return [r for r in stack.timum.list_received_statuses()
            if (r.provider_id, r.resource_id) == (names.provider, names.resource)
            and (status is None or r.status == status) and not r.duplicate]


def test_bookings_made_before_the_link_reach_outlook(stack: Stack, names: Names) -> None:
    owner = fresh_user(stack, name="Bestand")
    stack.ensure_resource(names.provider, names.resource, names.calendar)
    # Booked before the calendar was linked, and without webhooks (as bookings made before the
    # service existed): only listBookings can bring them over.
    first = stack.timum.make_booking(names.provider, names.resource, berlin(12, 9), duration=timedelta(minutes=30),
                                     service_name="Erstgespräch", customer=Customer("Sabine Müller"), emit=False)
    second = stack.timum.make_booking(names.provider, names.resource, berlin(13, 15), emit=False)
    cancelled = stack.timum.make_booking(names.provider, names.resource, berlin(14, 10), emit=False)
    stack.timum.cancel_booking(cancelled.id, emit=False)
    began = time.monotonic()
    linked = stack.link_delegated(owner.mail, names.calendar, names.provider, names.resource)
    event = wait_event(stack, linked, first.id, what="existing booking backfilled", began=began)
    assert event.subject == "Erstgespräch – Sabine Müller"
    assert times(stack, event) == (utc(berlin(12, 9)), utc(berlin(12, 9, 30)))
    wait_event(stack, linked, second.id, what="second existing booking backfilled", began=began)
    assert booking_events(stack, linked.calendar_id, cancelled.id) == []

    # A later change by webhook wins over what the backfill stored, and makes no second event.
    moved = berlin(12, 11)
    stack.timum.reschedule_booking(first.id, moved)
    wait_event(stack, linked, first.id, lambda e: times(stack, e)[0] == utc(moved), what="webhook after backfill",
               began=time.monotonic())


def test_new_ics_feed_lists_existing_bookings(stack: Stack, names: Names) -> None:
    stack.ensure_resource(names.provider, names.resource, "Raum Bestand")
    booking = stack.timum.make_booking(names.provider, names.resource, berlin(9, 10), emit=False)
    answer = api(stack, "POST", names.provider, f"links/{names.resource}/ics-feed", b"{}")
    assert answer.status_code in (200, 201), answer.text
    url = answer.json()["url"]
    began = time.monotonic()
    with httpx.Client(timeout=15) as client:
        def listed() -> bool:
            response = client.get(url)
            return response.status_code == 200 and event_uid(booking.id) in response.text

        stack.wait_for(lambda: listed() or None, what="existing booking in the new feed")
    LOG.info("lag feed creation → existing booking in the feed: %.2f s", time.monotonic() - began)


def test_unlink_tells_timum(stack: Stack, names: Names) -> None:
    link_own_calendar(stack, names, name="Trennen")
    answer = api(stack, "DELETE", names.provider, f"links/{names.resource}")
    assert answer.status_code == 204, answer.text
    stack.wait_timum(lambda s: bool(statuses(stack, names, "unlinked")), what="unlinked webhook")
    [status] = statuses(stack, names, "unlinked")
    assert status.mode == "app_only" and status.calendar_name == names.calendar
    # The teardown worker runs and sends no second one.
    stack.wait_for(lambda: stack.queue_depth("link-admin") == 0 or None, what="teardown done")
    assert len(statuses(stack, names, "unlinked")) == 1
    assert statuses(stack, names)[-1].status == "unlinked"


def _refused_token_is_renewed(stack: Stack, names: Names, mode: str) -> None:
    owner = fresh_user(stack, name="Token")
    linked = stack.link_delegated(owner.mail, names.calendar, names.provider, names.resource)
    before = len(statuses(stack, names))
    assert stack.sandbox.identity.refuse_access_tokens(owner.id, mode=mode) >= 1
    began = time.monotonic()
    booking = stack.timum.make_booking(names.provider, names.resource, berlin(18, 9))
    wait_event(stack, linked, booking.id, what=f"booking written after a refused token ({mode})", began=began)
    # Outlook → timum still works too (the delta worker's token was refused as well).
    stack.graph.create_event(owner.id, "Nach dem Token-Wechsel", berlin(18, 11), berlin(18, 12),
                             calendar_id=linked.calendar_id)
    stack.wait_timum(lambda s: any(sl.resource_id == names.resource and sl.source == "outlook"
                                   for sl in s.list_slots(names.provider, names.resource, "outlook")),
                     what="slot after a refused token")
    link = stack.link(names.provider, names.resource)
    assert link is not None and link.health is LinkHealth.OK
    assert [r.status for r in statuses(stack, names)[before:]] == []  # timum saw no error at all


def test_revoked_access_token_is_renewed_not_reconnected(stack: Stack, names: Names) -> None:
    _refused_token_is_renewed(stack, names, "revoked")


def test_revoked_app_only_token_is_renewed(stack: Stack, names: Names) -> None:
    owner, linked = link_own_calendar(stack, names, name="AppToken")
    before = len(statuses(stack, names))
    assert stack.sandbox.identity.refuse_access_tokens(tenant=owner.tenant_id) >= 1
    booking = stack.timum.make_booking(names.provider, names.resource, berlin(17, 9))
    wait_event(stack, linked, booking.id, what="booking written after a refused app-only token",
               began=time.monotonic())
    link = stack.link(names.provider, names.resource)
    assert link is not None and link.health is LinkHealth.OK
    assert statuses(stack, names)[before:] == []


def test_claims_challenge_is_answered_with_the_claims(stack: Stack, names: Names) -> None:
    _refused_token_is_renewed(stack, names, "claims_challenge")
    owner = stack.link(names.provider, names.resource)
    assert owner is not None
    # The challenge is only cleared by a token request that carried the claims (MSAL's claims_challenge).
    assert not stack.directory.claims_challenges


def test_shared_calendar_polls_and_syncs_at_once(stack: Stack, names: Names) -> None:
    owner = fresh_user(stack, name="Freigabe")
    colleague = stack.directory.add_user(owner.tenant_id, "Kollegin", "kollegin")
    calendar = stack.graph.create_calendar(colleague.id, names.calendar)
    stack.graph.share_calendar(calendar.id, owner.id, can_edit=True, accept=True)
    stack.graph.create_event(colleague.id, "Vor dem Verbinden", berlin(11, 9), berlin(11, 10),
                             calendar_id=calendar.id)
    stack.ensure_resource(names.provider, names.resource, names.calendar)
    polls = len(stack.host.records("poll_links"))
    began = time.monotonic()
    with stack.http(follow_redirects=False) as client:
        landed = ConnectWalker(client, owner.id, names.calendar).walk(
            stack.timum.connect_url(names.provider, names.resource))
    assert dict(parse_qsl(urlsplit(landed).query)).get("outlook") == "connected"
    link = stack.wait_linked(names.provider, names.resource, timeout=30)
    lag = time.monotonic() - began
    LOG.info("lag link → first sync of a polling link: %.2f s", lag)
    assert link.sync_mode is SyncMode.POLLING
    stack.wait_timum(lambda s: len(s.list_slots(names.provider, names.resource, "outlook")) == 1,
                     what="slot of the shared calendar")
    # The set-up queues the first sync (``tests/services/test_first_contact_setup.py``); the polling
    # timer did not have to run for it — when it ran meanwhile, this run cannot tell them apart.
    if len(stack.host.records("poll_links")) == polls:
        LOG.info("first sync of the polling link came from its set-up")


def _booking_event_id(stack: Stack, calendar_id: str, booking_id: str) -> str:
    [event] = booking_events(stack, calendar_id, booking_id)
    return stack.graph.ids(event, None).immutable_id


def test_outlook_edit_of_a_booking_event_is_restored(stack: Stack, names: Names) -> None:
    linked = stack.link_app_only(ANNA, names.calendar, names.provider, names.resource)
    start = berlin(22, 10)
    booking = stack.timum.make_booking(names.provider, names.resource, start, service_name="Massage")
    wait_event(stack, linked, booking.id, what="booking event", began=time.monotonic())

    began = time.monotonic()
    stack.graph.update_event(_booking_event_id(stack, linked.calendar_id, booking.id),
                             start=berlin(22, 15), end=berlin(22, 16), subject="Verschoben")
    restored = wait_event(stack, linked, booking.id,
                          lambda e: times(stack, e)[0] == utc(start) and e.subject.startswith("Massage"),
                          what="edited booking event restored", began=began)

    began = time.monotonic()
    stack.graph.delete_event(_booking_event_id(stack, linked.calendar_id, booking.id))
    again = wait_event(stack, linked, booking.id, lambda e: e.key != restored.key,
                       what="deleted booking event recreated", began=began)
    assert times(stack, again)[0] == utc(start)
    assert slots(stack, names) == []  # our own event never blocks its own booking's time


def test_outlook_edit_of_a_booking_event_is_reported_when_the_provider_says_so(stack: Stack,
                                                                              names: Names) -> None:
    provider = f"prov-report-{uuid.uuid4().hex[:6]}"  # settings are per provider: keep them to this test
    names = Names(provider, names.resource, names.calendar)
    stack.ensure_resource(provider, names.resource, names.calendar)
    answer = api(stack, "PUT", provider, "settings", b'{"bookingEventEdits": "report"}')
    assert answer.status_code == 200 and answer.json()["bookingEventEdits"] == "report"
    linked = stack.link_app_only(ANNA, names.calendar, provider, names.resource)
    booking = stack.timum.make_booking(provider, names.resource, berlin(23, 10))
    wait_event(stack, linked, booking.id, what="booking event", began=time.monotonic())
    moved = berlin(23, 14)
    stack.graph.update_event(_booking_event_id(stack, linked.calendar_id, booking.id), start=moved,
                             end=moved + timedelta(minutes=30))

    def reported() -> list[dict[str, object]] | None:
        found = [c for c in stack.timum.list_booking_conflicts() if c["data"]["bookingId"] == booking.id]
        return found or None

    [report] = stack.wait_for(reported, what="conflict report")
    assert report["data"]["change"] == "edited"  # type: ignore[index]
    assert [times(stack, e)[0] for e in booking_events(stack, linked.calendar_id, booking.id)] == [utc(moved)]


def test_reconnect_leaves_one_subscription_and_unlink_none(stack: Stack, names: Names) -> None:
    owner = fresh_user(stack, name="Abo")
    stack.sandbox.identity.set_access_token_lifetime(120)
    try:
        linked = stack.link_delegated(owner.mail, names.calendar, names.provider, names.resource)
        stack.sandbox.identity.revoke_refresh_tokens(owner.id)
        stack.graph.create_event(owner.id, "Weckt den Link", berlin(19, 9), berlin(19, 10),
                                 calendar_id=linked.calendar_id)

        def broken() -> bool | None:
            link = stack.link(names.provider, names.resource)
            return True if link is not None and link.health is LinkHealth.NEEDS_RECONNECT else None

        stack.wait_for(broken, what="needs_reconnect")
        # Graph drops the subscriptions of an account that lost access; the service cannot replace
        # it without a token.
        [removed] = [s for s in stack.graph.list_subscriptions() if s.calendar_id == linked.calendar_id]
        stack.graph.trigger_lifecycle(removed.id, "subscriptionRemoved")
        stack.wait_for(lambda: stack.queue_depth("link-admin") == 0 or None, what="resubscribe tried")
        # The reconnect: the sign-in revives the link (one set-up) and the chooser saves it (another).
        stack.link_delegated(owner.mail, names.calendar, names.provider, names.resource)
    finally:
        stack.sandbox.identity.set_access_token_lifetime(None)

    def live() -> list[object]:
        return [s for s in stack.graph.list_subscriptions() if s.calendar_id == linked.calendar_id]

    stack.wait_for(lambda: stack.queue_depth("link-admin") == 0 or None, what="set-ups done")
    link = stack.link(names.provider, names.resource)
    assert link is not None and link.health is LinkHealth.OK
    [subscription] = live()
    assert subscription.id == link.subscription_id  # type: ignore[attr-defined]
    assert api(stack, "DELETE", names.provider, f"links/{names.resource}").status_code == 204
    stack.wait_for(lambda: (not live()) or None, what="no subscription after unlinking")
