"""Scenario 10: the organisation path — the mapping page of a 5,000-person tenant, and one
"Übernehmen" linking 200 calendars.

*Mapping page*: a tenant with 5,000 people (and a few rooms) that granted the application
permissions and is connected for the provider. Timed over HTTP through the local Functions host,
as a browser loads it: the first page (no search; 25 mailboxes, their calendars in two ``$batch``
requests, the provider's resources, the links and claims of the page's calendars) and a search
by name (a ``startswith`` filter, a standard Graph query).

*Bulk link*: 200 mailboxes chosen on one POST of the mapping form, each "new timum resource".
Timed from the POST until every link finished its initial sync (SETUP on the link-admin queue:
app-only subscription, then a full delta round by the sync worker). Counted from the sandbox's
request log: Graph requests in that time, the busiest mailbox's share (Graph allows 10,000 per
app and mailbox in 10 minutes and 4 at once) and how many were answered 429.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from bench.report import Figure, Target
from bench.scenarios import Context, Output
from devtools.stack_world import bench_stack

if TYPE_CHECKING:
    from devtools.stack import Stack

PEOPLE = 5_000
FIRST_PAGE_TARGET = 1.0
SEARCH_TARGET = 0.5
BULK = 200
BULK_TARGET = 60.0
PROVIDER = "bench-org"


def _session(stack: Stack, tenant_id: str) -> str:
    from shared.connect.flow import session_store
    from shared.connect.store import ConnectContext
    from shared.org.store import OrgRepository

    services = stack.services()
    context = ConnectContext(provider_id=PROVIDER, resource_id=None, locale="de",
                             return_url=f"{stack.sandbox.http_base}/timum/providers/{PROVIDER}", scope="org")

    async def make() -> str:
        await OrgRepository(services.storage).connect(tenant_id, PROVIDER, frozenset({"Calendars.ReadWrite",
                                                                                      "User.Read.All"}),
                                                      now=services.clock())
        return await session_store(services).create(context, account_id="", tenant_id=tenant_id,
                                                    account_name="Bench Admin", now=services.clock())

    return stack.run(make())


def _timed_get(client: Any, url: str, **params: str) -> tuple[float, str]:
    began = time.perf_counter()
    response = client.get(url, params=params)
    took = time.perf_counter() - began
    if response.status_code != 200 or "Ganze Organisation verbinden" not in response.text:
        raise RuntimeError(f"the mapping page failed: {response.status_code} {response.text[:300]}")
    return took, response.text


def run_scenario(ctx: Context) -> Output:
    people = 1_000 if ctx.quick else PEOPLE
    bulk = 50 if ctx.quick else BULK
    stack = bench_stack()
    try:
        return _run(stack, ctx, people, bulk)
    finally:
        stack.stop()


def _run(stack: Stack, ctx: Context, people: int, bulk: int) -> Output:
    from shared.repos.links import calendar_key

    tenant = stack.directory.add_tenant("Bench Organisation", f"bench-org-{time.time_ns()}.example")
    users = [stack.directory.add_user(tenant.id, f"Mitarbeiter {i:04d}", f"m{i:04d}") for i in range(people)]
    for i in range(5):
        stack.directory.add_resource_mailbox(tenant.id, f"Behandlungsraum {i}", f"raum{i}", kind="room")
    stack.directory.set_admin_consent(tenant.id, stack.client_id, True)
    stack.ensure_resource(PROVIDER, "seed-0000", "Vorhanden")
    session_id = _session(stack, tenant.id)
    url = stack.api_url("connect/organisation")
    client = stack.http()
    client.cookies.set("timum-connect", session_id)
    first: list[float] = []
    search: list[float] = []
    try:
        _timed_get(client, url)  # the process's first Graph call pays msgraph/azure-identity imports
        for run in range(ctx.runs):
            took, _ = _timed_get(client, url)
            first.append(took)
            took, text = _timed_get(client, url, q=f"Mitarbeiter {run:02d}")
            search.append(took)
            if f"Mitarbeiter {run:02d}" not in text:
                raise RuntimeError("the search found nobody")
            ctx.log(f"mapping page: first page {first[-1] * 1000:.0f} ms, search {search[-1] * 1000:.0f} ms")

        # One press of "Übernehmen" for ``bulk`` people (their default calendars), as the form sends it.
        page_took, page = _timed_get(client, url)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf is not None
        form = {"csrf": csrf.group(1), "q": "", "cursor": ""}
        chosen = users[:bulk]
        for user in chosen:
            cal = stack.graph.default_calendar(user.id)
            key = calendar_key(tenant.id, user.id, cal.id)
            form[f"c.{key}"] = "new"
            form[f"m.{key}"] = user.id
        seq = stack.request_seq()
        began = time.monotonic()
        response = client.post(url, data=form, timeout=300.0)
        posted = time.monotonic() - began
        # The page answers once the rows are planned; the link-admin worker links them.
        if response.status_code != 200 or f"0 verbunden, 0 nicht, {bulk} in Arbeit." not in response.text:
            raise RuntimeError(f"the bulk link failed: {response.status_code} {response.text[-600:]}")
        ctx.log(f"bulk link of {bulk}: the page answered after {posted:.1f} s")
        linked = _wait_linked(client, response.text, bulk, began)
        ctx.log(f"bulk link of {bulk}: the page's status said all linked after {linked:.1f} s")
        synced = _wait_synced(stack, tenant.id, bulk, began)
        total = time.monotonic() - began
        entries = stack.graph_requests(since_seq=seq)
    finally:
        client.close()
    per_mailbox = Counter(e.mailbox for e in entries if e.mailbox)
    throttled = sum(1 for e in entries if e.status == 429)
    ctx.log(f"bulk link: {synced} initial syncs done after {total:.1f} s; {len(entries)} Graph requests, "
            f"busiest mailbox {max(per_mailbox.values(), default=0)}, {throttled} answered 429")
    page_fig = Figure("11", f"mapping page, first page ({people:,} people)", "s", first,
                      target=Target("<=", FIRST_PAGE_TARGET),
                      method="GET /api/connect/organisation through the local host; 25 mailboxes, two $batch "
                             "calendar reads, resources, links and claims")
    search_fig = Figure("11", f"mapping page, search ({people:,} people)", "s", search,
                        target=Target("<=", SEARCH_TARGET),
                        method="GET …?q=<name prefix>: Graph startswith filter on displayName or mail")
    bulk_fig = Figure("11", f"bulk link of {bulk} calendars, all initial syncs done", "s", [total],
                      target=Target("<=", BULK_TARGET),
                      method=(f"one POST of the mapping form ({posted:.1f} s until the page answered, {linked:.1f} s "
                              "until its status said all linked), then the link-admin and sync workers of the "
                              "local host until every link has synced"))
    req_fig = Figure("11", f"Graph requests for the bulk link of {bulk}", "requests", [float(len(entries))],
                     method=(f"from the POST until the last initial sync; busiest mailbox "
                             f"{max(per_mailbox.values(), default=0)} requests (limit 10,000 per 10 min), "
                             f"{throttled} answered 429"))
    return Output([page_fig, search_fig, bulk_fig, req_fig], [
        "The sandbox (identity, Graph, timum), Azurite and the host share the machine's two cores."])


def _wait_linked(client: Any, page: str, count: int, began: float, timeout: float = 300.0) -> float:
    """Poll the page's status URL as its script does; seconds from the POST until all were linked."""
    import html

    found = re.search(r'data-status-url="([^"]+)"', page)
    if found is None:
        raise RuntimeError("the answer to the bulk link shows no progress")
    url = html.unescape(found.group(1))
    while time.monotonic() < began + timeout:
        counts = client.get(url).json()
        if counts["done"]:
            if counts["linked"] != count:
                raise RuntimeError(f"the bulk link ended with {counts}")
            return time.monotonic() - began
        time.sleep(0.5)
    raise RuntimeError(f"the bulk link did not finish within {timeout:.0f} s")


def _wait_synced(stack: Stack, tenant_id: str, count: int, began: float, timeout: float = 300.0) -> int:
    from shared.repos.links import LinkRepository

    deadline = began + timeout
    done = 0
    while time.monotonic() < deadline:
        links = stack.run(LinkRepository(stack.storage).list_for_provider(PROVIDER))
        done = sum(1 for k in links if k.tenant_id == tenant_id and k.last_sync_at is not None)
        if done >= count:
            return done
        time.sleep(0.5)
    raise RuntimeError(f"only {done} of {count} initial syncs finished within {timeout:.0f} s")
