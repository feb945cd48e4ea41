"""Settings of one sandbox instance. The same secrets as the service's local settings, so the
stand-ins accept the service's credentials and sign what timum would sign."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SandboxConfig:
    #: HTTPS listener: identity platform (/{tenant}/oauth2/v2.0/…) and Graph (/v1.0/…)
    https_port: int = 7443
    #: HTTP listener: timum API (/timum/v1/…), timum UI (/timum/…), sandbox Outlook UI (/outlook/…),
    #: control API (/_sandbox/…), published ICS calendars
    http_port: int = 7080
    host: str = "127.0.0.1"
    #: where the service under test listens (webhook targets are derived from it)
    service_base_url: str = "http://127.0.0.1:7071"
    client_id: str = "00000000-0000-4000-8000-00000000a11d"
    client_secret: str = "sandbox-client-secret"
    timum_api_key: str = "sandbox-timum-api-key"
    #: booking webhooks to the service are signed with the first; link-status webhooks verify with all
    timum_webhook_secrets: tuple[str, ...] = ("sandbox-webhook-secret",)
    #: function key the sandbox timum sends to the service's timum API (the conflict check)
    service_function_key: str = "local-function-key"
    #: connect links produced by the sandbox timum are signed with the first
    timum_connect_secrets: tuple[str, ...] = ("sandbox-connect-secret",)
    #: CA and server certificate are written here (the service's CA_BUNDLE points at ca.pem)
    state_dir: Path = field(default_factory=lambda: Path(".run/sandbox"))
    #: seed a demo tenant, users, calendars and a timum practice on start
    seed_demo: bool = True

    @property
    def https_base(self) -> str:
        return f"https://{self.host}:{self.https_port}"

    @property
    def http_base(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def graph_base_url(self) -> str:
        return f"{self.https_base}/v1.0"

    @property
    def timum_api_base_url(self) -> str:
        return f"{self.http_base}/timum"

    @property
    def ca_path(self) -> Path:
        return self.state_dir / "ca.pem"

    @property
    def redirect_uris(self) -> list[str]:
        base = self.service_base_url.rstrip("/")
        return [f"{base}/api/oauth/callback", f"{base}/api/oauth/admin-callback"]
