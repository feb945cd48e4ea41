"""Python client of the sandbox's control API (``/_sandbox/…`` on the HTTP listener).

Synchronous on purpose: tests and scripts call it between steps, and the sandbox runs in its
own thread or process, so blocking the caller briefly is harmless. Graph and timum controls
extend it by subclassing and using :meth:`SandboxControl.request`.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx


class ControlError(Exception):
    """The control API refused a request (bad input → 400, unknown tenant/user → 404)."""

    def __init__(self, status: int, payload: Any) -> None:
        message = payload.get("message") if isinstance(payload, dict) else str(payload)
        super().__init__(f"{status}: {message}")
        self.status = status
        self.payload = payload


class SandboxControl:
    def __init__(self, http_base: str, *, client: httpx.Client | None = None, timeout: float = 10.0) -> None:
        self.http_base = http_base.rstrip("/")
        self._own_client = client is None
        self._client = client or httpx.Client(timeout=timeout)

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def __enter__(self) -> SandboxControl:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        response = self._client.request(method, f"{self.http_base}{path}", json=json, params=params)
        try:
            payload = response.json()
        except ValueError:
            payload = response.text
        if response.status_code >= 400:
            raise ControlError(response.status_code, payload)
        return payload

    # --- request log -----------------------------------------------------------------------
    def requests(self, *, service: str | None = None, since: int | float | str | None = None,
                 mailbox: str | None = None, limit: int | None = None) -> dict[str, Any]:
        """``{"last_seq", "count", "entries"}``; pass the ``last_seq`` of an earlier answer as ``since``."""
        params = {k: v for k, v in {"service": service, "since": since, "mailbox": mailbox, "limit": limit}.items()
                  if v is not None}
        result: dict[str, Any] = self.request("GET", "/_sandbox/requests", params=params)
        return result

    def count_requests(self, *, service: str | None = None, since: int | None = None) -> int:
        return int(self.requests(service=service, since=since)["count"])

    def clear_requests(self) -> None:
        self.request("DELETE", "/_sandbox/requests")

    # --- identity --------------------------------------------------------------------------
    def identity_state(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/_sandbox/identity/state")
        return result

    def add_tenant(self, name: str, domain: str, *, user_consent_allowed: bool = True,
                   tenant_id: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/_sandbox/identity/tenants", json={
            "name": name, "domain": domain, "user_consent_allowed": user_consent_allowed, "id": tenant_id})
        return result

    def add_user(self, tenant: str, display_name: str, local_part: str, *, is_admin: bool = False,
                 user_id: str | None = None, time_zone: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/_sandbox/identity/users", json={
            "tenant": tenant, "display_name": display_name, "local_part": local_part, "is_admin": is_admin,
            "id": user_id, "time_zone": time_zone})
        return result

    def set_user_consent_allowed(self, tenant: str, allowed: bool) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/_sandbox/identity/tenants/{_seg(tenant)}/user-consent",
                                              json={"allowed": allowed})
        return result

    def set_admin_consent(self, tenant: str, granted: bool = True, *, client_id: str | None = None
                          ) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/_sandbox/identity/tenants/{_seg(tenant)}/admin-consent",
                                              json={"granted": granted, "client_id": client_id})
        return result

    def set_application_consent(self, tenant: str, roles: list[str] | None, *,
                                client_id: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/_sandbox/identity/tenants/{_seg(tenant)}/application-consent",
            json={"roles": roles, "client_id": client_id})
        return result

    def set_app_mailbox_scope(self, tenant: str, mailboxes: list[str] | None, *,
                              client_id: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/_sandbox/identity/tenants/{_seg(tenant)}/app-scope",
                                              json={"mailboxes": mailboxes, "client_id": client_id})
        return result

    def delete_app(self, tenant: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/_sandbox/identity/tenants/{_seg(tenant)}/delete-app",
                                              json={})
        return result

    def add_resource_mailbox(self, tenant: str, display_name: str, local_part: str, *,
                             kind: str = "room") -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/_sandbox/identity/resource-mailboxes", json={
            "tenant": tenant, "display_name": display_name, "local_part": local_part, "kind": kind})
        return result

    def set_user_consent(self, user: str, granted: bool, *, client_id: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/_sandbox/identity/users/{_seg(user)}/consent",
                                              json={"granted": granted, "client_id": client_id})
        return result

    def set_account_enabled(self, user: str, enabled: bool) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/_sandbox/identity/users/{_seg(user)}/enabled",
                                              json={"enabled": enabled})
        return result

    def revoke_refresh_tokens(self, user: str, *, reason: str = "revoked") -> int:
        """``reason``: "revoked" (AADSTS700082) or "password_changed" (AADSTS50173)."""
        return int(self.request("POST", f"/_sandbox/identity/users/{_seg(user)}/revoke-refresh-tokens",
                                json={"reason": reason})["revoked"])

    def expire_access_tokens(self, user: str | None = None) -> int:
        return int(self.request("POST", "/_sandbox/identity/access-tokens/expire", json={"user": user})["expired"])

    def set_access_token_lifetime(self, seconds: float | None) -> float:
        return float(self.request("POST", "/_sandbox/identity/access-tokens/lifetime",
                                  json={"seconds": seconds})["access_token_lifetime"])

    def sign_out(self, user: str | None = None) -> int:
        return int(self.request("POST", "/_sandbox/identity/sessions/sign-out", json={"user": user})["signed_out"])


def _seg(value: str) -> str:
    return quote(value, safe="@")
