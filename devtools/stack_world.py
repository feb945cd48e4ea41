"""Building a world on the local stack for the scenarios and the soak: tenants and mailboxes in
the sandbox, timum resources, and linked calendars — one by one through the app's own link
set-up, or a thousand at once straight through the repositories and the sandbox's state.

A bulk link is what the connect flow plus the ``SETUP`` admin message leave behind: an
``APP_ONLY`` link row with its calendar claim, a live Graph subscription whose clientState is
stored hashed in the subscription index, and a first full sync done by the real worker. Only
the subscription's creation (a Graph round trip with a validation handshake per link) is
skipped; everything measured afterwards — notifications, the webhook, the worker, Graph and
timum — is the real path.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from devtools.sandbox.directory import SandboxTenant, SandboxUser
    from devtools.stack import Stack
    from shared.domain import Link, LinkKey

T = TypeVar("T")

#: queues the app consumes (their ``-poison`` twins are checked separately)
APP_QUEUES = ("link-sync", "link-admin", "booking-changes")


def bench_stack(**kwargs: Any) -> Stack:
    """A stack without demo data (scenarios build exactly the world they measure)."""
    from devtools.stack import start_stack

    kwargs.setdefault("seed_demo", False)
    return start_stack(**kwargs)


def add_tenant(stack: Stack, name: str, users: int, *, admin_consent: bool = True) -> tuple[SandboxTenant,
                                                                                            list[SandboxUser]]:
    tag = uuid.uuid4().hex[:6]
    tenant = stack.directory.add_tenant(name, f"{name.lower().replace(' ', '-')}-{tag}.example")
    people = [stack.directory.add_user(tenant.id, f"Raum {i}", f"raum{i}") for i in range(users)]
    if admin_consent:
        stack.directory.set_admin_consent(tenant.id, stack.client_id, True)
    return tenant, people


@dataclass(frozen=True)
class BenchLink:
    key: LinkKey
    user: SandboxUser
    calendar_id: str
    subscription_id: str

    @property
    def provider(self) -> str:
        return self.key.provider_id

    @property
    def resource(self) -> str:
        return self.key.resource_id


async def gather_bounded(calls: Iterable[Callable[[], Awaitable[T]]], limit: int = 32) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(c) for c in calls)))


def bulk_links(stack: Stack, count: int, *, provider: str = "bench", per_user: int = 10,
               initial_sync: bool = True, subscribe: bool = True, timeout: float = 600.0, prefix: str = "r",
               log: Callable[[str], None] | None = None) -> list[BenchLink]:
    """``count`` linked calendars (``per_user`` per mailbox), each with a live subscription unless
    ``subscribe`` is false (then changes in the calendar notify nobody)."""
    from devtools.sandbox.graph.model import Subscription
    from shared.domain import Link, LinkKey, LinkMode, SyncMode
    from shared.messages import SYNC_QUEUE, SyncMessage, SyncReason
    from shared.repos.accounts import TenantRepository
    from shared.repos.links import LinkRepository, SubscriptionRepository

    _, people = add_tenant(stack, f"Bench {provider}", max(1, -(-count // per_user)))
    tenant_id = people[0].tenant_id
    stack.ensure_resource(provider, f"{prefix}0000", "Raum 0")
    settings = stack.settings
    now = datetime.now(UTC)
    expires = now + timedelta(minutes=settings.subscription_lifetime_minutes)
    links: list[tuple[Link, str]] = []
    result: list[BenchLink] = []
    for i in range(count):
        person = people[i // per_user]
        cal = stack.graph.create_calendar(person.id, f"Behandlungsraum {i}")
        resource = f"{prefix}{i:04d}"
        stack.ensure_resource(provider, resource, f"Behandlungsraum {i}")
        client_state = secrets.token_urlsafe(32)
        sub = Subscription(
            id=str(uuid.uuid4()), resource=f"/users/{person.mail}/calendars/{cal.id}/events",
            change_type="created,updated,deleted", notification_url=settings.url("graph/notifications"),
            lifecycle_url=settings.url("graph/lifecycle"), client_state=client_state, expiration=expires,
            application_id=stack.client_id, creator_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{stack.client_id}")),
            tenant_id=tenant_id, mailbox_id=person.id, calendar_id=cal.id, immutable_ids=True, app_only=True)
        if subscribe:
            stack.graph.add_subscription(sub)
        link = Link(provider_id=provider, resource_id=resource, mode=LinkMode.APP_ONLY, tenant_id=tenant_id,
                    mailbox_id=person.mail, calendar_id=cal.id, calendar_name=cal.name, calendar_owner=person.mail,
                    time_zone="Europe/Berlin", sync_mode=SyncMode.PUSH,
                    subscription_id=sub.id if subscribe else "",
                    subscription_expires_at=expires if subscribe else None, created_at=now)
        links.append((link, client_state))
        result.append(BenchLink(LinkKey(provider, resource), person, cal.id, sub.id))

    async def write() -> None:
        await TenantRepository(stack.storage).record_admin_consent(tenant_id, now=now)
        repo = LinkRepository(stack.storage)
        index = SubscriptionRepository(stack.storage)

        def one(link: Link, state: str) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                if subscribe:
                    await index.put(link.subscription_id, link.key, state)
                await repo.claim_calendar(link)
                await repo.save(link)
                if initial_sync:
                    await stack.storage.queue(SYNC_QUEUE).send(
                        SyncMessage(str(link.key), SyncReason.SETUP, full=True).to_json())
            return run

        calls = [one(link, state) for link, state in links]
        if calls:
            # The first one alone: the storage adapter caches a table's client before it has created the
            # table, so concurrent first uses in a process can meet a table that does not exist yet.
            await calls[0]()
        await gather_bounded(calls[1:])

    stack.run(write(), timeout=timeout)
    if initial_sync:
        wait_synced(stack, provider, {b.resource for b in result}, timeout=timeout, log=log)
    return result


def wait_synced(stack: Stack, provider: str, resources: set[str], *, timeout: float,
                log: Callable[[str], None] | None = None) -> None:
    """Until every named link of ``provider`` finished a sync."""
    from shared.repos.links import LinkRepository

    deadline = time.monotonic() + timeout
    last_report = 0.0
    while True:
        links = stack.run(LinkRepository(stack.storage).list_for_provider(provider))
        done = sum(1 for link in links if link.resource_id in resources and link.last_sync_at is not None)
        if done >= len(resources):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done} of {len(resources)} links finished their first sync")
        if log is not None and time.monotonic() - last_report > 15:
            last_report = time.monotonic()
            log(f"initial syncs: {done}/{len(resources)}")
        time.sleep(0.5)


def queue_depths(stack: Stack, names: Sequence[str] = APP_QUEUES) -> dict[str, int]:
    async def depths() -> dict[str, int]:
        counts = await asyncio.gather(*(stack.storage.queue(n).peek_count() for n in names))
        return dict(zip(names, counts, strict=True))

    return stack.run(depths())


def wait_quiet(stack: Stack, *, timeout: float = 120.0, settle: float = 1.0,
               log: Callable[[str], None] | None = None) -> None:
    """Until the app's queues are empty, the sandbox has nothing left to deliver, and no
    invocation finished for ``settle`` seconds (timers aside)."""
    deadline = time.monotonic() + timeout
    last_report = time.monotonic()
    while True:
        depths = queue_depths(stack)
        pending = [d.seq for d in stack.timum.list_deliveries() if d.outcome == "pending" and not d.held]
        busy = any(depths.values()) or bool(stack.graph.outbox) or bool(pending)
        if busy and log is not None and time.monotonic() - last_report > 20:
            last_report = time.monotonic()
            log(f"waiting for rest: queues {depths}, Graph outbox {len(stack.graph.outbox)}, "
                f"booking webhooks pending {len(pending)}")
        if not busy:
            records = [r for r in stack.host.records() if r.trigger != "timer"]
            last = max((r.started_at + timedelta(milliseconds=r.duration_ms) for r in records), default=None)
            if last is None or (datetime.now(UTC) - last).total_seconds() >= settle:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the stack did not come to rest within {timeout:.0f} s "
                               f"(queues: {queue_depths(stack)})")
        time.sleep(0.2)


def event_times(day_offset: int, slot: int, *, minutes: int = 30) -> tuple[datetime, datetime]:
    """A half-hour (by default) during working hours ``day_offset`` days from today (UTC)."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today + timedelta(days=day_offset, hours=7) + timedelta(minutes=30 * (slot % 20))
    return start, start + timedelta(minutes=minutes)
