"""Typed settings, read once from the environment.

``SETTINGS`` below is the single list of every setting the app reads. The same list
drives validation, ``local.settings.json.example`` and the infra test that checks
``infra/`` sets exactly these app settings. A missing or malformed setting is reported
at startup with one message listing every problem, instead of a stack trace at first use.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from shared.errors import ConfigError


@dataclass(frozen=True)
class SettingSpec:
    name: str
    help: str
    required: bool = False
    default: str | None = None
    secret: bool = False
    kind: str = "str"  # str | int | bool | url | list | keys


# Storage is listed separately: in Azure it is identity-based (AzureWebJobsStorage__*),
# locally a connection string. At least one form must be present.
STORAGE_SETTINGS = (
    "AzureWebJobsStorage",
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__tableServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
)

SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("SERVICE_BASE_URL", "Public base URL of this app, e.g. https://sync.example.com "
                "(redirect URIs and Graph notification URLs are derived from it)", required=True, kind="url"),
    SettingSpec("ENTRA_CLIENT_ID", "Application (client) id of the Entra app registration", required=True),
    SettingSpec("ENTRA_CLIENT_SECRET", "Client secret of the Entra app registration", required=True, secret=True),
    SettingSpec("ENTRA_AUTHORITY_HOST", "Identity platform host", default="https://login.microsoftonline.com",
                kind="url"),
    SettingSpec("ENTRA_TENANT", "Tenant segment for user sign-in (organizations, common or a tenant id)",
                default="organizations"),
    SettingSpec("GRAPH_BASE_URL", "Microsoft Graph base URL", default="https://graph.microsoft.com/v1.0",
                kind="url"),
    SettingSpec("CA_BUNDLE", "Optional PEM file of extra CAs to trust (the sandbox CA locally)", default=""),
    SettingSpec("TOKEN_ENCRYPTION_KEYS", "Comma-separated 'keyid:base64(32 bytes)' AES-256-GCM keys; the first "
                "encrypts, all decrypt (rotation)", required=True, secret=True, kind="keys"),
    SettingSpec("TIMUM_API_BASE_URL", "Base URL of the timum API", required=True, kind="url"),
    SettingSpec("TIMUM_API_KEY", "API key for calls to the timum API", required=True, secret=True),
    SettingSpec("TIMUM_WEBHOOK_SECRETS", "Comma-separated secrets for booking webhooks from timum and link-status "
                "webhooks to timum; the first signs, all verify", required=True, secret=True, kind="list"),
    SettingSpec("TIMUM_CONNECT_SECRETS", "Comma-separated secrets that sign timum's connect links; all verify",
                required=True, secret=True, kind="list"),
    SettingSpec("TIMUM_RETURN_URL_ALLOWLIST", "Comma-separated URL prefixes a connect link may return to",
                required=True, kind="list"),
    SettingSpec("TIMUM_STATUS_WEBHOOK_URL", "Where link-status webhooks are POSTed (empty: none sent)", default="",
                kind="str"),
    SettingSpec("DEFAULT_LOCALE", "Language of pages when a link names none (de or en)", default="de"),
    SettingSpec("SYNC_WINDOW_PAST_DAYS", "Days before today that Outlook events are mirrored", default="1",
                kind="int"),
    SettingSpec("SYNC_WINDOW_FUTURE_DAYS", "Days after today that Outlook events are mirrored", default="365",
                kind="int"),
    SettingSpec("DELTA_PAGE_SIZE", "Prefer: odata.maxpagesize for delta queries", default="100", kind="int"),
    SettingSpec("SYNC_ROUND_SPACING_MS", "Least time between two delta rounds of one link while changes keep "
                "coming (a burst costs a few rounds, not one per notification)", default="2000", kind="int"),
    SettingSpec("POLLING_INTERVAL_MINUTES", "Delta polling interval for links without a subscription", default="5",
                kind="int"),
    SettingSpec("SUBSCRIPTION_LIFETIME_MINUTES", "Lifetime requested for Graph subscriptions (max 4230)",
                default="4200", kind="int"),
    SettingSpec("GRAPH_MAX_CONCURRENCY", "Concurrent Graph requests per mailbox (Graph allows 4)", default="4",
                kind="int"),
    SettingSpec("ICS_WINDOW_PAST_DAYS", "Days of past bookings in the ICS feed", default="30", kind="int"),
    SettingSpec("ICS_WINDOW_FUTURE_DAYS", "Days of future bookings in the ICS feed", default="365", kind="int"),
    SettingSpec("ICS_IMPORT_INTERVAL_MINUTES", "How often published Outlook ICS links are fetched", default="15",
                kind="int"),
    SettingSpec("ICS_IMPORT_ALLOW_LOOPBACK", "Development only: allow ICS imports from loopback/http",
                default="false", kind="bool"),
    SettingSpec("FUNCTION_KEY", "Function key the local host accepts (in Azure the host manages keys)",
                default="", secret=True),
)

SECRET_SETTING_NAMES = frozenset(s.name for s in SETTINGS if s.secret) | {"AzureWebJobsStorage"}


@dataclass(frozen=True)
class Settings:
    service_base_url: str
    entra_client_id: str
    entra_client_secret: str = field(repr=False)
    entra_authority_host: str
    entra_tenant: str
    graph_base_url: str
    ca_bundle: str
    token_encryption_keys: tuple[tuple[str, bytes], ...] = field(repr=False)
    timum_api_base_url: str
    timum_api_key: str = field(repr=False)
    timum_webhook_secrets: tuple[str, ...] = field(repr=False)
    timum_connect_secrets: tuple[str, ...] = field(repr=False)
    timum_return_url_allowlist: tuple[str, ...]
    timum_status_webhook_url: str
    default_locale: str
    sync_window_past_days: int
    sync_window_future_days: int
    delta_page_size: int
    sync_round_spacing_ms: int
    polling_interval_minutes: int
    subscription_lifetime_minutes: int
    graph_max_concurrency: int
    ics_window_past_days: int
    ics_window_future_days: int
    ics_import_interval_minutes: int
    ics_import_allow_loopback: bool
    function_key: str = field(repr=False)
    storage_connection_string: str = field(repr=False)
    storage_account_name: str
    table_service_uri: str
    queue_service_uri: str

    @property
    def verify(self) -> str | bool:
        """What to pass as ``verify=`` to httpx / MSAL: the extra CA bundle or the default store."""
        return self.ca_bundle or True

    @property
    def api_base(self) -> str:
        return self.service_base_url.rstrip("/") + "/api"

    def url(self, path: str) -> str:
        """Absolute public URL of one of our routes (``path`` without /api)."""
        return f"{self.api_base}/{path.lstrip('/')}"


def _parse_keys(raw: str) -> tuple[tuple[str, bytes], ...]:
    keys: list[tuple[str, bytes]] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        kid, sep, b64 = part.partition(":")
        if not sep or not kid:
            raise ValueError("each key must be 'keyid:base64'")
        try:
            key = base64.b64decode(b64, validate=True)
        except ValueError as exc:
            raise ValueError(f"key '{kid}' is not valid base64") from exc
        if len(key) != 32:
            raise ValueError(f"key '{kid}' must decode to 32 bytes, got {len(key)}")
        keys.append((kid, key))
    if not keys:
        raise ValueError("at least one key is needed")
    if len({k for k, _ in keys}) != len(keys):
        raise ValueError("key ids must be unique")
    return tuple(keys)


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _parse_url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ValueError("expected an http(s) URL")
    return raw.rstrip("/")


def _parse_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("expected a non-negative whole number")
    return value


_PARSERS: dict[str, Callable[[str], Any]] = {
    "str": lambda raw: raw,
    "int": _parse_int,
    "bool": _parse_bool,
    "url": _parse_url,
    "list": _parse_list,
    "keys": _parse_keys,
}

_EXPECTED = {
    "int": "a whole number",
    "bool": "true or false",
    "url": "an http(s) URL",
    "list": "a comma-separated list",
    "keys": "'keyid:base64(32 bytes)', comma-separated",
}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise one ConfigError naming all problems."""
    env = os.environ if env is None else env
    problems: list[str] = []
    values: dict[str, Any] = {}
    for spec in SETTINGS:
        raw = env.get(spec.name)
        if raw is None or (raw.strip() == "" and spec.required):
            if spec.required:
                problems.append(f"{spec.name}: missing — {spec.help}")
                continue
            raw = spec.default or ""
        if raw.strip().startswith("@Microsoft.KeyVault("):
            # App Service hands the reference through verbatim when it cannot resolve it (missing
            # role, wrong secret name): treating that text as the secret would fail much later.
            problems.append(f"{spec.name}: the Key Vault reference was not resolved — check the app's identity "
                            "has 'Key Vault Secrets User' and the secret exists")
            continue
        try:
            values[spec.name.lower()] = _PARSERS[spec.kind](raw.strip())
        except ValueError as exc:
            # Never echo the raw value: it may be a secret.
            expected = _EXPECTED.get(spec.kind, "a value")
            problems.append(f"{spec.name}: malformed ({exc}); expected {expected}")
    lifetime = values.get("subscription_lifetime_minutes")
    if isinstance(lifetime, int) and not 45 <= lifetime <= 4230:
        problems.append("SUBSCRIPTION_LIFETIME_MINUTES: must be between 45 and 4230 (Graph's limit for events)")
    conc = values.get("graph_max_concurrency")
    if isinstance(conc, int) and not 1 <= conc <= 4:
        problems.append("GRAPH_MAX_CONCURRENCY: must be between 1 and 4 (Graph allows 4 per mailbox)")
    if values.get("default_locale") not in (None, "de", "en"):
        problems.append("DEFAULT_LOCALE: expected de or en")
    problems.extend(https_problems(values))

    conn = env.get("AzureWebJobsStorage", "").strip()
    account = env.get("AzureWebJobsStorage__accountName", "").strip()
    table_uri = env.get("AzureWebJobsStorage__tableServiceUri", "").strip()
    queue_uri = env.get("AzureWebJobsStorage__queueServiceUri", "").strip()
    if not (conn or account or (table_uri and queue_uri)):
        problems.append(
            "AzureWebJobsStorage: missing — a connection string (locally: UseDevelopmentStorage=true or Azurite's), "
            "or AzureWebJobsStorage__accountName, or both AzureWebJobsStorage__tableServiceUri and "
            "AzureWebJobsStorage__queueServiceUri"
        )
    if problems:
        raise ConfigError(problems)
    return Settings(
        **values,
        storage_connection_string=conn,
        storage_account_name=account,
        table_service_uri=table_uri,
        queue_service_uri=queue_uri,
    )


#: Hosts of Microsoft Graph (global and national clouds). Any other GRAPH_BASE_URL is a stand-in:
#: sandbox mode.
MICROSOFT_GRAPH_HOSTS = frozenset({"graph.microsoft.com", "graph.microsoft.us", "dod-graph.microsoft.us",
                                   "microsoftgraph.chinacloudapi.cn"})
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def https_problems(values: Mapping[str, Any]) -> list[str]:
    """Graph accepts only https notification and lifecycle URLs, which derive from SERVICE_BASE_URL:
    against Microsoft Graph a plain-http base URL would make every subscription fail much later,
    so it is refused at start-up. Exempt: sandbox mode (GRAPH_BASE_URL is not Microsoft's) and a
    loopback address, which Graph cannot reach anyway (local runs and tests)."""
    base, graph = values.get("service_base_url"), values.get("graph_base_url")
    if not isinstance(base, str) or not isinstance(graph, str):
        return []
    parts, graph_host = urlsplit(base), (urlsplit(graph).hostname or "").lower()
    if parts.scheme == "https" or graph_host not in MICROSOFT_GRAPH_HOSTS:
        return []
    if (parts.hostname or "").lower() in _LOOPBACK_HOSTS:
        return []
    return ["SERVICE_BASE_URL: must be an https URL — Microsoft Graph sends change and lifecycle notifications "
            "only to https addresses (plain http is accepted only with a Graph stand-in or on a loopback address)"]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, loaded once. Tests call ``get_settings.cache_clear()``."""
    return load_settings()
