"""``python -m devtools.devhost`` as a developer runs it: settings file, real process, SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def test_cli_serves_the_app_with_local_settings_and_stops_on_sigterm(tmp_path: Path) -> None:
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": {
        "FUNCTION_KEY": "key-from-file", "MASTER_KEY": "master-from-file"}}), encoding="utf-8")
    env = {**os.environ, "FUNCTION_KEY": "key-from-env"}
    env.pop("MASTER_KEY", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.devhost", "--app", "tests.devhost.sample_app", "--port", "0",
         "--settings", str(settings), "--host-json", str(ROOT / "host.json")],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    output: list[str] = []
    found = threading.Event()
    base_url: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            output.append(line)
            match = re.search(r"Serving \d+ functions at (http://\S+):", line)
            if match:
                base_url.append(match.group(1))
                found.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert found.wait(30), "".join(output)
        url = base_url[0]
        assert httpx.get(f"{url}/api/hello/cli", timeout=10).text == "Hallo cli"
        # The environment wins over local.settings.json; settings the environment lacks are loaded.
        echo = f"{url}/api/echo"
        assert httpx.post(echo, headers={"x-functions-key": "key-from-env"}, timeout=10).status_code == 200
        assert httpx.post(echo, headers={"x-functions-key": "key-from-file"}, timeout=10).status_code == 401
        assert httpx.post(echo, headers={"x-functions-key": "master-from-file"}, timeout=10).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(5)
    text = "".join(output)
    assert "Host stopped" in text
    assert "key-from-env" not in text and "master-from-file" not in text


def test_cli_reports_configuration_errors_briefly(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "devtools.devhost", "--app", "tests.devhost.no_such_module",
                             "--settings", str(tmp_path / "none.json")], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "devhost: error: cannot import app module 'tests.devhost.no_such_module'" in result.stderr
