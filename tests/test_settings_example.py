"""README's claim: every setting the app reads (``shared.config.SETTINGS``) is in
local.settings.json.example, so a newcomer's first run names them all."""

from __future__ import annotations

import re
from pathlib import Path

from shared.config import SETTINGS

EXAMPLE = Path(__file__).resolve().parent.parent / "local.settings.json.example"


def test_every_setting_is_in_the_example() -> None:
    keys = set(re.findall(r'^\s*"([A-Za-z_][A-Za-z0-9_]*)"\s*:', EXAMPLE.read_text(encoding="utf-8"), re.M))
    missing = sorted(spec.name for spec in SETTINGS if spec.name not in keys)
    assert not missing, f"settings missing from local.settings.json.example: {missing}"
