"""The sandbox timum's pages under ``/timum/…``: a provider's resources with their bookings and blocked
slots, forms to book, move and cancel, and the two buttons that start connecting an Outlook calendar.

Plain HTML forms (POST, then 303 back), so every page works without JavaScript. German unless
``?lang=en``; the language travels in every link and form.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from devtools.sandbox.timum.i18n import TEXTS, format_span, pick_lang
from devtools.sandbox.timum.state import SandboxError, TimumState, UnknownItem
from shared.domain import Customer

SERVICES = ("Krankengymnastik 30 min", "Manuelle Therapie", "Lymphdrainage", "Erstgespräch")
DURATIONS = (15, 30, 45, 60, 90)


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                      autoescape=select_autoescape(["html"], default_for_string=True), trim_blocks=True,
                      lstrip_blocks=True)
    return env


class TimumUi:
    def __init__(self, state: TimumState) -> None:
        self.state = state
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
    def _local_datetime(day: str, clock: str, tz: str) -> datetime:
        try:
            return datetime.combine(date.fromisoformat(day), time.fromisoformat(clock), tzinfo=ZoneInfo(tz))
        except ValueError:
            raise SandboxError("date or time missing or malformed", field="date", key="bad_time") from None

    # --- pages -----------------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        lang = pick_lang(request.query_params.get("lang"))
        return self._render("index.html", lang, providers=self.state.list_providers())

    async def provider_page(self, request: Request, *, lang: str | None = None, error: str = "",
                            status: int = 200) -> Response:
        lang = lang or pick_lang(request.query_params.get("lang"))
        pid = request.path_params["providerId"]
        try:
            provider = self.state.provider(pid)
        except UnknownItem:
            return self._not_found(lang)
        tz = ZoneInfo(provider.time_zone)
        resources = []
        for res in self.state.list_resources(pid):
            rtz = ZoneInfo(res.time_zone)
            bookings = [{"b": b, "when": format_span(b.start.astimezone(rtz), b.end.astimezone(rtz), lang),
                         "date": b.start.astimezone(rtz).date().isoformat(),
                         "time": b.start.astimezone(rtz).strftime("%H:%M")}
                        for b in self.state.list_bookings(pid, res.id)]
            slots = [{"s": s, "when": format_span(s.start.astimezone(rtz), s.end.astimezone(rtz), lang,
                                                  all_day=s.all_day)}
                     for s in self.state.list_slots(pid, res.id)]
            resources.append({"r": res, "bookings": bookings, "slots": slots})
        statuses = [s for s in self.state.list_received_statuses() if s.provider_id == pid][-10:]
        names = {res.id: res.name for res in self.state.list_resources(pid)}
        done = request.query_params.get("done", "")
        outlook = request.query_params.get("outlook", "")
        tomorrow = (datetime.now(tz) + timedelta(days=1)).date().isoformat()
        return self._render(
            "provider.html", lang, status=status, provider=provider, resources=resources, statuses=statuses,
            names=names, error=error, done=TEXTS[lang].get(f"done_{done}", ""),
            outlook=TEXTS[lang].get(f"outlook_{outlook}", ""), outlook_ok=outlook == "connected",
            services=SERVICES, durations=DURATIONS, tomorrow=tomorrow,
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
        return self._render("booking.html", lang, booking=booking, resource=resource,
                            when=format_span(booking.start.astimezone(rtz), booking.end.astimezone(rtz), lang))

    # --- actions ---------------------------------------------------------------------------------
    async def _act(self, request: Request, action: str) -> Response:
        form = await self._form(request)
        lang = pick_lang(form.get("lang") or request.query_params.get("lang"))
        pid = request.path_params["providerId"]
        try:
            self.state.provider(pid)
        except UnknownItem:
            return self._not_found(lang)
        try:
            done = self._apply(action, pid, request.path_params, form)
        except SandboxError as exc:
            status = 404 if isinstance(exc, UnknownItem) else 400 if exc.field else 409
            return await self.provider_page(request, lang=lang, error=self._error_text(exc, lang), status=status)
        return RedirectResponse(self._url(f"/timum/providers/{pid}", lang, done=done), status_code=303)

    def _apply(self, action: str, pid: str, params: Any, form: dict[str, str]) -> str:
        if action == "book":
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
        if action == "resource":
            self.state.create_resource(pid, form.get("name", ""))
            return "resource_created"
        booking = self.state.booking(params["bookingId"])
        if booking.provider_id != pid:
            raise UnknownItem("booking", booking.id)
        if action == "reschedule":
            start = self._local_datetime(form.get("date", ""), form.get("time", ""), booking.time_zone)
            self.state.reschedule_booking(booking.id, start)
            return "booking_rescheduled"
        self.state.cancel_booking(booking.id)
        return "booking_cancelled"

    async def book(self, request: Request) -> Response:
        return await self._act(request, "book")

    async def add_resource(self, request: Request) -> Response:
        return await self._act(request, "resource")

    async def reschedule(self, request: Request) -> Response:
        return await self._act(request, "reschedule")

    async def cancel(self, request: Request) -> Response:
        return await self._act(request, "cancel")

    async def connect(self, request: Request) -> Response:
        """The two buttons: send the browser to the service with a freshly signed connect link."""
        form = await self._form(request)
        lang = pick_lang(form.get("lang") or request.query_params.get("lang"))
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
        form = await self._form(request)
        lang = pick_lang(form.get("lang") or request.query_params.get("lang"))
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
        return [
            Route("/timum", self.root_redirect, methods=["GET"]),
            Route("/timum/", self.index, methods=["GET"]),
            Route(p, self.provider_page, methods=["GET"]),
            Route(f"{p}/connect", self.connect, methods=["POST"]),
            Route(f"{p}/connect-organisation", self.connect_organisation, methods=["POST"]),
            Route(f"{p}/resources", self.add_resource, methods=["POST"]),
            Route(f"{p}/resources/{{resourceId}}/connect", self.connect, methods=["POST"]),
            Route(f"{p}/bookings", self.book, methods=["POST"]),
            Route(f"{p}/bookings/{{bookingId}}", self.booking_page, methods=["GET"]),
            Route(f"{p}/bookings/{{bookingId}}/reschedule", self.reschedule, methods=["POST"]),
            Route(f"{p}/bookings/{{bookingId}}/cancel", self.cancel, methods=["POST"]),
        ]
