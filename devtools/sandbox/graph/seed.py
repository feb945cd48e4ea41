"""Demo mailboxes for a German practice: treatment rooms, a colleague's shared calendar and the
kind of events that trip up calendar sync (a weekly series with an exception and a deleted
occurrence, an all-day course, a lunch break shown as free, a private appointment)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from devtools.sandbox.directory import SandboxUser
from devtools.sandbox.graph.state import GraphState
from devtools.sandbox.graph.timezones import from_local


def _find(users: list[SandboxUser], name: str) -> SandboxUser | None:
    return next((u for u in users if name.lower() in u.display_name.lower()), None)


def seed_demo(state: GraphState, users: list[SandboxUser], *, today: date | None = None) -> None:
    for user in users:
        state.user(user.id)
    anna = _find(users, "Anna Weber")
    jonas = _find(users, "Jonas Becker")
    today = today or date.today()
    monday = today - timedelta(days=today.weekday())

    def at(user: SandboxUser, day: date, hour: int, minute: int = 0) -> datetime:
        return from_local(datetime.combine(day, time(hour, minute)), user.time_zone)

    if anna is not None:
        names = {c.name for c in state.own_calendars(anna.id)}
        for name, color in (("Behandlungsraum 1", "lightGreen"), ("Behandlungsraum 2", "lightBlue")):
            if name not in names:
                state.create_calendar(anna.id, name, color=color)
        series = state.create_event(
            anna.id, "Teammeeting", at(anna, monday, 8, 30), at(anna, monday, 9, 15), categories=["Praxis"],
            body="Wochenbesprechung im Pausenraum", location="Pausenraum",
            recurrence={"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"],
                                    "firstDayOfWeek": "monday"},
                        "range": {"type": "noEnd", "startDate": (monday - timedelta(weeks=4)).isoformat()}})
        state.modify_occurrence(series.immutable_id, monday + timedelta(weeks=1),
                                start=at(anna, monday + timedelta(weeks=1), 13),
                                end=at(anna, monday + timedelta(weeks=1), 13, 45))
        state.cancel_occurrence(series.immutable_id, monday + timedelta(weeks=2))
        state.create_event(anna.id, "Fortbildung Schmerztherapie", monday + timedelta(days=9),
                           monday + timedelta(days=10), all_day=True, show_as="oof", location="Ärztekammer")
        state.create_event(
            anna.id, "Mittagspause", at(anna, monday, 12, 30), at(anna, monday, 13, 15), show_as="free",
            recurrence={"pattern": {"type": "weekly", "interval": 1, "firstDayOfWeek": "monday",
                                    "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"]},
                        "range": {"type": "endDate", "startDate": monday.isoformat(),
                                  "endDate": (monday + timedelta(weeks=8)).isoformat()}})
        state.create_event(anna.id, "Arzttermin", at(anna, monday + timedelta(days=3), 15),
                           at(anna, monday + timedelta(days=3), 16), sensitivity="private")
        state.create_event(anna.id, "Hausbesuch Familie Schmitt", at(anna, monday + timedelta(days=1), 10),
                           at(anna, monday + timedelta(days=1), 11), show_as="tentative")
    if jonas is not None:
        kal = state.default_calendar(jonas.id)
        state.create_event(jonas.id, "Supervision", at(jonas, monday + timedelta(days=2), 16),
                           at(jonas, monday + timedelta(days=2), 17, 30))
        state.create_event(jonas.id, "Urlaub", monday + timedelta(days=14), monday + timedelta(days=19),
                           all_day=True, show_as="oof")
        if anna is not None:
            state.share_calendar(kal.id, anna.id, can_edit=True, accept=True)
