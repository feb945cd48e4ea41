"""A block-only calendar end to end: its events become the resource's blocked slots through the
real app (subscription, delta worker), survive the resource's own calendar's full resync, count in
the live conflict check, and the sandbox timum refuses a booking on them."""

from __future__ import annotations

from devtools.stack import Stack
from shared.domain import Link, LinkKey, LinkMode, SyncMode, block_key
from shared.messages import LINK_ADMIN_QUEUE, SYNC_QUEUE, AdminAction, AdminMessage, SyncMessage, SyncReason
from tests.support.e2e import ANNA, Names, berlin, live_conflicts, utc


def _link_block_only(stack: Stack, names: Names, calendar_name: str) -> Link:
    """What the chooser's "block" action saves, through the repositories (as ``link_app_only``)."""
    from shared.repos.links import LinkRepository

    person = stack.user(ANNA)
    cal = stack.calendar(person.id, calendar_name)
    key = block_key(names.provider, names.resource, person.tenant_id, person.mail, cal.id)
    fresh = Link(provider_id=key.provider_id, resource_id=key.resource_id, mode=LinkMode.APP_ONLY,
                 tenant_id=person.tenant_id, mailbox_id=person.mail, calendar_id=cal.id, calendar_name=cal.name,
                 calendar_owner=person.mail, time_zone="Europe/Berlin", sync_mode=SyncMode.PUSH,
                 block_of=names.resource, created_at=stack.services().clock())

    async def write() -> None:
        repo = LinkRepository(stack.storage)
        await repo.claim_calendar(fresh)
        await repo.save(fresh)
        await stack.storage.queue(LINK_ADMIN_QUEUE).send(AdminMessage(link=str(key), action=AdminAction.SETUP)
                                                         .to_json())

    stack.run(write())
    return stack.wait_linked(key.provider_id, key.resource_id)


def test_a_block_only_calendar_blocks_the_resource(stack: Stack, names: Names) -> None:
    main = stack.link_app_only(ANNA, names.calendar, names.provider, names.resource)
    block = _link_block_only(stack, names, names.calendar + " privat")
    assert block.subscription_id, "app-only access subscribes to the block-only calendar too"
    person = main.user
    stack.graph.create_event(person.id, "Team", berlin(23, 9), berlin(23, 10), calendar_id=main.calendar_id)
    stack.graph.create_event(person.id, "Zweitjob", berlin(23, 14), berlin(23, 16), calendar_id=block.calendar_id)

    def both() -> list[str] | None:
        ids = sorted(s.external_id[:3] for s in stack.timum.list_slots(names.provider, names.resource, "outlook"))
        return ids if ids == ["ob-", "ol-"] else None

    stack.wait_for(both, what="slots of both calendars on the resource")

    # A full resync of the resource's own calendar reconciles only its own slots.
    stack.run(stack.storage.queue(SYNC_QUEUE).send(
        SyncMessage(link=str(LinkKey(names.provider, names.resource)), reason=SyncReason.RESYNC, full=True).to_json()))
    stack.wait_for(lambda: (lk := stack.link(names.provider, names.resource)) is not None
                   and lk.last_sync_at is not None and main.link.last_sync_at is not None
                   and lk.last_sync_at > main.link.last_sync_at or None, what="the full resync")
    assert both() is not None

    answer = live_conflicts(stack, names, berlin(23, 15), berlin(23, 15, 30))
    assert answer["free"] is False
    assert {c["calendarRole"]: c["conflicts"] for c in answer["calendars"]} == {"bookings": 0, "block_only": 1}
    assert answer["conflicts"][0]["start"] == utc(berlin(23, 14)).strftime("%Y-%m-%dT%H:%M:%SZ")
