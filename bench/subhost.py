"""The local Functions host as a separate process (``python -m devtools.devhost``), for figures
that must not share the benchmark's interpreter: load on the webhook, cold starts.

The process gets the stack's app settings both as environment and as a settings file, listens on
its own port, and is ready when ``/admin/host/ping`` answers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from bench.report import ROOT


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class SubprocessHost:
    def __init__(self, *, app: str, env: Mapping[str, str], port: int, workdir: Path,
                 host_json: Path = ROOT / "host.json") -> None:
        self.app = app
        self.env = dict(env)
        self.port = port
        self.workdir = workdir
        self.host_json = host_json
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60.0) -> SubprocessHost:
        self.workdir.mkdir(parents=True, exist_ok=True)
        settings = self.workdir / "local.settings.json"
        settings.write_text(json.dumps({"IsEncrypted": False, "Values": self.env}), encoding="utf-8")
        settings.chmod(0o600)
        env = {**os.environ, **self.env}
        self.log_path = self.workdir / f"host-{self.port}.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "devtools.devhost", "--app", self.app, "--port", str(self.port),
                 "--settings", str(settings), "--host-json", str(self.host_json), "--log-level", "WARNING",
                 "--shutdown-timeout", "5"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the host process exited with {self.process.returncode}; see {self.log_path}")
                try:
                    if client.get(f"{self.base_url}/admin/host/ping").status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise TimeoutError(f"the host process did not answer within {timeout:.0f} s")
                time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: what a crashed instance looks like to everything else."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
