"""``make run``: Azurite + the sandbox (Microsoft identity, Graph, timum) + the function app.

Creates ``local.settings.json`` from the example on first run (with a freshly generated
token-encryption key), starts everything, prints where to click, and stops it all cleanly
on Ctrl-C. ``--no-sandbox`` runs against whatever local.settings.json points at.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from devtools import azurite, jsonc

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"


def ensure_local_settings(path: Path, example: Path) -> None:
    """Create local.settings.json from the example, filling in a fresh encryption key."""
    if path.exists():
        return
    text = example.read_text(encoding="utf-8")
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    text = re.sub(r'"TOKEN_ENCRYPTION_KEYS": ""', f'"TOKEN_ENCRYPTION_KEYS": "local1:{key}"', text)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    print(f"created {path.name} from the example (sandbox mode, new encryption key)")


def load_values(path: Path) -> dict[str, str]:
    data: dict[str, Any] = jsonc.loads(path.read_text(encoding="utf-8"))
    values = data.get("Values") or {}
    return {k: str(v) for k, v in values.items()}


def _sandbox_config(values: dict[str, str]) -> Any:
    from devtools.sandbox.config import SandboxConfig

    def first(name: str) -> str:
        return values.get(name, "").split(",")[0].strip()

    return SandboxConfig(
        service_base_url=values.get("SERVICE_BASE_URL", "http://127.0.0.1:7071"),
        client_id=values.get("ENTRA_CLIENT_ID", SandboxConfig.client_id),
        client_secret=values.get("ENTRA_CLIENT_SECRET", SandboxConfig.client_secret),
        timum_api_key=values.get("TIMUM_API_KEY", SandboxConfig.timum_api_key),
        timum_webhook_secrets=tuple(s.strip() for s in values.get("TIMUM_WEBHOOK_SECRETS", "").split(",")
                                    if s.strip()) or SandboxConfig.timum_webhook_secrets,
        timum_connect_secrets=(first("TIMUM_CONNECT_SECRETS"),) if first("TIMUM_CONNECT_SECRETS")
        else SandboxConfig.timum_connect_secrets,
        service_function_key=values.get("FUNCTION_KEY", SandboxConfig.service_function_key),
        state_dir=RUN_DIR / "sandbox",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-sandbox", action="store_true", help="do not start the sandbox")
    parser.add_argument("--port", type=int, default=7071, help="port of the function app")
    parser.add_argument("--settings", default=str(ROOT / "local.settings.json"))
    args = parser.parse_args(argv)

    os.chdir(ROOT)
    settings_path = Path(args.settings)
    ensure_local_settings(settings_path, ROOT / "local.settings.json.example")
    values = load_values(settings_path)
    for key, value in values.items():
        os.environ.setdefault(key, value)

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    started: list[Any] = []
    try:
        # The sandbox keeps its tenants, calendars and timum in memory and seeds them afresh on
        # each start, so the service's storage starts afresh with it: kept across restarts, its
        # links would name calendars and resources that no longer exist. Against a real tenant
        # (--no-sandbox) the storage is kept in .run/azurite.
        keep = RUN_DIR / "azurite" if args.no_sandbox else None
        store = azurite.start(blob_port=10000, queue_port=10001, table_port=10002,
                              location=keep, log=RUN_DIR / "azurite.log")
        started.append(store)
        print(f"Azurite          http://127.0.0.1:{store.table_port} (tables), :{store.queue_port} (queues)")

        if not args.no_sandbox:
            from devtools.sandbox.server import start_in_thread

            sandbox = start_in_thread(_sandbox_config(values))
            started.append(sandbox)
            print(f"Sandbox          {sandbox.config.http_base}/  (timum: /timum/, Outlook: /outlook/)")
            print(f"  identity+Graph {sandbox.config.https_base}  (self-signed CA: {sandbox.config.ca_path})")

        from shared.config import load_settings

        load_settings()  # one clear message listing every missing or malformed setting
        from devtools.devhost import run_in_thread
        from shared.wiring import close_clients

        host = run_in_thread("function_app", port=args.port, host_json=str(ROOT / "host.json"),
                             after_stop=close_clients)
        started.append(host)
        print(f"Function app     {host.base_url}/api/health")
        print(json.dumps({"ready": True}), flush=True)
        print("Press Ctrl-C to stop.")
        stop.wait()
    except Exception as exc:  # one readable line for a newcomer, then clean up
        print(f"make run failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for thing in reversed(started):
            try:
                thing.stop()
            except Exception as exc:  # keep stopping the rest
                print(f"while stopping: {exc}", file=sys.stderr)
        print("stopped.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
