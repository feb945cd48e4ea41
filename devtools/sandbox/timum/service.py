"""The sandbox timum's client of the service's management API (``/api/providers/{provider}/…``), as
real timum calls it: function key plus the provider-scoped signature of ``shared.connect.links_api``.

The pages use it for everything the service decides — link state, unlinking, resync, ICS feed and
import, provider settings — so the sandbox timum never shows a state the service did not report.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

import httpx

from devtools.sandbox.config import SandboxConfig
from shared.connect.links_api import sign_api_request

#: a service that is down refuses at once; this only bounds a slow one (a loaded local host)
TIMEOUT = 10.0
MAX_DETAIL = 300


class ServiceError(Exception):
    """The service refused a call (``status`` and its problem ``code``) or could not be reached
    (``status`` 0). ``detail`` is the service's own explanation, shortened."""

    def __init__(self, status: int, code: str, detail: str, field: str = "") -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail, self.field = status, code, detail, field


class ServiceClient:
    """One call per method; each returns the service's JSON (or ``None`` for 204).

    Reads the config at each call: the sandbox may be pointed at another service after start."""

    def __init__(self, config: SandboxConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self._transport = transport

    async def _call(self, method: str, provider: str, path: str, *, body: Any = None,
                    query: str = "") -> Any:
        route = f"/api/providers/{quote(provider, safe='')}{path}" + (f"?{query}" if query else "")
        raw = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = sign_api_request(method, route, provider, raw, self.config.timum_webhook_secrets[:1],
                                   timestamp=int(time.time()))
        headers["x-functions-key"] = self.config.service_function_key
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT, transport=self._transport) as client:
                response = await client.request(method, self.config.service_base_url.rstrip("/") + route, content=raw,
                                                headers=headers)
        except httpx.HTTPError as exc:
            raise ServiceError(0, "unreachable", type(exc).__name__) from None
        if response.status_code == 204:
            return None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            problem = data if isinstance(data, dict) else {}
            raise ServiceError(response.status_code, str(problem.get("code") or "error"),
                               str(problem.get("detail") or problem.get("title") or "")[:MAX_DETAIL],
                               str(problem.get("field") or ""))
        return data

    @staticmethod
    def _res(resource: str) -> str:
        return "/links/" + quote(resource, safe="")

    async def list_links(self, provider: str) -> list[dict[str, Any]]:
        data = await self._call("GET", provider, "/links")
        links = data.get("links") if isinstance(data, dict) else None
        return [lk for lk in links if isinstance(lk, dict)] if isinstance(links, list) else []

    async def unlink(self, provider: str, resource: str, *, delete_outlook_events: bool) -> None:
        await self._call("DELETE", provider, self._res(resource),
                         query="deleteOutlookEvents=true" if delete_outlook_events else "")

    async def resync(self, provider: str, resource: str) -> None:
        await self._call("POST", provider, self._res(resource) + "/resync")

    async def issue_feed(self, provider: str, resource: str) -> dict[str, Any]:
        data = await self._call("POST", provider, self._res(resource) + "/ics-feed")
        return data if isinstance(data, dict) else {}

    async def revoke_feed(self, provider: str, resource: str) -> bool:
        """False when the resource had no feed."""
        try:
            await self._call("DELETE", provider, self._res(resource) + "/ics-feed")
        except ServiceError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def ics_import(self, provider: str, resource: str, url: str) -> dict[str, Any]:
        data = await self._call("POST", provider, self._res(resource) + "/ics-import", body={"url": url})
        return data if isinstance(data, dict) else {}

    async def get_settings(self, provider: str) -> dict[str, Any]:
        data = await self._call("GET", provider, "/settings")
        return data if isinstance(data, dict) else {}

    async def put_settings(self, provider: str, values: dict[str, Any]) -> dict[str, Any]:
        data = await self._call("PUT", provider, "/settings", body=values)
        return data if isinstance(data, dict) else {}
