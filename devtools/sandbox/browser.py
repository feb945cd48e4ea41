"""A tiny form-following HTTP "browser" for driving sandbox pages without a real browser.

The sign-in and consent screens are plain HTML forms, so tests (and scripts) can click
through them with httpx: open a URL, pick a form by the text it shows, submit it with one of
its buttons. Redirects are *not* followed automatically — the last hop of a sign-in goes to
the service's redirect URI, which the caller usually wants to inspect, not fetch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urljoin, urlsplit

import httpx


@dataclass
class Button:
    name: str | None
    value: str
    text: str


@dataclass
class Form:
    action: str
    method: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    buttons: list[Button] = field(default_factory=list)
    text: str = ""

    def field(self, name: str) -> str | None:
        return next((v for k, v in self.fields if k == name), None)


@dataclass
class Page:
    """One response: a page (with its forms) or a redirect (``location``)."""

    url: str
    status: int
    html: str
    location: str | None
    forms: list[Form]
    text: str

    @property
    def is_redirect(self) -> bool:
        return self.location is not None

    def form(self, containing: str | None = None, *, action_contains: str | None = None) -> Form:
        """The first form whose visible text or field values contain ``containing`` (and whose
        action contains ``action_contains``); AssertionError with the page text if none does."""
        for form in self.forms:
            haystack = form.text + " " + " ".join(v for _, v in form.fields)
            if containing is not None and containing.lower() not in haystack.lower():
                continue
            if action_contains is not None and action_contains not in form.action:
                continue
            return form
        raise AssertionError(f"no form matching {containing!r}/{action_contains!r} on {self.url} "
                             f"(status {self.status}): {self.text[:500]}")


class FormBrowser:
    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def open(self, url: str, *, headers: dict[str, str] | None = None) -> Page:
        return self._page(self.client.get(url, headers=headers, follow_redirects=False))

    def submit(self, form: Form, button: str | None = None, *, extra: dict[str, str] | None = None) -> Page:
        """Submit ``form`` as a browser would, pressing the button whose text or value equals
        ``button`` (default: the first button). ``extra`` adds or replaces fields (e.g. a ticked
        checkbox)."""
        data = list(form.fields)
        pressed = self._button(form, button)
        if pressed is not None and pressed.name:
            data.append((pressed.name, pressed.value))
        for key, value in (extra or {}).items():
            data = [(k, v) for k, v in data if k != key] + [(key, value)]
        if form.method == "get":
            query: list[tuple[str, str | int | float | bool | None]] = list(data)
            return self._page(self.client.get(form.action, params=query, follow_redirects=False))
        payload: dict[str, list[str]] = {}
        for key, value in data:
            payload.setdefault(key, []).append(value)
        return self._page(self.client.post(form.action, data=payload, follow_redirects=False))

    @staticmethod
    def _button(form: Form, wanted: str | None) -> Button | None:
        if not form.buttons:
            return None
        if wanted is None:
            return form.buttons[0]
        low = wanted.lower()
        for candidate in form.buttons:
            if candidate.value.lower() == low or candidate.text.lower() == low or low in candidate.text.lower():
                return candidate
        raise AssertionError(f"no button {wanted!r} in form {form.action}: {[b.text for b in form.buttons]}")

    def _page(self, response: httpx.Response) -> Page:
        location = response.headers.get("location") if response.is_redirect else None
        if location is not None:
            location = urljoin(str(response.url), location)
        html = response.text if "html" in response.headers.get("content-type", "") else ""
        parser = _FormParser(str(response.url))
        if html:
            parser.feed(html)
            parser.close()
        return Page(url=str(response.url), status=response.status_code, html=html, location=location,
                    forms=parser.forms, text=" ".join(parser.all_text.split()))


class _FormParser(HTMLParser):
    def __init__(self, base_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base_url = base_url
        self.forms: list[Form] = []
        self.all_text = ""
        self._form: Form | None = None
        self._button: Button | None = None
        self._skip = 0  # inside <script>/<style>

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "form":
            self._form = Form(action=urljoin(self.base_url, a.get("action") or self.base_url),
                              method=(a.get("method") or "get").lower())
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None:
            kind = (a.get("type") or "text").lower()
            name = a.get("name")
            if kind in ("submit", "button", "image"):
                self._form.buttons.append(Button(name or None, a.get("value", ""), a.get("value", "")))
            elif name and (kind not in ("checkbox", "radio") or "checked" in a):
                self._form.fields.append((name, a.get("value", "on" if kind == "checkbox" else "")))
        elif tag == "button" and self._form is not None and (a.get("type") or "submit").lower() == "submit":
            self._button = Button(a.get("name") or None, a.get("value", ""), "")
            self._form.buttons.append(self._button)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag == "form":
            self._form = None
        elif tag == "button":
            if self._button is not None:
                self._button.text = " ".join(self._button.text.split())
            self._button = None

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.all_text += data + " "
        if self._form is not None:
            self._form.text += data + " "
        if self._button is not None:
            self._button.text += data + " "


# --- sandbox sign-in ---------------------------------------------------------------------------

def response_params(page: Page) -> dict[str, str] | None:
    """What the identity platform sent to the app: the query or fragment of a redirect, or the
    fields of a ``form_post`` page. None while the page is still part of the sign-in."""
    if page.location is not None:
        parts = urlsplit(page.location)
        return dict(parse_qsl(parts.fragment or parts.query, keep_blank_values=True))
    for form in page.forms:
        if form.field("code") is not None or form.field("error") is not None:
            return dict(form.fields)
    return None


def sign_in(browser: FormBrowser, auth_uri: str, account: str | None, *, consent: str = "accept",
            org_consent: bool = False, max_steps: int = 6) -> dict[str, str]:
    """Click through the sandbox's sign-in for ``account`` (a mail address; None relies on an
    existing session) and return the parameters delivered to the redirect URI.

    ``consent``: "accept" or "cancel" on a consent screen; on "need admin approval" the user
    returns to the app without consent. ``org_consent`` ticks "consent on behalf of your
    organization" (offered to administrators).
    """
    page = browser.open(auth_uri)
    for _ in range(max_steps):
        params = response_params(page)
        if params is not None:
            return params
        if page.status >= 400:
            raise AssertionError(f"sign-in failed with {page.status}: {page.text[:500]}")
        actions = {form.action.rsplit("/", 1)[-1] for form in page.forms}
        if "select" in actions:
            if account is None:
                raise AssertionError("the account picker appeared but no account was given")
            page = browser.submit(page.form(account, action_contains="/select"))
        elif "consent" in actions:
            extra = {"org_consent": "1"} if org_consent else None
            page = browser.submit(page.form(action_contains="/consent"), consent, extra=extra)
        elif "return" in actions:
            page = browser.submit(page.form(action_contains="/return"))
        else:
            raise AssertionError(f"unexpected page {page.url}: {page.text[:500]}")
    raise AssertionError("sign-in did not finish")
