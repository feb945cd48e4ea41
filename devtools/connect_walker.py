"""The connect flow clicked through over HTTP, as a user's browser would: redirects, the sandbox's
account picker and consent screen, the form_post back to the service, and the calendar chooser.
Used by ``devtools.stack`` to link a calendar the way a person does."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx


class ConnectFlowError(RuntimeError):
    """The flow stopped somewhere a browser would have stopped too."""


class _Forms(HTMLParser):
    """Forms of a page with all their inputs (including unchecked radios) and buttons, and the
    text of labels by their ``for`` target — enough to pick a calendar in the chooser."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict[str, Any]] = []
        self.labels: dict[str, str] = {}
        self._form: dict[str, Any] | None = None
        self._label: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = {"action": a.get("action", ""), "method": (a.get("method") or "get").lower(),
                          "fields": [], "radios": [], "buttons": []}
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None:
            kind = (a.get("type") or "text").lower()
            if kind == "radio":
                self._form["radios"].append((a.get("name", ""), a.get("value", ""), a.get("id", ""),
                                             "disabled" in a))
            elif kind in ("submit", "button"):
                self._form["buttons"].append((a.get("name", ""), a.get("value", "")))
            elif kind != "checkbox" and a.get("name"):
                self._form["fields"].append((a["name"], a.get("value", "")))
        elif tag == "button" and self._form is not None and (a.get("type") or "submit") == "submit":
            self._form["buttons"].append((a.get("name", ""), a.get("value", "")))
        elif tag == "label":
            self._label = a.get("for", "")
            self.labels.setdefault(self._label, "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "label":
            self._label = None

    def handle_data(self, data: str) -> None:
        if self._label:
            self.labels[self._label] += data


def _forms(html: str) -> _Forms:
    parser = _Forms()
    parser.feed(html)
    parser.close()
    return parser


class ConnectWalker:
    """Follows the connect flow like a browser: redirects, the account picker, the consent screen,
    the form_post back to the service, and the chooser (picking ``calendar_name``, "link")."""

    MAX_STEPS = 20

    def __init__(self, client: httpx.Client, user_id: str, calendar_name: str) -> None:
        self.client = client
        self.user_id = user_id
        self.calendar_name = calendar_name

    def walk(self, url: str) -> str:
        """Returns the URL the flow finally sends the browser to outside the service and sandbox."""
        response = self.client.get(url)
        for _ in range(self.MAX_STEPS):
            if response.is_redirect:
                target = urljoin(str(response.url), response.headers["location"])
                if "/timum/providers/" in urlsplit(target).path:
                    return target
                response = self.client.get(target)
                continue
            if response.status_code >= 400:
                raise ConnectFlowError(f"connect flow stopped at {urlsplit(str(response.url)).path} with "
                                 f"{response.status_code}: {_text(response.text)[:300]}")
            response = self._act(response)
        raise ConnectFlowError("the connect flow did not finish")

    def _act(self, page: httpx.Response) -> httpx.Response:
        forms = _forms(page.text)
        base = str(page.url)
        for form in forms.forms:
            action = urljoin(base, form["action"] or base)
            path = urlsplit(action).path
            data = list(form["fields"])
            if path.endswith("/authorize/select"):
                # The account picker: one form per account, naming it by its object id.
                if ("user", self.user_id) in data:
                    return self._post(action, data)
                continue
            if path.endswith("/authorize/consent"):
                return self._post(action, [*data, ("decision", "accept")])
            if path.endswith("/api/oauth/callback"):
                return self._post(action, data)
            if path.endswith("/api/connect/calendars"):
                key = self._calendar_key(form, forms.labels)
                return self._post(action, [*data, ("calendar", key), ("action", "link")])
        raise ConnectFlowError(f"unexpected page in the connect flow at {urlsplit(base).path}: "
                               f"{_text(page.text)[:300]}")

    def _post(self, url: str, pairs: list[tuple[str, str]]) -> httpx.Response:
        form: dict[str, list[str]] = {}
        for name, value in pairs:
            form.setdefault(name, []).append(value)
        return self.client.post(url, data=form)

    def _calendar_key(self, form: dict[str, Any], labels: dict[str, str]) -> str:
        for name, value, input_id, disabled in form["radios"]:
            label = " ".join(labels.get(input_id, "").split())
            if name == "calendar" and label.startswith(self.calendar_name):
                if disabled:
                    raise ConnectFlowError(f"the chooser does not let the user pick {self.calendar_name!r}: {label}")
                return str(value)
        raise ConnectFlowError(f"the chooser does not list the calendar {self.calendar_name!r}")


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())
