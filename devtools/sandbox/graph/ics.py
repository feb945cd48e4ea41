"""Published calendars (Outlook → Einstellungen → Freigegebene Kalender → Kalender
veröffentlichen) served at ``/outlook/published/{token}/calendar.ics``.

The feed looks like Exchange's: Windows TZIDs with VTIMEZONE rules, series as RRULE with EXDATE
for deleted occurrences, changed occurrences as separate VEVENTs with RECURRENCE-ID, and the
X-MICROSOFT-CDO-* busy status. Like outlook.office365.com since 2025, a client whose User-Agent
does not look like a browser gets an HTML page instead of the calendar.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

from icalendar import Calendar as VCalendar
from icalendar import Event as VEvent
from icalendar import Timezone, TimezoneDaylight, TimezoneStandard
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from devtools.sandbox.graph.model import Event
from devtools.sandbox.graph.state import GraphState, Publication
from devtools.sandbox.graph.timezones import from_local, windows_name, yearly_rules

BUSY_STATUS = {"free": "FREE", "tentative": "TENTATIVE", "busy": "BUSY", "oof": "OOF",
               "workingElsewhere": "WORKINGELSEWHERE", "unknown": "BUSY"}
AVAILABILITY_LABEL = {"free": "Frei", "tentative": "Mit Vorbehalt", "busy": "Beschäftigt", "oof": "Abwesend",
                      "workingElsewhere": "An anderem Ort tätig", "unknown": "Beschäftigt"}
_DAY = {"monday": "MO", "tuesday": "TU", "wednesday": "WE", "thursday": "TH", "friday": "FR", "saturday": "SA",
        "sunday": "SU"}
_INDEX = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}
_BROWSER = re.compile(r"Mozilla/\d", re.I)


def _vtimezone(zone_name: str, year: int) -> Timezone:
    tz = Timezone()
    tz.add("tzid", windows_name(zone_name))
    rules = sorted(yearly_rules(zone_name, year), key=lambda r: r["kind"] != "STANDARD")
    for rule in rules:
        sub = TimezoneStandard() if rule["kind"] == "STANDARD" else TimezoneDaylight()
        sub.add("dtstart", datetime.combine(date(1601, 1, 1), rule["time"]))  # type: ignore[arg-type]
        sub.add("tzoffsetfrom", rule["offset_from"])
        sub.add("tzoffsetto", rule["offset_to"])
        if rule["month"]:
            sub.add("rrule", {"freq": "YEARLY", "interval": 1, "byday": rule["byday"], "bymonth": rule["month"]})
        tz.add_component(sub)
    return tz


def _rrule(ev: Event) -> dict[str, Any]:
    assert ev.recurrence is not None
    p, r = ev.recurrence["pattern"], ev.recurrence["range"]
    rule: dict[str, Any] = {"interval": p["interval"]}
    if p["type"] == "daily":
        rule["freq"] = "DAILY"
    elif p["type"] == "weekly":
        rule.update(freq="WEEKLY", byday=[_DAY[d] for d in p["daysOfWeek"]], wkst=_DAY[p["firstDayOfWeek"]])
    elif p["type"] == "absoluteMonthly":
        rule.update(freq="MONTHLY", bymonthday=p["dayOfMonth"])
    elif p["type"] == "relativeMonthly":
        rule.update(freq="MONTHLY", byday=[f"{_INDEX[p['index']]}{_DAY[d]}" for d in p["daysOfWeek"]])
    else:
        rule.update(freq="YEARLY", bymonth=p["month"], bymonthday=p["dayOfMonth"])
    if r["type"] == "numbered":
        rule["count"] = r["numberOfOccurrences"]
    elif r["type"] == "endDate":
        last = date.fromisoformat(r["endDate"])
        rule["until"] = last if ev.is_all_day else from_local(datetime.combine(last, ev.start_local.time()), ev.tz)
    return rule


def _stamp(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(microsecond=0)


class IcsRenderer:
    def __init__(self, state: GraphState) -> None:
        self.state = state

    def _times(self, vevent: VEvent, ev: Event, start: datetime, end: datetime) -> None:
        if ev.is_all_day:
            vevent.add("dtstart", start.date())
            vevent.add("dtend", end.date())
            return
        vevent.add("dtstart", start, parameters={"TZID": windows_name(ev.tz)})
        vevent.add("dtend", end, parameters={"TZID": windows_name(ev.end_tz)})

    def _body(self, vevent: VEvent, ev: Event, data: dict[str, Any], detail: str) -> None:
        private = ev.sensitivity in ("private", "confidential")
        if detail == "availability" or private:
            vevent.add("summary", "Privat" if private and detail != "availability"
                       else AVAILABILITY_LABEL[data["show_as"]])
        else:
            vevent.add("summary", data["subject"])
            if detail == "full":
                text = re.sub(r"<[^>]+>", " ", data["body"]) if data["body_type"] == "html" else data["body"]
                if text.strip():
                    vevent.add("description", " ".join(text.split()))
        vevent.add("location", data["location"] if detail == "full" and not private else "")
        vevent.add("class", "PRIVATE" if private else "PUBLIC")
        vevent.add("priority", 5)
        vevent.add("transp", "TRANSPARENT" if data["show_as"] == "free" else "OPAQUE")
        vevent.add("status", "CANCELLED" if data["is_cancelled"] else "CONFIRMED")
        vevent.add("x-microsoft-cdo-busystatus", BUSY_STATUS[data["show_as"]])
        vevent.add("x-microsoft-cdo-intendedstatus", BUSY_STATUS[data["show_as"]])
        vevent.add("x-microsoft-cdo-alldayevent", "TRUE" if ev.is_all_day else "FALSE")
        vevent.add("x-microsoft-cdo-importance", {"low": 0, "normal": 1, "high": 2}[data["importance"]])
        vevent.add("x-microsoft-cdo-insttype", 1 if ev.recurrence else 0)
        vevent.add("x-microsoft-donotforwardmeeting", "FALSE")
        vevent.add("x-microsoft-disallow-counter", "FALSE")

    def render(self, pub: Publication) -> bytes:
        cal = self.state.calendar(pub.calendar_id)
        owner = self.state.directory.user(cal.owner_id)
        events = self.state.calendar_events(cal.id)
        out = VCalendar()
        out.add("method", "PUBLISH")
        out.add("prodid", "Microsoft Exchange Server 2010")
        out.add("version", "2.0")
        out.add("x-wr-calname", cal.name)
        zones = {ev.tz for ev in events if not ev.is_all_day} | {ev.end_tz for ev in events if not ev.is_all_day}
        if owner is not None:
            zones.add(owner.time_zone)
        year = datetime.now(UTC).year
        seen: set[str] = set()
        for zone_name in sorted(zones):
            if windows_name(zone_name) not in seen:
                seen.add(windows_name(zone_name))
                out.add_component(_vtimezone(zone_name, year))
        for ev in events:
            master = VEvent()
            if ev.recurrence:
                master.add("rrule", _rrule(ev))
                for day in sorted(ev.cancelled):
                    when = date.fromisoformat(day)
                    if ev.is_all_day:
                        master.add("exdate", when)
                    else:
                        master.add("exdate", datetime.combine(when, ev.start_local.time()),
                                   parameters={"TZID": windows_name(ev.tz)})
            master.add("uid", ev.ical_uid)
            data = self.state.instance(ev, None).data
            self._times(master, ev, ev.start_local, ev.end_local)
            self._body(master, ev, data, pub.detail)
            master.add("dtstamp", _stamp(ev.last_modified))
            master.add("created", _stamp(ev.created))
            master.add("last-modified", _stamp(ev.last_modified))
            master.add("sequence", ev.version - 1)
            out.add_component(master)
            for day, override in sorted(ev.exceptions.items()):
                if day in ev.cancelled:
                    continue
                inst = self.state.instance(ev, day)
                vex = VEvent()
                original = datetime.combine(date.fromisoformat(day), ev.start_local.time())
                if ev.is_all_day:
                    vex.add("recurrence-id", original.date())
                else:
                    vex.add("recurrence-id", original, parameters={"TZID": windows_name(ev.tz)})
                vex.add("uid", ev.ical_uid)
                self._times(vex, ev, inst.data["start_local"], inst.data["end_local"])
                self._body(vex, ev, inst.data, pub.detail)
                vex.add("dtstamp", _stamp(override.last_modified))
                vex.add("last-modified", _stamp(override.last_modified))
                vex.add("sequence", override.version)
                out.add_component(vex)
        return bytes(out.to_ical())


HTML_INSTEAD = """<!DOCTYPE html>
<html lang="de"><head><meta charset="utf-8"><title>Outlook</title></head>
<body><p>Outlook kann diesen Kalender in Ihrem Browser anzeigen.</p></body></html>
"""


def ics_routes(state: GraphState) -> list[BaseRoute]:
    renderer = IcsRenderer(state)

    async def published(request: Request) -> Response:
        pub = state.publication(request.path_params["token"])
        if pub is None:
            return Response("Not Found", status_code=404, media_type="text/plain")
        if not _BROWSER.search(request.headers.get("user-agent", "")):
            return HTMLResponse(HTML_INSTEAD)
        try:
            body = renderer.render(pub)
        except KeyError:
            return Response("Not Found", status_code=404, media_type="text/plain")
        return Response(body, media_type="text/calendar; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})

    return [Route("/outlook/published/{token}/calendar.ics", published, methods=["GET"])]
