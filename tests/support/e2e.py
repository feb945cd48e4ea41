"""What the end-to-end tests share (fixtures in ``tests/e2e/conftest.py``): names of a test's own,
fresh tenants, Berlin wall times, waiting with a deadline for timum's blocked slots and for our
events in Outlook while the lag is logged (``e2e`` logger), and timum's live conflict check."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from devtools.sandbox.directory import SandboxUser
from devtools.sandbox.graph.model import Event
from devtools.sandbox.timum.state import Slot, TimumState
from devtools.stack import LinkedCalendar, Stack
from shared.adapters.graph_constants import BOOKING_PROPERTY_ID
from shared.connect.links_api import sign_api_request
from shared.domain import LinkKey

LOG = logging.getLogger("e2e")
BERLIN = ZoneInfo("Europe/Berlin")
PROVIDER = "prov-e2e"
#: seeded demo user whose mailbox most tests use (their own calendars in it)
ANNA = "anna.weber@praxis-sonnenschein.example"
#: deadline for one sync to show up; generous for a loaded 2-core machine, never a speed claim
DEADLINE = 45.0


@dataclass(frozen=True)
class Names:
    provider: str
    resource: str
    calendar: str

    @property
    def key(self) -> LinkKey:
        return LinkKey(self.provider, self.resource)


def names_for(test_name: str) -> Names:
    """A resource and a calendar name of the test's own (slug of its name plus a random tag)."""
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:28]
    tag = uuid.uuid4().hex[:6]
    return Names(PROVIDER, f"res-{slug}-{tag}", f"E2E {slug} {tag}")


def fresh_user(stack: Stack, *, name: str = "Praxis") -> SandboxUser:
    """An administrator in a tenant of its own, for tests that revoke tokens or consent."""
    tag = uuid.uuid4().hex[:8]
    tenant = stack.directory.add_tenant(f"{name} {tag}", f"e2e-{tag}.example")
    return stack.directory.add_user(tenant.id, f"Test {tag}", "admin", is_admin=True)


def link_own_calendar(stack: Stack, names: Names, *, name: str = "Praxis") -> tuple[SandboxUser, LinkedCalendar]:
    """A fresh administrator (``fresh_user``) whose new calendar ``names.calendar`` is linked
    app-only to the test's resource."""
    owner = fresh_user(stack, name=name)
    return owner, stack.link_app_only(owner.mail, names.calendar, names.provider, names.resource)


def berlin(days: int, hour: int, minute: int = 0) -> datetime:
    """A wall time in Berlin ``days`` from today, as an aware datetime."""
    day = datetime.now(BERLIN).date() + timedelta(days=days)
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=BERLIN)


def berlin_day(days: int) -> date:
    return datetime.now(BERLIN).date() + timedelta(days=days)


def slots(stack: Stack, names: Names) -> list[Slot]:
    return stack.timum.list_slots(names.provider, names.resource, "outlook")


def wait_slots(stack: Stack, names: Names, predicate: Callable[[list[Slot]], bool], *, what: str,
               started: float | None = None, timeout: float = DEADLINE) -> list[Slot]:
    """Wait until the resource's Outlook slots satisfy ``predicate``; log the lag since ``started``."""
    start = time.monotonic() if started is None else started

    def ready(state: TimumState) -> bool:
        return predicate(state.list_slots(names.provider, names.resource, "outlook"))

    stack.wait_timum(ready, timeout, what=what)
    LOG.info("lag %s: %.2f s", what, time.monotonic() - start)
    return slots(stack, names)


def by_id(found: list[Slot]) -> dict[str, Slot]:
    return {s.external_id: s for s in found}


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


# --- timum → Outlook: our events in the sandbox Outlook --------------------------------------------

def booking_events(stack: Stack, calendar_id: str, booking_id: str) -> list[Event]:
    """Events of the calendar tagged with the booking's id (our extended property)."""
    wanted = BOOKING_PROPERTY_ID.lower()
    return [e for e in stack.graph.calendar_events(calendar_id)
            if e.ext_props.get(wanted, ("", ""))[1] == booking_id]


def times(stack: Stack, event: Event) -> tuple[datetime, datetime]:
    instance = stack.graph.instance(event, None)
    return instance.start_utc, instance.end_utc


def wait_event(stack: Stack, linked: LinkedCalendar, booking_id: str,
               predicate: Callable[[Event], bool] | None = None, *, what: str, began: float) -> Event:
    def ready() -> Event | None:
        found = booking_events(stack, linked.calendar_id, booking_id)
        if len(found) == 1 and (predicate is None or predicate(found[0])):
            return found[0]
        return None

    event = stack.wait_for(ready, what=what)
    LOG.info("lag %s: %.2f s", what, time.monotonic() - began)
    return event


# --- the live conflict check ------------------------------------------------------------------------

def check_conflicts(stack: Stack, names: Names, start: datetime, end: datetime) -> dict[str, Any]:
    """timum's conflict check for ``start``–``end``, signed as timum signs it: the answer (200)."""
    path = f"/api/providers/{names.provider}/resources/{names.resource}/conflicts"
    body = json.dumps({"start": start.isoformat(), "end": end.isoformat()}).encode()
    headers = sign_api_request("POST", path, names.provider, body, list(stack.settings.timum_webhook_secrets),
                               timestamp=int(time.time()))
    headers.update({"Content-Type": "application/json", "x-functions-key": stack.env["FUNCTION_KEY"]})
    with stack.http() as client:
        response = client.post(stack.base_url + path, content=body, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def live_conflicts(stack: Stack, names: Names, start: datetime, end: datetime) -> dict[str, Any]:
    """A conflict check that read Graph live: the first check in a fresh app process may fall back
    while the Graph SDK warms up."""
    return stack.wait_for(lambda: (a := check_conflicts(stack, names, start, end))["checkedLive"] and a or None,
                          what="a live conflict answer")
