"""Sandbox Outlook: server-rendered pages (no JavaScript) to act as a mailbox user — week and
agenda views, creating, moving and deleting events (single, all-day, weekly series, private,
free/tentative), sharing and accepting calendars, publishing a calendar as ICS — and to steer
the Graph stand-in: lifecycle notifications, delivered notifications with their ack times,
fault switches and forgetting delta state. German by default, English with ``?lang=en``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import jinja2
from markupsafe import escape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from devtools.sandbox import ui as shared_ui
from devtools.sandbox.config import SandboxConfig
from devtools.sandbox.directory import SandboxUser
from devtools.sandbox.graph.delivery import display_target
from devtools.sandbox.graph.model import FAULT_KINDS, Calendar
from devtools.sandbox.graph.recurrence import DAYS
from devtools.sandbox.graph.state import LIFECYCLE_EVENTS, SHOW_AS, GraphState
from devtools.sandbox.graph.timezones import from_local, to_local

_env = jinja2.Environment(
    loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
                                jinja2.FileSystemLoader(shared_ui.TEMPLATE_DIR)]),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)

MESSAGES = {
    "created": ("Termin angelegt.", "Event created."),
    "moved": ("Termin geändert.", "Event changed."),
    "deleted": ("Termin gelöscht.", "Event deleted."),
    "shared": ("Kalender freigegeben. Die Person sieht ihn, sobald sie die Einladung annimmt.",
               "Calendar shared. The person sees it once they accept the invitation."),
    "accepted": ("Freigabe angenommen.", "Invitation accepted."),
    "published": ("Kalender veröffentlicht.", "Calendar published."),
    "unpublished": ("Veröffentlichung beendet.", "Calendar no longer published."),
    "calendar": ("Kalender angelegt.", "Calendar created."),
    "lifecycle": ("Lebenszyklus-Benachrichtigung ausgelöst.", "Lifecycle notification triggered."),
    "fault": ("Fehlerregel angelegt.", "Fault rule added."),
    "faults-cleared": ("Alle Fehlerregeln entfernt.", "All fault rules removed."),
    "released": ("Zurückgehaltene Anfragen freigegeben.", "Held requests released."),
    "lost": ("Delta-Status vergessen: der nächste deltaLink antwortet 410.",
             "Delta state forgotten: the next deltaLink answers 410."),
    "behaviour": ("Verhalten gespeichert.", "Behaviour saved."),
}
SHOW_AS_LABEL = {"free": ("Frei", "Free"), "tentative": ("Mit Vorbehalt", "Tentative"),
                 "busy": ("Gebucht", "Busy"), "oof": ("Abwesend", "Away"),
                 "workingElsewhere": ("An anderem Ort tätig", "Working elsewhere"), "unknown": ("Unbekannt", "Unknown")}
PUBLISH_DETAIL_LABEL = {"availability": ("Nur Verfügbarkeit", "Availability only"),
                        "limited": ("Eingeschränkte Details", "Limited details"),
                        "full": ("Alle Details", "All details")}
DAY_LABEL = [("Mo", "Mon"), ("Di", "Tue"), ("Mi", "Wed"), ("Do", "Thu"), ("Fr", "Fri"), ("Sa", "Sat"), ("So", "Sun")]


class FormError(ValueError):
    pass


def _lang(request: Request) -> str:
    return shared_ui.pick_language(request)


def _page(request: Request, template: str, *, title: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    lang = _lang(request)

    def t(de: str, en: str) -> str:
        return de if lang == "de" else en

    current = str(request.url.path) + (f"?{request.url.query}" if request.url.query else "")
    msg = request.query_params.get("msg")
    html = _env.get_template(template).render(
        lang=lang, t=t, title=title, static=shared_ui.STATIC_PATH, other_lang="en" if lang == "de" else "de",
        switch_url=shared_ui.with_language(current, "en" if lang == "de" else "de", param="lang"),
        home_url="/outlook/" + ("?lang=en" if lang == "en" else ""), nav="outlook",
        message=MESSAGES[msg][0 if lang == "de" else 1] if msg in MESSAGES else None,
        error=request.query_params.get("error"), q=lambda: ("?lang=en" if lang == "en" else ""),
        show_as_label=lambda v: SHOW_AS_LABEL.get(v, (v, v))[0 if lang == "de" else 1],
        detail_label=lambda v: PUBLISH_DETAIL_LABEL.get(v, (v, v))[0 if lang == "de" else 1], **context)
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})


def _back(request: Request, path: str, *, msg: str | None = None, error: str | None = None) -> RedirectResponse:
    params = {}
    if _lang(request) == "en":
        params["lang"] = "en"
    if msg:
        params["msg"] = msg
    if error:
        params["error"] = error
    sep = "&" if "?" in path else "?"
    return RedirectResponse(path + (sep + urlencode(params) if params else ""), status_code=303)


def _same_origin(request: Request) -> bool:
    """Form posts from another site are refused (the UI has no other CSRF token)."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return True
    return urlsplit(origin).netloc == request.url.netloc


class OutlookUi:
    def __init__(self, state: GraphState, config: SandboxConfig) -> None:
        self.state = state
        self.config = config

    # --- helpers ---------------------------------------------------------------------------
    def _user(self, request: Request) -> SandboxUser:
        try:
            return self.state.user(request.path_params["user"])
        except KeyError:
            raise FormError("unknown user") from None

    def _calendars(self, user: SandboxUser) -> list[dict[str, Any]]:
        own = [{"cal": c, "own": True, "owner": user.display_name, "can_edit": True}
               for c in self.state.own_calendars(user.id)]
        shared = []
        for cal, share in self.state.shared_with(user.id):
            owner = self.state.directory.user(cal.owner_id)
            shared.append({"cal": cal, "own": False, "owner": owner.display_name if owner else "?",
                           "can_edit": share.can_edit})
        return own + shared

    def _writable(self, user: SandboxUser, cal: Calendar) -> bool:
        if cal.owner_id == user.id:
            return True
        share = self.state.share_of(cal.id, user.id)
        return share is not None and share.accepted and share.can_edit

    def _visible(self, user: SandboxUser, cal: Calendar) -> bool:
        if cal.owner_id == user.id:
            return True
        share = self.state.share_of(cal.id, user.id)
        return share is not None and share.accepted

    async def _form(self, request: Request) -> dict[str, str]:
        # Plain urlencoded forms (no JavaScript, no uploads), parsed without python-multipart.
        pairs = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
        form = {k: v for k, v in pairs if k != "days"}
        form["__days"] = ",".join(v for k, v in pairs if k == "days")
        return form

    def guarded(self, fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            if request.method == "POST" and not _same_origin(request):
                return HTMLResponse("Forbidden", status_code=403)
            try:
                return await fn(request)
            except FormError as exc:
                if request.method == "GET":
                    return HTMLResponse(f"<p>{escape(str(exc))}</p>", status_code=404)
                referer = request.headers.get("referer", "")
                path = urlsplit(referer).path if referer and urlsplit(referer).netloc == request.url.netloc \
                    else "/outlook/"
                return _back(request, path, error=str(exc))
            except (KeyError, ValueError) as exc:
                if request.method == "GET":
                    return HTMLResponse("<p>Not found</p>", status_code=404)
                ref = urlsplit(request.headers.get("referer", ""))
                back = ref.path if ref.netloc == request.url.netloc and ref.path else "/outlook/"
                return _back(request, back, error=str(exc.args[0]) if exc.args else "error")
        return run

    # --- pages -----------------------------------------------------------------------------
    async def users(self, request: Request) -> Response:
        tenants = []
        for tenant in list(self.state.directory.tenants.values()):
            people = [u for u in list(self.state.directory.users.values()) if u.tenant_id == tenant.id]
            if people:
                tenants.append({"tenant": tenant, "users": people})
        return _page(request, "outlook_users.html", title="Outlook", tenants=tenants, section="users")

    async def mailbox(self, request: Request) -> Response:
        user = self._user(request)
        cal = self.state.default_calendar(user.id)
        return _back(request, f"/outlook/{user.id}/calendars/{cal.id}")

    async def calendar(self, request: Request) -> Response:
        user = self._user(request)
        try:
            cal = self.state.calendar(request.path_params["cal"])
        except KeyError:
            raise FormError("unknown calendar") from None
        if not self._visible(user, cal):
            raise FormError("calendar not visible to this user")
        view = request.query_params.get("view", "week")
        try:
            anchor = date.fromisoformat(request.query_params.get("week", "")) if request.query_params.get("week") \
                else to_local(datetime.now(UTC), user.time_zone).date()
        except ValueError:
            anchor = date.today()
        start_day = anchor - timedelta(days=anchor.weekday()) if view == "week" else anchor
        span = 7 if view == "week" else 28
        start = from_local(datetime.combine(start_day, time()), user.time_zone)
        end = from_local(datetime.combine(start_day + timedelta(days=span), time()), user.time_zone)
        days: list[dict[str, Any]] = [{"date": start_day + timedelta(days=i), "items": []} for i in range(span)]
        for inst in self.state.view(cal.id, start, end):
            local_start = to_local(inst.start_utc, user.time_zone)
            local_end = to_local(inst.end_utc, user.time_zone)
            ids = self.state.ids(inst.event, inst.occurrence)
            item = {"inst": inst, "subject": inst.data["subject"], "start": local_start, "end": local_end,
                    "id": ids.immutable_id, "series_id": self.state.ids(inst.event).immutable_id,
                    "private": inst.event.sensitivity in ("private", "confidential")}
            index = max(0, (local_start.date() - start_day).days)
            if index < span:
                days[index]["items"].append(item)
        if view == "agenda":
            days = [d for d in days if d["items"]]
        pending = [(c, s) for c, s in self.state.shared_with(user.id, accepted_only=False) if not s.accepted]
        return _page(request, "outlook_calendar.html", title=cal.name, user=user, cal=cal, view=view,
                     calendars=self._calendars(user), days=days, pending=pending, writable=self._writable(user, cal),
                     prev_week=(start_day - timedelta(days=span)).isoformat(),
                     next_week=(start_day + timedelta(days=span)).isoformat(), today=date.today().isoformat(),
                     show_as_values=SHOW_AS, day_labels=DAY_LABEL, day_names=DAYS, section="calendar",
                     week=start_day.isoformat(),
                     # a new event lands in the days shown: today if they include it, else their first day
                     new_date=(date.today() if start_day <= date.today() < start_day + timedelta(days=span)
                               else start_day).isoformat())

    def _times(self, form: dict[str, str],
               user: SandboxUser) -> tuple[date | datetime, date | datetime, bool, date]:
        try:
            day = date.fromisoformat(form.get("date", ""))
        except ValueError:
            raise FormError("Datum fehlt / date missing") from None
        all_day = form.get("all_day") == "on"
        if all_day:
            days = max(1, int(form.get("days_long") or "1"))
            return day, day + timedelta(days=days), True, day
        try:
            start_t = time.fromisoformat(form.get("start", ""))
            end_t = time.fromisoformat(form.get("end", ""))
        except ValueError:
            raise FormError("Uhrzeit fehlt / time missing") from None
        start = datetime.combine(day, start_t)
        end = datetime.combine(day, end_t)
        if end <= start:
            end += timedelta(days=1)
        return from_local(start, user.time_zone), from_local(end, user.time_zone), False, day

    async def create_event(self, request: Request) -> Response:
        user = self._user(request)
        cal = self.state.calendar(request.path_params["cal"])
        if not self._writable(user, cal):
            raise FormError("keine Schreibrechte / no write access")
        form = await self._form(request)
        start, end, all_day, day = self._times(form, user)
        kw: dict[str, Any] = {"show_as": form.get("show_as", "busy"),
                              "sensitivity": "private" if form.get("private") == "on" else "normal"}
        if form.get("repeat") == "weekly":
            days = [d for d in form["__days"].split(",") if d in DAYS] or [DAYS[day.weekday()]]
            count = max(1, min(int(form.get("count") or "10"), 200))
            kw["recurrence"] = {"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": days,
                                            "firstDayOfWeek": "monday"},
                                "range": {"type": "numbered", "startDate": day.isoformat(),
                                          "numberOfOccurrences": count}}
        subject = form.get("subject", "").strip() or "(ohne Betreff)"
        self.state.create_event(cal.owner_id, subject, start, end, calendar_id=cal.id, all_day=all_day, **kw)
        return _back(request, f"/outlook/{user.id}/calendars/{cal.id}?week={day.isoformat()}", msg="created")

    async def move_event(self, request: Request) -> Response:
        user = self._user(request)
        ev, _ = self.state.resolve(request.path_params["event"])
        if not self._writable(user, self.state.calendar(ev.calendar_id)):
            raise FormError("keine Schreibrechte / no write access")
        form = await self._form(request)
        start, end, all_day, day = self._times(form, user)
        event_id = request.path_params["event"]
        target = form.get("calendar")
        if target and target != ev.calendar_id:
            if not self._writable(user, self.state.calendar(target)):
                raise FormError("keine Schreibrechte / no write access")
            event_id = self.state.move_event_to_calendar(event_id, target).immutable_id
        changes: dict[str, Any] = {"start": start, "end": end, "all_day": all_day}
        if form.get("show_as") in SHOW_AS:
            changes["show_as"] = form["show_as"]
        self.state.update_event(event_id, **changes)
        return _back(request, f"/outlook/{user.id}/calendars/{target or ev.calendar_id}"
                              f"?week={day.isoformat()}", msg="moved")

    async def delete_event(self, request: Request) -> Response:
        user = self._user(request)
        form = await self._form(request)
        event_id = request.path_params["event"]
        ev, _ = self.state.resolve(event_id)
        if not self._writable(user, self.state.calendar(ev.calendar_id)):
            raise FormError("keine Schreibrechte / no write access")
        if form.get("scope") == "series":
            event_id = self.state.ids(ev).immutable_id
        cal_id = ev.calendar_id
        self.state.delete_event(event_id)
        # Back to the week the user was looking at, not to today's.
        try:
            week = f"?week={date.fromisoformat(form.get('week', '')).isoformat()}"
        except ValueError:
            week = ""
        return _back(request, f"/outlook/{user.id}/calendars/{cal_id}{week}", msg="deleted")

    async def settings(self, request: Request) -> Response:
        user = self._user(request)
        own = self.state.own_calendars(user.id)
        others = [u for u in list(self.state.directory.users.values())
                  if u.tenant_id == user.tenant_id and u.id != user.id]
        shares = []
        for cal in own:
            for other in others:
                share = self.state.share_of(cal.id, other.id)
                if share:
                    shares.append({"cal": cal, "user": other, "share": share})
        base = f"{request.url.scheme}://{request.url.netloc}"
        publications = [{"cal": self.state.calendar(p.calendar_id), "detail": p.detail,
                         "url": f"{base}/outlook/published/{p.token}/calendar.ics"}
                        for p in list(self.state.publications.values())
                        if self.state.calendars.get(p.calendar_id) and
                        self.state.calendars[p.calendar_id].owner_id == user.id]
        pending = [(c, s) for c, s in self.state.shared_with(user.id, accepted_only=False) if not s.accepted]
        return _page(request, "outlook_settings.html", title="Einstellungen", user=user, own=own, others=others,
                     shares=shares, publications=publications, pending=pending, section="settings",
                     calendars=self._calendars(user))

    async def share(self, request: Request) -> Response:
        user = self._user(request)
        form = await self._form(request)
        cal = self.state.calendar(form.get("calendar", ""))
        if cal.owner_id != user.id:
            raise FormError("nur eigene Kalender / own calendars only")
        self.state.share_calendar(cal.id, form.get("with", ""), can_edit=form.get("can_edit") == "on")
        return _back(request, f"/outlook/{user.id}/settings", msg="shared")

    async def accept(self, request: Request) -> Response:
        user = self._user(request)
        form = await self._form(request)
        self.state.accept_share(form.get("calendar", ""), user.id)
        return _back(request, f"/outlook/{user.id}/calendars/{form.get('calendar', '')}", msg="accepted")

    async def publish(self, request: Request) -> Response:
        user = self._user(request)
        form = await self._form(request)
        cal = self.state.calendar(form.get("calendar", ""))
        if cal.owner_id != user.id:
            raise FormError("nur eigene Kalender / own calendars only")
        if form.get("action") == "stop":
            self.state.unpublish_calendar(cal.id)
            return _back(request, f"/outlook/{user.id}/settings", msg="unpublished")
        self.state.publish_calendar(cal.id, form.get("detail", "full"))
        return _back(request, f"/outlook/{user.id}/settings", msg="published")

    async def new_calendar(self, request: Request) -> Response:
        user = self._user(request)
        form = await self._form(request)
        cal = self.state.create_calendar(user.id, form.get("name", ""))
        return _back(request, f"/outlook/{user.id}/calendars/{cal.id}", msg="calendar")

    async def notifications(self, request: Request) -> Response:
        user = self._user(request)
        subs = [s for s in self.state.list_subscriptions() if s.mailbox_id == user.id]
        ids = {s.id for s in subs}
        deliveries = [d for d in reversed(self.state.list_deliveries())
                      if not d.subscription_ids or ids & set(d.subscription_ids)][:100]
        calendars = {c.id: c.name for c in self.state.own_calendars(user.id)}
        return _page(request, "outlook_notifications.html", title="Benachrichtigungen", user=user,
                     subscriptions=[{"sub": s, "calendar": calendars.get(s.calendar_id, s.calendar_id),
                                     "target": display_target(s.notification_url)} for s in subs],
                     deliveries=deliveries, lifecycle_events=LIFECYCLE_EVENTS, section="notifications",
                     calendars=self._calendars(user))

    async def lifecycle(self, request: Request) -> Response:
        user = self._user(request)
        form = await self._form(request)
        sub = self.state.subscription(request.path_params["sub"])
        if sub is None or sub.mailbox_id != user.id:
            raise FormError("unbekanntes Abonnement / unknown subscription")
        self.state.trigger_lifecycle(sub.id, form.get("event", ""))
        return _back(request, f"/outlook/{user.id}/notifications", msg="lifecycle")

    async def faults(self, request: Request) -> Response:
        return _page(request, "outlook_faults.html", title="Fehler & Grenzen", section="faults",
                     rules=list(self.state.faults),
                     kinds=FAULT_KINDS, behaviour=self.state.behaviour, states=len(self.state.sync_states))

    async def add_fault(self, request: Request) -> Response:
        form = await self._form(request)
        try:
            count = int(form["count"]) if form.get("count") else None
            self.state.add_fault(form.get("kind", ""), path=form.get("path") or ".*", method=form.get("method") or None,
                                 rate=float(form.get("rate") or 1), count=count,
                                 retry_after=float(form.get("retry_after") or 1), delay=float(form.get("delay") or 5),
                                 retry_after_date=form.get("retry_after_date") == "on")
        except ValueError as exc:
            raise FormError(str(exc)) from exc
        return _back(request, "/outlook/faults", msg="fault")

    async def clear_faults(self, request: Request) -> Response:
        self.state.clear_faults()
        return _back(request, "/outlook/faults", msg="faults-cleared")

    async def release(self, request: Request) -> Response:
        self.state.release_held()
        return _back(request, "/outlook/faults", msg="released")

    async def lose_state(self, request: Request) -> Response:
        self.state.lose_delta_state()
        return _back(request, "/outlook/faults", msg="lost")

    async def behaviour(self, request: Request) -> Response:
        form = await self._form(request)
        b = self.state.behaviour
        try:
            for name in ("empty_page_probability", "replay_probability", "duplicate_probability"):
                value = float(form.get(name, getattr(b, name)))
                if not 0 <= value <= 1:
                    raise FormError(f"{name}: 0…1")
                setattr(b, name, value)
            age = form.get("delta_token_max_age", "").strip()
            b.delta_token_max_age = float(age) if age else None
            level = int(form.get("custom_zone_labels", b.custom_zone_labels))
            if level not in (0, 1, 2):
                raise FormError("custom_zone_labels: 0, 1 or 2")
            b.custom_zone_labels = level
            for name in ("removed_reason_changed", "partial_delta_items", "custom_mailbox_zone",
                         "refuse_calendar_subscriptions", "require_https_notification_url"):
                setattr(b, name, form.get(name) == "on")
        except ValueError as exc:
            raise FormError(str(exc)) from exc
        return _back(request, "/outlook/faults", msg="behaviour")

    def routes(self) -> list[BaseRoute]:
        g = self.guarded
        return [
            Route("/outlook/", g(self.users), methods=["GET"]),
            Route("/outlook/faults", g(self.faults), methods=["GET"]),
            Route("/outlook/faults/add", g(self.add_fault), methods=["POST"]),
            Route("/outlook/faults/clear", g(self.clear_faults), methods=["POST"]),
            Route("/outlook/faults/release", g(self.release), methods=["POST"]),
            Route("/outlook/delta/lose", g(self.lose_state), methods=["POST"]),
            Route("/outlook/behaviour", g(self.behaviour), methods=["POST"]),
            Route("/outlook/{user}/", g(self.mailbox), methods=["GET"]),
            Route("/outlook/{user}/calendars/{cal}", g(self.calendar), methods=["GET"]),
            Route("/outlook/{user}/calendars/{cal}/events", g(self.create_event), methods=["POST"]),
            Route("/outlook/{user}/events/{event}/move", g(self.move_event), methods=["POST"]),
            Route("/outlook/{user}/events/{event}/delete", g(self.delete_event), methods=["POST"]),
            Route("/outlook/{user}/settings", g(self.settings), methods=["GET"]),
            Route("/outlook/{user}/share", g(self.share), methods=["POST"]),
            Route("/outlook/{user}/accept", g(self.accept), methods=["POST"]),
            Route("/outlook/{user}/publish", g(self.publish), methods=["POST"]),
            Route("/outlook/{user}/calendars", g(self.new_calendar), methods=["POST"]),
            Route("/outlook/{user}/notifications", g(self.notifications), methods=["GET"]),
            Route("/outlook/{user}/subscriptions/{sub}/lifecycle", g(self.lifecycle), methods=["POST"]),
        ]


def ui_routes(state: GraphState, config: SandboxConfig) -> list[BaseRoute]:
    return OutlookUi(state, config).routes()
