"""Figures, their statistics and the report: the console table and ``bench/results.md``.

A scenario returns ``Figure`` objects, each holding one sample per run (a run's own p50 or p95,
a count, a duration). The report gives the median and the p95 *over runs* of every figure,
compares the median with the target, and for a missed target prints the scenario's own
explanation of why and what would close the gap. Baselines that are documented or modelled,
not measured, say so in their ``source``.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(ordered[low])
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def median(values: Sequence[float]) -> float:
    return percentile(values, 50.0)


@dataclass
class Target:
    """``value`` with ``op`` ("<=" or ">="): met when the figure's median satisfies it."""

    op: str
    value: float

    def met(self, measured: float) -> bool:
        if math.isnan(measured):
            return False
        return measured <= self.value if self.op == "<=" else measured >= self.value

    def text(self, unit: str) -> str:
        sign = "≤" if self.op == "<=" else "≥"
        return f"{sign} {fmt(self.value)} {unit}".rstrip()


@dataclass
class Figure:
    scenario: str
    name: str
    unit: str
    samples: list[float] = field(default_factory=list)
    target: Target | None = None
    #: measured | baseline (modelled or documented: ``source`` says which)
    kind: str = "measured"
    source: str = ""
    #: why a missed target was missed and what would close it (filled by the scenario)
    miss_reason: str = ""
    #: how the figure was taken, shown under the table
    method: str = ""

    @property
    def median(self) -> float:
        return median(self.samples)

    @property
    def p95(self) -> float:
        return percentile(self.samples, 95.0)

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.median)


def fmt(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "—"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


@dataclass
class Machine:
    cores: int
    cpu: str
    ram_gib: float
    python: str
    system: str
    load: str = ""

    def text(self) -> str:
        return (f"{self.cores} cores ({self.cpu}), {self.ram_gib:.1f} GiB RAM, Python {self.python}, "
                f"{self.system}" + (f"; load average at the end {self.load}" if self.load else ""))


def machine() -> Machine:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = 0.0
    with contextlib.suppress(ValueError, OSError, AttributeError):
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ""
    with contextlib.suppress(OSError, AttributeError):
        load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    return Machine(cores=os.cpu_count() or 1, cpu=cpu or "unknown CPU", ram_gib=ram,
                   python=platform.python_version(), system=f"{platform.system()} {platform.release()}", load=load)


def git_commit() -> str:
    """Commit of the checkout, with ``+dirty`` when tracked files differ from it."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}+dirty" if dirty else sha


@dataclass
class ScenarioResult:
    key: str
    title: str
    figures: list[Figure]
    seconds: float
    notes: list[str] = field(default_factory=list)
    error: str = ""


def _met_text(figure: Figure) -> str:
    if figure.kind != "measured":
        return "baseline"
    if figure.met is None:
        return "—"
    return "met" if figure.met else "**missed**"


def table_rows(results: Iterable[ScenarioResult]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for result in results:
        for fig in result.figures:
            label = fig.name if fig.kind == "measured" else f"{fig.name} ({fig.source})"
            rows.append((result.key, label, f"{fmt(fig.median)} {fig.unit}".strip(),
                         f"{fmt(fig.p95)} {fig.unit}".strip(), str(len(fig.samples)),
                         fig.target.text(fig.unit) if fig.target else "—", _met_text(fig)))
    return rows


HEADER = ("#", "figure", "median", "p95 over runs", "runs", "target", "met")


def console_table(results: Sequence[ScenarioResult]) -> str:
    rows = [HEADER, *table_rows(results)]
    plain = [tuple(cell.replace("**", "") for cell in row) for row in rows]
    widths = [max(len(row[i]) for row in plain) for i in range(len(HEADER))]
    lines = []
    for n, row in enumerate(plain):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    for result in results:
        if result.error:
            lines.append(f"{result.key}: FAILED — {result.error}")
    return "\n".join(lines)


def markdown(results: Sequence[ScenarioResult], *, quick: bool, runs: int, started: datetime,
             elapsed: float, command: str) -> str:
    m = machine()
    out = [
        "# Benchmark results",
        "",
        f"Written by `{command}` — do not edit by hand.",
        "",
        f"* Date: {started.astimezone(UTC).strftime('%Y-%m-%d %H:%M UTC')} (took {elapsed / 60:.1f} min)",
        f"* Commit: `{git_commit()}`",
        f"* Machine: {m.text()}",
        f"* Mode: {'quick (small sizes)' if quick else 'full'}; {runs} runs per scenario unless a figure says "
        "otherwise. *Median* and *p95* are taken over the runs; a figure that is itself a percentile (p50/p95/p99 "
        "latency) is that percentile within one run.",
        "* The local stack: Azurite, the sandbox (identity platform, Graph and timum stand-ins) and the local "
        "Functions host serving the real `function_app`, all on this machine. Baselines marked *documented* or "
        "*model* are not measured here.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" for _ in HEADER) + "|",
    ]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table_rows(results)]
    misses = [(r, f) for r in results for f in r.figures if f.kind == "measured" and f.met is False]
    out += ["", "## Missed targets", ""]
    if not misses:
        out.append("None.")
    for result, fig in misses:
        reason = fig.miss_reason or "No explanation was recorded."
        out.append(f"* **{result.key} {fig.name}** — {fmt(fig.median)} {fig.unit} against "
                   f"{fig.target.text(fig.unit) if fig.target else '—'}. {reason}")
    failed = [r for r in results if r.error]
    if failed:
        out += ["", "## Scenarios that failed to run", ""]
        out += [f"* **{r.key} {r.title}**: {r.error}" for r in failed]
    out += ["", "## How each figure was taken", ""]
    for result in results:
        out.append(f"### {result.key}. {result.title}")
        out.append("")
        out.append(f"Took {result.seconds:.0f} s.")
        out.append("")
        for note in result.notes:
            out.append(note)
            out.append("")
        methods = [(f.name, f.method) for f in result.figures if f.method]
        for name, method in methods:
            out.append(f"* *{name}*: {method}")
        if methods:
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def write_markdown(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def python_executable() -> str:
    return sys.executable
