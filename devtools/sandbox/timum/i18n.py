"""Texts of the sandbox timum's pages, German first, and date formatting per language."""

from __future__ import annotations

from datetime import datetime, timedelta

LANGS = ("de", "en")

TEXTS: dict[str, dict[str, str]] = {
    "de": {
        "brand": "timum (Sandbox)",
        "providers": "Kalenderprofile",
        "providers_intro": "Wählen Sie ein Kalenderprofil. Alles hier ist ein Nachbau von timum für Tests.",
        "other_lang": "English",
        "integrations": "Integrationen",
        "outlook_integration": "Outlook Integration",
        "outlook_intro": "Verbinden Sie Outlook-Kalender mit Ihren Ressourcen: Buchungen erscheinen in Outlook, "
                         "belegte Outlook-Termine blockieren Zeiten in timum.",
        "connect": "Verbinden",
        "connect_org": "Für die ganze Organisation verbinden",
        "outlook_organisation": "Die Zuordnung Ihrer Organisation wurde gespeichert.",
        "connect_calendar": "Kalender verbinden (BETA)",
        "resources": "Ressourcen",
        "time_zone": "Zeitzone",
        "not_linked": "Kein Kalender verbunden",
        "status_ok": "Verbunden",
        "status_needs_reconnect": "Verbindung erneuern",
        "status_error": "Fehler",
        "mode_delegated": "Anmeldung",
        "mode_app_only": "Administrator-Freigabe",
        "mode_ics": "ICS-Link",
        "banner_reconnect": "Die Verbindung von „{resource}“ mit dem Outlook-Kalender „{calendar}“ muss erneuert "
                            "werden.",
        "banner_error": "Beim Abgleich von „{resource}“ mit Outlook ist ein Fehler aufgetreten.",
        "bookings": "Buchungen",
        "no_bookings": "Keine Buchungen.",
        "blocked_slots": "Blockierte Zeiten",
        "no_slots": "Keine blockierten Zeiten.",
        "when": "Zeit",
        "service": "Leistung",
        "customer": "Kunde",
        "status": "Status",
        "version": "Version",
        "actions": "Aktionen",
        "source": "Quelle",
        "title": "Titel",
        "all_day": "ganztägig",
        "confirmed": "Bestätigt",
        "cancelled": "Abgesagt",
        "reschedule": "Verschieben",
        "cancel": "Absagen",
        "new_booking": "Neue Buchung",
        "resource": "Ressource",
        "date": "Datum",
        "time": "Uhrzeit",
        "duration": "Dauer (Minuten)",
        "customer_name": "Name",
        "customer_email": "E-Mail",
        "customer_phone": "Telefon",
        "notes": "Anmerkung",
        "book": "Buchen",
        "new_resource": "Neue Ressource",
        "name": "Name",
        "create": "Anlegen",
        "link_statuses": "Statusmeldungen des Sync-Dienstes",
        "no_statuses": "Noch keine Statusmeldungen.",
        "received": "Empfangen",
        "reason": "Grund",
        "calendar": "Kalender",
        "back": "Zurück zum Kalenderprofil",
        "booking": "Buchung",
        "done_booking_created": "Die Buchung wurde angelegt.",
        "done_booking_rescheduled": "Die Buchung wurde verschoben.",
        "done_booking_cancelled": "Die Buchung wurde abgesagt.",
        "done_resource_created": "Die Ressource wurde angelegt.",
        "outlook_connected": "Der Outlook-Kalender wurde verbunden.",
        "outlook_cancelled": "Die Verbindung mit Outlook wurde abgebrochen.",
        "outlook_failed": "Die Verbindung mit Outlook ist fehlgeschlagen.",
        "err_slot_conflict": "Diese Zeit ist durch den verbundenen Kalender blockiert.",
        "err_booking_conflict": "Diese Zeit überschneidet sich mit einer anderen Buchung.",
        "err_end_before_start": "Das Ende muss nach dem Beginn liegen.",
        "err_bad_time": "Bitte Datum und Uhrzeit vollständig angeben.",
        "err_booking_cancelled": "Die Buchung ist bereits abgesagt.",
        "err_name_required": "Bitte einen Namen angeben.",
        "err_name_too_long": "Der Name ist zu lang.",
        "err_resource_archived": "Die Ressource ist archiviert.",
        "err_unknown_resource": "Diese Ressource gibt es nicht.",
        "err_unknown_booking": "Diese Buchung gibt es nicht.",
        "err_generic": "Das hat nicht geklappt: {detail}",
        "not_found": "Nicht gefunden.",
    },
    "en": {
        "brand": "timum (sandbox)",
        "providers": "Calendar profiles",
        "providers_intro": "Choose a calendar profile. Everything here imitates timum for testing.",
        "other_lang": "Deutsch",
        "integrations": "Integrations",
        "outlook_integration": "Outlook integration",
        "outlook_intro": "Connect Outlook calendars to your resources: bookings appear in Outlook, busy Outlook "
                         "events block times in timum.",
        "connect": "Connect",
        "connect_org": "Connect the whole organisation",
        "outlook_organisation": "Your organisation's mapping was saved.",
        "connect_calendar": "Connect calendar (BETA)",
        "resources": "Resources",
        "time_zone": "Time zone",
        "not_linked": "No calendar connected",
        "status_ok": "Connected",
        "status_needs_reconnect": "Reconnect needed",
        "status_error": "Error",
        "mode_delegated": "sign-in",
        "mode_app_only": "administrator consent",
        "mode_ics": "ICS link",
        "banner_reconnect": "The connection of “{resource}” with the Outlook calendar “{calendar}” must be renewed.",
        "banner_error": "Syncing “{resource}” with Outlook failed.",
        "bookings": "Bookings",
        "no_bookings": "No bookings.",
        "blocked_slots": "Blocked times",
        "no_slots": "No blocked times.",
        "when": "Time",
        "service": "Service",
        "customer": "Customer",
        "status": "Status",
        "version": "Version",
        "actions": "Actions",
        "source": "Source",
        "title": "Title",
        "all_day": "all day",
        "confirmed": "Confirmed",
        "cancelled": "Cancelled",
        "reschedule": "Reschedule",
        "cancel": "Cancel",
        "new_booking": "New booking",
        "resource": "Resource",
        "date": "Date",
        "time": "Time",
        "duration": "Duration (minutes)",
        "customer_name": "Name",
        "customer_email": "E-mail",
        "customer_phone": "Phone",
        "notes": "Note",
        "book": "Book",
        "new_resource": "New resource",
        "name": "Name",
        "create": "Create",
        "link_statuses": "Status reports from the sync service",
        "no_statuses": "No status reports yet.",
        "received": "Received",
        "reason": "Reason",
        "calendar": "Calendar",
        "back": "Back to the calendar profile",
        "booking": "Booking",
        "done_booking_created": "The booking was created.",
        "done_booking_rescheduled": "The booking was moved.",
        "done_booking_cancelled": "The booking was cancelled.",
        "done_resource_created": "The resource was created.",
        "outlook_connected": "The Outlook calendar is connected.",
        "outlook_cancelled": "Connecting Outlook was cancelled.",
        "outlook_failed": "Connecting Outlook failed.",
        "err_slot_conflict": "This time is blocked by the connected calendar.",
        "err_booking_conflict": "This time overlaps another booking.",
        "err_end_before_start": "The end must be after the start.",
        "err_bad_time": "Please give a complete date and time.",
        "err_booking_cancelled": "The booking is already cancelled.",
        "err_name_required": "Please give a name.",
        "err_name_too_long": "The name is too long.",
        "err_resource_archived": "The resource is archived.",
        "err_unknown_resource": "This resource does not exist.",
        "err_unknown_booking": "This booking does not exist.",
        "err_generic": "That did not work: {detail}",
        "not_found": "Not found.",
    },
}

_WEEKDAYS = {"de": ("Mo", "Di", "Mi", "Do", "Fr", "Sa", "So"), "en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")}
_MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def pick_lang(raw: str | None) -> str:
    return raw if raw in LANGS else "de"


def format_date(value: datetime, lang: str) -> str:
    day = _WEEKDAYS[lang][value.weekday()]
    if lang == "de":
        return f"{day}, {value:%d.%m.%Y}"
    return f"{day}, {value.day} {_MONTHS_EN[value.month - 1]} {value.year}"


def format_span(start: datetime, end: datetime, lang: str, *, all_day: bool = False) -> str:
    """``Di, 24.11.2026, 09:00–09:30``; spans over midnight name both days; all-day spans name days only."""
    label = TEXTS[lang]["all_day"]
    if all_day:
        last = end - timedelta(days=1) if end.time() == start.time() else end
        if last.date() <= start.date():
            return f"{format_date(start, lang)} ({label})"
        return f"{format_date(start, lang)} – {format_date(last, lang)} ({label})"
    if start.date() == end.date():
        return f"{format_date(start, lang)}, {start:%H:%M}–{end:%H:%M}"
    return f"{format_date(start, lang)}, {start:%H:%M} – {format_date(end, lang)}, {end:%H:%M}"
