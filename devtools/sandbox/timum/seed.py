"""Demo data: a physiotherapy practice with two resources and a handful of bookings, and a clinic.

Bookings are placed on the coming working days so the pages always show something current. Seeding
sends no webhooks: these bookings existed before any calendar was connected.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from devtools.sandbox.timum.state import TimumState
from shared.domain import Customer

SONNENSCHEIN = "prov-sonnenschein"
ANNA_WEBER = "res-anna-weber"
RAUM_1 = "res-behandlungsraum-1"
KLINIK_NORD = "prov-klinik-nord"
JONAS_HOFFMANN = "res-jonas-hoffmann"
BERLIN = "Europe/Berlin"


def _working_days(count: int, today: datetime) -> list[datetime]:
    days: list[datetime] = []
    day = today
    while len(days) < count:
        day += timedelta(days=1)
        if day.weekday() < 5:
            days.append(day)
    return days


def seed_demo(state: TimumState, *, now: datetime | None = None) -> None:
    """Create (or re-create) the demo providers; other providers stay as they are."""
    tz = ZoneInfo(BERLIN)
    today = (now or datetime.now(tz)).astimezone(tz)
    for pid in (SONNENSCHEIN, KLINIK_NORD):
        for res in state.list_resources(pid):
            state.delete_resource(pid, res.id)

    state.add_provider(SONNENSCHEIN, "Physiopraxis Sonnenschein", time_zone=BERLIN)
    state.create_resource(SONNENSCHEIN, "Dr. Anna Weber", time_zone=BERLIN, resource_id=ANNA_WEBER)
    state.create_resource(SONNENSCHEIN, "Behandlungsraum 1", time_zone=BERLIN, resource_id=RAUM_1)
    state.add_provider(KLINIK_NORD, "Klinik Nord", time_zone=BERLIN)
    state.create_resource(KLINIK_NORD, "Dr. Jonas Hoffmann", time_zone=BERLIN, resource_id=JONAS_HOFFMANN)

    first, second, third = _working_days(3, today)

    def at(day: datetime, hour: int, minute: int = 0) -> datetime:
        return datetime.combine(day.date(), time(hour, minute), tzinfo=tz)

    demo = [
        ("bk-demo-1", SONNENSCHEIN, ANNA_WEBER, at(first, 9), 30, "Krankengymnastik 30 min",
         Customer("Jürgen Schäfer", "juergen.schaefer@example.de", "+49 30 1234567"), ""),
        ("bk-demo-2", SONNENSCHEIN, ANNA_WEBER, at(first, 10), 45, "Manuelle Therapie",
         Customer("Sabine Müller", "sabine.mueller@example.de", ""), "Bitte Befund mitbringen"),
        ("bk-demo-3", SONNENSCHEIN, RAUM_1, at(second, 14), 30, "Krankengymnastik 30 min",
         Customer("Lukas Becker", "lukas.becker@example.de", "+49 171 5550123"), ""),
        ("bk-demo-4", SONNENSCHEIN, ANNA_WEBER, at(third, 8, 30), 45, "Manuelle Therapie",
         Customer("Petra Schmidt", "petra.schmidt@example.de", ""), ""),
        ("bk-demo-5", KLINIK_NORD, JONAS_HOFFMANN, at(first, 11), 60, "Erstgespräch",
         Customer("Önder Yılmaz", "oender.yilmaz@example.de", ""), ""),
    ]
    for bid, pid, rid, start, minutes, service, customer, notes in demo:
        state.make_booking(pid, rid, start, duration=timedelta(minutes=minutes), service_name=service,
                           customer=customer, notes=notes, booking_id=bid, force=True, emit=False)
    # One cancelled booking, so the pages and the first import show that case too.
    state.cancel_booking("bk-demo-4", emit=False)
