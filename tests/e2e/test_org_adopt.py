"""On the whole stack: once an administrator connects the organisation, a delegated link of that
tenant moves to app-only push by itself (link-admin queue), keeps its blocked slots and delta
state, and goes on syncing without a duplicate; then the administrator deletes the app and every
link of the tenant needs a reconnect, with one organisation event in timum."""

from __future__ import annotations

from devtools.stack import Stack
from shared.domain import LinkMode, SyncMode
from shared.org.service import app_only_grant, connect_tenant
from tests.support.e2e import Names, berlin, fresh_user, wait_slots


def test_a_delegated_link_moves_to_app_only_push_and_keeps_its_slots(stack: Stack, names: Names) -> None:
    owner = fresh_user(stack, name="Organisation")
    linked = stack.link_delegated(owner.mail, names.calendar, names.provider, names.resource)
    assert linked.link.mode is LinkMode.DELEGATED
    stack.graph.create_event(owner.id, "Vor dem Umzug", berlin(3, 9), berlin(3, 10), calendar_id=linked.calendar_id)
    before = wait_slots(stack, names, lambda found: len(found) == 1, what="slot before the move")

    stack.sandbox.identity.set_admin_consent(owner.tenant_id, True)
    services = stack.services()

    async def connect() -> None:
        tid, roles = await app_only_grant(services, owner.tenant_id)
        await connect_tenant(services, tid, names.provider, roles)

    stack.run(connect())

    def moved() -> object:
        link = stack.link(names.provider, names.resource)
        # Done when the delegated subscription was replaced by an app-only one.
        return link if link is not None and link.mode is LinkMode.APP_ONLY and link.subscription_id and \
            link.subscription_id != linked.link.subscription_id else None

    link = stack.wait_for(moved, 60, what="the link's move to app-only")
    assert link.sync_mode is SyncMode.PUSH and not link.account_id  # type: ignore[attr-defined]
    # The slot written before the move is the same slot; a change after it arrives once.
    stack.graph.create_event(owner.id, "Nach dem Umzug", berlin(4, 9), berlin(4, 10), calendar_id=linked.calendar_id)
    after = wait_slots(stack, names, lambda found: len(found) == 2, what="slot after the move")
    assert before[0].external_id in {s.external_id for s in after}

    # The administrator deletes the app: the link needs a reconnect, timum hears it once.
    stack.sandbox.identity.delete_service_principal(owner.tenant_id)
    stack.graph.create_event(owner.id, "Nach dem Löschen", berlin(5, 9), berlin(5, 10),
                             calendar_id=linked.calendar_id)
    stack.wait_timum(lambda s: any(r.resource_id == names.resource and r.status == "needs_reconnect"
                                   and r.delivery_id.startswith("os-") for r in s.received_statuses),
                     what="organisation status event")
