"""One stack for the whole package, and helpers that speak to it the way an attacker (or timum) would.

The local host is started with a request-body limit far above 1 MiB, so the limit the tests see is
the app's own, not the host's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devtools.stack import Stack, running_stack

HOST_BODY_LIMIT = 8 * 1024 * 1024
ANNA = "anna.weber@praxis-sonnenschein.example"


@pytest.fixture(scope="package")
def stack() -> Iterator[Stack]:
    with running_stack(seed_demo=True, extra_env={"FUNCTIONS_REQUEST_BODY_SIZE_LIMIT": str(HOST_BODY_LIMIT)}) as up:
        yield up


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with stack.http(follow_redirects=False, timeout=30.0) as http:
        yield http


def links_api(stack: Stack, client: httpx.Client, method: str, path: str, *, provider: str,
              body: bytes = b"", content_type: str | None = None) -> httpx.Response:
    """A request to timum's management API as timum sends it: function key, provider, signature."""
    import time

    from shared.connect.links_api import sign_api_request

    url = stack.api_url(path)
    headers: dict[str, Any] = sign_api_request(method, url, provider, body, stack.settings.timum_webhook_secrets,
                                               timestamp=int(time.time()))
    headers["x-functions-key"] = stack.env["FUNCTION_KEY"]
    if content_type:
        headers["Content-Type"] = content_type
    return client.request(method, url, content=body, headers=headers)


def signed_booking(stack: Stack, booking: dict[str, Any], *, delivery: str = "dlv-1") -> tuple[bytes, dict[str, str]]:
    """A booking webhook body and its valid ``Timum-Signature`` header."""
    import time

    from shared.signing import SIGNATURE_HEADER, sign_webhook

    body = json.dumps({"id": delivery, "type": "booking.created", "occurredAt": "2030-01-01T09:00:00Z",
                       "data": {"booking": booking}}).encode()
    header = sign_webhook(body, stack.settings.timum_webhook_secrets, timestamp=int(time.time()))
    return body, {SIGNATURE_HEADER: header, "Content-Type": "application/json"}
