"""Unlinking a calendar: everything that must happen *now*, and what a worker finishes later.

When a link ends (deleted through the API, or its resource relinked to another calendar) the
link row and the calendar claim go at once — the calendar is free again, and notifications of
the old subscription stop being accepted. Deleting the Graph subscription (and, on request,
our Outlook events) happens in the ``TEARDOWN`` worker, which needs the old link's
credentials after its row is gone. So the old link is kept as a snapshot in ``teardowns``
until the worker calls ``finish``:

* ``teardowns`` PK link key, RK subscription id (``-`` when there was none).

Tokens are forgotten only when no live link and no pending teardown refers to the account.
"""

from __future__ import annotations

from shared.context import Services
from shared.domain import Link, LinkKey, LinkMode
from shared.messages import LINK_ADMIN_QUEUE, AdminAction, AdminMessage
from shared.repos.accounts import AccountRepository
from shared.repos.codec import from_entity, to_entity
from shared.repos.links import LinkRepository, SubscriptionRepository
from shared.storage.base import Entity, StoragePort, encode_key

TEARDOWNS = "teardowns"
_NO_SUBSCRIPTION = "-"


class TeardownRepository:
    def __init__(self, storage: StoragePort) -> None:
        self._table = storage.table(TEARDOWNS)

    async def put(self, link: Link) -> None:
        await self._table.upsert(to_entity(link, pk=encode_key(str(link.key)),
                                           rk=encode_key(link.subscription_id or _NO_SUBSCRIPTION)))

    async def get(self, key: LinkKey, subscription_id: str) -> Link | None:
        """The link as it was when it was unlinked, for the teardown worker's Graph calls."""
        row = await self._table.get(encode_key(str(key)), encode_key(subscription_id or _NO_SUBSCRIPTION))
        return None if row is None else from_entity(Link, Entity(row), etag="")

    async def remove(self, key: LinkKey, subscription_id: str) -> None:
        await self._table.delete(encode_key(str(key)), encode_key(subscription_id or _NO_SUBSCRIPTION))

    async def uses_account(self, account_id: str) -> bool:
        return bool(await self._table.query(equals={"account_id": account_id}, limit=1))


async def account_in_use(storage: StoragePort, account_id: str) -> bool:
    if not account_id:
        return False
    links = await LinkRepository(storage).keys_for_account(account_id, limit=1)
    return bool(links) or await TeardownRepository(storage).uses_account(account_id)


async def forget_account_if_unused(services: Services, account_id: str) -> bool:
    """Delete the account's tokens when nothing needs them any more. True if deleted."""
    if not account_id or await account_in_use(services.storage, account_id):
        return False
    from shared.crypto import Cipher

    cipher = Cipher(services.settings.token_encryption_keys)
    return await AccountRepository(services.storage, cipher).delete(account_id)


async def unlink(services: Services, link: Link, *, delete_outlook_events: bool = False,
                 keep_row: bool = False, keep_claim: bool = False) -> None:
    """End ``link`` now and queue its teardown.

    ``keep_row=True`` when the caller replaces the row (relink): then a TEARDOWN is queued only
    if Graph has something to clean up, so the worker never touches the resource's blocked
    slots, which the new link's first full sync reconciles. ``keep_claim=True`` when the new
    link keeps the same calendar.
    """
    repo = LinkRepository(services.storage)
    needs_worker = bool(link.subscription_id) or delete_outlook_events
    if needs_worker:
        await TeardownRepository(services.storage).put(link)
    if link.subscription_id:
        # Notifications of the old subscription must not reach the new calendar's link.
        await SubscriptionRepository(services.storage).delete(link.subscription_id)
    if not keep_row:
        await repo.delete(link.key)
    if not keep_claim:
        await repo.release_calendar(link)
    if not keep_row:
        from shared.connect.status import announce_unlinked

        # timum must stop showing the link as connected; a relink (keep_row) announces the new one.
        await announce_unlinked(services, link)
    if needs_worker or not keep_row:
        await services.storage.queue(LINK_ADMIN_QUEUE).send(AdminMessage(
            link=str(link.key), action=AdminAction.TEARDOWN, subscription_id=link.subscription_id,
            delete_outlook_events=delete_outlook_events).to_json())
    if not needs_worker and link.mode is LinkMode.DELEGATED:
        await forget_account_if_unused(services, link.account_id)


async def finish(services: Services, key: LinkKey, subscription_id: str) -> None:
    """Called by the TEARDOWN worker once Graph is cleaned up: drop the snapshot, then the
    account's tokens if nothing else uses them."""
    store = TeardownRepository(services.storage)
    snapshot = await store.get(key, subscription_id)
    await store.remove(key, subscription_id)
    if snapshot is not None and snapshot.mode is LinkMode.DELEGATED:
        await forget_account_if_unused(services, snapshot.account_id)
