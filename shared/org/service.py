"""The organisation path: sign-in, the administrator's consent, the mapping page and the bulk link.

1. A signed connect link with scope ``org`` starts a sign-in that only asks for ``User.Read``
   (``flow._begin``); the answer comes back through ``flow.callback`` to ``after_sign_in``.
2. ``after_sign_in``: if the tenant's application permissions hold (proven by an app-only token
   whose ``roles`` we read) and an administrator connected the tenant for this provider, the
   mapping page opens. Otherwise an administrator (the ID token's ``wids`` names a role that may
   grant application permissions) goes straight to Microsoft's admin consent, bound to this
   browser; anyone else gets the admin-consent page with the link to forward.
3. ``consent_callback`` records the grant only after proving it (tenant and roles from the
   token), remembers the tenant for the provider, and queues the move of the tenant's delegated
   links to app-only push (``shared.org.adopt``).
4. ``view`` / ``submit``: the mapping page. Each chosen row becomes a row of the mapping job
   (``MappingJobRepository``) before anything happens, so a second press or a crash resumes instead of
   repeating; rows are linked side by side, each failing alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.connect.outcomes import (
    Binding,
    ConsentPage,
    ConsentResultPage,
    ErrorPage,
    Redirect,
    end_binding,
    with_params,
)
from shared.connect.store import ADMIN_CONSENT_LIFETIME, AuthFlowRepository, ChooserSession, ConnectContext, PendingFlow
from shared.context import Services
from shared.domain import CalendarInfo, Link, LinkKey, LinkMode
from shared.errors import AuthError, Conflict, ConsentRequired, NotFound, SyncError, TransientError
from shared.i18n import translator
from shared.org.directory import GraphOrgDirectory, Mailbox, MailboxCalendars, OrgDirectoryPort
from shared.org.permissions import APPLICATION, REQUIRED_APP_ROLES, readable
from shared.org.store import CREATING, FAILED, LINKED, PENDING, RESOURCE, JobRow, MappingJobRepository, OrgRepository
from shared.repos.links import LinkRepository, calendar_key

log = logging.getLogger(__name__)

#: Entra role templates that may grant tenant-wide consent to application permissions of
#: Microsoft Graph: Global Administrator, Privileged Role Administrator. The ID token names them
#: in ``wids`` when the app registration sets ``groupMembershipClaims`` to include DirectoryRole.
CONSENTING_ROLES = frozenset({"62e90394-69f5-4237-9190-012177145e10", "e8611ab8-c189-46e8-94e1-60213ab1f814"})
#: rows linked at once (each row touches its own mailbox, so Graph's 4-per-mailbox limit holds)
LINK_CONCURRENCY = 16
MAX_ROWS_PER_SUBMIT = 200
#: a row still "creating" after this long was left by a crash, not by a press still running
CREATING_STALE = timedelta(minutes=2)
MAX_SEARCH = 100
_KEY = re.compile(r"^cal-[0-9a-f]{16,128}$")
_ID = re.compile(r"^[\w.@:~+=-]{1,256}$")
#: Microsoft's page on restricting an application to some mailboxes (shown on out-of-scope rows)
SCOPE_DOC_URL = "https://learn.microsoft.com/exchange/permissions-exo/application-rbac"


@dataclass(frozen=True)
class OrgPage:
    locale: str
    values: dict[str, Any]
    return_url: str
    status: int = 200


def is_consenting_admin(claims: Mapping[str, Any]) -> bool:
    wids = claims.get("wids")
    return isinstance(wids, list) and bool(CONSENTING_ROLES & {str(w).lower() for w in wids})


async def app_only_grant(services: Services, tenant_id: str) -> tuple[str, frozenset[str]]:
    """(tenant id, application permissions) of a fresh app-only token in ``tenant_id``. Raises
    ``ConsentRequired`` / ``AuthError`` (no grant, app deleted) or ``TransientError``."""
    from shared.connect.credentials import _client_credentials, jwt_claims, jwt_roles
    from shared.connect.msal_client import classify_client_credentials_error

    try:
        result = await asyncio.to_thread(_client_credentials, services.settings, tenant_id)
    except OSError as exc:
        raise TransientError("the identity platform is unreachable", code="identity_unreachable") from exc
    if "access_token" not in result:
        raise classify_client_credentials_error(result, tenant_id)
    token = str(result["access_token"])
    claims = jwt_claims(token)
    if claims is None:
        raise ConsentRequired("the app-only token is not a JWT; the grant cannot be read", tenant_id=tenant_id)
    return str(claims.get("tid") or "").lower(), jwt_roles(token) or frozenset()


def mapping_url(services: Services) -> str:
    return services.settings.url("connect/organisation")


async def _open_session(services: Services, context: ConnectContext, tenant_id: str, label: str) -> Redirect:
    from shared.connect.flow import session_store

    session_id = await session_store(services).create(context, account_id="", tenant_id=tenant_id,
                                                      account_name=label, now=services.clock())
    return Redirect(mapping_url(services), status=303, session_id=session_id)


async def after_sign_in(services: Services, context: ConnectContext, claims: Mapping[str, Any], *,
                        binding: str | None) -> Redirect | ConsentPage | ErrorPage:
    """The organisation path's sign-in came back: open the mapping page, or get the consent."""
    from shared.connect.flow import _consent_page, admin_consent_url, binding_tag, cipher_for

    tenant_id = str(claims.get("tid") or "").lower()
    if not tenant_id:
        return ErrorPage("sign_in_failed", context.locale, status=400, return_url=context.return_url)
    name = str(claims.get("name") or claims.get("preferred_username") or "")
    try:
        tid, roles = await app_only_grant(services, tenant_id)
    except (ConsentRequired, AuthError):
        tid, roles = tenant_id, frozenset()
    except TransientError:
        return ErrorPage("unavailable", context.locale, status=503, return_url=context.return_url)
    connection = await OrgRepository(services.storage).get(tenant_id, context.provider_id)
    if tid == tenant_id and roles >= REQUIRED_APP_ROLES and connection is not None and connection.connected:
        log.info("organisation page opened for provider %s", context.provider_id)
        return await _open_session(services, context, tenant_id, name)
    if not is_consenting_admin(claims):
        # Someone who cannot grant it: the page with the link for their administrator.
        return await _consent_page(services, context, description=f"tenant: {tenant_id}")
    state = secrets.token_urlsafe(24)
    bound = Binding(binding_tag(state), secrets.token_urlsafe(32))
    from shared.connect.store import binding_hash

    await AuthFlowRepository(services.storage, cipher_for(services.settings)).put(
        state, PendingFlow(kind="adminconsent", context=context, flow={}, tenant=tenant_id,
                           binding_hash=binding_hash(bound.value)),
        expires_at=services.clock() + ADMIN_CONSENT_LIFETIME)
    log.info("administrator sent to admin consent for provider %s", context.provider_id)
    return Redirect(admin_consent_url(services.settings, tenant_id, state, org=True), status=302, binding=bound)


async def consent_callback(services: Services, pending: PendingFlow, state: str, tenant: str, *,
                           binding: str | None, spent: str = "") -> Redirect | ConsentResultPage | ErrorPage:
    """The administrator granted the application permissions (Microsoft says so; the token proves it).
    ``spent`` names the browser's binding cookie, dropped once the consent's flow is taken."""
    from shared.connect.flow import _GENERIC_TENANTS, cipher_for

    context = pending.context
    locale, back = context.locale, context.return_url
    asked = pending.tenant.lower()
    named = bool(asked) and asked not in _GENERIC_TENANTS
    if named and asked != tenant:
        log.warning("organisation consent answer names another tenant than the request; refused")
        return ConsentResultPage(locale=locale, ok=False, reason="other_tenant", return_url=back, org=True)
    try:
        proven, roles = await app_only_grant(services, asked if named else tenant)
    except (ConsentRequired, AuthError, TransientError) as exc:
        log.warning("organisation consent could not be confirmed: %s", exc.code)
        return ConsentResultPage(locale=locale, ok=False, reason="unverified", return_url=back, org=True)
    if proven != tenant:
        log.warning("organisation consent answer names another tenant than the token; refused")
        return ConsentResultPage(locale=locale, ok=False, reason="other_tenant", return_url=back, org=True)
    if not roles >= REQUIRED_APP_ROLES:
        # The administrator granted some permissions but not those the organisation path needs.
        return ConsentResultPage(locale=locale, ok=False, reason="missing_permissions", return_url=back, org=True)
    now = services.clock()
    if await AuthFlowRepository(services.storage, cipher_for(services.settings)).take(state, now=now) is None:
        return end_binding(ErrorPage("consent_unknown", locale, status=400, return_url=back), spent)
    await connect_tenant(services, proven, context.provider_id, roles)
    if pending.bound_to(binding):
        return end_binding(await _open_session(services, context, proven, ""), spent)
    return end_binding(ConsentResultPage(locale=locale, ok=True, return_url=back, org=True), spent)


async def connect_tenant(services: Services, tenant_id: str, provider_id: str, roles: frozenset[str]) -> None:
    """Record a proven grant for ``provider_id``; then the tenant's delegated links move to
    app-only push, and links that waited since a withdrawn grant come back."""
    from shared.org.adopt import queue_tenant
    from shared.org.revoke import revive_tenant
    from shared.repos.accounts import TenantRepository

    now = services.clock()
    await TenantRepository(services.storage).record_admin_consent(tenant_id, now=now)
    await OrgRepository(services.storage).connect(tenant_id, provider_id, roles, now=now)
    moved = await queue_tenant(services, tenant_id)
    revived = await revive_tenant(services, tenant_id)
    log.info("organisation connected for provider %s; %d delegated links queued to move, %d links revived",
             provider_id, moved, revived)


# --- the mapping page -----------------------------------------------------------------------------

def _directory(services: Services, tenant_id: str) -> OrgDirectoryPort:
    if services.org_directory is not None:
        port: OrgDirectoryPort = services.org_directory(tenant_id)
        return port
    return GraphOrgDirectory(services.settings, tenant_id)


async def _session(services: Services, session_id: str | None) -> ChooserSession | None:
    from shared.connect.flow import session_store

    session = await session_store(services).get(session_id, now=services.clock())
    if session is None or not session.context.is_org:
        return None
    return session


@dataclass
class _Linked:
    link: Link
    resource_name: str


@dataclass
class _PageData:
    mailboxes: list[MailboxCalendars]
    next_cursor: str
    links: dict[tuple[str, str], _Linked]
    resources: list[dict[str, str]]
    owners: dict[str, LinkKey | None]
    jobs: dict[str, JobRow] = field(default_factory=dict)


async def _resources(services: Services, provider_id: str) -> list[dict[str, str]]:
    try:
        listed = await services.timum.list_resources(provider_id)
    except SyncError as exc:
        log.info("organisation page could not list the provider's resources: %s", exc.code)
        return []
    return [{"id": str(r["id"]), "name": str(r.get("name") or r["id"])} for r in listed if r.get("id")]


async def _load(services: Services, session: ChooserSession, directory: OrgDirectoryPort, *, search: str,
                cursor: str) -> _PageData:
    provider_id, tenant_id = session.context.provider_id, session.tenant_id
    page = await directory.people(search=search, cursor=cursor)
    mailboxes, resources, links = await asyncio.gather(
        directory.calendars(page.mailboxes), _resources(services, provider_id),
        LinkRepository(services.storage).list_for_provider(provider_id))
    names = {r["id"]: r["name"] for r in resources}
    by_calendar: dict[tuple[str, str], _Linked] = {}
    for link in links:
        if link.tenant_id.lower() == tenant_id and link.mode is not LinkMode.ICS:
            by_calendar[(link.mailbox_id.lower(), link.calendar_id)] = _Linked(
                link, names.get(link.resource_id, link.resource_id))
    repo = LinkRepository(services.storage)
    keys = [(calendar_key(tenant_id, m.mailbox.id, c.id), m.mailbox, c) for m in mailboxes for c in m.calendars]

    async def owner(box: Mailbox, cal: CalendarInfo) -> LinkKey | None:
        return (await repo.calendar_owner(tenant_id, box.id, cal.id)
                or await repo.calendar_owner(tenant_id, box.address, cal.id))

    owners = await asyncio.gather(*(owner(box, cal) for _, box, cal in keys))
    jobs = {j.calendar_key: j for j in await MappingJobRepository(services.storage, provider_id, tenant_id).all()}
    return _PageData(list(mailboxes), page.next_cursor, by_calendar, resources,
                     {k: o for (k, _, _), o in zip(keys, owners, strict=True)}, jobs)


def _health_label(_: Any, link: Link) -> str:
    return str(_(f"org.health.{link.health.value}"))


async def _page(services: Services, session: ChooserSession, session_id: str, data: _PageData, *, search: str,
                cursor: str, results: dict[str, str] | None = None, summary: str = "",
                status: int = 200, press: Press | None = None) -> OrgPage:
    from shared.connect.flow import session_store

    ctx = session.context
    _ = translator(ctx.locale)
    now = services.clock()
    linked_resources = {k.link.resource_id for k in data.links.values()}
    free = [r for r in data.resources if r["id"] not in linked_resources]
    rows = []
    for entry in data.mailboxes:
        box = entry.mailbox
        calendars = []
        for cal in entry.calendars:
            key = calendar_key(session.tenant_id, box.id, cal.id)
            linked = data.links.get((box.id.lower(), cal.id)) or data.links.get((box.address.lower(), cal.id))
            owner = data.owners.get(key)
            job = data.jobs.get(key)
            item: dict[str, Any] = {"key": key, "name": cal.name, "is_default": cal.is_default,
                                    "suggest": box.name if cal.is_default else cal.name, "can_edit": cal.can_edit,
                                    "linked": None, "taken": False, "job": "", "result": ""}
            if linked is not None:
                item["linked"] = {"resource": linked.resource_name, "health": linked.link.health.value,
                                  "health_label": _health_label(_, linked.link),
                                  "mode": _("org.mode." + linked.link.mode.value)}
            elif owner is not None:
                item["taken"] = True
            if job is not None and waiting(job, now):
                item["job"] = _("org.job.in_progress")
            elif job is not None and job.state in (FAILED, CREATING):
                # (a row left "creating" by a run that died: pressing again finishes it)
                item["job"] = _("org.row." + job.error) if job.error else _("org.row.failed")
            if results and key in results:
                item["result"] = results[key]
            calendars.append(item)
        rows.append({"id": box.id, "name": box.name, "address": box.address, "kind": _("org.kind." + box.kind),
                     "kind_code": box.kind, "problem": _("org.problem." + entry.problem) if entry.problem else "",
                     "out_of_scope": entry.problem == "out_of_scope", "calendars": calendars})
    connection = await OrgRepository(services.storage).get(session.tenant_id, ctx.provider_id)
    revoked = connection is not None and not connection.connected
    values = {
        "rows": rows, "resources": free, "search": search, "cursor": cursor, "next_cursor": data.next_cursor,
        "account_name": session.account_name, "provider_id": ctx.provider_id,
        "provider_label": ctx.provider_label,
        "csrf": session_store(services).csrf_token(session_id), "form_action": mapping_url(services),
        "permissions": readable(ctx.locale, APPLICATION), "scope_doc_url": SCOPE_DOC_URL, "summary": summary,
        "revoked": revoked,
        "revoked_text": _("org.revoked", when=connection.revoked_at.strftime("%d.%m.%Y %H:%M")
                          if connection and connection.revoked_at else "",
                          reason=_("org.revoked_reason." + _reason_key(connection.reason)))
        if revoked and connection else "",
        "done_url": with_params(ctx.return_url, outlook="organisation"),
        "progress": None,
    }
    if press is not None:
        # A press whose rows are linked in the background: its progress, polled by the page.
        counts = progress(list(data.jobs.values()), press, now)
        query = {"since": str(press.since), "refused": str(press.refused)}
        if search:
            query["q"] = search
        if cursor:
            query["cursor"] = cursor
        values["progress"] = {**counts, "pattern": _("org.progress"),
                              "status_url": with_params(mapping_url(services) + "/status", **query),
                              "reload_url": with_params(mapping_url(services), **query)}
        if counts["done"]:
            values["summary"] = _("org.summary", linked=counts["linked"], failed=counts["failed"])
        else:
            values["summary"] = _("org.progress", **{k: counts[k] for k in ("linked", "failed", "waiting")})
    return OrgPage(locale=ctx.locale, values=values, return_url=ctx.return_url, status=status)


@dataclass(frozen=True)
class Press:
    """One press of "Übernehmen" whose rows are linked in the background: when it was planned
    (epoch seconds, the rows it touched are updated from then on) and how many rows it refused."""

    since: int
    refused: int = 0

    @classmethod
    def parse(cls, since: str | None, refused: str | None) -> Press | None:
        """From the page's reload and status URLs; anything malformed means no press."""
        if not since or not since.isdigit() or len(since) > 12:
            return None
        count = int(refused) if refused and refused.isdigit() and len(refused) <= 4 else 0
        return cls(int(since), min(count, MAX_ROWS_PER_SUBMIT))


def waiting(job: JobRow, now: datetime) -> bool:
    """Whether a row is still being linked. A row left "creating" longer than ``CREATING_STALE``
    belongs to a run that died: it waits for the next press, not for the page."""
    if job.state in (PENDING, RESOURCE):
        return True
    return job.state == CREATING and (job.updated_at is None or now - job.updated_at < CREATING_STALE)


def progress(rows: list[JobRow], press: Press, now: datetime) -> dict[str, Any]:
    """How far the press has come: rows still waiting, and of the rows it touched, how many are
    linked and how many are not (with the rows it refused at once)."""
    since = datetime.fromtimestamp(press.since, UTC)
    busy = sum(1 for job in rows if waiting(job, now))
    ended = [job for job in rows if not waiting(job, now) and job.updated_at is not None and job.updated_at >= since]
    linked = sum(1 for job in ended if job.state == LINKED)
    return {"waiting": busy, "linked": linked, "failed": len(ended) - linked + press.refused, "done": busy == 0}


async def status(services: Services, session_id: str | None, *, since: str | None,
                 refused: str | None) -> dict[str, Any] | None:
    """The progress of a press, for the page's polling; None without a session of the
    organisation path (or without a press to report on)."""
    session = await _session(services, session_id)
    press = Press.parse(since, refused)
    if session is None or press is None:
        return None
    rows = await MappingJobRepository(services.storage, session.context.provider_id, session.tenant_id).all()
    return progress(rows, press, services.clock())


def _reason_key(reason: str) -> str:
    codes = set(re.findall(r"AADSTS(\d+)", reason or ""))
    if "7000229" in codes or "700016" in codes:
        return "app_deleted"
    if codes & {"65001", "90094", "90008"} or "roles" in reason:
        return "consent_withdrawn"
    return "other"


def _clean_search(raw: str | None) -> str:
    text = " ".join((raw or "").split())[:MAX_SEARCH]
    return "".join(ch for ch in text if ch.isprintable())


async def view(services: Services, session_id: str | None, *, search: str | None, cursor: str | None,
               locale: str, since: str | None = None, refused: str | None = None) -> OrgPage | ErrorPage:
    session = await _session(services, session_id)
    if session is None or not session_id:
        return ErrorPage("session_expired", locale, status=400)
    directory = _directory(services, session.tenant_id)
    try:
        data = await _load(services, session, directory, search=_clean_search(search), cursor=(cursor or "")[:4096])
    except (ConsentRequired, AuthError):
        # No grant (withdrawn, app deleted): the page says so instead of failing.
        data = _PageData([], "", {}, [], {})
        page = await _page(services, session, session_id, data, search=_clean_search(search), cursor="")
        page.values["revoked"] = True
        if not page.values["revoked_text"]:
            page.values["revoked_text"] = translator(session.context.locale)("org.not_granted")
        return page
    except SyncError as exc:
        log.warning("organisation page could not read the directory: %s", exc.code)
        return ErrorPage("unavailable", session.context.locale, status=503, return_url=session.context.return_url)
    finally:
        await directory.close()
    return await _page(services, session, session_id, data, search=_clean_search(search), cursor=cursor or "",
                       press=Press.parse(since, refused))


@dataclass(frozen=True)
class Choice:
    key: str
    mailbox_id: str
    action: str                 # "new" | "existing"
    resource_id: str = ""
    name: str = ""


def parse_choices(form: Mapping[str, str]) -> list[Choice]:
    """The rows the form chose (anything but "not linked"), checked for shape; bad entries are
    dropped rather than trusted (every one is re-read from Graph before use)."""
    out: list[Choice] = []
    for field_name, value in form.items():
        if not field_name.startswith("c."):
            continue
        key = field_name[2:]
        if not _KEY.match(key) or value in ("", "none"):
            continue
        mailbox = form.get(f"m.{key}") or ""
        if not _ID.match(mailbox):
            continue
        name = " ".join((form.get(f"n.{key}") or "").split())[:200]
        if value == "new":
            out.append(Choice(key, mailbox, "new", name="".join(ch for ch in name if ch.isprintable())))
        elif value.startswith("existing:") and _ID.match(value[9:]):
            out.append(Choice(key, mailbox, "existing", resource_id=value[9:]))
        if len(out) >= MAX_ROWS_PER_SUBMIT:
            break
    return out


async def submit(services: Services, session_id: str | None, form: Mapping[str, str], *,
                 locale: str) -> OrgPage | ErrorPage:
    from shared.connect.flow import session_store

    session = await _session(services, session_id)
    if session is None or not session_id:
        return ErrorPage("session_expired", locale, status=400)
    if not session_store(services).csrf_ok(session_id, form.get("csrf")):
        return ErrorPage("csrf", session.context.locale, status=403, return_url=session.context.return_url)
    search, cursor = _clean_search(form.get("q")), (form.get("cursor") or "")[:4096]
    _ = translator(session.context.locale)
    connection = await OrgRepository(services.storage).get(session.tenant_id, session.context.provider_id)
    directory = _directory(services, session.tenant_id)
    try:
        if connection is None or not connection.connected:
            data = await _load(services, session, directory, search=search, cursor=cursor)
            return await _page(services, session, session_id, data, search=search, cursor=cursor,
                               summary=_("org.summary.not_connected"), status=409)
        choices = parse_choices(form)
        store = session_store(services)
        try:
            # One press at a time per session: a double click waits for the first.
            await store.set_busy(session, True)
        except (Conflict, NotFound):
            return ErrorPage("busy", session.context.locale, status=409, return_url=session.context.return_url)
        # The press is answered once its rows are planned; the link-admin worker links them
        # (a few seconds for 200 rows, far more than a page may take) and the page follows.
        since = int(services.clock().timestamp())
        try:
            refused, planned = await plan_choices(services, session.context.provider_id, session.tenant_id,
                                                  choices, directory)
            if planned:
                await queue_jobs(services, session.context.provider_id, session.tenant_id)
        finally:
            with contextlib.suppress(Conflict, NotFound):
                await store.set_busy(session, False)
        data = await _load(services, session, directory, search=search, cursor=cursor)
    except (ConsentRequired, AuthError):
        return await view(services, session_id, search=search, cursor=cursor, locale=locale)
    except SyncError as exc:
        log.warning("organisation mapping failed: %s", exc.code)
        return ErrorPage("unavailable", session.context.locale, status=503, return_url=session.context.return_url)
    finally:
        await directory.close()
    results = {k: _("org.row." + v) for k, v in refused.items()}
    return await _page(services, session, session_id, data, search=search, cursor=cursor, results=results,
                       press=Press(since, len(refused)))


# --- the bulk link ---------------------------------------------------------------------------------

async def plan_choices(services: Services, provider_id: str, tenant_id: str, choices: list[Choice],
                       directory: OrgDirectoryPort) -> tuple[dict[str, str], list[JobRow]]:
    """Check the chosen rows against Graph and timum and record each as a job row to link.
    Returns why each refused row was not planned (``read_only``, ``resource_unavailable``, the
    mailbox's problem, ``calendar_gone``) and the rows planned."""
    jobs = MappingJobRepository(services.storage, provider_id, tenant_id)
    now = services.clock()
    report: dict[str, str] = {}
    boxes = {c.mailbox_id: Mailbox(c.mailbox_id, "", "", "person") for c in choices}
    read = await directory.calendars(boxes.values()) if boxes else []
    found: dict[str, tuple[Mailbox, CalendarInfo]] = {}
    problems: dict[str, str] = {}
    for entry in read:
        if entry.problem:
            problems[entry.mailbox.id] = entry.problem
        for cal in entry.calendars:
            found[calendar_key(tenant_id, entry.mailbox.id, cal.id)] = (entry.mailbox, cal)
    resources = {r["id"]: r["name"] for r in await _resources(services, provider_id)} if choices else {}
    gate = asyncio.Semaphore(LINK_CONCURRENCY)

    async def plan(choice: Choice) -> JobRow | None:
        async with gate:
            if choice.key not in found:
                report[choice.key] = problems.get(choice.mailbox_id, "calendar_gone")
            elif not found[choice.key][1].can_edit:
                report[choice.key] = "read_only"
            elif choice.action == "existing" and choice.resource_id not in resources:
                report[choice.key] = "resource_unavailable"
            else:
                box, cal = found[choice.key]
                name = choice.name or (cal.owner_name if cal.is_default else cal.name) or cal.name
                return await jobs.plan(JobRow(
                    calendar_key=choice.key, mailbox_id=box.id, mailbox_address=cal.owner_address,
                    calendar_id=cal.id, calendar_name=cal.name, owner_name=cal.owner_name, action=choice.action,
                    resource_id=choice.resource_id, resource_name=name), now=now)
            # The administrator's latest choice cannot be done: a row an earlier press left
            # waiting must not be linked behind their back. (A row creating its resource goes
            # on: stopping it halfway could leave a resource without its row.)
            left = await jobs.get(choice.key)
            if left is not None and left.state == PENDING:
                await _fail(services, jobs, left, report[choice.key])
            return None

    planned = [job for job in await asyncio.gather(*(plan(c) for c in choices)) if job is not None]
    return report, planned


async def run_jobs(services: Services, provider_id: str, tenant_id: str) -> dict[str, str]:
    """Link every unfinished job row of the tenant for the provider — the rows a press planned,
    and any an earlier run left (a crash, a retry) — at ``LINK_CONCURRENCY`` rows at once.
    Returns the result code per row (``linked`` or why not; ``in_progress`` for a row another
    run is working on right now)."""
    from shared.org.links import AppOnlyLinker

    jobs = MappingJobRepository(services.storage, provider_id, tenant_id)
    unfinished = [j for j in await jobs.all() if j.state in (PENDING, CREATING, RESOURCE)]
    if not unfinished:
        return {}
    resources = {r["id"]: r["name"] for r in await _resources(services, provider_id)}
    report: dict[str, str] = {}
    gate = asyncio.Semaphore(LINK_CONCURRENCY)
    linker = AppOnlyLinker(services, provider_id, tenant_id)
    try:
        async def one(job: JobRow) -> None:
            async with gate:
                report[job.calendar_key] = await _link_row(services, jobs, linker, job, resources)

        await asyncio.gather(*(one(job) for job in unfinished))
    finally:
        await linker.close()
    return report


async def link_choices(services: Services, context: ConnectContext, tenant_id: str, choices: list[Choice],
                       directory: OrgDirectoryPort) -> dict[str, str]:
    """Plan the chosen rows and link them in this call (with any row an earlier press left);
    returns a result code per calendar key (``linked`` or why not)."""
    report, planned = await plan_choices(services, context.provider_id, tenant_id, choices, directory)
    report.update({job.calendar_key: "linked" for job in planned if job.state == LINKED})
    report.update(await run_jobs(services, context.provider_id, tenant_id))
    return report


async def queue_jobs(services: Services, provider_id: str, tenant_id: str, *, delay: float = 0.0) -> None:
    """Have the link-admin worker link the tenant's unfinished job rows (``run_queued_jobs``)."""
    from shared.messages import LINK_ADMIN_QUEUE, OrgLinkMessage

    await services.storage.queue(LINK_ADMIN_QUEUE).send(OrgLinkMessage(provider_id, tenant_id).to_json(),
                                                        delay_seconds=delay)


async def run_queued_jobs(services: Services, provider_id: str, tenant_id: str) -> None:
    """The worker's bulk link. A row whose resource another run is creating right now is left to
    it; if that run died, the row is taken over once stale — so the message comes back then,
    rather than leave the row waiting for a next press."""
    report = await run_jobs(services, provider_id, tenant_id)
    linked = sum(1 for v in report.values() if v == "linked")
    log.info("organisation rows linked for provider %s: %d of %d", provider_id, linked, len(report))
    if "in_progress" in report.values():
        await queue_jobs(services, provider_id, tenant_id, delay=CREATING_STALE.total_seconds() + 5)


async def give_up_jobs(services: Services, provider_id: str, tenant_id: str) -> None:
    """The bulk link failed every retry: its waiting rows say so (the page offers to press
    again). A row creating its resource keeps that state: the next press must find the resource
    it may have made rather than make a second one."""
    jobs = MappingJobRepository(services.storage, provider_id, tenant_id)
    for job in await jobs.all():
        if job.state in (PENDING, RESOURCE):
            await _fail(services, jobs, job, "failed")
    log.error("organisation bulk link for provider %s gave up", provider_id)


async def _link_row(services: Services, jobs: MappingJobRepository, linker: Any, job: JobRow,
                    resources: dict[str, str]) -> str:
    """One row to the end: resource (created at most once), claim, link. Returns the result code."""
    try:
        if job.state == LINKED:
            return "linked"
        owner = await linker.owner_of(job)
        if owner is not None and not (owner.provider_id == linker.provider_id and owner.resource_id == job.resource_id
                                      and job.resource_id):
            return await _fail(services, jobs, job, "calendar_taken")
        if job.action == "new" and not job.resource_id:
            job = await _create_resource(services, jobs, job, resources)
        await linker.link(job)
        job.state, job.error = LINKED, ""
        await jobs.save(job, now=services.clock())
        return "linked"
    except Conflict as exc:
        if exc.code == "calendar_taken":
            return await _fail(services, jobs, job, "calendar_taken")
        if exc.code == "resource_linked":
            return await _fail(services, jobs, job, "resource_linked")
        # Another press is working on this row right now: it finishes it.
        return "in_progress"
    except ConsentRequired:
        return await _fail(services, jobs, job, "out_of_scope")
    except SyncError as exc:
        log.warning("linking a mapped calendar failed: %s", exc.code)
        return await _fail(services, jobs, job, "failed")


async def _fail(services: Services, jobs: MappingJobRepository, job: JobRow, code: str) -> str:
    job.state, job.error = FAILED, code
    with contextlib.suppress(Conflict, NotFound):
        await jobs.save(job, now=services.clock())
    return code


async def _create_resource(services: Services, jobs: MappingJobRepository, job: JobRow,
                           resources: dict[str, str]) -> JobRow:
    """Create the row's new resource at most once. The row says ``creating`` before timum is
    asked (ETag: of two presses one goes on); a row found ``creating`` without a resource died
    between the two — a free resource of exactly its name is then taken rather than a second made."""
    now = services.clock()
    if job.state == CREATING and job.updated_at is not None and now - job.updated_at < CREATING_STALE:
        # Another press is creating this row's resource right now: leave the row to it.
        raise Conflict("the row's resource is being created", code="in_progress")
    if job.state == CREATING:
        taken = {link.resource_id for link in await LinkRepository(services.storage).list_for_provider(
            job_provider(jobs))}
        same = next((rid for rid, name in resources.items() if name == job.resource_name and rid not in taken), None)
        if same is not None:
            job.resource_id, job.state = same, RESOURCE
            return await jobs.save(job, now=now)
    else:
        job.state = CREATING
        job = await jobs.save(job, now=now)
    rid = await services.timum.create_resource(job_provider(jobs), job.resource_name)
    job.resource_id, job.state = rid, RESOURCE
    return await jobs.save(job, now=now)


def job_provider(jobs: MappingJobRepository) -> str:
    from shared.storage.base import decode_key

    return decode_key(jobs._pk).split("|", 1)[0]
