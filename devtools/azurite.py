"""Start and stop Azurite (the real local Table/Queue storage) from the project's node_modules."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft; not a secret).
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connection_string(blob: int, queue: int, table: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={DEV_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{blob}/{ACCOUNT};"
        f"QueueEndpoint=http://127.0.0.1:{queue}/{ACCOUNT};"
        f"TableEndpoint=http://127.0.0.1:{table}/{ACCOUNT};"
    )


def _binary() -> str:
    local = ROOT / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    found = shutil.which("azurite")
    if not found:
        raise RuntimeError("Azurite is not installed: run `npm install` in the project (make setup does this)")
    return found


@dataclass
class Azurite:
    process: subprocess.Popen[bytes]
    blob_port: int
    queue_port: int
    table_port: int
    workdir: str
    keep: bool = False

    @property
    def connection_string(self) -> str:
        return connection_string(self.blob_port, self.queue_port, self.table_port)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def start(*, blob_port: int | None = None, queue_port: int | None = None, table_port: int | None = None,
          in_memory: bool = True, location: Path | None = None, log: Path | None = None,
          timeout: float = 30.0) -> Azurite:
    """Start Azurite. ``in_memory`` for tests; ``location`` keeps data across runs (make run)."""
    ports = (blob_port or free_port(), queue_port or free_port(), table_port or free_port())
    for port in ports:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                raise RuntimeError(f"port {port} is already in use (another Azurite?); stop it or pick other ports")
    if location is not None:
        location.mkdir(parents=True, exist_ok=True)
        workdir = str(location)
        in_memory = False
    else:
        workdir = tempfile.mkdtemp(prefix="azurite-")
    args = [_binary(), "--silent", "--disableTelemetry", "--skipApiVersionCheck", "--loose",
            "--blobHost", "127.0.0.1", "--blobPort", str(ports[0]),
            "--queueHost", "127.0.0.1", "--queuePort", str(ports[1]),
            "--tableHost", "127.0.0.1", "--tablePort", str(ports[2])]
    # In-memory persistence and --location exclude each other.
    args += ["--inMemoryPersistence"] if in_memory else ["--location", workdir]
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ},
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Azurite exited early with code {proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    proc.kill()
                    raise RuntimeError("Azurite did not start in time") from None
                time.sleep(0.1)
    return Azurite(proc, *ports, workdir=workdir, keep=location is not None)
