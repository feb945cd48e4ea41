"""The benchmark scenarios. Each module has ``run_scenario(ctx) -> Output``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bench.report import Figure


@dataclass
class Context:
    quick: bool
    runs: int
    log: Callable[[str], None]


@dataclass
class Output:
    figures: list[Figure]
    notes: list[str] = field(default_factory=list)
