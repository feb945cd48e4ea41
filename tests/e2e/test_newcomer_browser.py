"""What a newcomer clicks, in a real headless Chromium against the whole local stack (Azurite, the
sandbox, the function app): README's "Try it" word for word, then every flow the sandbox timum
offers on a linked resource — settings, ICS subscription link (copy, rotate, revoke), resync,
unlink with our Outlook events deleted — the import of a published Outlook calendar, and a calendar
shared with the person who links it.

Set ``NEWCOMER_SCREENSHOTS=<dir>`` to keep a screenshot of each step for a person to look at.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest

from devtools.sandbox.timum.seed import ANNA_WEBER, SONNENSCHEIN
from devtools.stack import Stack
from shared.domain import ProviderSettings, TitlePrivacy
from shared.repos.links import ProviderSettingsRepository
from tests.support.browser import chromium, page_factory

pytestmark = pytest.mark.browser

ANNA_MAIL = "anna.weber@praxis-sonnenschein.example"
BERLIN = ZoneInfo("Europe/Berlin")
#: generous for a loaded 2-core machine; a deadline, never a speed claim
DEADLINE = 60.0


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as running:
        yield running


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    with page_factory(browser, timeout_ms=30_000, permissions=["clipboard-read", "clipboard-write"]) as make:
        yield make()


class Shots:
    """Numbered screenshots of the steps, when asked for (``NEWCOMER_SCREENSHOTS``)."""

    def __init__(self, page: Any, prefix: str) -> None:
        raw = os.environ.get("NEWCOMER_SCREENSHOTS", "")
        self.folder = Path(raw) if raw else None
        self.page, self.prefix, self.count = page, prefix, 0

    def __call__(self, name: str) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count += 1
        self.page.screenshot(path=str(self.folder / f"{self.prefix}-{self.count:02d}-{name}.png"), full_page=True)


def poll(page: Any, check: Any, *, what: str, timeout: float = DEADLINE) -> None:
    """Reload ``page`` until ``check()`` holds — as a person would press F5."""
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"{what} not shown within {timeout:.0f} s")
        page.wait_for_timeout(500)
        page.reload()


def card(page: Any, resource_id: str) -> Any:
    return page.locator(f"#resource-{resource_id}")


def next_working_day(after: int = 1) -> date:
    day = datetime.now(BERLIN).date() + timedelta(days=after)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def sign_in_as_anna(page: Any) -> None:
    page.locator("button.account", has_text="Dr. Anna Weber").click()
    consent = page.locator("button[name=decision][value=accept]")
    page.wait_for_load_state()
    if consent.count():
        consent.click()
    page.wait_for_url(re.compile(r"/api/connect/calendars"))


def test_try_it_as_the_readme_says(stack: Stack, page: Any) -> None:
    shot = Shots(page, "try-it")
    http = stack.sandbox.http_base
    # "open the sandbox timum"
    page.goto(f"{http}/timum/")
    shot("timum")
    page.get_by_role("link", name=re.compile("Physiopraxis Sonnenschein")).click()
    # "press Integrationen → Outlook Integration → Verbinden"
    integrations = page.locator("#integrations")
    assert integrations.get_by_role("heading", name="Integrationen").is_visible()
    assert integrations.get_by_role("heading", name="Outlook Integration").is_visible()
    shot("provider")
    integrations.get_by_role("button", name="Verbinden", exact=True).click()
    # "sign in as Dr. Anna Weber"
    sign_in_as_anna(page)
    shot("chooser")
    # "Outlook-Kalender auswählen" lists Anna's calendars and Jonas's shared one; none is preselected
    assert page.get_by_role("heading", name="Outlook-Kalender auswählen").is_visible()
    calendars = page.locator("fieldset").first.inner_text()
    for name in ("Kalender", "Behandlungsraum 1", "Behandlungsraum 2", "Jonas Becker"):
        assert name in calendars, name
    assert page.locator("input[type=radio]:checked").count() == 0, "nothing is preselected"
    assert "timum-Konto „Physiopraxis Sonnenschein“" in page.content()
    # "Pick Behandlungsraum 1 … choose the existing resource"
    page.get_by_label(re.compile("Behandlungsraum 1")).check()
    assert page.get_by_role("button", name=re.compile("Neue Ressource")).is_visible(), "creating stays offered"
    page.get_by_role("button", name="Mit der vorhandenen Ressource „Behandlungsraum 1“ verbinden").click()
    page.wait_for_url(re.compile(r"/timum/providers/prov-sonnenschein\?"))
    resource = parse_qs(urlsplit(page.url).query)["resourceId"][0]
    seeded = [r.id for r in stack.timum.list_resources(SONNENSCHEIN) if r.name == "Behandlungsraum 1"]
    assert seeded == [resource], "linked to the existing resource, no duplicate made"
    assert "Der Outlook-Kalender wurde verbunden." in page.content()
    linked = card(page, resource)
    assert linked.locator(".link-state").inner_text() == "Verbunden"
    assert "Outlook-Kalender „Behandlungsraum 1“" in linked.inner_text()
    assert "(Anmeldung)" not in page.content()
    shot("linked")
    stack.wait_linked(SONNENSCHEIN, resource, timeout=DEADLINE)

    # "Make a booking in timum — it appears in the sandbox Outlook"
    day = next_working_day()
    form = page.locator("#new-booking")
    form.get_by_label("Ressource").select_option(resource)
    form.get_by_label("Datum").fill(day.isoformat())
    form.get_by_label("Uhrzeit").fill("16:00")
    form.get_by_label("Name").fill("Maria Muster")
    form.get_by_role("button", name="Buchen").click()
    assert "Die Buchung wurde angelegt." in page.content()
    shot("booked")

    page.goto(f"{http}/outlook/")
    page.get_by_role("link", name="Dr. Anna Weber").first.click()
    page.get_by_role("link", name="Behandlungsraum 1", exact=True).click()
    page.goto(page.url.split("?")[0] + f"?week={day.isoformat()}")
    poll(page, lambda: "Krankengymnastik 30 min – Maria Muster" in page.content(),
         what="the booking in the sandbox Outlook")
    shot("outlook-booking")

    # "create an event in the sandbox Outlook — it appears as a blocked slot in timum"
    other = next_working_day(2)
    new = page.locator("section", has=page.get_by_role("heading", name="Neuer Termin"))
    new.get_by_label("Betreff").fill("Fortbildung Anna")
    new.locator("input[name=date]").fill(other.isoformat())
    new.locator("input[name=start]").fill("11:00")
    new.locator("input[name=end]").fill("12:00")
    new.get_by_role("button", name="Speichern").click()
    assert "Termin angelegt." in page.content()
    shot("outlook-event")

    page.goto(f"{http}/timum/providers/{SONNENSCHEIN}")
    poll(page, lambda: card(page, resource).locator(".slot-label").count() > 0,
         what="the Outlook event as a blocked slot")
    slot = card(page, resource).locator("table.slots tr", has_text="11:00–12:00")
    assert slot.locator(".slot-label").inner_text() == "Outlook: belegt"
    assert "Fortbildung Anna" not in page.content(), "the title stays hidden by default"
    shot("blocked")


def test_every_flow_of_a_linked_resource_by_clicking(stack: Stack, page: Any) -> None:
    shot = Shots(page, "flows")
    http = stack.sandbox.http_base
    provider_page = f"{http}/timum/providers/{SONNENSCHEIN}"
    page.on("dialog", lambda dialog: dialog.accept())
    anna = stack.user(ANNA_MAIL)
    room2 = stack.calendar(anna.id, "Behandlungsraum 2")

    # Link the resource "Dr. Anna Weber" from its own button.
    page.goto(provider_page)
    card(page, ANNA_WEBER).get_by_role("button", name="Kalender verbinden (BETA)").click()
    sign_in_as_anna(page)
    page.get_by_label(re.compile("Behandlungsraum 2")).check()
    page.get_by_role("button", name="Mit „Dr. Anna Weber“ verbinden").click()
    page.wait_for_url(re.compile(r"outlook=connected"))
    stack.wait_linked(SONNENSCHEIN, ANNA_WEBER, timeout=DEADLINE)
    page.reload()
    details = card(page, ANNA_WEBER).locator(".link-details")
    text = details.inner_text()
    assert "Outlook-Kalender „Behandlungsraum 2“, gehört" in text
    assert "Verbunden mit der Microsoft-Anmeldung." in text
    assert "Änderungen in Outlook kommen innerhalb von Sekunden an." in text
    assert "Zuletzt abgeglichen:" in text
    shot("linked")

    # Settings: show the subject of Outlook events; the service stores the choice.
    page.get_by_role("link", name="Einstellungen der Outlook Integration").click()
    page.get_by_label("Den Betreff des Termins (private Termine bleiben „belegt“)").check()
    page.get_by_label("Den Outlook-Termin behalten, als „Abgesagt“ kennzeichnen und als frei zeigen").check()
    shot("settings")
    page.get_by_role("button", name="Speichern").click()
    assert "Die Einstellungen wurden gespeichert." in page.content()
    assert page.get_by_label("Den Betreff des Termins (private Termine bleiben „belegt“)").is_checked()
    stored = stack.run(ProviderSettingsRepository(stack.storage).get(SONNENSCHEIN))
    assert stored.title_privacy is TitlePrivacy.SUBJECT and stored.cancel_policy.value == "mark"
    assert page.locator("nav a[aria-current=page]").inner_text() == "Einstellungen"
    page.get_by_role("link", name="Zurück zum Kalenderprofil").click()

    # With the subject shown, a new Outlook event appears under its own title.
    day = next_working_day(3)
    stack.graph.create_event(anna.id, "Teamrunde", datetime.combine(day, datetime.min.time(), BERLIN)
                             .replace(hour=15), datetime.combine(day, datetime.min.time(), BERLIN).replace(hour=16),
                             calendar_id=room2.id)
    poll(page, lambda: "Outlook: Teamrunde" in card(page, ANNA_WEBER).inner_text(),
         what="the blocked slot with its subject")

    # ICS subscription link: create, copy, use, rotate, revoke.
    feed = card(page, ANNA_WEBER).locator("details.ics-feed")
    feed.locator("summary").click()
    feed.get_by_role("button", name="Abo-Link erzeugen").click()
    assert "Der Abo-Link wurde erzeugt." in page.content()
    feed = card(page, ANNA_WEBER).locator("details.ics-feed")
    first_url = feed.get_by_label("Abo-Link").input_value()
    assert first_url.startswith(stack.base_url + "/api/ics/")
    feed.get_by_role("button", name="Kopieren").click()
    feed.get_by_role("button", name="Kopiert").wait_for(state="visible", timeout=5000)  # after the clipboard promise
    assert page.evaluate("navigator.clipboard.readText()") == first_url
    shot("feed")
    with httpx.Client(timeout=15) as client:
        served = client.get(first_url)
        assert served.status_code == 200 and served.text.startswith("BEGIN:VCALENDAR")
        feed.get_by_role("button", name=re.compile("Neuen Link erzeugen")).click()
        feed = card(page, ANNA_WEBER).locator("details.ics-feed")
        second_url = feed.get_by_label("Abo-Link").input_value()
        assert second_url != first_url
        assert client.get(first_url).status_code == 404, "the old link stops working"
        assert client.get(second_url).status_code == 200
        feed.get_by_role("button", name="Link widerrufen").click()
        assert "Der Abo-Link wurde widerrufen; er funktioniert nicht mehr." in page.content()
        assert client.get(second_url).status_code == 404
    assert card(page, ANNA_WEBER).locator("input.feed-url").count() == 0

    # Resync.
    card(page, ANNA_WEBER).get_by_role("button", name="Jetzt abgleichen").click()
    assert "Ein vollständiger Abgleich wurde angestoßen." in page.content()

    # A booking, so there is an event of ours in Outlook; then unlink and delete our events.
    form = page.locator("#new-booking")
    form.get_by_label("Ressource").select_option(ANNA_WEBER)
    form.get_by_label("Datum").fill(day.isoformat())
    form.get_by_label("Uhrzeit").fill("17:00")
    form.get_by_label("Name").fill("Karl Kurz")
    form.get_by_role("button", name="Buchen").click()
    stack.wait_for(lambda: any("Karl Kurz" in e.subject for e in stack.graph.calendar_events(room2.id)),
                   DEADLINE, what="the booking in Outlook")
    linked = card(page, ANNA_WEBER)
    linked.get_by_label("Von timum angelegte Termine auch aus Outlook löschen").check()
    shot("unlink")
    linked.get_by_role("button", name="Verbindung trennen").click()
    assert "Die Verbindung wurde getrennt; von timum angelegte Outlook-Termine werden gelöscht." in page.content()
    assert card(page, ANNA_WEBER).locator(".link-state").inner_text() == "Nicht verbunden"
    assert stack.link(SONNENSCHEIN, ANNA_WEBER) is None
    stack.wait_for(lambda: not any("Karl Kurz" in e.subject for e in stack.graph.calendar_events(room2.id)),
                   DEADLINE, what="our Outlook event deleted")
    assert any(e.subject == "Teamrunde" for e in stack.graph.calendar_events(room2.id)), "only ours go"

    # ICS import: publish Anna's calendar in the sandbox Outlook and add it to the resource.
    page.goto(f"{http}/outlook/{anna.id}/settings")
    publish = page.locator("section", has=page.get_by_role("heading", name="Kalender veröffentlichen"))
    publish.locator("select[name=calendar]").select_option(label="Behandlungsraum 2")
    publish.get_by_role("button", name="Veröffentlichen").click()
    ics_url = page.locator("table.data tr", has_text="Behandlungsraum 2").locator("code").inner_text()
    page.goto(provider_page)
    importer = card(page, ANNA_WEBER).locator("details.ics-import")
    importer.locator("summary").click()
    importer.get_by_label("ICS-Link des veröffentlichten Kalenders").fill(ics_url)
    shot("import")
    importer.get_by_role("button", name="Kalender einbinden").click()
    assert "Der Kalender wird eingebunden; der erste Abgleich läuft." in page.content()
    stack.wait_for(lambda: (lk := stack.link(SONNENSCHEIN, ANNA_WEBER)) is not None and lk.last_sync_at,
                   DEADLINE, what="the first import")
    page.reload()
    text = card(page, ANNA_WEBER).locator(".link-details").inner_text()
    assert "Outlook-Kalender „Behandlungsraum 2“" in text, "the calendar's own name, not the host"
    assert "über einen veröffentlichten Kalender-Link" in text
    poll(page, lambda: "Outlook: Teamrunde" in card(page, ANNA_WEBER).inner_text()
         or "ICS-Kalender: Teamrunde" in card(page, ANNA_WEBER).inner_text(),
         what="the imported event as a blocked slot")
    shot("imported")

    # A calendar Jonas shares with Anna, linked to a new resource: whose it is and who linked it.
    new_resource = page.locator("#new-resource")
    new_resource.get_by_label("Name").fill("Empfang")
    new_resource.get_by_role("button", name="Anlegen").click()
    [reception] = [r.id for r in stack.timum.list_resources(SONNENSCHEIN) if r.name == "Empfang"]
    card(page, reception).get_by_role("button", name="Kalender verbinden (BETA)").click()
    sign_in_as_anna(page)
    page.locator("label", has_text="Jonas Becker").click()
    page.get_by_role("button", name="Mit „Empfang“ verbinden").click()
    page.wait_for_url(re.compile(r"outlook=connected"))
    shared = card(page, reception).locator(".link-details").inner_text()
    assert ("gehört jonas.becker@praxis-sonnenschein.example, verbunden von Dr. Anna Weber "
            "(anna.weber@praxis-sonnenschein.example).") in shared
    shot("shared")
    card(page, reception).get_by_role("button", name="Verbindung trennen").click()
    assert stack.link(SONNENSCHEIN, reception) is None
    stack.timum.delete_resource(SONNENSCHEIN, reception)
    page.goto(provider_page)

    # Clean up for other tests: unlink the import (it wrote nothing to Outlook, so nothing to
    # delete there), settings back to the defaults.
    assert card(page, ANNA_WEBER).get_by_label("Von timum angelegte Termine auch aus Outlook löschen").count() == 0
    card(page, ANNA_WEBER).get_by_role("button", name="Verbindung trennen").click()
    assert stack.link(SONNENSCHEIN, ANNA_WEBER) is None
    stack.run(ProviderSettingsRepository(stack.storage).save(ProviderSettings(provider_id=SONNENSCHEIN)))
