"""The Graph stand-in's directory (``GET /users``, ``GET /places/microsoft.graph.room``), the
application access policy's 403, and ``GraphOrgDirectory`` reading a 5,000-person tenant through
real azure-identity client credentials."""

from __future__ import annotations

import ssl
from typing import Any

import httpx
import pytest

from devtools.sandbox.graph.directory_api import RAOP_MESSAGE
from devtools.sandbox.server import RunningSandbox
from shared.context import Services
from shared.errors import BadRequest
from shared.org.directory import GraphOrgDirectory, MemoryOrgDirectory, OrgDirectoryPort
from tests.support.org_world import OrgTenant


def _token(sandbox: RunningSandbox, tenant_id: str) -> str:
    ctx = ssl.create_default_context(cafile=sandbox.ca_path)
    response = httpx.post(f"{sandbox.https_base}/{tenant_id}/oauth2/v2.0/token", verify=ctx, data={
        "grant_type": "client_credentials", "client_id": sandbox.config.client_id,
        "client_secret": sandbox.config.client_secret, "scope": "https://graph.microsoft.com/.default"})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _get(sandbox: RunningSandbox, token: str, path: str, **headers: str) -> httpx.Response:
    ctx = ssl.create_default_context(cafile=sandbox.ca_path)
    return httpx.get(f"{sandbox.config.graph_base_url}{path}", verify=ctx,
                     headers={"Authorization": f"Bearer {token}", **headers})


@pytest.fixture
def big_tenant(sandbox: RunningSandbox, org_tenant: OrgTenant) -> OrgTenant:
    for i in range(5_000):
        sandbox.directory.add_user(org_tenant.id, f"Mitarbeiter {i:04d}", f"m{i:04d}")
    sandbox.identity.set_admin_consent(org_tenant.id, True)
    return org_tenant


def test_users_are_paged_filtered_and_searched_as_graph_does(sandbox: RunningSandbox, big_tenant: OrgTenant) -> None:
    token = _token(sandbox, big_tenant.id)
    first = _get(sandbox, token, "/users?$top=999&$select=id,displayName,mail")
    body: dict[str, Any] = first.json()
    assert first.status_code == 200 and len(body["value"]) == 999 and set(body["value"][0]) == {
        "id", "displayName", "mail"}
    seen = {u["id"] for u in body["value"]}
    link = body["@odata.nextLink"]
    ctx = ssl.create_default_context(cafile=sandbox.ca_path)
    while link:
        page = httpx.get(link, verify=ctx, headers={"Authorization": f"Bearer {token}"}).json()
        seen |= {u["id"] for u in page["value"]}
        link = page.get("@odata.nextLink")
    assert len(seen) == 5_004
    assert _get(sandbox, token, "/users?$top=1000").status_code == 400
    filtered = _get(sandbox, token, "/users?$filter=startswith(displayName,'Mitarbeiter 012')").json()
    assert [u["displayName"] for u in filtered["value"]][:2] == ["Mitarbeiter 0120", "Mitarbeiter 0121"]
    assert len(filtered["value"]) == 10
    assert _get(sandbox, token, "/users?$filter=endswith(mail,'x')").json()["error"]["code"] == \
        "Request_UnsupportedQuery"
    # $search is an advanced query: without ConsistencyLevel: eventual Graph refuses it.
    assert _get(sandbox, token, '/users?$search="displayName:behandlungsraum"').status_code == 400
    searched = _get(sandbox, token, '/users?$search="displayName:behandlungsraum"&$count=true',
                    ConsistencyLevel="eventual").json()
    assert searched["@odata.count"] == 1 and searched["value"][0]["accountEnabled"] is False
    rooms = _get(sandbox, token, "/places/microsoft.graph.room").json()
    assert [r["emailAddress"] for r in rooms["value"]] == [big_tenant.room.mail]


def test_a_mailbox_outside_the_application_scope_answers_exchanges_403(sandbox: RunningSandbox,
                                                                     org_tenant: OrgTenant) -> None:
    sandbox.identity.set_admin_consent(org_tenant.id, True)
    sandbox.identity.set_app_mailbox_scope(org_tenant.id, [org_tenant.staff.mail])
    token = _token(sandbox, org_tenant.id)
    allowed = _get(sandbox, token, f"/users/{org_tenant.staff.id}/calendars")
    denied = _get(sandbox, token, f"/users/{org_tenant.outside.id}/calendars")
    assert allowed.status_code == 200
    assert denied.status_code == 403
    assert denied.json()["error"] == {**denied.json()["error"], "code": "ErrorAccessDenied", "message": RAOP_MESSAGE}
    sandbox.identity.set_app_mailbox_scope(org_tenant.id, None)
    assert _get(sandbox, token, f"/users/{org_tenant.outside.id}/calendars").status_code == 200
    # Without application permissions, listing people is refused.
    sandbox.identity.set_application_consent(org_tenant.id, ["Calendars.ReadWrite"])
    assert _get(sandbox, _token(sandbox, org_tenant.id), "/users").json()["error"]["code"] == \
        "Authorization_RequestDenied"


async def _contract(directory: OrgDirectoryPort, *, room: str, outside: str, expect_total: int) -> None:
    """What the mapping page relies on, for the real directory and the twin alike."""
    seen: list[str] = []
    cursor = ""
    for _ in range(400):
        page = await directory.people(cursor=cursor, top=25)
        assert len(page.mailboxes) <= 25
        seen += [m.id for m in page.mailboxes]
        cursor = page.next_cursor
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == expect_total
    rooms = (await directory.people(search=room[:6])).mailboxes
    assert any(m.kind == "room" and m.address == room for m in rooms)
    found = (await directory.people(search=outside)).mailboxes
    assert [m.address for m in found] == [outside]
    read = await directory.calendars(found)
    assert read[0].problem == "out_of_scope" and not read[0].calendars
    with pytest.raises(BadRequest):
        await directory.people(cursor="https://elsewhere.example/users?$skiptoken=x")


async def test_the_graph_directory_and_its_twin_agree(live: Services, sandbox: RunningSandbox,
                                                      org_tenant: OrgTenant) -> None:
    for i in range(60):
        sandbox.directory.add_user(org_tenant.id, f"Kollege {i:02d}", f"k{i:02d}")
    sandbox.identity.set_admin_consent(org_tenant.id, True)
    sandbox.identity.set_app_mailbox_scope(org_tenant.id, [u.id for u in sandbox.directory.tenant_users(
        org_tenant.id) if u.id != org_tenant.outside.id])
    real = GraphOrgDirectory(live.settings, org_tenant.id)
    try:
        await _contract(real, room=org_tenant.room.mail, outside=org_tenant.outside.mail, expect_total=64)
        everyone = (await real.people(top=100)).mailboxes
        read = await real.calendars(everyone)
        assert len(read) == 64 and sum(1 for r in read if r.problem) == 1
        assert real.requests <= 20  # $batch: 20 mailboxes per request
    finally:
        await real.close()
    twin = MemoryOrgDirectory()
    for i in range(62):
        twin.add(f"Kollege {i:02d}", f"k{i:02d}@praxis.example")
    twin.add("Behandlungsraum 1", "raum1@praxis.example", kind="room")
    outside = twin.add("Jonas Extern", "jonas@praxis.example")
    twin.out_of_scope.add(outside.id)
    await _contract(twin, room="raum1@praxis.example", outside="jonas@praxis.example", expect_total=64)
