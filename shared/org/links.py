"""Creating app-only push links for mapped calendars (the organisation path's bulk link).

One ``AppOnlyLinker`` per press of "Übernehmen": it holds one app-only Graph port for the
tenant (one credential, one token) for every row, and links a row the same way the chooser
links one calendar — claim the calendar (one calendar ↔ one resource, an insert conflict),
save the link, queue SETUP (subscription + initial sync) and the booking replay, announce the
link to timum — so a repeated row finds its claim and its link and changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from shared.context import Services
from shared.domain import Link, LinkKey, LinkMode, SyncMode
from shared.errors import Conflict, SyncError
from shared.messages import LINK_ADMIN_QUEUE, AdminAction, AdminMessage
from shared.org.store import JobRow
from shared.repos.links import LinkRepository

log = logging.getLogger(__name__)

DEFAULT_TIME_ZONE = "Europe/Berlin"


class AppOnlyLinker:
    def __init__(self, services: Services, provider_id: str, tenant_id: str) -> None:
        self._services = services
        self.provider_id = provider_id
        self.tenant_id = tenant_id
        self._repo = LinkRepository(services.storage)
        self._port: Any = None

    async def _graph(self) -> Any:
        if self._port is None:
            probe = Link(provider_id=self.provider_id, resource_id="~organisation", mode=LinkMode.APP_ONLY,
                         tenant_id=self.tenant_id, mailbox_id="", calendar_id="", calendar_name="",
                         calendar_owner="")
            self._port = await self._services.graph.for_link(probe)
        return self._port

    async def owner_of(self, job: JobRow) -> LinkKey | None:
        """Who has the calendar, under either spelling of its mailbox (id, or address as the
        chooser's app-only links use)."""
        owner = await self._repo.calendar_owner(self.tenant_id, job.mailbox_id, job.calendar_id)
        if owner is None and job.mailbox_address:
            owner = await self._repo.calendar_owner(self.tenant_id, job.mailbox_address, job.calendar_id)
        return owner

    async def _time_zone(self, job: JobRow) -> str:
        try:
            graph = await self._graph()
            zone: str = await graph.mailbox_time_zone(job.mailbox_id)
            return zone
        except SyncError:
            pass
        try:
            resource = await self._services.timum.get_resource(self.provider_id, job.resource_id)
        except SyncError:
            resource = None
        return str((resource or {}).get("timeZone") or DEFAULT_TIME_ZONE)

    async def link(self, job: JobRow) -> Link:
        """Link ``job.resource_id`` to the row's calendar app-only. ``Conflict`` (calendar_taken /
        resource_linked) changes nothing."""
        services = self._services
        key = LinkKey(self.provider_id, job.resource_id)
        existing = await self._repo.get(key)
        if existing is not None:
            same = (existing.tenant_id.lower(), existing.calendar_id) == (self.tenant_id, job.calendar_id) and \
                existing.mailbox_id.lower() in (job.mailbox_id.lower(), job.mailbox_address.lower())
            if not same:
                raise Conflict("the resource is linked to another calendar", code="resource_linked")
            return existing
        fresh = Link(provider_id=self.provider_id, resource_id=job.resource_id, mode=LinkMode.APP_ONLY,
                     tenant_id=self.tenant_id, mailbox_id=job.mailbox_id, calendar_id=job.calendar_id,
                     calendar_name=job.calendar_name, calendar_owner=job.mailbox_address or job.owner_name,
                     time_zone=await self._time_zone(job), sync_mode=SyncMode.PUSH, created_at=services.clock())
        await self._repo.claim_calendar(fresh)
        try:
            link = await self._repo.save(fresh)
        except Conflict:
            # Another press saved it meanwhile: theirs is the same link.
            current = await self._repo.get(key)
            if current is None:
                raise
            return current
        await services.storage.queue(LINK_ADMIN_QUEUE).send(
            AdminMessage(link=str(link.key), action=AdminAction.SETUP).to_json())
        from shared.connect.flow import queue_booking_replay
        from shared.connect.status import announce

        await queue_booking_replay(services, link.key)
        try:
            await announce(services, link)
        except SyncError as exc:
            log.warning("link-status webhook failed after mapping: %s", exc.code)
        return link

    async def close(self) -> None:
        if self._port is not None:
            with contextlib.suppress(Exception):
                await self._port.close()
