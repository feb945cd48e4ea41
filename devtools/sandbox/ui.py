"""Page rendering shared by the sandbox's HTML screens: language choice, templates, layout.

Pages are German by default and English on request (``ui_locales`` / ``lang`` query parameter,
else the browser's Accept-Language). Templates say each text in both languages inline,
``{{ t("Anmelden", "Sign in") }}``, so a page and its translation cannot drift apart.
Templates live in ``devtools/sandbox/templates``; they extend ``base.html``, which links the
shared stylesheet at ``/_sandbox/static/sandbox.css`` (served on both listeners so HTTPS
pages do not load mixed content).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

LANGUAGES = ("de", "en")
DEFAULT_LANGUAGE = "de"
STATIC_DIR = Path(__file__).with_name("static")
TEMPLATE_DIR = Path(__file__).with_name("templates")
STATIC_PATH = "/_sandbox/static"

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def pick_language(request: Request, *, explicit: str | None = None) -> str:
    """``explicit`` (e.g. a stored ``ui_locales``) wins, then ``?ui_locales=``/``?lang=``, then Accept-Language."""
    for candidate in (explicit, request.query_params.get("ui_locales"), request.query_params.get("lang")):
        lang = _match(candidate)
        if lang:
            return lang
    header = request.headers.get("accept-language", "")
    weighted: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        lang = _match(tag)
        if lang and quality > 0:
            weighted.append((-quality, index, lang))
    return min(weighted)[2] if weighted else DEFAULT_LANGUAGE


def _match(tags: str | None) -> str | None:
    # ui_locales is a space-separated list of BCP 47 tags in order of preference
    for tag in (tags or "").replace(",", " ").split():
        primary = tag.split("-")[0].lower()
        if primary in LANGUAGES:
            return primary
    return None


def with_language(url: str, lang: str, *, param: str = "ui_locales") -> str:
    """The same URL with the page language switched (for the language toggle)."""
    path, _, query = url.partition("?")
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in ("ui_locales", "lang")]
    pairs.append((param, lang))
    return f"{path}?{urlencode(pairs)}"


def render(request: Request, template: str, *, lang: str, title: str, status_code: int = 200,
           headers: Mapping[str, str] | None = None, **context: Any) -> HTMLResponse:
    def t(de: str, en: str) -> str:
        return de if lang == "de" else en

    if "switch_url" not in context:
        # A page answering a form post cannot be re-fetched in the other language.
        current = str(request.url.path) + (f"?{request.url.query}" if request.url.query else "")
        context["switch_url"] = (with_language(current, "en" if lang == "de" else "de")
                                 if request.method == "GET" else None)
    html = _env.get_template(template).render(
        lang=lang, t=t, title=title, static=STATIC_PATH, other_lang="en" if lang == "de" else "de", **context,
    )
    response = HTMLResponse(html, status_code=status_code, headers=dict(headers or {}))
    # Pages carry single-use request handles; a cached copy would replay a stale one.
    response.headers.setdefault("Cache-Control", "no-store")
    return response
