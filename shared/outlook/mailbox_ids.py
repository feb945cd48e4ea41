"""App-only links address their mailbox by its directory object id.

Microsoft recommends the user's object id in ``/users/{x}``; other identifiers (the SMTP address
app-only links were made with) can make subscription creation fail intermittently with 503
"Mailbox info is stale". Links made before this rule, or by a path that only knew the address,
are migrated lazily: the first Graph use of such a link (its subscription set-up, or a sync run)
looks the id up once and stores it, moving the link's calendar claim with it. Delegated links
are left alone: they address the signed-in user's own mailbox.

The claim moves safely: the new key is claimed first (``Conflict`` there means another resource
already holds this calendar under its object id, and the link stays as it is), then the link is
saved, and only then is the old key released. A crash in between leaves two claims of one link,
which the next migration attempt or the unlink releases.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from shared.adapters.graph_constants import is_object_id
from shared.context import Services
from shared.domain import Link, LinkMode
from shared.errors import AuthError, Conflict, NotFound, SyncError
from shared.ports import GraphCalendarPort
from shared.repos.links import LinkRepository

log = logging.getLogger(__name__)

#: Tenants whose Graph refused the look-up (no permission to read users or mailbox settings), and
#: when: not asked again from this process for ``_REFUSAL_SECONDS``. Bounded.
_REFUSED: dict[str, float] = {}
_REFUSAL_SECONDS = 3600.0
_MAX_REFUSED = 10_000


def needs_object_id(link: Link) -> bool:
    return link.mode is LinkMode.APP_ONLY and bool(link.mailbox_id) and not is_object_id(link.mailbox_id)


async def _look_up(link: Link, graph: GraphCalendarPort) -> str | None:
    """The object id of the link's mailbox user, or None when it cannot be had now."""
    refused_at = _REFUSED.get(link.tenant_id)
    if refused_at is not None and time.monotonic() - refused_at < _REFUSAL_SECONDS:
        return None
    try:
        object_id = await graph.user_object_id(link.mailbox_id)
    except NotFound:
        log.warning("link %s: the mailbox's user was not found; keeping its address", link.key)
        return None
    except AuthError as exc:
        # A token problem is met again, and handled, by the call that follows (delta or subscribe).
        if exc.code == "graph_forbidden":
            # The tenant lets the app read neither users nor this mailbox's settings: the address
            # keeps working (a stale-mailbox 503 is transient and retried).
            if len(_REFUSED) >= _MAX_REFUSED:
                _REFUSED.pop(next(iter(_REFUSED)))
            _REFUSED[link.tenant_id] = time.monotonic()
        log.info("link %s: mailbox object id not readable (%s); keeping the address", link.key, exc.code)
        return None
    except SyncError as exc:
        log.info("link %s: mailbox object id not resolved now (%s)", link.key, exc.code)
        return None
    return object_id if is_object_id(object_id) else None


async def ensure_object_id(services: Services, link: Link, graph: GraphCalendarPort) -> Link:
    """``link`` with its mailbox as an object id, stored; unchanged when it already is one, is not
    app-only, or the look-up fails (the link keeps working with the address; the next use retries)."""
    if not needs_object_id(link):
        return link
    object_id = await _look_up(link, graph)
    if object_id is None:
        return link
    repo = LinkRepository(services.storage)
    old = link
    migrated = replace(link, mailbox_id=object_id)
    try:
        await repo.claim_calendar(migrated)
    except Conflict:
        log.warning("link %s: its calendar is claimed by another link under the object id; not migrated", link.key)
        return link
    migrating = False

    def migrate(current: Link) -> bool:
        nonlocal migrating
        # Relinked or migrated meanwhile: not ours to change.
        migrating = (current.mailbox_id, current.calendar_id) == (old.mailbox_id, old.calendar_id)
        if migrating:
            current.mailbox_id = object_id
        return migrating

    try:
        saved = await repo.modify(link.key, migrate, current=replace(link))
    except Conflict:
        return link  # the link keeps changing: the next use tries again
    if saved is None:
        await repo.release_calendar(migrated)
        return link
    if not migrating:
        # Our claim is not this link's any more, unless another run migrated it the same way.
        if saved.mailbox_id != object_id or saved.calendar_id != old.calendar_id:
            await repo.release_calendar(migrated)
        return saved
    await repo.release_calendar(old)
    log.info("link %s: mailbox addressed by object id from now on", link.key)
    return saved
