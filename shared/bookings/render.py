"""The Outlook event text for a booking, in the provider's language and within its privacy choice.

Customer data is personal data: by default only the customer's name goes into Outlook
(``CustomerPrivacy.NAME``); contact details and notes only when the provider chose CONTACT.
"""

from __future__ import annotations

import hashlib
import html
import json
from zoneinfo import ZoneInfo

from shared.domain import Booking, CustomerPrivacy, EventDraft, ProviderSettings

_TEXT = {
    "de": {"fallback": "timum-Termin", "cancelled": "Abgesagt", "service": "Leistung", "when": "Zeit",
           "customer": "Kund:in", "email": "E-Mail", "phone": "Telefon", "notes": "Notizen",
           "open": "In timum öffnen", "footer": "Dieser Termin wird von timum verwaltet. Änderungen bitte in timum "
                                              "vornehmen – in Outlook geänderte Zeiten werden überschrieben."},
    "en": {"fallback": "timum booking", "cancelled": "Cancelled", "service": "Service", "when": "Time",
           "customer": "Customer", "email": "E-mail", "phone": "Phone", "notes": "Notes",
           "open": "Open in timum", "footer": "This appointment is managed by timum. Please make changes in timum – "
                                              "times changed in Outlook will be overwritten."},
}


def _t(locale: str) -> dict[str, str]:
    return _TEXT.get(locale, _TEXT["de"])


def render_event(booking: Booking, settings: ProviderSettings, *, cancelled_mark: bool = False) -> EventDraft:
    t = _t(settings.locale)
    name = booking.customer.name if settings.customer_privacy is not CustomerPrivacy.NONE else ""
    subject = " – ".join(p for p in (booking.service_name, name) if p) or t["fallback"]
    if cancelled_mark:
        subject = f"{t['cancelled']}: {subject}"
    tz = ZoneInfo(booking.time_zone)
    start, end = booking.start.astimezone(tz), booking.end.astimezone(tz)
    rows = [(t["service"], booking.service_name),
            (t["when"], f"{start:%d.%m.%Y %H:%M} – {end:%H:%M} ({booking.time_zone})"),
            (t["customer"], name)]
    if settings.customer_privacy is CustomerPrivacy.CONTACT:
        rows += [(t["email"], booking.customer.email), (t["phone"], booking.customer.phone),
                 (t["notes"], booking.notes)]
    cells = "".join(f"<tr><th align=\"left\">{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                    for k, v in rows if v)
    link = (f'<p><a href="{html.escape(booking.url, quote=True)}">{html.escape(t["open"])}</a></p>'
            if booking.url else "")
    body = f"<table>{cells}</table>{link}<p><small>{html.escape(t['footer'])}</small></p>"
    return EventDraft(subject=subject[:255], body_html=body, start=booking.start, end=booking.end,
                      time_zone=booking.time_zone, show_as="free" if cancelled_mark else "busy",
                      categories=("timum",), booking_id=booking.id)


def draft_hash(draft: EventDraft) -> str:
    """What we would write, hashed: an unchanged hash means no PATCH (no echo, no request)."""
    view = [draft.subject, draft.body_html, draft.start.timestamp(), draft.end.timestamp(), draft.time_zone,
            draft.show_as, list(draft.categories)]
    return hashlib.sha256(json.dumps(view, ensure_ascii=False).encode()).hexdigest()[:32]
