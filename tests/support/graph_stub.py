"""A scripted Graph behind ``httpx.MockTransport``: the real adapter and msgraph-sdk run unpatched,
only the network is replaced (the HTTP client is the seam). Fixtures: ``tests/adapters/conftest.py``."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from azure.core.credentials import AccessToken

from shared.adapters.graph_sdk import GraphSdkAdapter

BASE_URL = "https://graph.test/v1.0"
#: Distinctive so a test can prove it never leaks into an error message.
ACCESS_TOKEN = "eyJ0eXAi.unit-test-access-token.Zq7Xw"

Responder = httpx.Response | dict[str, Any] | Callable[[httpx.Request], "httpx.Response | Awaitable[httpx.Response]"]


class StaticCredential:
    """An async token credential with a fixed token; ``error`` makes ``get_token`` raise it."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.calls: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                        enable_cae: bool = False, **kwargs: Any) -> AccessToken:
        self.calls.append(scopes)
        if self.error is not None:
            raise self.error
        return AccessToken(ACCESS_TOKEN, int(time.time()) + 3600)

    async def close(self) -> None:
        return None


class GraphStub:
    """Routes requests by method and path regex to scripted answers, and records every request.

    A route answers with a Response, a JSON dict (200), a callable, or a list of those used in turn
    (the last one repeats).
    """

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self._routes: list[tuple[str, re.Pattern[str], list[Responder]]] = []

    def on(self, method: str, path: str, *answers: Responder) -> None:
        self._routes.insert(0, (method.upper(), re.compile(path), list(answers)))

    def calls(self, method: str, path: str) -> list[httpx.Request]:
        pattern = re.compile(path)
        return [r for r in self.requests if r.method == method.upper() and pattern.search(r.url.path)]

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        for method, pattern, answers in self._routes:
            if method == request.method and pattern.search(request.url.path):
                answer = answers.pop(0) if len(answers) > 1 else answers[0]
                if isinstance(answer, httpx.Response):
                    return answer
                if isinstance(answer, dict):
                    return httpx.Response(200, json=answer)
                result = answer(request)
                if not isinstance(result, httpx.Response):
                    result = await result
                return result
        return error(404, "ErrorItemNotFound", f"no route for {request.method} {request.url.path}")


def error(status: int, code: str, message: str = "failed", headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, json={"error": {"code": code, "message": message}})


def body(request: httpx.Request) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(request.content)
    return data


def prefer(request: httpx.Request) -> set[str]:
    """The preferences of a request, however the client joined them."""
    values: set[str] = set()
    for header in request.headers.get_list("prefer"):
        values.update(part.strip() for part in header.split(",") if part.strip())
    return values



def stub_adapter(network: Callable[[httpx.Request], Any], credential: Any = None, *, base_url: str = BASE_URL,
                 **options: Any) -> GraphSdkAdapter:
    """The real adapter whose every request ``network`` answers (a ``GraphStub`` or a plain
    handler); the credential is a ``StaticCredential`` unless one is given."""
    return GraphSdkAdapter(credential if credential is not None else StaticCredential(), base_url=base_url,
                           verify=True, http_client=httpx.AsyncClient(transport=httpx.MockTransport(network)),
                           **options)
