"""bench/report.py keeps the throughput section that bench/throughput.py wrote."""

from __future__ import annotations

from pathlib import Path

from bench.report import KEEP_END, KEEP_START, Report, kept_section


def test_kept_section_absent() -> None:
    assert kept_section("# results\nno markers\n") == ""


def test_write_keeps_throughput_block(tmp_path: Path) -> None:
    block = f"{KEEP_START}\n## Throughput\n\n| a | b |\n{KEEP_END}"
    (tmp_path / "RESULTS.md").write_text(f"# old\n\n## 1. old section\n\n{block}\n", "utf-8")
    for _ in range(2):  # rewriting twice must not duplicate it
        rep = Report(out_dir=tmp_path, mode="quick", seeds=[0], code="git test")
        rep.text("## 1. new section")
        rep.write()
    text = (tmp_path / "RESULTS.md").read_text("utf-8")
    assert "## 1. new section" in text
    assert "old section" not in text
    assert text.count(KEEP_START) == 1
    assert text.count(KEEP_END) == 1
    assert block in text
