"""A link that loses its access — the user's refresh token revoked, or the tenant's admin consent
withdrawn — becomes ``needs_reconnect``: timum hears it exactly once, and the service stops
calling Graph for it instead of failing in a loop."""

from __future__ import annotations

import time
from datetime import timedelta

from devtools.sandbox.timum.state import ReceivedStatus
from devtools.stack import LinkedCalendar, Stack
from shared.domain import Link, LinkHealth
from tests.support.e2e import LOG, Names, berlin, fresh_user, link_own_calendar

#: how long the service is watched for Graph calls after the link broke
OBSERVATION_SECONDS = 3.0


def _statuses(stack: Stack, names: Names, status: str) -> list[ReceivedStatus]:
    return [r for r in stack.timum.list_received_statuses()
            if (r.provider_id, r.resource_id, r.status) == (names.provider, names.resource, status)]


def _assert_needs_reconnect_without_hot_loop(stack: Stack, names: Names, linked: LinkedCalendar) -> None:
    owner = linked.user
    began = time.monotonic()
    # A change in Outlook wakes the delta worker, which now meets the broken access.
    stack.graph.create_event(owner.id, "Nach dem Widerruf", berlin(15, 9), berlin(15, 10),
                             calendar_id=linked.calendar_id)
    def broken() -> Link | None:
        link = stack.link(names.provider, names.resource)
        return link if link is not None and link.health is LinkHealth.NEEDS_RECONNECT else None

    link = stack.wait_for(broken, what="needs_reconnect")
    stack.wait_timum(lambda s: any((r.resource_id, r.status) == (names.resource, "needs_reconnect")
                                   for r in s.received_statuses), what="link-status webhook")
    LOG.info("lag needs_reconnect: %.2f s (%s)", time.monotonic() - began, link.last_error.split(":")[0])

    # Everything that would wake the link again: more Outlook changes, the polling timer, a booking.
    seq = stack.request_seq()
    syncs = len(stack.host.records("sync_worker"))
    bookings = len(stack.host.records("booking_worker"))
    stack.graph.create_event(owner.id, "Noch eine Änderung", berlin(15, 11), berlin(15, 12),
                             calendar_id=linked.calendar_id)
    assert stack.fire("poll_links").status_code in (200, 202)
    start = berlin(16, 9)
    stack.timum.make_booking(names.provider, names.resource, start, start + timedelta(minutes=30))
    stack.wait_for(lambda: len(stack.host.records("sync_worker")) > syncs
                   and len(stack.host.records("booking_worker")) > bookings, what="the wake-up invocations")
    time.sleep(OBSERVATION_SECONDS)  # a deliberate observation window: a hot loop would show up here

    # App-only links address the mailbox by object id once migrated, by address before.
    mailboxes = {owner.mail.lower(), owner.id.lower()}
    graph_calls = [e for e in stack.graph_requests(since_seq=seq) if (e.mailbox or "").lower() in mailboxes]
    # App-only token requests name the tenant in their path; delegated ones go to the sign-in
    # authority ("organizations"), which only this module's delegated link uses.
    token_calls = [e for e in stack.sandbox.requests.entries(service="identity", since_seq=seq)
                   if "/token" in e.path and (owner.tenant_id in e.path or "/organizations/" in e.path)]
    LOG.info("after needs_reconnect: %d Graph and %d token requests in %.0f s", len(graph_calls), len(token_calls),
             OBSERVATION_SECONDS)
    assert graph_calls == []
    assert token_calls == []
    assert len(_statuses(stack, names, "needs_reconnect")) == 1
    stored = stack.link(names.provider, names.resource)
    assert stored is not None and stored.health is LinkHealth.NEEDS_RECONNECT


def test_revoked_refresh_token_needs_reconnect_once(stack: Stack, names: Names) -> None:
    owner = fresh_user(stack, name="Widerruf")
    # Short-lived access tokens, so the service has to redeem the refresh token on its next run.
    stack.sandbox.identity.set_access_token_lifetime(120)
    try:
        linked = stack.link_delegated(owner.mail, names.calendar, names.provider, names.resource)
        assert linked.link.health is LinkHealth.OK
        stack.sandbox.identity.revoke_refresh_tokens(owner.id)
        _assert_needs_reconnect_without_hot_loop(stack, names, linked)
    finally:
        stack.sandbox.identity.set_access_token_lifetime(None)


def test_withdrawn_admin_consent_needs_reconnect_once(stack: Stack, names: Names) -> None:
    owner, linked = link_own_calendar(stack, names, name="Zustimmung")
    assert linked.link.health is LinkHealth.OK
    stack.sandbox.identity.set_admin_consent(owner.tenant_id, False)
    _assert_needs_reconnect_without_hot_loop(stack, names, linked)
