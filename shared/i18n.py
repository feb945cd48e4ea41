"""Texts of every user-facing page and message, German first, English second.

A plain dict catalogue rather than gettext: two languages, a few hundred strings, and a
test can check that both languages have exactly the same keys and placeholders. Pages
ask for ``translator(locale)`` and call it with a key; a missing key is a programming
error and raises, so a typo never ships as an empty label.

Placeholders use ``str.format`` names. Values passed in are plain text; templates
autoescape them, so a calendar called ``<script>`` stays text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

LOCALES = ("de", "en")
DEFAULT_LOCALE = "de"

Translator = Callable[..., str]

MESSAGES: dict[str, dict[str, str]] = {
    "de": {
        # layout
        "brand": "timum Outlook-Verbindung",
        "skip_to_content": "Zum Inhalt springen",
        "footer": "Ihre Microsoft-Anmeldung wird verschlüsselt gespeichert und nur für den Kalenderabgleich "
                  "mit timum verwendet.",
        "back_to_timum": "Zurück zu timum",
        "start_again": "Bitte starten Sie die Verbindung in timum erneut über „Verbinden“.",
        # error pages
        "error.title": "Das hat nicht geklappt",
        "error.link_malformed": "Der Verbindungslink ist unvollständig oder beschädigt.",
        "error.link_tampered": "Der Verbindungslink ist ungültig. Er wurde verändert oder stammt nicht von timum.",
        "error.link_expired": "Der Verbindungslink ist abgelaufen. Links gelten nur wenige Minuten.",
        "error.link_reused": "Dieser Verbindungslink wurde bereits verwendet. Jeder Link funktioniert nur einmal.",
        "error.link_return_url": "Der Verbindungslink führt zu einer Adresse, die nicht erlaubt ist.",
        "error.flow_unknown": "Die Anmeldung ist abgelaufen oder wurde bereits abgeschlossen.",
        "error.state_mismatch": "Die Antwort von Microsoft passt nicht zu dieser Anmeldung. Aus Sicherheitsgründen "
                                "wurde sie verworfen.",
        "error.sign_in_failed": "Die Anmeldung bei Microsoft ist fehlgeschlagen.",
        "error.session_expired": "Ihre Sitzung ist abgelaufen. Aus Sicherheitsgründen gilt sie nur kurze Zeit.",
        "error.csrf": "Das Formular ist abgelaufen oder stammt nicht von dieser Seite. Bitte laden Sie die Seite "
                      "neu und versuchen Sie es noch einmal.",
        "error.busy": "Diese Auswahl wird gerade schon gespeichert. Bitte warten Sie einen Moment.",
        "error.unavailable": "Ein Dienst ist gerade nicht erreichbar. Bitte versuchen Sie es in einigen Minuten "
                             "noch einmal.",
        "error.needs_reconnect": "Die Microsoft-Anmeldung ist nicht mehr gültig.",
        "error.not_found": "Diese Seite gibt es nicht.",
        "error.internal": "Ein unerwarteter Fehler ist aufgetreten. Bitte versuchen Sie es später noch einmal.",
        "error.reference": "Fehlercode: {code}",
        # admin consent needed
        "consent.title": "Ihr Microsoft-365-Administrator muss zustimmen",
        "consent.lead": "Ihre Organisation erlaubt nicht, dass Mitarbeitende Apps selbst Zugriff auf ihren "
                        "Kalender geben. Deshalb muss einmalig Ihr Microsoft-365-Administrator zustimmen, dass "
                        "„timum Outlook Sync“ Kalender lesen und Termine eintragen darf.",
        "consent.steps": "So geht es weiter",
        "consent.step_forward": "Senden Sie den folgenden Link an Ihren Administrator.",
        "consent.step_admin": "Ihr Administrator öffnet ihn, meldet sich an und bestätigt den Zugriff für die "
                              "ganze Organisation.",
        "consent.step_retry": "Danach verbinden Sie Ihren Kalender in timum einfach noch einmal.",
        "consent.link_label": "Link für Ihren Administrator",
        "consent.copy": "Link kopieren",
        "consent.copied": "Kopiert",
        "consent.copy_hint": "Klicken Sie in das Feld, markieren Sie den Link und kopieren Sie ihn.",
        "consent.mail": "Per E-Mail weiterleiten",
        "consent.mail_subject": "Bitte Zugriff für timum Outlook Sync freigeben",
        "consent.mail_body": "Hallo,\n\nbitte erlauben Sie der App „timum Outlook Sync“ den Zugriff auf unsere "
                             "Outlook-Kalender, damit Buchungen aus timum im Kalender erscheinen und belegte Zeiten "
                             "in timum blockiert werden. Dafür diesen Link öffnen und als Administrator "
                             "zustimmen:\n\n{url}\n\nVielen Dank!",
        "consent.i_am_admin": "Ich bin Administrator: jetzt zustimmen",
        "consent.why": "Warum? Die App bittet nur um Zugriff auf Kalender und Ihr Profil. Ohne Zustimmung Ihres "
                       "Administrators kann Microsoft die Verbindung nicht herstellen.",
        "consent.declined": "Die Zustimmung wurde abgelehnt.",
        # admin consent result
        "consent_done.title": "Zugriff freigegeben",
        "consent_done.lead": "Vielen Dank! Die App „timum Outlook Sync“ darf jetzt in Ihrer Organisation auf "
                             "Kalender zugreifen.",
        "consent_done.next": "Mitarbeitende können ihren Outlook-Kalender jetzt in timum verbinden. Auch für "
                             "andere freigegebene Kalender (z. B. Raumkalender) ist der Abgleich nun möglich.",
        "consent_failed.title": "Zustimmung nicht erteilt",
        "consent_failed.lead": "Microsoft hat die Zustimmung nicht bestätigt.",
        "consent_failed.access_denied": "Die Zustimmung wurde abgebrochen oder abgelehnt.",
        "consent_failed.not_admin": "Nur ein Administrator der Organisation kann diese Zustimmung erteilen.",
        "consent_failed.unverified": "Wir konnten die Zustimmung bei Microsoft nicht bestätigen. Bitte versuchen "
                                     "Sie es in einigen Minuten noch einmal.",
        "consent_failed.retry": "Sie können den Link jederzeit erneut öffnen.",
        # chooser
        "chooser.title": "Outlook-Kalender auswählen",
        "chooser.lead_resource": "Wählen Sie den Outlook-Kalender für „{resource}“. Buchungen aus timum erscheinen "
                                 "dort, und belegte Zeiten aus Outlook werden in timum blockiert.",
        "chooser.lead_new": "Wählen Sie einen Outlook-Kalender. Buchungen aus timum erscheinen dort, und belegte "
                            "Zeiten aus Outlook werden in timum blockiert.",
        "chooser.signed_in_as": "Angemeldet bei Microsoft als {name}",
        "chooser.calendar_legend": "Kalender",
        "chooser.own": "Meine Kalender",
        "chooser.shared": "Für Sie freigegebene Kalender",
        "chooser.none_shared": "Keine freigegebenen Kalender gefunden.",
        "chooser.none": "In diesem Microsoft-Konto wurden keine Kalender gefunden.",
        "chooser.owner": "von {owner}",
        "chooser.default": "Standardkalender",
        "chooser.read_only": "Nur Lesezugriff – kann nicht verbunden werden, weil timum Termine eintragen muss.",
        "chooser.linked_elsewhere": "Bereits mit einer anderen timum-Ressource verbunden.",
        "chooser.linked_here": "Aktuell mit dieser Ressource verbunden.",
        "chooser.linked_here_resource": "Aktuell mit „{resource}“ verbunden.",
        "chooser.action_legend": "Was soll passieren?",
        "chooser.action_link": "Mit „{resource}“ verbinden",
        "chooser.action_link_hint": "Der Kalender wird mit dieser Ressource abgeglichen. Eine bisherige "
                                    "Verbindung der Ressource wird sauber getrennt.",
        "chooser.action_create": "Neue Ressource aus dem Kalender anlegen",
        "chooser.action_create_hint": "timum legt eine neue buchbare Ressource mit dem Namen des Kalenders an und "
                                      "verbindet sie.",
        "chooser.cancel": "Abbrechen und zurück zu timum",
        "chooser.missing_title": "Ein Kalender fehlt?",
        "chooser.missing": "Kalender anderer Personen (z. B. eines Raums oder einer Kollegin) erscheinen hier nur, "
                           "wenn sie für Ihr Konto freigegeben sind und Sie die Freigabe in Outlook angenommen "
                           "haben. Erst dann kann timum über Microsoft darauf zugreifen.",
        "chooser.choose_first": "Bitte wählen Sie zuerst einen Kalender.",
        "chooser.calendar_gone": "Dieser Kalender ist nicht mehr verfügbar. Bitte wählen Sie einen anderen.",
        "chooser.calendar_taken": "Dieser Kalender ist bereits mit einer anderen timum-Ressource verbunden. Jeder "
                                  "Kalender kann nur mit einer Ressource verbunden werden.",
        "chooser.calendar_read_only": "Dieser Kalender ist schreibgeschützt und kann nicht verbunden werden.",
        "chooser.no_resource": "Der Link aus timum nennt keine Ressource. Bitte legen Sie eine neue an.",
        "chooser.resource_gone": "Die Ressource gibt es in timum nicht mehr.",
        "chooser.invalid_action": "Bitte wählen Sie eine der angebotenen Aktionen.",
        "chooser.problem": "Bitte prüfen Sie Ihre Auswahl",
        "chooser.app_only_note": "Freigegebener Kalender: Dank der Zustimmung Ihres Administrators werden "
                                 "Änderungen sofort abgeglichen.",
        # link status reasons (sent to timum, shown to the provider)
        "status.ok": "",
        "status.needs_reconnect": "Die Anmeldung bei Microsoft ist abgelaufen oder wurde widerrufen. Bitte "
                                  "verbinden Sie den Kalender erneut.",
        "status.consent_required": "Microsoft verlangt eine neue Zustimmung. Bitte verbinden Sie den Kalender "
                                   "erneut.",
        "status.remote_gone": "Der Outlook-Kalender ist nicht mehr erreichbar (gelöscht oder Freigabe entzogen).",
        "status.throttled": "Microsoft bremst die Anfragen gerade. Der Abgleich wird automatisch fortgesetzt.",
        "status.transient": "Microsoft oder timum war vorübergehend nicht erreichbar. Der Abgleich wird "
                            "automatisch fortgesetzt.",
        "status.gave_up": "Der Abgleich ist mehrfach fehlgeschlagen. Ein neuer Versuch läuft automatisch.",
        "status.error": "Der Abgleich ist fehlgeschlagen ({code}). Wir versuchen es weiter.",
        "status.graph_unauthorized": "Microsoft lehnt die Anmeldung auch nach einer Erneuerung ab. Bitte "
                                     "verbinden Sie den Kalender erneut.",
        "status.graph_forbidden": "Microsoft verweigert den Zugriff auf diesen Kalender (Freigabe oder "
                                  "Berechtigung entzogen). Bitte prüfen Sie die Freigabe und verbinden Sie den "
                                  "Kalender erneut.",
        "chooser.polling_freshness": "Freigegebener Kalender: Der erste Abgleich startet sofort; danach werden "
                                     "Änderungen in Outlook etwa alle {minutes} Minuten übernommen.",
        # booking safety: block-only calendars and the all-day hint in the chooser
        "chooser.action_block": "Nur Zeiten blockieren für „{resource}“",
        "chooser.action_block_hint": "Termine in diesem Kalender (z. B. privat oder aus einem Zweitjob) sperren die "
                                     "Zeiten der Ressource, timum trägt dort aber nichts ein. Auch schreibgeschützte "
                                     "Kalender sind möglich.",
        "chooser.read_only_block": "Nur Lesezugriff – kann nur Zeiten blockieren.",
        "chooser.blocks_here": "Blockiert bereits Zeiten dieser Ressource.",
        "chooser.block_needs_resource": "Zeiten blockieren geht nur für eine Ressource aus timum.",
        "chooser.all_day_hint": "Hinweis: Ganztägige Termine gelten in Outlook standardmäßig als „frei“ und "
                                "sperren dann keine Zeit. Ob sie trotzdem blockieren, stellen Sie in den "
                                "timum-Einstellungen ein.",
    },
    "en": {
        "brand": "timum Outlook connection",
        "skip_to_content": "Skip to content",
        "footer": "Your Microsoft sign-in is stored encrypted and used only to sync your calendar with timum.",
        "back_to_timum": "Back to timum",
        "start_again": "Please start the connection again in timum with “Connect”.",
        "error.title": "That did not work",
        "error.link_malformed": "The connection link is incomplete or damaged.",
        "error.link_tampered": "The connection link is not valid. It was changed or did not come from timum.",
        "error.link_expired": "The connection link has expired. Links are valid for a few minutes only.",
        "error.link_reused": "This connection link has already been used. Each link works only once.",
        "error.link_return_url": "The connection link points to an address that is not allowed.",
        "error.flow_unknown": "The sign-in has expired or was already completed.",
        "error.state_mismatch": "Microsoft's answer does not belong to this sign-in. For your safety it was "
                                "discarded.",
        "error.sign_in_failed": "Signing in with Microsoft failed.",
        "error.session_expired": "Your session has expired. For your safety it is valid for a short time only.",
        "error.csrf": "The form has expired or did not come from this page. Please reload the page and try again.",
        "error.busy": "This choice is being saved already. Please wait a moment.",
        "error.unavailable": "A service is unavailable right now. Please try again in a few minutes.",
        "error.needs_reconnect": "The Microsoft sign-in is no longer valid.",
        "error.not_found": "This page does not exist.",
        "error.internal": "An unexpected error occurred. Please try again later.",
        "error.reference": "Error code: {code}",
        "consent.title": "Your Microsoft 365 administrator needs to approve",
        "consent.lead": "Your organisation does not let staff give apps access to their calendar themselves. "
                        "Your Microsoft 365 administrator needs to allow “timum Outlook Sync” once to read "
                        "calendars and add appointments.",
        "consent.steps": "What happens next",
        "consent.step_forward": "Send the following link to your administrator.",
        "consent.step_admin": "Your administrator opens it, signs in and approves access for the whole "
                              "organisation.",
        "consent.step_retry": "Then simply connect your calendar in timum again.",
        "consent.link_label": "Link for your administrator",
        "consent.copy": "Copy link",
        "consent.copied": "Copied",
        "consent.copy_hint": "Click into the field, select the link and copy it.",
        "consent.mail": "Forward by e-mail",
        "consent.mail_subject": "Please approve access for timum Outlook Sync",
        "consent.mail_body": "Hello,\n\nplease allow the app “timum Outlook Sync” to access our Outlook calendars, "
                             "so that bookings from timum appear in the calendar and busy times are blocked in "
                             "timum. Open this link and approve as an administrator:\n\n{url}\n\nThank you!",
        "consent.i_am_admin": "I am an administrator: approve now",
        "consent.why": "Why? The app asks only for access to calendars and your profile. Without your "
                       "administrator's approval Microsoft cannot set up the connection.",
        "consent.declined": "The approval was declined.",
        "consent_done.title": "Access approved",
        "consent_done.lead": "Thank you! The app “timum Outlook Sync” may now access calendars in your "
                             "organisation.",
        "consent_done.next": "Staff can now connect their Outlook calendar in timum. Syncing shared calendars "
                             "(for example room calendars) is possible now as well.",
        "consent_failed.title": "Approval not granted",
        "consent_failed.lead": "Microsoft did not confirm the approval.",
        "consent_failed.access_denied": "The approval was cancelled or declined.",
        "consent_failed.not_admin": "Only an administrator of the organisation can give this approval.",
        "consent_failed.unverified": "We could not confirm the approval with Microsoft. Please try again in a few "
                                     "minutes.",
        "consent_failed.retry": "You can open the link again at any time.",
        "chooser.title": "Choose an Outlook calendar",
        "chooser.lead_resource": "Choose the Outlook calendar for “{resource}”. Bookings from timum appear there, "
                                 "and busy times from Outlook are blocked in timum.",
        "chooser.lead_new": "Choose an Outlook calendar. Bookings from timum appear there, and busy times from "
                            "Outlook are blocked in timum.",
        "chooser.signed_in_as": "Signed in with Microsoft as {name}",
        "chooser.calendar_legend": "Calendar",
        "chooser.own": "My calendars",
        "chooser.shared": "Calendars shared with you",
        "chooser.none_shared": "No shared calendars found.",
        "chooser.none": "No calendars were found in this Microsoft account.",
        "chooser.owner": "by {owner}",
        "chooser.default": "Default calendar",
        "chooser.read_only": "Read-only – cannot be connected, because timum needs to add appointments.",
        "chooser.linked_elsewhere": "Already connected to another timum resource.",
        "chooser.linked_here": "Currently connected to this resource.",
        "chooser.linked_here_resource": "Currently connected to “{resource}”.",
        "chooser.action_legend": "What should happen?",
        "chooser.action_link": "Connect to “{resource}”",
        "chooser.action_link_hint": "The calendar is synced with this resource. An earlier connection of the "
                                    "resource is ended cleanly.",
        "chooser.action_create": "Create a new resource from the calendar",
        "chooser.action_create_hint": "timum creates a new bookable resource named after the calendar and connects "
                                      "it.",
        "chooser.cancel": "Cancel and return to timum",
        "chooser.missing_title": "A calendar is missing?",
        "chooser.missing": "Other people's calendars (for example a room's or a colleague's) appear here only when "
                           "they are shared with your account and you have accepted the invitation in Outlook. "
                           "Only then can timum reach them through Microsoft.",
        "chooser.choose_first": "Please choose a calendar first.",
        "chooser.calendar_gone": "This calendar is no longer available. Please choose another one.",
        "chooser.calendar_taken": "This calendar is already connected to another timum resource. Each calendar can "
                                  "be connected to one resource only.",
        "chooser.calendar_read_only": "This calendar is read-only and cannot be connected.",
        "chooser.no_resource": "The link from timum names no resource. Please create a new one.",
        "chooser.resource_gone": "The resource no longer exists in timum.",
        "chooser.invalid_action": "Please choose one of the offered actions.",
        "chooser.problem": "Please check your choice",
        "chooser.app_only_note": "Shared calendar: thanks to your administrator's approval changes sync "
                                 "immediately.",
        "status.ok": "",
        "status.needs_reconnect": "The Microsoft sign-in has expired or was revoked. Please connect the calendar "
                                  "again.",
        "status.consent_required": "Microsoft asks for consent again. Please connect the calendar again.",
        "status.remote_gone": "The Outlook calendar can no longer be reached (deleted or no longer shared).",
        "status.throttled": "Microsoft is slowing requests down right now. Syncing continues automatically.",
        "status.transient": "Microsoft or timum was unavailable for a moment. Syncing continues automatically.",
        "status.gave_up": "Syncing failed several times. Another attempt runs automatically.",
        "status.error": "Syncing failed ({code}). We keep trying.",
        "status.graph_unauthorized": "Microsoft refuses the sign-in even after renewing it. Please connect the "
                                    "calendar again.",
        "status.graph_forbidden": "Microsoft denies access to this calendar (sharing or permission withdrawn). "
                                  "Please check the sharing and connect the calendar again.",
        "chooser.polling_freshness": "Shared calendar: the first sync starts at once; after that, changes in "
                                     "Outlook arrive about every {minutes} minutes.",
        "chooser.action_block": "Only block times of “{resource}”",
        "chooser.action_block_hint": "Events in this calendar (e.g. private ones or from a second job) block the "
                                     "resource's times, but timum adds nothing there. Read-only calendars work too.",
        "chooser.read_only_block": "Read-only – can only block times.",
        "chooser.blocks_here": "Already blocks times of this resource.",
        "chooser.block_needs_resource": "Blocking times needs a resource from timum.",
        "chooser.all_day_hint": "Note: Outlook marks all-day events as “free” by default, so they block no time. "
                                "Whether they block anyway is a setting in timum.",
    },
}


def normalize(locale: str | None, default: str = DEFAULT_LOCALE) -> str:
    """``de``/``en`` from anything like ``en-GB`` or ``DE``; unknown or empty → ``default``."""
    base = (locale or "").strip().lower().replace("_", "-").split("-", 1)[0]
    if base in LOCALES:
        return base
    return default if default in LOCALES else DEFAULT_LOCALE


def negotiate(accept_language: str | None, default: str = DEFAULT_LOCALE) -> str:
    """Best of our locales for an ``Accept-Language`` header (q-values honoured), else ``default``."""
    best: tuple[float, int, str] | None = None
    for index, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        lang = tag.strip().lower().split("-", 1)[0]
        if lang not in LOCALES or quality <= 0:
            continue
        # higher quality wins; among equals the earlier entry
        candidate = (quality, -index, lang)
        if best is None or candidate > best:
            best = candidate
    return best[2] if best else normalize(default)


def message(locale: str, key: str, **values: object) -> str:
    text = MESSAGES[normalize(locale)][key]
    return text.format(**values) if values else text


def has(key: str) -> bool:
    return key in MESSAGES[DEFAULT_LOCALE]


def translator(locale: str) -> Translator:
    """A ``_(key, **values)`` function for one locale, for templates and services."""
    lang = normalize(locale)
    catalogue: Mapping[str, str] = MESSAGES[lang]

    def _(key: str, **values: object) -> str:
        text = catalogue[key]
        return text.format(**values) if values else text

    return _


# --- sign-in binding, sign-in outcomes (connect flow) ------------------------------------------
MESSAGES["de"].update({
    "try_again": "Erneut anmelden",
    "error.browser_mismatch": "Diese Anmeldung wurde in einem anderen Browser begonnen. Aus Sicherheitsgründen "
                              "wurde nichts verbunden und nichts gespeichert.",
    "error.consent_declined": "Sie haben die Berechtigungen abgelehnt. Ohne sie kann timum Ihren Outlook-Kalender "
                              "nicht abgleichen; es wurde nichts verbunden.",
    "error.consent_unknown": "Dieser Zustimmungslink ist ungültig, abgelaufen oder wurde bereits verwendet. Es "
                             "wurde nichts gespeichert.",
    "retry_hint.consent_declined": "Wenn Sie es sich anders überlegt haben, melden Sie sich erneut an und "
                                   "bestätigen Sie die Berechtigungen.",
    "retry_hint.sign_in_failed": "Sie können es gleich noch einmal versuchen.",
    "consent_failed.other_tenant": "Die Zustimmung wurde für eine andere Organisation erteilt als angefragt.",
})
MESSAGES["en"].update({
    "try_again": "Sign in again",
    "error.browser_mismatch": "This sign-in was started in another browser. For your safety nothing was connected "
                              "and nothing was stored.",
    "error.consent_declined": "You declined the permissions. Without them timum cannot sync your Outlook calendar; "
                              "nothing was connected.",
    "error.consent_unknown": "This consent link is not valid, has expired or was already used. Nothing was stored.",
    "retry_hint.consent_declined": "If you changed your mind, sign in again and accept the permissions.",
    "retry_hint.sign_in_failed": "You can try again right away.",
    "consent_failed.other_tenant": "Consent was granted for another organisation than the one asked.",
})

# --- calendar chooser: where the calendar goes, existing resources, the new resource's name ----
MESSAGES["de"].update({
    "chooser.target_resource": "Ziel in timum: die Ressource „{resource}“ im timum-Konto „{provider}“.",
    "chooser.target_new": "Ziel in timum: eine Ressource im timum-Konto „{provider}“ – eine neue oder eine "
                          "vorhandene, wie Sie unten wählen.",
    "chooser.same_name": "In timum gibt es schon die Ressource „{resource}“.",
    "chooser.linked_here_move": "Mit einer anderen Aktion unten zieht der Kalender zu jener Ressource um.",
    "chooser.action_existing": "Mit der vorhandenen Ressource „{resource}“ verbinden",
    "chooser.action_existing_hint": "Für „{calendar}“ gibt es in timum schon „{resource}“: verbinden Sie den "
                                    "gewählten Kalender damit, statt eine doppelte Ressource anzulegen.",
    "chooser.new_name_label": "Name der neuen Ressource",
    "chooser.new_name_hint": "Leer lassen für den Namen des Kalenders (beim Standardkalender: der Name der "
                             "Person).",
    "chooser.name_invalid": "Der Name ist zu lang oder enthält Steuerzeichen (höchstens 200 Zeichen).",
    "chooser.resource_unavailable": "Diese Ressource ist nicht mehr frei oder gehört nicht zu diesem timum-Konto.",
})
MESSAGES["en"].update({
    "chooser.target_resource": "Destination in timum: the resource “{resource}” in timum account “{provider}”.",
    "chooser.target_new": "Destination in timum: a resource in timum account “{provider}” – a new or an existing "
                          "one, as you choose below.",
    "chooser.same_name": "timum already has the resource “{resource}”.",
    "chooser.linked_here_move": "With another action below the calendar moves to that resource.",
    "chooser.action_existing": "Connect to the existing resource “{resource}”",
    "chooser.action_existing_hint": "timum already has “{resource}” for “{calendar}”: connect the chosen calendar "
                                    "to it instead of creating a duplicate resource.",
    "chooser.new_name_label": "Name of the new resource",
    "chooser.new_name_hint": "Leave empty for the calendar's name (for a default calendar: the person's name).",
    "chooser.name_invalid": "The name is too long or contains control characters (200 characters at most).",
    "chooser.resource_unavailable": "This resource is no longer free or does not belong to this timum account.",
})

# Link status reasons of ICS imports (reason codes of shared.ics: fetch, reader, importer, source).
MESSAGES["de"].update({
    "status.ics_gone": "Der veröffentlichte Kalender ist nicht mehr erreichbar (Veröffentlichung in Outlook beendet?).",
    "status.ics_not_calendar": "Der Link liefert keinen Kalender. Bitte den ICS-Link der Kalenderveröffentlichung "
                               "verwenden.",
    "status.ics_unsafe_address": "Der Link zeigt auf eine Adresse, die nicht erlaubt ist (kein öffentlicher Server).",
    "status.ics_too_large": "Der veröffentlichte Kalender ist zu groß.",
    "status.ics_too_many_events": "Der veröffentlichte Kalender enthält zu viele Termine. Bitte einen Kalender mit "
                                  "weniger Terminen veröffentlichen.",
    "status.ics_series_too_long": "Eine Serie im veröffentlichten Kalender hat zu viele Termine im "
                                  "Abgleichszeitraum. Nichts wurde übernommen.",
    "status.ics_too_many_occurrences": "Der veröffentlichte Kalender hat zu viele Termine im Abgleichszeitraum. "
                                       "Nichts wurde übernommen.",
    "status.ics_parse_timeout": "Das Lesen des veröffentlichten Kalenders dauerte zu lange. Nichts wurde übernommen.",
    "status.ics_fetch_deadline": "Der Server des Kalenders hat ihn nicht rechtzeitig geliefert. Wir versuchen es "
                                 "weiter.",
    "status.ics_unreadable": "Der veröffentlichte Kalender konnte nicht gelesen werden. Nichts wurde übernommen.",
    "status.ics_missing": "Für diese Verknüpfung ist kein Kalender-Link hinterlegt.",
})
MESSAGES["en"].update({
    "status.ics_gone": "The published calendar can no longer be reached (unpublished in Outlook?).",
    "status.ics_not_calendar": "The link does not return a calendar. Please use the ICS link of the published "
                               "calendar.",
    "status.ics_unsafe_address": "The link points to an address that is not allowed (not a public server).",
    "status.ics_too_large": "The published calendar is too large.",
    "status.ics_too_many_events": "The published calendar holds too many events. Please publish a calendar with "
                                  "fewer events.",
    "status.ics_series_too_long": "A series in the published calendar has too many occurrences in the sync "
                                  "period. Nothing was taken over.",
    "status.ics_too_many_occurrences": "The published calendar has too many events in the sync period. Nothing was "
                                       "taken over.",
    "status.ics_parse_timeout": "Reading the published calendar took too long. Nothing was taken over.",
    "status.ics_fetch_deadline": "The calendar's server did not deliver it in time. We keep trying.",
    "status.ics_unreadable": "The published calendar could not be read. Nothing was taken over.",
    "status.ics_missing": "No calendar link is stored for this connection.",
})

# --- organisation path: permissions, the mapping page, consent withdrawn ---------------------------
MESSAGES["de"].update({
    "perm.delegated.User.Read": "Sie anmelden und Ihr Profil lesen",
    "perm.delegated.Calendars.ReadWrite": "Ihre Kalender lesen und Termine eintragen",
    "perm.delegated.Calendars.ReadWrite.Shared": "Für Sie freigegebene Kalender lesen und Termine eintragen",
    "perm.delegated.MailboxSettings.Read": "Die Zeitzone Ihres Postfachs lesen (Postfacheinstellungen, nur lesend)",
    "perm.application.Calendars.ReadWrite": "Kalender der verbundenen Postfächer lesen und Termine eintragen",
    "perm.application.MailboxSettings.Read": "Die Zeitzone der verbundenen Postfächer lesen (nur lesend)",
    "perm.application.User.Read.All": "Die Personen und Postfächer Ihrer Organisation auflisten (nur lesend)",
    "perm.application.Place.Read.All": "Die Räume Ihrer Organisation auflisten (nur lesend)",
    "perm.why.delegated.User.Read": "damit wir wissen, wer sich verbindet.",
    "perm.why.delegated.Calendars.ReadWrite": "timum trägt Buchungen ein und sieht, wann Sie belegt sind.",
    "perm.why.delegated.Calendars.ReadWrite.Shared": "für Raum- und Teamkalender, die für Sie freigegeben sind.",
    "perm.why.delegated.MailboxSettings.Read": "ganztägige Termine und Buchungszeiten brauchen die Zeitzone.",
    "perm.why.application.Calendars.ReadWrite": "timum trägt Buchungen ein und erfährt sofort von Änderungen – "
                                                "auch bei Raum- und freigegebenen Kalendern. Ihr Administrator "
                                                "kann den Zugriff auf bestimmte Postfächer beschränken.",
    "perm.why.application.MailboxSettings.Read": "ganztägige Termine und Buchungszeiten brauchen die Zeitzone.",
    "perm.why.application.User.Read.All": "damit Sie auf einer Seite wählen können, wessen Kalender verbunden "
                                          "wird.",
    "perm.why.application.Place.Read.All": "damit Räume als Räume erkennbar sind.",
    "org.consent.lead": "Damit ein Administrator die ganze Praxis auf einmal verbinden kann, braucht timum "
                        "Anwendungsberechtigungen. Sie gelten für die Organisation, nicht für eine Person.",
    "org.consent.permissions_app": "Diese Berechtigungen werden erbeten",
    "org.consent.permissions_delegated": "Diese Berechtigungen werden für die Mitarbeitenden erbeten (nur delegiert, "
                                         "keine Anwendungsberechtigung)",
    "org.consent_done.next": "Die Organisation ist verbunden. Wer das timum-Konto verwaltet, öffnet die "
                             "Zuordnungsseite über „Für die ganze Organisation verbinden“ in timum.",
    "consent_failed.missing_permissions": "Es wurden nicht alle nötigen Berechtigungen erteilt (Kalender lesen "
                                          "und schreiben, Personen auflisten).",
    "org.title": "Ganze Organisation verbinden",
    "org.lead": "Wählen Sie für jeden Kalender Ihrer Personen und Räume, wohin er in timum gehört "
                "(timum-Konto „{provider}“). Verbundene Kalender werden per Push abgeglichen.",
    "org.permissions_title": "Welche Berechtigungen timum hat und warum",
    "org.search_label": "Person, Raum oder E-Mail-Adresse suchen",
    "org.search": "Suchen",
    "org.col.who": "Person oder Raum",
    "org.col.calendar": "Kalender",
    "org.col.timum": "In timum",
    "org.choice_label": "timum-Ziel für „{calendar}“ von {who}",
    "org.choice.none": "Nicht verbinden",
    "org.choice.new": "Neue timum-Ressource",
    "org.choice.existing": "Vorhandene Ressource „{resource}“",
    "org.apply": "Übernehmen",
    "org.next_page": "Nächste Seite",
    "org.first_page": "Zur ersten Seite",
    "org.nobody": "Niemand gefunden.",
    "org.no_calendars": "Keine Kalender.",
    "org.linked_to": "Verbunden mit „{resource}“",
    "org.health.ok": "Abgleich läuft",
    "org.health.needs_reconnect": "Neu verbinden nötig",
    "org.health.error": "Fehler",
    "org.mode.app_only": "Organisation (Push)",
    "org.mode.delegated": "Persönliche Anmeldung",
    "org.mode.ics": "ICS",
    "org.kind.person": "Person",
    "org.kind.room": "Raum",
    "org.kind.equipment": "Ressourcen-Postfach",
    "org.problem.out_of_scope": "Von Ihrem Administrator nicht freigegeben: dieses Postfach liegt außerhalb des "
                                "Bereichs, auf den timum zugreifen darf.",
    "org.problem.no_mailbox": "Kein Postfach.",
    "org.problem.unavailable": "Gerade nicht lesbar. Bitte später erneut versuchen.",
    "org.scope_doc": "So ändert Ihr Administrator den Bereich",
    "org.job.in_progress": "Wird verbunden …",
    "org.row.linked": "Verbunden.",
    "org.row.in_progress": "Wird gerade verbunden.",
    "org.row.failed": "Konnte nicht verbunden werden. Bitte erneut versuchen.",
    "org.row.out_of_scope": "Von Ihrem Administrator nicht freigegeben (außerhalb des erlaubten Bereichs).",
    "org.row.calendar_gone": "Diesen Kalender gibt es nicht mehr.",
    "org.row.no_mailbox": "Kein Postfach.",
    "org.row.unavailable": "Gerade nicht lesbar. Bitte später erneut versuchen.",
    "org.row.read_only": "Nur Lesezugriff – kann nicht verbunden werden.",
    "org.row.calendar_taken": "Bereits mit einer anderen timum-Ressource verbunden.",
    "org.row.resource_linked": "Diese Ressource hat schon einen anderen Kalender.",
    "org.row.resource_unavailable": "Diese Ressource gibt es nicht (mehr) in diesem timum-Konto.",
    "org.summary": "{linked} Kalender verbunden, {failed} nicht.",
    "org.summary.not_connected": "Die Organisation ist nicht (mehr) verbunden; es wurde nichts geändert.",
    "org.revoked_title": "Zugriff entzogen.",
    "org.revoked": "Am {when} hat Microsoft timum den Zugriff auf Ihre Organisation verweigert ({reason}). "
                   "Alle Kalender dieser Organisation warten auf eine neue Zustimmung.",
    "org.revoked_reason.app_deleted": "die App wurde aus Ihrer Organisation entfernt",
    "org.revoked_reason.consent_withdrawn": "die Zustimmung wurde zurückgenommen",
    "org.revoked_reason.other": "die Anmeldung der App wurde abgelehnt",
    "org.revoked_next": "Ein Administrator stellt es wieder her, indem er „Für die ganze Organisation "
                        "verbinden“ in timum erneut bestätigt; die Zuordnungen bleiben erhalten.",
    "org.not_granted": "Ihre Organisation hat timum die Anwendungsberechtigungen nicht (mehr) erteilt.",
    "status.org_consent_revoked": "Der Administrator Ihrer Microsoft-365-Organisation hat timum den Zugriff "
                                  "entzogen. Bitte verbinden Sie die Organisation erneut.",
})
MESSAGES["en"].update({
    "perm.delegated.User.Read": "Sign you in and read your profile",
    "perm.delegated.Calendars.ReadWrite": "Read your calendars and add appointments",
    "perm.delegated.Calendars.ReadWrite.Shared": "Read calendars shared with you and add appointments",
    "perm.delegated.MailboxSettings.Read": "Read your mailbox's time zone (mailbox settings, read only)",
    "perm.application.Calendars.ReadWrite": "Read the connected mailboxes' calendars and add appointments",
    "perm.application.MailboxSettings.Read": "Read the connected mailboxes' time zone (read only)",
    "perm.application.User.Read.All": "List your organisation's people and mailboxes (read only)",
    "perm.application.Place.Read.All": "List your organisation's rooms (read only)",
    "perm.why.delegated.User.Read": "so we know who is connecting.",
    "perm.why.delegated.Calendars.ReadWrite": "timum adds bookings and sees when you are busy.",
    "perm.why.delegated.Calendars.ReadWrite.Shared": "for room and team calendars shared with you.",
    "perm.why.delegated.MailboxSettings.Read": "all-day events and booking times need the time zone.",
    "perm.why.application.Calendars.ReadWrite": "timum adds bookings and learns of changes at once – room and "
                                                "shared calendars too. Your administrator can limit access to "
                                                "some mailboxes.",
    "perm.why.application.MailboxSettings.Read": "all-day events and booking times need the time zone.",
    "perm.why.application.User.Read.All": "so you can choose on one page whose calendars are connected.",
    "perm.why.application.Place.Read.All": "so rooms show as rooms.",
    "org.consent.lead": "For an administrator to connect the whole practice at once, timum needs application "
                        "permissions. They apply to the organisation, not to one person.",
    "org.consent.permissions_app": "These permissions are requested",
    "org.consent.permissions_delegated": "These permissions are requested for your staff (delegated only, no "
                                         "application permission)",
    "org.consent_done.next": "The organisation is connected. Whoever manages the timum account opens the mapping "
                             "page with “Connect the whole organisation” in timum.",
    "consent_failed.missing_permissions": "Not all required permissions were granted (read and write calendars, "
                                          "list people).",
    "org.title": "Connect the whole organisation",
    "org.lead": "For each calendar of your people and rooms, choose where it belongs in timum (timum account "
                "“{provider}”). Connected calendars sync by push.",
    "org.permissions_title": "Which permissions timum has, and why",
    "org.search_label": "Search a person, room or e-mail address",
    "org.search": "Search",
    "org.col.who": "Person or room",
    "org.col.calendar": "Calendar",
    "org.col.timum": "In timum",
    "org.choice_label": "timum destination for “{calendar}” of {who}",
    "org.choice.none": "Do not connect",
    "org.choice.new": "New timum resource",
    "org.choice.existing": "Existing resource “{resource}”",
    "org.apply": "Apply",
    "org.next_page": "Next page",
    "org.first_page": "Back to the first page",
    "org.nobody": "Nobody found.",
    "org.no_calendars": "No calendars.",
    "org.linked_to": "Connected to “{resource}”",
    "org.health.ok": "Syncing",
    "org.health.needs_reconnect": "Needs reconnecting",
    "org.health.error": "Error",
    "org.mode.app_only": "Organisation (push)",
    "org.mode.delegated": "Personal sign-in",
    "org.mode.ics": "ICS",
    "org.kind.person": "Person",
    "org.kind.room": "Room",
    "org.kind.equipment": "Resource mailbox",
    "org.problem.out_of_scope": "Not allowed by your admin's scope: this mailbox is outside the mailboxes timum "
                                "may access.",
    "org.problem.no_mailbox": "No mailbox.",
    "org.problem.unavailable": "Cannot be read right now. Please try again later.",
    "org.scope_doc": "How your administrator changes the scope",
    "org.job.in_progress": "Connecting …",
    "org.row.linked": "Connected.",
    "org.row.in_progress": "Being connected right now.",
    "org.row.failed": "Could not be connected. Please try again.",
    "org.row.out_of_scope": "Not allowed by your admin's scope.",
    "org.row.calendar_gone": "This calendar no longer exists.",
    "org.row.no_mailbox": "No mailbox.",
    "org.row.unavailable": "Cannot be read right now. Please try again later.",
    "org.row.read_only": "Read-only – cannot be connected.",
    "org.row.calendar_taken": "Already connected to another timum resource.",
    "org.row.resource_linked": "This resource already has another calendar.",
    "org.row.resource_unavailable": "This resource does not exist (any more) in this timum account.",
    "org.summary": "{linked} calendars connected, {failed} not.",
    "org.summary.not_connected": "The organisation is not connected (any more); nothing was changed.",
    "org.revoked_title": "Access withdrawn.",
    "org.revoked": "On {when} Microsoft refused timum access to your organisation ({reason}). Every calendar of "
                   "this organisation waits for a new consent.",
    "org.revoked_reason.app_deleted": "the app was removed from your organisation",
    "org.revoked_reason.consent_withdrawn": "the consent was withdrawn",
    "org.revoked_reason.other": "the app's sign-in was refused",
    "org.revoked_next": "An administrator restores it by confirming “Connect the whole organisation” in timum "
                        "again; the mappings are kept.",
    "org.not_granted": "Your organisation has not granted (or no longer grants) timum the application permissions.",
    "status.org_consent_revoked": "The administrator of your Microsoft 365 organisation withdrew timum's access. "
                                  "Please connect the organisation again.",
})


# --- organisation mapping page: the bulk link runs in the background -------------------------------
MESSAGES["de"].update({
    "org.progress": "Die Kalender werden im Hintergrund verbunden: {linked} verbunden, {failed} nicht, "
                    "{waiting} in Arbeit.",
    "org.progress_refresh": "Stand aktualisieren",
})
MESSAGES["en"].update({
    "org.progress": "The calendars are being connected in the background: {linked} connected, {failed} not, "
                    "{waiting} in progress.",
    "org.progress_refresh": "Refresh",
})
