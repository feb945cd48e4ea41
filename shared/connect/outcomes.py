"""What a step of the connect flow ends in; the HTTP layer turns each into one response.

The flow's service functions return these instead of raising for outcomes the user must
see, so each page knows the user's language and the way back to timum.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


@dataclass(frozen=True)
class Binding:
    """The cookie that ties a sign-in to the browser that started it: ``tag`` names the cookie
    (one per sign-in, so two tabs do not overwrite each other's), ``value`` is the random secret
    whose hash the flow keeps."""

    tag: str
    value: str


@dataclass(frozen=True)
class _MayEndSignIn:
    """An outcome that may end a sign-in: it then names the binding cookie to drop."""

    #: the tag of the binding cookie of a sign-in that has ended (see ``end_binding``)
    spent_binding: str = field(default="", kw_only=True)


@dataclass(frozen=True)
class Redirect(_MayEndSignIn):
    location: str
    status: int = 303
    #: a new chooser session to hand to the browser as a cookie
    session_id: str | None = None
    #: end the chooser session cookie
    clear_session: bool = False
    #: a sign-in binding cookie to set (the redirect goes to Microsoft)
    binding: Binding | None = None


@dataclass(frozen=True)
class ErrorPage(_MayEndSignIn):
    code: str                  # picks the text ``error.<code>``
    locale: str
    status: int = 400
    return_url: str = ""
    #: a fresh sign-in to offer ("try again"), with the binding cookie it needs
    retry_url: str = ""
    binding: Binding | None = None


@dataclass(frozen=True)
class ConsentPage(_MayEndSignIn):
    """The user's organisation requires an administrator to consent first."""

    locale: str
    consent_url: str
    return_url: str = ""
    declined: bool = False
    #: the organisation path asks for application permissions; the single-calendar path for
    #: the delegated ones only (the page lists which, by name)
    org: bool = False


@dataclass(frozen=True)
class ConsentResultPage(_MayEndSignIn):
    locale: str
    ok: bool
    reason: str = ""           # consent_failed.<reason> for ok=False
    return_url: str = ""
    #: the organisation path's consent (its own texts: what happens next differs)
    org: bool = False


@dataclass(frozen=True)
class ChooserPage:
    locale: str
    status: int
    values: dict[str, Any] = field(default_factory=dict)
    return_url: str = ""


#: the outcomes that can end a sign-in
Ended = TypeVar("Ended", bound=_MayEndSignIn)


def end_binding(outcome: Ended, tag: str) -> Ended:
    """``outcome`` telling the browser to drop the binding cookie ``tag``: the sign-in (or
    administrator consent) it bound has ended, its flow is spent, so the cookie has no use left
    for the rest of its life. An empty ``tag`` (the browser brought no such cookie) changes nothing."""
    return replace(outcome, spent_binding=tag) if tag else outcome


def with_params(url: str, **params: str) -> str:
    """``url`` with ``params`` set in its query (replacing same-named ones, keeping the rest)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query.extend(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))
