"""The organisation path end to end against the sandbox's identity platform and Graph (real MSAL
and azure-identity), with in-memory storage and timum: org-scoped link → admin sign-in →
application admin consent → mapping page → bulk app-only links; a non-administrator gets the
page with the link to forward; a mailbox outside the administrator's scope says so on its row."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

from devtools.sandbox.server import RunningSandbox
from shared.connect import flow
from shared.connect.outcomes import ConsentPage, ConsentResultPage, Redirect
from shared.context import Services
from shared.domain import LinkMode, SyncMode
from shared.messages import LINK_ADMIN_QUEUE
from shared.org import service
from shared.org.service import OrgPage
from shared.org.store import OrgRepository
from shared.repos.accounts import TenantRepository
from shared.repos.links import LinkRepository
from shared.signing import ConnectLink, sign_connect_link
from tests.org.test_bulk_background import run_org_messages
from tests.support.connect_world import CONNECT_SECRET, RETURN_BASE, MicrosoftSignIn
from tests.support.org_world import OrgTenant


def org_token(provider: str = "prov-1", *, locale: str = "de") -> str:
    return sign_connect_link(ConnectLink(provider_id=provider, resource_id=None, locale=locale,
                                         return_url=RETURN_BASE + f"providers/{provider}",
                                         expires_at=int(time.time()) + 600, nonce=f"n{time.time_ns()}xxxxxxxxxxxx",
                                         scope="org"), CONNECT_SECRET)


async def sign_in(live: Services, microsoft: MicrosoftSignIn, mail: str) -> Any:
    started = await flow.start(live, org_token())
    assert isinstance(started, Redirect) and started.binding is not None
    # The organisation sign-in asks for the profile only: the calendars come with the admin's grant.
    scope = parse_qs(urlsplit(started.location).query)["scope"][0].split()
    assert "User.Read" in " ".join(scope) and not any("Calendars" in s for s in scope)
    answer = microsoft.run(started.location, mail)
    return await flow.callback(live, answer, binding=started.binding.value)


def admin_consents(microsoft: MicrosoftSignIn, consent_url: str) -> dict[str, str]:
    page = microsoft.client.get(consent_url)
    assert page.status_code == 200, page.text[:300]
    # Application permissions are listed by readable name on Microsoft's screen.
    assert "Kalender in allen Postfächern lesen und schreiben" in page.text
    back = microsoft._submit(page, "/adminconsent/consent", {"decision": "accept"})
    assert back.status_code in (302, 303)
    return {k: v[0] for k, v in parse_qs(urlsplit(back.headers["location"]).query).items()}


async def connect_org(live: Services, microsoft: MicrosoftSignIn, org: OrgTenant) -> str:
    """The administrator's whole path; returns the mapping page's session id."""
    outcome = await sign_in(live, microsoft, org.admin.mail)
    assert isinstance(outcome, Redirect) and outcome.binding is not None, outcome
    url = urlsplit(outcome.location)
    assert url.path == f"/{org.id}/v2.0/adminconsent"
    assert parse_qs(url.query)["scope"] == ["https://graph.microsoft.com/.default"]
    params = admin_consents(microsoft, outcome.location)
    opened = await flow.admin_callback(live, params, binding=outcome.binding.value)
    assert isinstance(opened, Redirect) and opened.session_id, opened
    assert opened.location.endswith("/api/connect/organisation")
    return opened.session_id


def _rows(page: OrgPage) -> dict[str, dict[str, Any]]:
    return {row["address"]: row for row in page.values["rows"]}


def _choose(page: OrgPage, choices: dict[str, str]) -> dict[str, str]:
    """The form as the browser sends it: ``choices`` maps an address to "new" / "existing:<id>"
    for its default calendar."""
    form = {"csrf": page.values["csrf"], "q": page.values["search"], "cursor": page.values["cursor"]}
    for address, value in choices.items():
        row = _rows(page)[address]
        cal = next(c for c in row["calendars"] if c["is_default"])
        form[f"c.{cal['key']}"] = value
        form[f"m.{cal['key']}"] = row["id"]
    return form


async def test_an_administrator_connects_and_maps_the_organisation(live: Services, sandbox: RunningSandbox,
                                                                  microsoft: MicrosoftSignIn,
                                                                  org_tenant: OrgTenant) -> None:
    session_id = await connect_org(live, microsoft, org_tenant)
    assert await TenantRepository(live.storage).has_admin_consent(org_tenant.id)
    connection = await OrgRepository(live.storage).get(org_tenant.id, "prov-1")
    assert connection is not None and connection.connected
    sandbox.identity.set_app_mailbox_scope(org_tenant.id, [org_tenant.admin.id, org_tenant.staff.id,
                                                           org_tenant.room.id])

    page = await service.view(live, session_id, search="", cursor="", locale="de")
    assert isinstance(page, OrgPage)
    rows = _rows(page)
    assert set(rows) == {u.mail for u in (org_tenant.admin, org_tenant.staff, org_tenant.outside, org_tenant.room)}
    assert rows[org_tenant.room.mail]["kind"] == "Raum" and rows[org_tenant.staff.mail]["kind"] == "Person"
    # A mailbox outside the administrator's scope says so, with a pointer; the others are unharmed.
    outside = rows[org_tenant.outside.mail]
    assert outside["out_of_scope"] and "nicht freigegeben" in outside["problem"] and not outside["calendars"]
    assert rows[org_tenant.staff.mail]["calendars"]
    names = [p["title"] for p in page.values["permissions"]]
    assert "Die Personen und Postfächer Ihrer Organisation auflisten (nur lesend)" in names
    assert not any("." in n and " " not in n for n in names)  # no raw "MailboxSettings.Read"

    form = _choose(page, {org_tenant.staff.mail: "new", org_tenant.room.mail: "existing:res-1"})
    pressed = await service.submit(live, session_id, form, locale="de")
    assert isinstance(pressed, OrgPage), pressed
    assert pressed.values["summary"].endswith(": 0 verbunden, 0 nicht, 2 in Arbeit.")
    # The link-admin worker links the rows; the page the script then reloads sums the press up.
    await run_org_messages(live)
    progress = pressed.values["progress"]
    done = await service.view(live, session_id, search="", cursor="", locale="de",
                              **dict(parse_qsl(urlsplit(progress["reload_url"]).query)))
    assert isinstance(done, OrgPage), done
    assert done.values["summary"] == "2 Kalender verbunden, 0 nicht."
    links = await LinkRepository(live.storage).list_for_provider("prov-1")
    assert len(links) == 2 and all(k.mode is LinkMode.APP_ONLY and k.sync_mode is SyncMode.PUSH for k in links)
    assert {k.mailbox_id for k in links} == {org_tenant.staff.id, org_tenant.room.id}
    by_mailbox = {k.mailbox_id: k for k in links}
    assert by_mailbox[org_tenant.room.id].resource_id == "res-1"
    new_resource = by_mailbox[org_tenant.staff.id].resource_id
    assert (await live.timum.get_resource("prov-1", new_resource) or {})["name"] == "Anna Weber"
    queued = [json.loads(m) for m in live.storage.queue(LINK_ADMIN_QUEUE).drain()]  # type: ignore[attr-defined]
    assert sum(1 for m in queued if m["action"] == "setup") == 2
    # Linked rows show their resource and health now.
    staff_cal = next(c for c in _rows(done)[org_tenant.staff.mail]["calendars"] if c["is_default"])
    assert staff_cal["linked"]["resource"] == "Anna Weber" and staff_cal["linked"]["health_label"] == "Abgleich läuft"

    # Pressing "Übernehmen" again with the same (stale) form makes nothing twice.
    before = len(await live.timum.list_resources("prov-1"))
    again = await service.submit(live, session_id, form, locale="de")
    assert isinstance(again, OrgPage)
    await run_org_messages(live)
    assert len(await live.timum.list_resources("prov-1")) == before
    assert len(await LinkRepository(live.storage).list_for_provider("prov-1")) == 2


async def test_someone_who_is_not_an_administrator_gets_the_link_to_forward(
        live: Services, sandbox: RunningSandbox, microsoft: MicrosoftSignIn, org_tenant: OrgTenant) -> None:
    sandbox.identity.set_user_consent_allowed(org_tenant.id, True)
    outcome = await sign_in(live, microsoft, org_tenant.staff.mail)
    assert isinstance(outcome, ConsentPage) and outcome.org
    url = urlsplit(outcome.consent_url)
    assert url.path == f"/{org_tenant.id}/v2.0/adminconsent"
    assert parse_qs(url.query)["scope"] == ["https://graph.microsoft.com/.default"]
    # The administrator opens the forwarded link in their own browser and consents.
    other = MicrosoftSignIn(sandbox)
    try:
        page = other.client.get(outcome.consent_url)
        page = other._submit(page, "/adminconsent/select", {"user": org_tenant.admin.id})
        back = other._submit(page, "/adminconsent/consent", {"decision": "accept"})
    finally:
        other.close()
    params = {k: v[0] for k, v in parse_qs(urlsplit(back.headers["location"]).query).items()}
    result = await flow.admin_callback(live, params, binding=None)
    assert isinstance(result, ConsentResultPage) and result.ok and result.org
    connection = await OrgRepository(live.storage).get(org_tenant.id, "prov-1")
    assert connection is not None and connection.connected
    # Now the staff member who manages timum opens the mapping page straight away.
    reopened = await sign_in(live, microsoft, org_tenant.staff.mail)
    assert isinstance(reopened, Redirect) and reopened.session_id


async def test_a_grant_for_one_provider_does_not_open_the_tenant_to_another(
        live: Services, microsoft: MicrosoftSignIn, org_tenant: OrgTenant) -> None:
    await connect_org(live, microsoft, org_tenant)
    started = await flow.start(live, org_token("prov-2"))
    assert isinstance(started, Redirect) and started.binding is not None
    answer = microsoft.run(started.location, org_tenant.admin.mail)
    outcome = await flow.callback(live, answer, binding=started.binding.value)
    # An administrator must confirm for this provider too: straight to consent, no session yet.
    assert isinstance(outcome, Redirect) and outcome.session_id is None and "adminconsent" in outcome.location
