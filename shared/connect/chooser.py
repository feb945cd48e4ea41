"""The calendar chooser after sign-in: which Outlook calendar goes with which timum resource.

``view`` lists the signed-in account's own calendars and those shared with it, marking
read-only ones (timum must write bookings, so they cannot be linked) and ones already linked
to another resource. ``submit`` checks the CSRF token, re-reads the calendar from Graph (the
form only names it by a hash, so nobody can link a calendar the account cannot reach), and
either links the resource from the connect link or creates a new timum resource named after
the calendar. One calendar ↔ one resource is enforced by ``LinkRepository.claim_calendar``;
a resource that was linked elsewhere is unlinked cleanly (its subscription torn down by the
TEARDOWN worker). The new link gets a SETUP message and a replay of the resource's stored
bookings (those that came while it was unlinked or needed a reconnect), then the browser goes
back to timum.

Both pages read Graph and timum while a person waits: a transient failure of one of those reads
is tried twice more within about a second (``_patiently``) before the "try again later" page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from shared.connect.flow import queue_booking_replay, session_store
from shared.connect.outcomes import ChooserPage, ErrorPage, Redirect, with_params
from shared.connect.store import ChooserSession, ConnectContext
from shared.connect.teardown import unlink
from shared.context import Services
from shared.domain import (
    CalendarInfo,
    Link,
    LinkHealth,
    LinkKey,
    LinkMode,
    SyncMode,
    block_key,
    is_block_only,
    timum_resource,
)
from shared.errors import AuthError, Conflict, NeedsReconnect, NotFound, SyncError, TransientError
from shared.i18n import translator
from shared.messages import LINK_ADMIN_QUEUE, AdminAction, AdminMessage
from shared.ports import GraphCalendarPort
from shared.repos.accounts import TenantRepository
from shared.repos.links import LinkRepository, calendar_key

log = logging.getLogger(__name__)

DEFAULT_TIME_ZONE = "Europe/Berlin"
#: stands in for a resource while only the account matters (listing calendars)
_PROBE_RESOURCE = "~chooser"
#: pauses before the second and third attempt at a read that failed transiently (429, 503, timeout)
TRANSIENT_RETRY_DELAYS: tuple[float, ...] = (0.3, 1.0)
#: a Retry-After above this is not waited out while a person watches the page load
MAX_PAGE_WAIT_SECONDS = 2.0

T = TypeVar("T")

#: The chooser's pause between tries; its own name so a test can record the pauses without
#: touching ``asyncio.sleep`` for every thread of the process.
_pause = asyncio.sleep


async def _patiently(read: Callable[[], Awaitable[T]], what: str) -> T:
    """``read()``, tried again after a short pause when Graph or timum fails transiently.

    A person is waiting for this page, and one 429 or 503 from a busy service is common; two
    more tries within about a second spare them the "try again later" page and a new sign-in.
    Only reads go through here: they are safe to repeat. (The Graph adapter itself waits out a
    Retry-After of up to a second once; the SDK's retry handler is off, see ``graph_sdk``.)
    """
    for delay in TRANSIENT_RETRY_DELAYS:
        try:
            return await read()
        except TransientError as exc:
            wait = max(delay, exc.retry_after or 0.0)
            if wait > MAX_PAGE_WAIT_SECONDS:
                raise
            log.info("chooser: %s failed (%s); trying again in %.1f s", what, exc.code, wait)
            await _pause(wait)
    return await read()


@dataclass(frozen=True)
class Choice:
    key: str
    calendar: CalendarInfo
    owner: LinkKey | None
    #: the name a new resource made from this calendar gets unless the user types another
    suggested_name: str = ""


#: names Outlook gives default calendars: a resource called "Kalender" helps nobody
_GENERIC_NAMES = frozenset({"kalender", "calendar", "calendrier", "agenda", "calendario"})
MAX_RESOURCE_NAME = 200
_REVIVE_ATTEMPTS = 5


def _fold(name: str) -> str:
    return " ".join(name.split()).casefold()


def suggested_name(cal: CalendarInfo, my_name: str) -> str:
    """A new resource's name: the calendar's, but for a default calendar (or one with Outlook's
    generic name) the name of the person whose calendar it is."""
    if cal.is_default or _fold(cal.name) in _GENERIC_NAMES:
        person = cal.owner_name if cal.is_shared else my_name
        if person.strip():
            return person.strip()
    return cal.name


def _probe(session: ChooserSession) -> Link:
    return Link(provider_id=session.context.provider_id, resource_id=_PROBE_RESOURCE, mode=LinkMode.DELEGATED,
                tenant_id=session.tenant_id, mailbox_id="", calendar_id="", calendar_name="", calendar_owner="",
                account_id=session.account_id)


async def _owner_of(repo: LinkRepository, tenant_id: str, cal: CalendarInfo) -> LinkKey | None:
    """Who has this calendar. A shared calendar can be reached through the sharee's mailbox
    (delegated links) or the owner's (app-only links): either claim makes it taken."""
    owner = await repo.calendar_owner(tenant_id, cal.mailbox_id, cal.id)
    if owner is None and cal.is_shared and cal.owner_address:
        owner = await repo.calendar_owner(tenant_id, cal.owner_address, cal.id)
    return owner


async def _calendars(services: Services, graph: GraphCalendarPort, session: ChooserSession) -> list[Choice]:
    me = await _patiently(graph.me, "reading the account")
    calendars = await _patiently(lambda: graph.list_calendars(me["id"]), "listing calendars")
    repo = LinkRepository(services.storage)
    owners = await asyncio.gather(*(_owner_of(repo, session.tenant_id, c) for c in calendars))
    my_name = str(me.get("displayName") or "")
    return [Choice(calendar_key(session.tenant_id, c.mailbox_id, c.id), c, o, suggested_name(c, my_name))
            for c, o in zip(calendars, owners, strict=True)]


async def _free_resources(services: Services, session: ChooserSession) -> list[dict[str, str]]:
    """The provider's resources that have no calendar yet (other than the one being connected):
    the ones a calendar of the same name can be linked to instead of creating a duplicate."""
    provider_id = session.context.provider_id
    try:
        listed = await _patiently(lambda: services.timum.list_resources(provider_id), "listing resources")
    except SyncError as exc:
        # Suggestions only: the chooser works without them.
        log.info("chooser could not list the provider's resources: %s", exc.code)
        return []
    linked = {link.resource_id for link in await LinkRepository(services.storage).list_for_provider(provider_id)}
    return [{"id": str(r["id"]), "name": str(r["name"])} for r in listed
            if r.get("id") and r["id"] != session.context.resource_id and r["id"] not in linked
            and str(r.get("name") or "").strip()]


def _matches(choice: Choice, resources: list[dict[str, str]]) -> dict[str, str] | None:
    wanted = {_fold(choice.calendar.name), _fold(choice.suggested_name)}
    return next((r for r in resources if _fold(r["name"]) in wanted), None)


def _owner_label(cal: CalendarInfo) -> str:
    if cal.owner_name and cal.owner_address and cal.owner_name != cal.owner_address:
        return f"{cal.owner_name} <{cal.owner_address}>"
    return cal.owner_name or cal.owner_address


async def _resource_name(services: Services, session: ChooserSession) -> str | None:
    rid = session.context.resource_id
    if not rid:
        return None
    resource = await _patiently(lambda: services.timum.get_resource(session.context.provider_id, rid),
                                "reading the resource")
    return None if resource is None else str(resource.get("name") or rid)


async def _names_of_other_resources(services: Services, provider_id: str, choices: list[Choice],
                                    target: LinkKey | None) -> dict[LinkKey, str]:
    """Names of this provider's resources that already have one of the calendars, so the chooser
    can say which one. Another provider's resources stay unnamed; a name that cannot be read
    leaves the general note alone."""
    keys = list({c.owner for c in choices
                 if c.owner is not None and c.owner != target and c.owner.provider_id == provider_id})
    found = await asyncio.gather(*(services.timum.get_resource(k.provider_id, k.resource_id) for k in keys),
                                 return_exceptions=True)
    return {k: str(r["name"]) for k, r in zip(keys, found, strict=True)
            if isinstance(r, dict) and isinstance(r.get("name"), str) and r["name"]}


def _cookie_error(session: ChooserSession | None, code: str, locale: str, status: int) -> ErrorPage:
    return ErrorPage(code, session.context.locale if session else locale, status=status,
                     return_url=session.context.return_url if session else "")


async def _page(services: Services, session: ChooserSession, session_id: str, choices: list[Choice], *,
                resource_name: str | None, resources: list[dict[str, str]], problem: str = "", selected: str = "",
                new_name: str = "", status: int = 200) -> ChooserPage:
    ctx = session.context
    app_only = await TenantRepository(services.storage).has_admin_consent(session.tenant_id)
    _ = translator(ctx.locale)
    target = LinkKey(ctx.provider_id, ctx.resource_id) if ctx.resource_id else None
    own: list[dict[str, Any]] = []
    shared: list[dict[str, Any]] = []
    existing: dict[str, dict[str, Any]] = {}
    taken_by = await _names_of_other_resources(services, ctx.provider_id, choices, target)
    first_free = ""
    current = ""
    for choice in choices:
        cal = choice.calendar
        notes: list[str] = []
        linked_here = target is not None and choice.owner == target
        blocks_here = _blocks_here(choice, target)
        # A read-only calendar can still only block the resource's times (action "block").
        selectable = (cal.can_edit or target is not None) and (choice.owner is None or linked_here or blocks_here)
        if not cal.can_edit:
            notes.append(_("chooser.read_only_block" if target is not None else "chooser.read_only"))
        if blocks_here:
            notes.append(_("chooser.blocks_here"))
        elif choice.owner is not None and not linked_here:
            notes.append(_("chooser.linked_elsewhere"))
            if choice.owner in taken_by:
                notes.append(_("chooser.linked_here_resource", resource=taken_by[choice.owner]))
        if linked_here:
            notes.append(_("chooser.linked_here"))
            notes.append(_("chooser.linked_here_move"))
            current = current or choice.key
        if selectable and cal.is_shared:
            notes.append(_("chooser.app_only_note") if app_only else
                         _("chooser.polling_freshness", minutes=services.settings.polling_interval_minutes))
        # Only a writable calendar can become a resource's own (new or existing); a read-only one
        # can only block times.
        match = _matches(choice, resources) if selectable and cal.can_edit else None
        if match is not None:
            notes.append(_("chooser.same_name", resource=match["name"]))
            entry = existing.setdefault(match["id"], {"id": match["id"], "name": match["name"], "calendars": []})
            entry["calendars"].append(cal.name)
        if selectable and cal.can_edit and not first_free:
            first_free = choice.key
        item = {"key": choice.key, "name": cal.name, "owner": _owner_label(cal) if cal.is_shared else "",
                "is_default": cal.is_default, "selectable": selectable, "notes": notes, "checked": False,
                "suggest": choice.suggested_name, "match": match["id"] if match else "",
                "linked_here": linked_here}
        (shared if cal.is_shared else own).append(item)
    # With a resource from timum the calendar it has (or the first free one) is preselected; a
    # new resource waits for the user's pick, so nothing is created from a calendar by default.
    pick = selected or current or (first_free if ctx.resource_id else "")
    for item in own + shared:
        item["checked"] = item["key"] == pick and item["selectable"]
    settings = services.settings
    values = {"own": own, "shared": shared, "resource_name": resource_name, "account_name": session.account_name,
              "provider_id": ctx.provider_id, "provider_label": ctx.provider_label,
              "existing": list(existing.values()), "new_name": new_name,
              "max_name": MAX_RESOURCE_NAME,
              "problem": _(f"chooser.{problem}") if problem else "", "csrf": session_store(services).csrf_token(
                  session_id), "form_action": settings.url("connect/calendars"),
              "cancel_url": with_params(ctx.return_url, outlook="cancelled")}
    return ChooserPage(locale=ctx.locale, status=status, values=values, return_url=ctx.return_url)


def _blocks_here(choice: Choice, target: LinkKey | None) -> bool:
    """The calendar is one of the target resource's block-only calendars."""
    owner = choice.owner
    return (target is not None and owner is not None and is_block_only(owner)
            and owner.provider_id == target.provider_id and timum_resource(owner.resource_id) == target.resource_id)


async def view(services: Services, session_id: str | None, *, locale: str) -> ChooserPage | ErrorPage:
    session = await session_store(services).get(session_id, now=services.clock())
    if session is None or not session_id:
        return ErrorPage("session_expired", locale, status=400)
    try:
        graph = await services.graph.for_link(_probe(session))
        try:
            choices = await _calendars(services, graph, session)
        finally:
            await graph.close()
        resource_name = await _resource_name(services, session)
        resources = await _free_resources(services, session)
    except NeedsReconnect:
        return _cookie_error(session, "needs_reconnect", locale, 400)
    except SyncError as exc:
        log.warning("chooser could not list calendars: %s", exc.code)
        return _cookie_error(session, "unavailable", locale, 503)
    problem = "resource_gone" if session.context.resource_id and resource_name is None else ""
    return await _page(services, session, session_id, choices, resource_name=resource_name, resources=resources,
                       problem=problem)


async def _time_zone(services: Services, graph: GraphCalendarPort, mailbox_id: str, provider_id: str,
                     resource_id: str) -> str:
    """The mailbox's zone; a shared mailbox may hide its settings, then the resource's zone."""
    try:
        return await graph.mailbox_time_zone(mailbox_id)
    except SyncError:
        pass
    try:
        resource = await services.timum.get_resource(provider_id, resource_id)
    except SyncError:
        resource = None
    return str((resource or {}).get("timeZone") or DEFAULT_TIME_ZONE)


@dataclass(frozen=True)
class _AppOnlyTarget:
    mailbox_id: str
    calendar_id: str
    time_zone: str


async def _app_only_target(services: Services, session: ChooserSession, cal: CalendarInfo, provider_id: str,
                           resource_id: str) -> _AppOnlyTarget | None:
    """Where an app-only link reaches a shared calendar: through its owner's mailbox, and only
    when the owner's mailbox holds a calendar with the same id (proven, never guessed). Looking
    it up with app-only credentials also proves the recorded admin consent still holds; if not,
    the record goes and the link stays delegated."""
    if not cal.owner_address:
        return None
    probe = Link(provider_id=provider_id, resource_id=resource_id, mode=LinkMode.APP_ONLY,
                 tenant_id=session.tenant_id, mailbox_id=cal.owner_address, calendar_id=cal.id,
                 calendar_name=cal.name, calendar_owner=cal.owner_address)
    try:
        port = await services.graph.for_link(probe)
        try:
            owned = [c for c in await port.list_calendars(cal.owner_address) if not c.is_shared]
            # Only the owner-side calendar with the very id the user was given counts. Never a
            # calendar of the same name: edit rights on one shared calendar must not turn into
            # app-only access to another calendar of the owner (e.g. their primary).
            match = next((c for c in owned if c.id == cal.id), None)
            if match is None:
                log.info("shared calendar not found under its id in the owner's mailbox; the link stays delegated")
                return None
            zone = await _time_zone(services, port, cal.owner_address, provider_id, resource_id)
            return _AppOnlyTarget(await _object_id(port, cal.owner_address), match.id, zone)
        finally:
            await port.close()
    except AuthError as exc:
        log.warning("app-only access refused (%s); the link stays delegated", exc.code)
        await TenantRepository(services.storage).revoke_admin_consent(session.tenant_id)
        return None
    except SyncError as exc:
        log.warning("app-only look-up failed (%s); the link stays delegated", exc.code)
        return None


async def _object_id(port: GraphCalendarPort, address: str) -> str:
    """The mailbox's directory object id, as Microsoft recommends addressing users; the address when
    the look-up fails now (``shared/outlook/mailbox_ids.py`` migrates the link on its first run)."""
    try:
        return await port.user_object_id(address)
    except SyncError as exc:
        log.info("mailbox object id not resolved (%s); the link keeps the address for now", exc.code)
        return address


async def connect_calendar(services: Services, session: ChooserSession, cal: CalendarInfo, resource_id: str,
                           graph: GraphCalendarPort) -> Link:
    """Link ``resource_id`` to ``cal``: claim the calendar, end the resource's previous link if it
    pointed elsewhere, save, and queue SETUP. ``Conflict(calendar_taken)`` changes nothing."""
    repo = LinkRepository(services.storage)
    provider_id = session.context.provider_id
    target: _AppOnlyTarget | None = None
    if cal.is_shared and await TenantRepository(services.storage).has_admin_consent(session.tenant_id):
        # Admin consent lets app-only access subscribe to shared calendars (delegated cannot).
        target = await _app_only_target(services, session, cal, provider_id, resource_id)
    if target is not None:
        fresh = Link(provider_id=provider_id, resource_id=resource_id, mode=LinkMode.APP_ONLY,
                     tenant_id=session.tenant_id, mailbox_id=target.mailbox_id, calendar_id=target.calendar_id,
                     calendar_name=cal.name, calendar_owner=cal.owner_address, time_zone=target.time_zone,
                     sync_mode=SyncMode.PUSH, created_at=services.clock())
    else:
        fresh = Link(provider_id=provider_id, resource_id=resource_id, mode=LinkMode.DELEGATED,
                     tenant_id=session.tenant_id, mailbox_id=cal.mailbox_id, calendar_id=cal.id,
                     calendar_name=cal.name, calendar_owner=cal.owner_address or cal.owner_name,
                     account_id=session.account_id,
                     time_zone=await _time_zone(services, graph, cal.mailbox_id, provider_id, resource_id),
                     # Delegated permissions cannot subscribe to calendars shared with the user: poll those.
                     sync_mode=SyncMode.POLLING if cal.is_shared else SyncMode.PUSH, created_at=services.clock())
    fresh = replace(fresh, reconnect_url=session.context.return_url, linked_by=session.account_name)
    if fresh.block_only:
        fresh = replace(fresh, block_of=fresh.timum_resource_id)
    await repo.claim_calendar(fresh)
    existing = await repo.get(fresh.key)
    link = fresh
    tell_timum = True
    if existing is not None:
        same_calendar = (existing.tenant_id, existing.mailbox_id.lower(), existing.calendar_id) == (
            fresh.tenant_id, fresh.mailbox_id.lower(), fresh.calendar_id)
        if same_calendar and existing.mode is fresh.mode and existing.account_id == fresh.account_id:
            # A reconnect: keep subscription and delta state, refresh what the user may have renamed.
            # timum already knows a healthy link (the sign-in revived it), so only news is sent.
            tell_timum = existing.health is not LinkHealth.OK or existing.calendar_name != fresh.calendar_name
            link = await _revive(repo, existing, fresh)
        else:
            await unlink(services, existing, keep_row=True, keep_claim=same_calendar)
            link = await repo.save(replace(fresh, created_at=existing.created_at or fresh.created_at,
                                           etag=existing.etag))
    else:
        link = await repo.save(link)
    await services.storage.queue(LINK_ADMIN_QUEUE).send(
        AdminMessage(link=str(link.key), action=AdminAction.SETUP).to_json())
    # Bookings of the resource stored while it was unlinked or waiting for this reconnect.
    await queue_booking_replay(services, link.key)
    if not tell_timum:
        return link
    from shared.connect.status import announce

    try:
        await announce(services, link)
    except SyncError as exc:
        # The link works; timum learns its status with the next change.
        log.warning("link-status webhook failed after connecting: %s", exc.code)
    return link


async def _revive(repo: LinkRepository, existing: Link, fresh: Link) -> Link:
    """Save a reconnected link over its row, keeping subscription and delta state. The sign-in
    that led here already queued the link's set-up, whose worker may write the same row at this
    moment: on an ETag conflict re-read it and apply the reconnect again, rather than send the
    user to an error page for a race of our own."""
    current = existing
    for _ in range(_REVIVE_ATTEMPTS):
        try:
            return await repo.save(replace(current, calendar_name=fresh.calendar_name,
                                           calendar_owner=fresh.calendar_owner, time_zone=fresh.time_zone,
                                           health=LinkHealth.OK, linked_by=fresh.linked_by,
                                           reconnect_url=fresh.reconnect_url))
        except Conflict:
            reread = await repo.get(existing.key)
            if reread is None:
                return await repo.save(fresh)
            current = reread
    raise Conflict("the link kept changing while it was reconnected")


def _clean_name(raw: str) -> str | None:
    """The name the user typed for a new resource, normalised; None if it cannot be used."""
    name = " ".join(raw.split())
    if len(name) > MAX_RESOURCE_NAME or any(not ch.isprintable() for ch in name):
        return None
    return name


@dataclass(frozen=True)
class _Checked:
    choice: Choice
    new_name: str
    #: the link key the calendar goes to when it only blocks times (action "block"), else None
    block_target: LinkKey | None = None


def _check_choice(ctx: ConnectContext, action: str, existing_id: str, selected: str, typed_name: str,
                  choices: list[Choice], resources: list[dict[str, str]], *, resource_known: bool,
                  tenant_id: str) -> _Checked | tuple[str, int]:
    """The submitted choice if the page allows it, else the problem to show and its status."""
    if action not in ("link", "create", "block") and not existing_id:
        return "invalid_action", 400
    if action == "block" and not ctx.resource_id:
        return "block_needs_resource", 400
    if action == "link" and not ctx.resource_id:
        return "no_resource", 400
    if action in ("link", "block") and not resource_known:
        return "resource_gone", 404
    if existing_id and not any(r["id"] == existing_id for r in resources):
        # Only resources the page offered: the provider's, and without a calendar.
        return "resource_unavailable", 409
    if not selected:
        return "choose_first", 400
    choice = next((c for c in choices if c.key == selected), None)
    if choice is None:
        return "calendar_gone", 404
    if not choice.calendar.can_edit and action != "block":
        return "calendar_read_only", 400
    here = LinkKey(ctx.provider_id, ctx.resource_id) if ctx.resource_id else None
    # The page lets the user pick a free calendar or the one this resource already has; the
    # latter may move to another (new or existing) resource, as every action on it offers.
    # A block-only calendar has a key of its own (and may be reconnected as such).
    target = here
    if action == "block":
        assert here is not None
        cal = choice.calendar
        target = block_key(here.provider_id, here.resource_id, tenant_id, cal.mailbox_id, cal.id)
        if choice.owner is not None and _blocks_here(choice, here):
            target = choice.owner  # a reconnect of the same block-only calendar
    if choice.owner is not None and choice.owner != target:
        return "calendar_taken", 409
    if action == "block":
        return _Checked(choice, "", target)
    if action != "create":
        return _Checked(choice, "")
    cleaned = _clean_name(typed_name)
    if cleaned is None:
        return "name_invalid", 400
    return _Checked(choice, cleaned or choice.suggested_name)


async def _resource_for(services: Services, ctx: ConnectContext, action: str, existing_id: str, new_name: str,
                        block_target: LinkKey | None) -> str:
    """The id of the link's resource (a block-only calendar: its own key's) for a checked choice;
    ``create`` makes the timum resource here."""
    if action == "create":
        return await services.timum.create_resource(ctx.provider_id, new_name)
    if existing_id:
        return existing_id
    if action == "block":
        assert block_target is not None
        return block_target.resource_id
    assert ctx.resource_id is not None
    return ctx.resource_id


async def submit(services: Services, session_id: str | None, form: Mapping[str, str], *,
                 locale: str) -> Redirect | ChooserPage | ErrorPage:
    store = session_store(services)
    session = await store.get(session_id, now=services.clock())
    if session is None or not session_id:
        return ErrorPage("session_expired", locale, status=400)
    if not store.csrf_ok(session_id, form.get("csrf")):
        return _cookie_error(session, "csrf", locale, 403)
    ctx = session.context
    action = form.get("action") or ""
    selected = form.get("calendar") or ""
    typed_name = form.get("new_name") or ""
    try:
        graph = await services.graph.for_link(_probe(session))
    except NeedsReconnect:
        return _cookie_error(session, "needs_reconnect", locale, 400)
    try:
        try:
            choices = await _calendars(services, graph, session)
            resource_name = await _resource_name(services, session)
            resources = await _free_resources(services, session)
        except SyncError as exc:
            log.warning("chooser could not list calendars: %s", exc.code)
            return _cookie_error(session, "unavailable", locale, 503)

        async def again(problem: str, status: int = 400) -> ChooserPage:
            return await _page(services, session, session_id, choices, resource_name=resource_name,
                               resources=resources, problem=problem, selected=selected,
                               new_name=typed_name[:MAX_RESOURCE_NAME], status=status)

        existing_id = action.removeprefix("existing:") if action.startswith("existing:") else ""
        checked = _check_choice(ctx, action, existing_id, selected, typed_name, choices, resources,
                                resource_known=resource_name is not None, tenant_id=session.tenant_id)
        if isinstance(checked, tuple):
            return await again(*checked)
        choice, new_name, target = checked.choice, checked.new_name, checked.block_target
        try:
            await store.set_busy(session, True)
        except (Conflict, NotFound):
            return _cookie_error(session, "busy", locale, 409)
        try:
            resource_id = await _resource_for(services, ctx, action, existing_id, new_name, target)
            moving = None
            if choice.owner is not None and choice.owner.resource_id != resource_id:
                moving = await LinkRepository(services.storage).get(choice.owner)
            if moving is None:
                link = await connect_calendar(services, session, choice.calendar, resource_id, graph)
            else:
                link = await _move(services, session, moving, choice.calendar, resource_id, graph)
        except Conflict as exc:
            await store.set_busy(session, False)
            if exc.code == "calendar_taken":
                return await again("calendar_taken", 409)
            return _cookie_error(session, "busy", locale, 409)
        except SyncError as exc:
            log.warning("connecting a calendar failed: %s", exc.code)
            await store.delete(session)
            return Redirect(with_params(ctx.return_url, outlook="failed", reason=exc.code), clear_session=True)
    finally:
        await graph.close()
    await store.delete(session)
    log.info("calendar connected for provider %s", ctx.provider_id)
    return Redirect(with_params(ctx.return_url, outlook="connected", resourceId=link.timum_resource_id),
                    clear_session=True)


async def _move(services: Services, session: ChooserSession, previous: Link, cal: CalendarInfo, resource_id: str,
                graph: GraphCalendarPort) -> Link:
    """Move ``cal`` from the resource of ``previous`` to ``resource_id``: hand the calendar's
    claim over, link the new resource, then end the old link (its subscription is torn down;
    the account stays, the new link uses it)."""
    repo = LinkRepository(services.storage)
    await repo.release_calendar(previous)
    try:
        link = await connect_calendar(services, session, cal, resource_id, graph)
    except SyncError:
        # Give the calendar back to the link that still has it.
        with contextlib.suppress(SyncError):
            await repo.claim_calendar(previous)
        raise
    await unlink(services, previous, keep_claim=True)
    return link
