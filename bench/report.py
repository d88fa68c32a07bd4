"""The benchmark report: sections of figures, each beside its target and its baseline.

Every bench module gets one :class:`Report` from ``python -m bench`` and adds rows::

    section = report.section("SQLite store", note="synchronous=FULL, 1 KiB objects")
    section.row("creates/s, 16 in flight", "12,031/s", target=">= 10,000/s",
                baseline="raw sqlite3 16 inserts per commit: 21,000/s", ok=True)

``docs/benchmarks.md`` is rewritten at the end of the run with the machine description.
Sections of modules that did not run this time are kept from the previous file (marked
with the date they were measured), so ``python -m bench storage`` does not erase the
operators' figures.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
_BLOCK = re.compile(
    r"<!-- bench:(?P<module>[\w.-]+) begin -->\n(?P<body>.*?)<!-- bench:(?P=module) end -->\n",
    re.S,
)


@dataclass
class Row:
    figure: str
    value: str
    target: str = ""
    baseline: str = ""
    ok: bool | None = None  # None: no target to meet


@dataclass
class Section:
    title: str
    module: str
    note: str = ""
    rows: list[Row] = field(default_factory=list)

    def row(
        self,
        figure: str,
        value: object,
        *,
        target: str = "",
        baseline: object = "",
        ok: bool | None = None,
    ) -> Row:
        added = Row(figure, str(value), target, str(baseline), ok)
        self.rows.append(added)
        return added

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines += ["| figure | value | target | baseline (same run) |", "|---|---|---|---|"]
        for row in self.rows:
            mark = {True: " ✅", False: " ❌", None: ""}[row.ok]
            cells = [row.figure, row.value + mark, row.target or "—", row.baseline or "—"]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines) + "\n"


class Report:
    """What one ``python -m bench`` run measured."""

    def __init__(self) -> None:
        self.module = "bench"  # set by bench/__main__.py before each module runs
        self.sections: list[Section] = []
        self.failures: dict[str, str] = {}
        self.started = dt.datetime.now(dt.UTC)
        self.machine: dict[str, str] | None = machine()
        self.loads: dict[str, str] = {}  # module -> load average when it started

    def section(self, title: str, *, note: str = "") -> Section:
        """The section ``title`` of the running module (created on first use)."""
        for existing in self.sections:
            if existing.title == title and existing.module == self.module:
                if note and not existing.note:
                    existing.note = note
                return existing
        created = Section(title, self.module, note)
        self.sections.append(created)
        return created

    def add(
        self,
        section: str,
        name: str,
        value: object,
        *,
        target: str = "",
        baseline: object = "",
        ok: bool | None = None,
    ) -> None:
        """One row in ``section`` (shorthand for ``section(...).row(...)``)."""
        self.section(section).row(name, value, target=target, baseline=baseline, ok=ok)

    def add_section(self, title: str, figures: Mapping[str, Any]) -> None:
        """A section from a (nested) mapping of figures, one row per leaf."""
        section = self.section(title)
        for name, value in _flatten(figures):
            section.row(name, value)

    def fail(self, module: str, error: str) -> None:
        self.failures[module] = error

    # -- output ------------------------------------------------------------------------

    def modules(self) -> list[str]:
        seen: list[str] = []
        for section in self.sections:
            if section.module not in seen:
                seen.append(section.module)
        for module in self.failures:
            if module not in seen:
                seen.append(module)
        return seen

    def markdown(self, previous: str = "") -> str:
        ran = set(self.modules())
        if self.machine is None:
            self.machine = machine()
        blocks = {m.group("module"): m.group("body") for m in _BLOCK.finditer(previous)}
        when = self.started.strftime("%Y-%m-%d %H:%M UTC")
        out = [
            "# Benchmarks",
            "",
            "Written by `make bench` (`python -m bench [module ...]`); every figure is measured",
            "beside its baseline in the same run, on the machine below. Do not edit by hand.",
            "",
            "## Machine",
            "",
            *(f"- {k}: {v}" for k, v in self.machine.items()),
            "",
        ]
        for module in sorted(ran | set(blocks)):
            out.append(f"<!-- bench:{module} begin -->")
            if module in ran:
                out.append(f"## {module}")
                out.append("")
                load = self.loads.get(module, "")
                out.append(f"_Measured {when}; load average (1, 5, 15 min) at its start: {load}._")
                out.append("")
                if module in self.failures:
                    out += [f"**This module failed:** `{self.failures[module]}`", ""]
                for section in self.sections:
                    if section.module == module:
                        out.append(section.markdown())
                out.append(f"<!-- bench:{module} end -->")
            else:
                out.append(blocks[module].rstrip("\n"))
                out.append(f"<!-- bench:{module} end -->")
            out.append("")
        return "\n".join(out).rstrip("\n") + "\n"

    def write(self, path: Path = DEFAULT_PATH) -> Path:
        previous = path.read_text() if path.exists() else ""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.markdown(previous))
        return path


def _flatten(figures: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(_flatten(value, f"{name} / "))
        else:
            rows.append((name, value))
    return rows


def machine() -> dict[str, str]:
    """CPU, cores, memory, kernel, Python and the disk holding the repository."""
    return {
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count() or "?"),
        "memory": _memory(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "disk": _disk(DEFAULT_PATH.parent.parent),
    }


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (other work on the machine skews figures)."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _disk(path: Path) -> str:
    """``/dev/vda (ext4, virtio, SSD)``-like: the device and filesystem under ``path``."""
    try:
        out = subprocess.run(
            ["df", "--output=source,fstype", str(path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.splitlines()[-1]
        source, fstype = out.split()
    except (OSError, subprocess.SubprocessError, ValueError):
        return "unknown"
    kind = ""
    device = Path(source).name
    base = re.sub(r"p?\d+$", "", device)
    for name in (device, base):
        rotational = Path(f"/sys/block/{name}/queue/rotational")
        if rotational.exists():
            kind = f"queue/rotational={rotational.read_text().strip()}"
            break
    return f"{source} ({fstype}{', ' + kind if kind else ''})"
