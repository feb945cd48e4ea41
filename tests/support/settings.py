"""The one settings factory of the tests: every required setting with a harmless value, overridden
per call. Packages pass only what they care about (their URLs, secrets, page sizes)."""

from __future__ import annotations

import base64

from shared.config import Settings, load_settings

#: Every required setting, valid and inert: nothing here reaches a real service.
BASE_ENV: dict[str, str] = {
    "SERVICE_BASE_URL": "http://127.0.0.1:7071",
    "ENTRA_CLIENT_ID": "c",
    "ENTRA_CLIENT_SECRET": "s",
    "TOKEN_ENCRYPTION_KEYS": "k1:" + base64.b64encode(b"k" * 32).decode(),
    "TIMUM_API_BASE_URL": "http://t",
    "TIMUM_API_KEY": "key",
    "TIMUM_WEBHOOK_SECRETS": "old-secret,new-secret",
    "TIMUM_CONNECT_SECRETS": "c",
    "TIMUM_RETURN_URL_ALLOWLIST": "http://t/",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
}


def make_settings(**overrides: str) -> Settings:
    """``Settings`` from ``BASE_ENV`` with ``overrides`` (setting names as keys)."""
    return load_settings({**BASE_ENV, **overrides})
