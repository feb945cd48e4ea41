"""``python -m devtools.devhost``: serve function_app.py locally, like ``func start``.

Values from local.settings.json become environment variables unless already set (the
environment wins, so CI and shells can override). Ctrl-C or SIGTERM stops gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from devtools.devhost.config import DevHostError, apply_settings, read_local_settings
from devtools.devhost.host import DevHost

log = logging.getLogger("devtools.devhost")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devtools.devhost",
                                     description="Serve an Azure Functions (Python v2) app locally.")
    parser.add_argument("--app", default="function_app",
                        help="module (or module:attribute) holding the func.FunctionApp (default: function_app)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None,
                        help="port (default: Host.LocalHttpPort from local.settings.json, else 7071)")
    parser.add_argument("--settings", default="local.settings.json", help="local settings file")
    parser.add_argument("--host-json", default="host.json", help="host.json path")
    parser.add_argument("--max-body-bytes", type=int, default=None, help="request body limit (default 1 MiB)")
    parser.add_argument("--shutdown-timeout", type=float, default=10.0,
                        help="seconds running invocations get to finish on shutdown (default 10)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


async def _serve(host: DevHost) -> None:
    await host.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("Stopping: waiting for running invocations")
        await host.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The SDK logs every request at INFO; that drowns the invocation lines.
    logging.getLogger("azure").setLevel(logging.WARNING)
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        settings = read_local_settings(args.settings)
        applied = apply_settings(settings.values, os.environ)
        if applied:
            log.info("Loaded %d settings from %s", len(applied), args.settings)
        port = args.port if args.port is not None else settings.local_http_port or 7071
        host_json = args.host_json if Path(args.host_json).exists() else None
        if host_json is None:
            log.warning("%s not found: using the host's defaults", args.host_json)
        host = DevHost(args.app, host=args.host, port=port, host_json=host_json,
                       max_body_bytes=args.max_body_bytes, shutdown_timeout=args.shutdown_timeout)
        asyncio.run(_serve(host))
    except DevHostError as exc:
        print(f"devhost: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
