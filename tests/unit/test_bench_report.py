"""bench/report.py keeps the sections that bench/throughput.py and bench/soak.py wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import KEEP_END, KEEP_START, KEPT_BLOCKS, Report, kept_section


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


def test_write_keeps_the_soak_block_too(tmp_path: Path) -> None:
    soak_start, soak_end = KEPT_BLOCKS[1]
    throughput = f"{KEEP_START}\n## Throughput\n{KEEP_END}"
    soak = f"{soak_start}\n## Soak\n{soak_end}"
    (tmp_path / "RESULTS.md").write_text(f"# old\n\n{throughput}\n\n{soak}\n", "utf-8")
    for _ in range(2):
        rep = Report(out_dir=tmp_path, mode="quick", seeds=[0], code="git test")
        rep.text("## 1. new section")
        rep.write()
    text = (tmp_path / "RESULTS.md").read_text("utf-8")
    assert throughput in text
    assert soak in text
    assert text.count(soak_start) == 1


def test_kept_markers_are_the_ones_the_benches_write() -> None:
    from bench.soak import MARKERS
    from bench.throughput import END, START

    assert KEPT_BLOCKS == ((START, END), MARKERS)


def test_rss_drift_tells_a_swing_from_a_leak() -> None:
    from bench.throughput import rss_drift

    mib = 1 << 20
    ts = [i * 0.1 for i in range(3000)]  # 300 s
    swing = [(t, (340 + (20 if i % 10 < 3 else 0)) * mib) for i, t in enumerate(ts)]
    flat = rss_drift(swing, 0.0, 300.0)
    assert flat is not None
    assert abs(flat.median_growth) < 1e-9
    assert abs(flat.slope_mib_per_min) < 0.5
    leak = rss_drift([(t, int((300 + t / 60) * mib)) for t in ts], 0.0, 300.0)  # 1 MiB/min
    assert leak is not None
    assert leak.slope_mib_per_min == pytest.approx(1.0, rel=1e-3)
    assert leak.median_growth > 0.01
    assert rss_drift([], 0.0, 300.0) is None
