"""bench/report.py: figures beside targets and baselines; other modules' sections kept."""

from __future__ import annotations

from pathlib import Path

from bench.report import Report


def test_rows_show_value_target_baseline_and_whether_the_target_holds(tmp_path: Path) -> None:
    report = Report()
    report.module = "storage"
    section = report.section("SQLite", note="fsync on every commit")
    section.row("creates/s", "12,000/s", target=">= 10,000/s", baseline="raw: 20,000/s", ok=True)
    section.row("list", "50 ms", target="<= 40 ms", ok=False)
    text = report.write(tmp_path / "benchmarks.md").read_text()
    assert "| creates/s | 12,000/s ✅ | >= 10,000/s | raw: 20,000/s |" in text
    assert "| list | 50 ms ❌ | <= 40 ms | — |" in text
    assert "- cores: " in text
    assert "fsync on every commit" in text


def test_a_partial_run_keeps_the_sections_of_modules_that_did_not_run(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    first = Report()
    first.module = "proxy"
    first.add_section("proxy", {"fake backend": {"sync 1k": "10 ms"}})
    first.module = "storage"
    first.add("SQLite", "creates/s", "1/s")
    first.write(path)

    second = Report()
    second.module = "storage"
    second.add("SQLite", "creates/s", "2/s")
    text = second.write(path).read_text()
    assert "| fake backend / sync 1k | 10 ms | — | — |" in text
    assert "| creates/s | 2/s | — | — |" in text
    assert "1/s" not in text
    assert text.count("<!-- bench:storage begin -->") == 1


def test_a_failed_module_is_reported(tmp_path: Path) -> None:
    report = Report()
    report.fail("kopf", "RuntimeError: no apiserver")
    text = report.write(tmp_path / "benchmarks.md").read_text()
    assert "**This module failed:** `RuntimeError: no apiserver`" in text
