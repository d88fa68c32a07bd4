"""Run the benchmarks: ``python -m bench [module ...]`` (``make bench`` runs them all).

Every module ``bench/<name>.py`` that defines ``async def main(report: Report)`` is a
benchmark; names on the command line pick some of them. Figures go to
``docs/benchmarks.md`` (see bench/report.py); a module that fails is reported there and
makes the run exit non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import sys
import time
import traceback
from pathlib import Path

from rich.console import Console

from apiserver.main import run_event_loop
from bench.report import DEFAULT_PATH, Report, load_average

HERE = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"__init__", "__main__", "report"}


def discover() -> list[str]:
    """Names of the modules in bench/ that define ``async def main(report)``."""
    names = []
    for path in sorted(HERE.glob("*.py")):
        if path.stem in NOT_BENCHMARKS or path.stem.startswith("_"):
            continue
        if "async def main(" in path.read_text():
            names.append(path.stem)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("modules", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH, help="report file to write")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    available = discover()
    if args.list:
        console.print("\n".join(available))
        return 0
    unknown = [m for m in args.modules if m not in available]
    if unknown:
        console.print(f"[red]unknown benchmark(s): {', '.join(unknown)}[/]")
        console.print(f"available: {', '.join(available)}")
        return 2
    selected = args.modules or available

    report = Report()
    for name in selected:
        report.module = name
        report.loads[name] = load_average()
        started = time.monotonic()
        console.rule(f"[bold]bench {name}")
        try:
            module = importlib.import_module(f"bench.{name}")
            entry = getattr(module, "main", None)
            if entry is None or not inspect.iscoroutinefunction(entry):
                raise TypeError(f"bench/{name}.py has no `async def main(report)`")
            run_event_loop(entry(report))  # the loop the servers run on: uvloop
        except KeyboardInterrupt:
            console.print("[yellow]interrupted; writing what was measured[/]")
            report.fail(name, "interrupted")
            break
        except Exception as exc:  # a failing benchmark is reported, the others still run
            console.print(f"[red]{name} failed:[/] {exc!r}")
            console.print(traceback.format_exc(), markup=False, highlight=False)
            report.fail(name, f"{type(exc).__name__}: {exc}")
        console.print(f"[green]{name}[/] done in {time.monotonic() - started:.1f}s")
        for section in report.sections:
            if section.module == name:
                console.print(section.markdown(), markup=False, highlight=False)
    path = report.write(args.out)
    console.print(f"wrote {path}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
