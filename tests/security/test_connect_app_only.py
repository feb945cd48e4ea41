"""Edit rights on one shared calendar must never become app-only access to another calendar of the
owner that merely has the same name; and an app-only token that is not a JWT never proves consent.

Graph gives a sharee its own id for a shared calendar. When the owner's mailbox (seen app-only)
has no calendar with that id, the link stays delegated — it is not resolved by display name.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest

from shared.connect import credentials
from shared.connect.flow import session_store
from shared.domain import CalendarInfo, Link, LinkKey, LinkMode, SyncMode
from shared.errors import ConsentRequired
from shared.http.connect_bp import handle_calendars
from shared.repos.accounts import TenantRepository
from shared.repos.links import LinkRepository, calendar_key
from tests.support.connect_world import (
    JONAS,
    AppOnlyView,
    MemoryWorld,
    ModeAwareProvider,
    http_request,
    make_settings,
    open_session,
)

#: the names the owner gives his calendars (the sharee may call a shared calendar anything)
OWNER_NAMES = {"cal-team": "Team"}


class OwnerSideIds(AppOnlyView):
    """The owner's mailbox seen app-only, as Graph shows it: the owner's own calendar ids, which
    differ from the id the sharee was given, and the owner's names for them."""

    async def list_calendars(self, mailbox_id: str) -> list[CalendarInfo]:
        calendars: list[CalendarInfo] = await AppOnlyView.__getattr__(self, "list_calendars")(mailbox_id)
        return [CalendarInfo(**{**c.__dict__, "id": "owner-side-" + c.id, "name": OWNER_NAMES.get(c.id, c.name)})
                for c in calendars]


class OwnerSideProvider(ModeAwareProvider):
    async def for_link(self, link: Link) -> Any:
        port = await super().for_link(link)
        return OwnerSideIds(self.graph) if link.mode is LinkMode.APP_ONLY else port


async def test_a_shared_calendar_is_never_upgraded_to_the_owners_calendar_of_the_same_name(
        world: MemoryWorld) -> None:
    graph = world.graph
    # Jonas shares his calendar "Team" with Anna (she may edit it). In her Outlook she renames it
    # to the name of Jonas's primary calendar, which she must never get write access to.
    primary = graph.calendars[graph.default_calendar(JONAS)].name
    team = graph.add_calendar(JONAS, primary, calendar_id="cal-team")
    graph.share_calendar(team, "anna", can_edit=True)
    provider = OwnerSideProvider(graph)
    services = world.services.__class__(settings=world.services.settings, storage=world.storage,
                                        timum=world.timum, graph=provider)
    await TenantRepository(world.storage).record_admin_consent("tid-1", now=services.clock())
    sid = await open_session(services)
    form = {"csrf": session_store(services).csrf_token(sid), "calendar": calendar_key("tid-1", "anna", team),
            "action": "link"}
    response = await handle_calendars(services, http_request(
        "POST", "/api/connect/calendars", body=urlencode(form).encode(),
        headers={"Cookie": f"timum-connect={sid}", "Content-Type": "application/x-www-form-urlencoded"}))
    assert response.status_code == 303
    link = await LinkRepository(world.storage).require(LinkKey("prov-1", "res-1"))
    # Not app-only on anything of Jonas's: delegated, through Anna's own access to "Team".
    assert (link.mode, link.sync_mode, link.mailbox_id, link.calendar_id) == (
        LinkMode.DELEGATED, SyncMode.POLLING, "anna", team)


async def test_an_opaque_app_only_token_never_counts_as_admin_consent(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings()
    monkeypatch.setattr(credentials, "_client_credentials",
                        lambda _s, _t: {"access_token": "opaque-token-without-claims", "expires_in": 3600})
    with pytest.raises(ConsentRequired):
        await credentials.verify_admin_consent(settings, "tid-1")
