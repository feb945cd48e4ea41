"""``python -m devtools.sandbox``: run the sandbox in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from devtools.sandbox.config import SandboxConfig
from devtools.sandbox.server import start_in_thread


def main(argv: list[str] | None = None) -> int:
    defaults = SandboxConfig()
    parser = argparse.ArgumentParser(prog="python -m devtools.sandbox",
                                     description="Offline stand-ins for Microsoft identity, Microsoft Graph and timum.")
    parser.add_argument("--https-port", type=int, default=defaults.https_port,
                        help="identity platform and Graph (default %(default)s; 0 picks a free port)")
    parser.add_argument("--http-port", type=int, default=defaults.http_port,
                        help="timum, sandbox Outlook, controls (default %(default)s; 0 picks a free port)")
    parser.add_argument("--host", default=defaults.host, help="interface to listen on (default %(default)s)")
    parser.add_argument("--service-base-url", default=defaults.service_base_url,
                        help="where the service under test listens (default %(default)s)")
    parser.add_argument("--service-function-key",
                        default=os.environ.get("FUNCTION_KEY") or defaults.service_function_key,
                        help="the service's FUNCTION_KEY, for the sandbox timum's management calls "
                             "(default: $FUNCTION_KEY, else the one of local.settings.json.example)")
    parser.add_argument("--state-dir", type=Path, default=defaults.state_dir,
                        help="CA and server certificate live here (default %(default)s)")
    parser.add_argument("--no-seed", action="store_true", help="start without demo tenants, users and data")
    parser.add_argument("--without-graph", action="store_true", help="do not start the Graph stand-in")
    parser.add_argument("--without-timum", action="store_true", help="do not start the timum stand-in")
    parser.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)

    config = SandboxConfig(https_port=args.https_port, http_port=args.http_port, host=args.host,
                           service_base_url=args.service_base_url, state_dir=args.state_dir,
                           service_function_key=args.service_function_key,
                           seed_demo=not args.no_seed)
    try:
        running = start_in_thread(config, with_graph=not args.without_graph, with_timum=not args.without_timum,
                                  log_level=args.log_level)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"Sandbox            {config.http_base}/")
    print(f"  identity         {config.https_base}/{{tenant}}/oauth2/v2.0/…   (authority host {config.https_base})")
    if running.graph is not None:
        print(f"  Microsoft Graph  {config.graph_base_url}")
        print(f"  sandbox Outlook  {config.http_base}/outlook/")
    if running.timum is not None:
        print(f"  timum API        {config.timum_api_base_url}/v1/   pages {config.http_base}/timum/")
    print(f"  controls         {config.http_base}/_sandbox/identity/")
    print(f"  request log      {config.http_base}/_sandbox/requests/page")
    print(f"  CA certificate   {running.ca_path}")
    for tenant in running.directory.tenants.values():
        print(f"  tenant           {tenant.name} ({tenant.domain}, {tenant.id})")
    print("Ctrl-C stops.", flush=True)
    try:
        while not stop.is_set() and not running.stopped.is_set():
            stop.wait(0.5)
    finally:
        running.stop()
    return 0 if stop.is_set() else 1


if __name__ == "__main__":
    raise SystemExit(main())
