"""The sandbox timum's pages under ``/timum/…``: a provider's resources with their bookings and blocked
slots, forms to book, move and cancel, and the two buttons that start connecting an Outlook calendar.

Plain HTML forms (POST, then 303 back), so every page works without JavaScript. German unless
``?lang=en``; the language travels in every link and form.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlencode
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from devtools.sandbox.timum.i18n import TEXTS, format_span, pick_lang
from devtools.sandbox.timum.service import ServiceClient, ServiceError
from devtools.sandbox.timum.state import Resource, SandboxBooking, SandboxError, Slot, TimumState, UnknownItem
from shared.domain import Customer

SERVICES = ("Krankengymnastik 30 min", "Manuelle Therapie", "Lymphdrainage", "Erstgespräch")
DURATIONS = (15, 30, 45, 60, 90)
#: the provider settings the service offers, each with its choices (labels in ``i18n``)
SETTING_CHOICES: dict[str, tuple[str, ...]] = {
    "titlePrivacy": ("none", "label", "subject"),
    "customerPrivacy": ("none", "name", "contact"),
    "cancelPolicy": ("delete", "mark"),
    "locale": ("de", "en"),
}
MAX_URL = 2048
T = TypeVar("T")
#: a provider page's action: (provider id, route parameters, form) → the notice to show
ProviderAction = Callable[[str, Any, dict[str, str]], Awaitable[str]]
#: a linked resource's action: (provider id, resource id, form) → the notice to show
ResourceAction = Callable[[str, str, dict[str, str]], Awaitable[str]]


def ago(moment: datetime, now: datetime, lang: str) -> str:
    """``vor 3 Minute(n)`` — how long ago, in the page's language."""
    t = TEXTS[lang]
    seconds = max(0, int((now - moment).total_seconds()))
    if seconds < 60:
        return t["ago_seconds"]
    if seconds < 3600:
        return t["ago_minutes"].format(n=seconds // 60)
    if seconds < 86400:
        return t["ago_hours"].format(n=seconds // 3600)
    return t["ago_days"].format(n=seconds // 86400)


def slot_label(slot: Slot, lang: str) -> str:
    """``Outlook: belegt`` — where a blocked time comes from and what it may show of the event."""
    t = TEXTS[lang]
    source = t.get(f"slot_source_{slot.source}", slot.source)
    title = " ".join(slot.title.split())
    # A title that only names the source ("Outlook", the service's privacy label) says nothing more.
    if title.lower() in ("", slot.source.lower(), source.lower()):
        title = t["slot_busy"]
    return f"{source}: {title}"


def _parse_time(raw: object) -> datetime | None:
    if not isinstance(raw, str) or not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def link_view(resource: Resource, link: dict[str, Any] | None, reachable: bool, lang: str,
              now: datetime) -> dict[str, Any]:
    """What the page says about a resource's calendar link, from the links API (``link``, when the
    service answered) and the last link-status webhook (``resource.link``) — nothing else."""
    t = TEXTS[lang]
    reported = resource.link
    if not reachable:
        if reported is None or reported.status == "unlinked":
            return {"linked": False, "status": "unlinked", "stale": True}
        return {"linked": True, "status": reported.status, "mode": reported.mode, "reason": reported.reason,
                "calendar": reported.calendar_name, "owner": "", "fresh": "", "last_sync": "", "stale": True}
    if link is None:
        return {"linked": False, "status": "unlinked", "stale": False}
    status = str(link.get("health") or "ok")
    if status not in ("ok", "needs_reconnect", "error"):
        status = "error"
    # The webhook carries the reason in the provider's words; the links API only a code.
    reason = reported.reason if reported is not None and reported.status == status else ""
    last = _parse_time(link.get("lastSyncAt"))
    mode = str(link.get("mode") or "")
    owner = str(link.get("calendarOwner") or "")
    linked_by = str(link.get("linkedBy") or "")
    return {
        "linked": True, "status": status, "mode": mode, "reason": reason, "stale": False,
        "calendar": str(link.get("calendarName") or link.get("icsHost") or ""),
        "owner": owner,
        # Only worth saying when someone linked a calendar that is not their own (a shared one).
        "linked_by": linked_by if linked_by and owner.lower() not in linked_by.lower() else "",
        "fresh": t["fresh_polling"] if link.get("syncMode") == "polling" else t["fresh_push"],
        "last_sync": t["last_sync"].format(ago=ago(last, now, lang)) if last else t["never_synced"],
    }


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                      autoescape=select_autoescape(["html"], default_for_string=True), trim_blocks=True,
                      lstrip_blocks=True)
    return env


class TimumUi:
    def __init__(self, state: TimumState, service: ServiceClient | None = None) -> None:
        self.state = state
        self.service = service or ServiceClient(state.config)
        self.env = _env()

    # --- helpers --------------------------------------------------------------------------------
    @staticmethod
    async def _form(request: Request) -> dict[str, str]:
        # Parsed here rather than with request.form(): urlencoded forms need no multipart library.
        raw = (await request.body()).decode("utf-8", errors="replace")
        return {k: v[0].strip() for k, v in parse_qs(raw, keep_blank_values=True).items()}

    @staticmethod
    def _url(path: str, lang: str, **params: str) -> str:
        query = {k: v for k, v in params.items() if v}
        if lang != "de":
            query["lang"] = lang
        return quote(path, safe="/") + ("?" + urlencode(query) if query else "")

    def _render(self, name: str, lang: str, *, status: int = 200, **context: Any) -> HTMLResponse:
        template = self.env.get_template(name)
        other = context.pop("other_lang_url", "?lang=" + ("de" if lang == "en" else "en"))
        html = template.render(t=TEXTS[lang], lang=lang, url=lambda path, **p: self._url(path, lang, **p),
                               other_lang_url=other, **context)
        return HTMLResponse(html, status_code=status)

    def _error_text(self, exc: SandboxError, lang: str) -> str:
        text = TEXTS[lang].get(f"err_{exc.key}") if exc.key else None
        return text or TEXTS[lang]["err_generic"].format(detail=exc.message)

    def _not_found(self, lang: str) -> HTMLResponse:
        return self._render("message.html", lang, status=404, heading=TEXTS[lang]["not_found"], back_url=None)

    @staticmethod
    def _find(lookup: Callable[..., T], *ids: str) -> T | None:
        """What a route names, or None where it does not exist (the page answers 404)."""
        try:
            return lookup(*ids)
        except UnknownItem:
            return None

    @staticmethod
    def _local_datetime(day: str, clock: str, tz: str) -> datetime:
        try:
            return datetime.combine(date.fromisoformat(day), time.fromisoformat(clock), tzinfo=ZoneInfo(tz))
        except ValueError:
            raise SandboxError("date or time missing or malformed", field="date", key="bad_time") from None

    # --- pages -----------------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        lang = pick_lang(request.query_params.get("lang"))
        return self._render("index.html", lang, providers=self.state.list_providers(), nav="providers")

    async def provider_page(self, request: Request, *, lang: str | None = None, error: str = "",
                            status: int = 200) -> Response:
        lang = lang or pick_lang(request.query_params.get("lang"))
        pid = request.path_params["providerId"]
        provider = self._find(self.state.provider, pid)
        if provider is None:
            return self._not_found(lang)
        tz = ZoneInfo(provider.time_zone)
        try:
            links = {str(lk.get("resourceId")): lk for lk in await self.service.list_links(pid)}
            reachable = True
        except ServiceError:
            links, reachable = {}, False
        now = datetime.now(UTC)
        resources = []
        for res in self.state.list_resources(pid):
            rtz = ZoneInfo(res.time_zone)
            bookings = [{"b": b, "when": format_span(b.start.astimezone(rtz), b.end.astimezone(rtz), lang),
                         "date": b.start.astimezone(rtz).date().isoformat(),
                         "time": b.start.astimezone(rtz).strftime("%H:%M")}
                        for b in self.state.list_bookings(pid, res.id)]
            slots = [{"s": s, "when": format_span(s.start.astimezone(rtz), s.end.astimezone(rtz), lang,
                                                  all_day=s.all_day), "label": slot_label(s, lang)}
                     for s in self.state.list_slots(pid, res.id)]
            resources.append({"r": res, "bookings": bookings, "slots": slots,
                              "link": link_view(res, links.get(res.id), reachable, lang, now),
                              "feed": self.state.feed_url(pid, res.id)})
        statuses = [s for s in self.state.list_received_statuses() if s.provider_id == pid][-10:]
        names = {res.id: res.name for res in self.state.list_resources(pid)}
        done = request.query_params.get("done", "")
        outlook = request.query_params.get("outlook", "")
        tomorrow = (datetime.now(tz) + timedelta(days=1)).date().isoformat()
        return self._render(
            "provider.html", lang, status=status, provider=provider, nav="provider", resources=resources,
            statuses=statuses, names=names, error=error, done=TEXTS[lang].get(f"done_{done}", ""),
            outlook=TEXTS[lang].get(f"outlook_{outlook}", ""), outlook_ok=outlook == "connected",
            services=SERVICES, durations=DURATIONS, tomorrow=tomorrow, reachable=reachable,
            other_lang_url=self._url(f"/timum/providers/{pid}", "de" if lang == "en" else "en"))

    async def booking_page(self, request: Request) -> Response:
        lang = pick_lang(request.query_params.get("lang"))
        pid, bid = request.path_params["providerId"], request.path_params["bookingId"]
        try:
            booking = self.state.booking(bid)
            if booking.provider_id != pid:
                raise UnknownItem("booking", bid)
            resource = self.state.resource(pid, booking.resource_id)
        except UnknownItem:
            return self._not_found(lang)
        rtz = ZoneInfo(booking.time_zone)
        return self._render("booking.html", lang, booking=booking, resource=resource, nav="",
                            provider=self.state.provider(pid),
                            when=format_span(booking.start.astimezone(rtz), booking.end.astimezone(rtz), lang))

    # --- actions ---------------------------------------------------------------------------------
    # Each action form posts to its own route (``routes``: the action bound to ``_act`` or
    # ``_resource_act``); an action returns the notice shown after the redirect.
    async def _posted(self, request: Request) -> tuple[dict[str, str], str]:
        """A posted form and the language of the page it came from."""
        form = await self._form(request)
        return form, pick_lang(form.get("lang") or request.query_params.get("lang"))

    async def _act(self, request: Request, apply: ProviderAction) -> Response:
        form, lang = await self._posted(request)
        pid = request.path_params["providerId"]
        if self._find(self.state.provider, pid) is None:
            return self._not_found(lang)
        try:
            done = await apply(pid, request.path_params, form)
        except SandboxError as exc:
            status = 404 if isinstance(exc, UnknownItem) else 400 if exc.field else 409
            return await self.provider_page(request, lang=lang, error=self._error_text(exc, lang), status=status)
        return RedirectResponse(self._url(f"/timum/providers/{pid}", lang, done=done), status_code=303)

    async def _check_outlook(self, pid: str, form: dict[str, str]) -> None:
        """Right before confirming: does the linked Outlook calendar have that time?"""
        from devtools.sandbox.timum.conflicts import check_outlook

        resource = self.state.resource(pid, form.get("resourceId", ""))
        if resource.stale:
            raise SandboxError("online booking is paused: the Outlook calendar is not up to date",
                               key="booking_paused")
        start = self._local_datetime(form.get("date", ""), form.get("time", ""), resource.time_zone)
        minutes = int(form["duration"]) if form.get("duration", "").isdigit() else 30
        await check_outlook(self.state.config, pid, resource.id, start, start + timedelta(minutes=max(1, minutes)))

    async def _book(self, pid: str, params: Any, form: dict[str, str]) -> str:
        await self._check_outlook(pid, form)
        resource = self.state.resource(pid, form.get("resourceId", ""))
        start = self._local_datetime(form.get("date", ""), form.get("time", ""), resource.time_zone)
        try:
            minutes = int(form.get("duration", "30"))
        except ValueError:
            minutes = 0
        if minutes <= 0:
            raise SandboxError("duration must be positive", field="duration", key="end_before_start")
        customer = Customer(form.get("customerName", ""), form.get("customerEmail", ""),
                            form.get("customerPhone", ""))
        self.state.make_booking(pid, resource.id, start, duration=timedelta(minutes=minutes),
                                service_name=form.get("serviceName") or SERVICES[0], customer=customer,
                                notes=form.get("notes", ""))
        return "booking_created"

    async def _add_resource(self, pid: str, params: Any, form: dict[str, str]) -> str:
        self.state.create_resource(pid, form.get("name", ""))
        return "resource_created"

    def _own_booking(self, pid: str, params: Any) -> SandboxBooking:
        booking = self.state.booking(params["bookingId"])
        if booking.provider_id != pid:
            raise UnknownItem("booking", booking.id)
        return booking

    async def _reschedule(self, pid: str, params: Any, form: dict[str, str]) -> str:
        booking = self._own_booking(pid, params)
        start = self._local_datetime(form.get("date", ""), form.get("time", ""), booking.time_zone)
        self.state.reschedule_booking(booking.id, start)
        return "booking_rescheduled"

    async def _cancel(self, pid: str, params: Any, form: dict[str, str]) -> str:
        self.state.cancel_booking(self._own_booking(pid, params).id)
        return "booking_cancelled"

    # --- what the service decides: unlink, resync, ICS feed and import, settings ---------------------
    def _service_error(self, exc: ServiceError, lang: str) -> tuple[str, int]:
        t = TEXTS[lang]
        if exc.status == 0:
            return t["err_service_unreachable"], 503
        if exc.status == 404:
            return t["err_service_not_found"], 404
        if exc.code == "resource_linked":
            return t["err_service_resource_linked"], 409
        if exc.field == "url":
            return t["err_service_url"].format(detail=exc.detail), 400
        return t["err_service"].format(detail=exc.detail or exc.code), exc.status if exc.status < 500 else 502

    async def _resource_act(self, request: Request, apply: ResourceAction) -> Response:
        form, lang = await self._posted(request)
        pid, rid = request.path_params["providerId"], request.path_params["resourceId"]
        if self._find(self.state.resource, pid, rid) is None:
            return self._not_found(lang)
        try:
            done = await apply(pid, rid, form)
        except ServiceError as exc:
            text, status = self._service_error(exc, lang)
            return await self.provider_page(request, lang=lang, error=text, status=status)
        except SandboxError as exc:
            return await self.provider_page(request, lang=lang, error=self._error_text(exc, lang), status=400)
        target = self._url(f"/timum/providers/{pid}", lang, done=done) + f"#resource-{quote(rid, safe='')}"
        return RedirectResponse(target, status_code=303)

    async def _unlink(self, pid: str, rid: str, form: dict[str, str]) -> str:
        purge = form.get("deleteOutlookEvents") == "true"
        await self.service.unlink(pid, rid, delete_outlook_events=purge)
        return "unlinked_deleted" if purge else "unlinked"

    async def _resync(self, pid: str, rid: str, form: dict[str, str]) -> str:
        await self.service.resync(pid, rid)
        return "resync"

    async def _issue_feed(self, pid: str, rid: str, form: dict[str, str]) -> str:
        feed = await self.service.issue_feed(pid, rid)
        self.state.keep_feed_url(pid, rid, str(feed.get("url") or "") or None)
        return "feed_issued"

    async def _revoke_feed(self, pid: str, rid: str, form: dict[str, str]) -> str:
        await self.service.revoke_feed(pid, rid)
        self.state.keep_feed_url(pid, rid, None)
        return "feed_revoked"

    async def _ics_import(self, pid: str, rid: str, form: dict[str, str]) -> str:
        url = form.get("url", "")
        if not url:
            raise SandboxError("url missing", field="url", key="url_required")
        if len(url) > MAX_URL:
            raise SandboxError("url too long", field="url", key="url_required")
        await self.service.ics_import(pid, rid, url)
        return "ics_imported"

    async def settings_page(self, request: Request, *, lang: str | None = None, error: str = "",
                            status: int = 200, values: dict[str, Any] | None = None) -> Response:
        lang = lang or pick_lang(request.query_params.get("lang"))
        pid = request.path_params["providerId"]
        provider = self._find(self.state.provider, pid)
        if provider is None:
            return self._not_found(lang)
        if values is None:
            try:
                values = await self.service.get_settings(pid)
            except ServiceError as exc:
                error, status = error or self._service_error(exc, lang)[0], 503 if exc.status == 0 else 502
                values = {}
        done = request.query_params.get("done", "")
        return self._render("settings.html", lang, status=status, provider=provider, values=values,
                            nav="settings",
                            choices=SETTING_CHOICES, error=error, done=TEXTS[lang].get(f"done_{done}", ""),
                            other_lang_url=self._url(f"/timum/providers/{pid}/settings",
                                                     "de" if lang == "en" else "en"))

    async def save_settings(self, request: Request) -> Response:
        form, lang = await self._posted(request)
        pid = request.path_params["providerId"]
        if self._find(self.state.provider, pid) is None:
            return self._not_found(lang)
        # Only the choices the form offers go to the service, which checks them again.
        values: dict[str, Any] = {name: form[name] for name in SETTING_CHOICES if form.get(name)}
        values["tentativeBlocks"] = form.get("tentativeBlocks") == "true"
        try:
            await self.service.put_settings(pid, values)
        except ServiceError as exc:
            text, status = self._service_error(exc, lang)
            return await self.settings_page(request, lang=lang, error=text, status=status, values=values)
        return RedirectResponse(self._url(f"/timum/providers/{pid}/settings", lang, done="settings_saved"),
                                status_code=303)

    async def connect(self, request: Request) -> Response:
        """The two buttons: send the browser to the service with a freshly signed connect link."""
        form, lang = await self._posted(request)
        pid = request.path_params["providerId"]
        rid = request.path_params.get("resourceId")
        try:
            url = self.state.connect_url(pid, rid, locale=lang)
        except UnknownItem:
            return self._not_found(lang)
        # 303: the browser follows with GET; the link is made per click and never shown on a page.
        return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store",
                                                               "Referrer-Policy": "no-referrer"})

    async def connect_organisation(self, request: Request) -> Response:
        """"Für die ganze Organisation verbinden": a signed connect link with the ``org`` scope."""
        form, lang = await self._posted(request)
        try:
            url = self.state.connect_url(request.path_params["providerId"], None, locale=lang, scope="org")
        except UnknownItem:
            return self._not_found(lang)
        return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store",
                                                               "Referrer-Policy": "no-referrer"})

    async def root_redirect(self, request: Request) -> Response:
        return RedirectResponse("/timum/" + (f"?{request.url.query}" if request.url.query else ""), status_code=307)

    def routes(self) -> list[BaseRoute]:
        p = "/timum/providers/{providerId}"
        r = f"{p}/resources/{{resourceId}}"
        b = f"{p}/bookings/{{bookingId}}"
        return [
            Route("/timum", self.root_redirect, methods=["GET"]),
            Route("/timum/", self.index, methods=["GET"]),
            Route(p, self.provider_page, methods=["GET"]),
            Route(f"{p}/connect", self.connect, methods=["POST"]),
            Route(f"{p}/connect-organisation", self.connect_organisation, methods=["POST"]),
            Route(f"{p}/resources", partial(self._act, apply=self._add_resource), methods=["POST"]),
            Route(f"{r}/connect", self.connect, methods=["POST"]),
            Route(f"{r}/unlink", partial(self._resource_act, apply=self._unlink), methods=["POST"]),
            Route(f"{r}/resync", partial(self._resource_act, apply=self._resync), methods=["POST"]),
            Route(f"{r}/ics-feed", partial(self._resource_act, apply=self._issue_feed), methods=["POST"]),
            Route(f"{r}/ics-feed/revoke", partial(self._resource_act, apply=self._revoke_feed), methods=["POST"]),
            Route(f"{r}/ics-import", partial(self._resource_act, apply=self._ics_import), methods=["POST"]),
            Route(f"{p}/settings", self.settings_page, methods=["GET"]),
            Route(f"{p}/settings", self.save_settings, methods=["POST"]),
            Route(f"{p}/bookings", partial(self._act, apply=self._book), methods=["POST"]),
            Route(b, self.booking_page, methods=["GET"]),
            Route(f"{b}/reschedule", partial(self._act, apply=self._reschedule), methods=["POST"]),
            Route(f"{b}/cancel", partial(self._act, apply=self._cancel), methods=["POST"]),
        ]
