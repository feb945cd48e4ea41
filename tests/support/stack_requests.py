"""Requests to a running stack as timum (or an attacker posing as timum) sends them: the
management API with function key, provider and signature, and signed booking webhooks. Fixtures:
``tests/security/conftest.py``."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from devtools.stack import Stack
from shared.connect.links_api import sign_api_request
from shared.signing import SIGNATURE_HEADER, sign_webhook

#: far above the app's own 1 MiB, so the limit the tests see is the app's, not the host's
HOST_BODY_LIMIT = 8 * 1024 * 1024
ANNA = "anna.weber@praxis-sonnenschein.example"


def links_api(stack: Stack, client: httpx.Client, method: str, path: str, *, provider: str,
              body: bytes = b"", content_type: str | None = None) -> httpx.Response:
    """A request to timum's management API as timum sends it: function key, provider, signature."""
    url = stack.api_url(path)
    headers: dict[str, Any] = sign_api_request(method, url, provider, body, stack.settings.timum_webhook_secrets,
                                               timestamp=int(time.time()))
    headers["x-functions-key"] = stack.env["FUNCTION_KEY"]
    if content_type:
        headers["Content-Type"] = content_type
    return client.request(method, url, content=body, headers=headers)


def signed_booking(stack: Stack, booking: dict[str, Any], *, delivery: str = "dlv-1") -> tuple[bytes, dict[str, str]]:
    """A booking webhook body and its valid ``Timum-Signature`` header."""
    body = json.dumps({"id": delivery, "type": "booking.created", "occurredAt": "2030-01-01T09:00:00Z",
                       "data": {"booking": booking}}).encode()
    header = sign_webhook(body, stack.settings.timum_webhook_secrets, timestamp=int(time.time()))
    return body, {SIGNATURE_HEADER: header, "Content-Type": "application/json"}
