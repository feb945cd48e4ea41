"""The organisation page's HTTP trigger: a whole page of mailboxes submits in one form (three
fields per calendar), the session cookie is required, the form is bounded."""

from __future__ import annotations

import re
from dataclasses import replace
from urllib.parse import urlencode

from shared.connect.flow import session_store
from shared.connect.store import ConnectContext
from shared.http.connect_bp import session_cookie_name
from shared.http.org_bp import handle_organisation
from shared.org.directory import MemoryOrgDirectory
from shared.org.store import OrgRepository
from shared.repos.links import LinkRepository
from tests.org.test_bulk_background import run_org_messages
from tests.support.connect_world import RETURN_BASE, MemoryWorld, http_request

CONTEXT = ConnectContext(provider_id="prov-1", resource_id=None, locale="en",
                         return_url=RETURN_BASE + "providers/prov-1", scope="org")


async def test_a_full_page_is_linked_with_one_post(world: MemoryWorld) -> None:
    directory = MemoryOrgDirectory()
    for i in range(30):
        directory.add(f"Person {i:02d}", f"p{i:02d}@praxis.example", calendars=("Calendar", "Team"))
    services = replace(world.services, org_directory=lambda tid: directory)
    await OrgRepository(world.storage).connect("tid-1", "prov-1", frozenset({"Calendars.ReadWrite"}),
                                               now=services.clock())
    session_id = await session_store(services).create(CONTEXT, account_id="", tenant_id="tid-1",
                                                      account_name="Petra", now=services.clock())
    cookie = {"Cookie": f"{session_cookie_name(services)}={session_id}"}
    anonymous = await handle_organisation(services, http_request("GET", "/api/connect/organisation"))
    assert anonymous.status_code == 400
    page = await handle_organisation(services, http_request("GET", "/api/connect/organisation", headers=cookie))
    html = page.get_body().decode()
    assert page.status_code == 200 and "<h1 id=\"page-title\">Connect the whole organisation</h1>" in html
    assert page.headers["Cache-Control"] == "no-store"
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))
    selects = re.findall(r'<select name="(c\.[^"]+)"', html)
    assert len(selects) == 50  # 25 people, two calendars each
    form = {**fields, **dict.fromkeys(selects, "new"), **{f"n.{n[2:]}": "" for n in selects}}
    body = urlencode(form).encode()
    assert len(form) > 150
    done = await handle_organisation(services, http_request(
        "POST", "/api/connect/organisation", body=body,
        headers={**cookie, "Content-Type": "application/x-www-form-urlencoded"}))
    assert done.status_code == 200, done.get_body()[:400]
    # Answered once planned; the link-admin worker links the rows (tests/org/test_bulk_background.py).
    assert "0 connected, 0 not, 50 in progress." in done.get_body().decode()
    await run_org_messages(services)
    assert len(await LinkRepository(world.storage).list_for_provider("prov-1")) == 50
    # A forged form (no CSRF token) changes nothing.
    forged = await handle_organisation(services, http_request(
        "POST", "/api/connect/organisation", body=urlencode({k: v for k, v in form.items() if k != "csrf"}).encode(),
        headers={**cookie, "Content-Type": "application/x-www-form-urlencoded"}))
    assert forged.status_code == 403
