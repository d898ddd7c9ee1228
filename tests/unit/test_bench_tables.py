"""bench.tables: the paired figures beside the density and few-shot verdicts (pure)."""

from __future__ import annotations

from pathlib import Path

from bench.density import DensityResults
from bench.fewshot import METHODS, FewShotResults
from bench.metrics import Detection
from bench.report import Report
from bench.tables import density, fewshot


def _report(tmp_path: Path) -> Report:
    return Report(out_dir=tmp_path, mode="quick", seeds=[0, 1, 2], code="git test")


def test_density_pairs_the_decoders_seed_by_seed(tmp_path: Path) -> None:
    res = DensityResults()
    # the Student-t mean is higher only because of one seed; seed by seed it trails twice
    res.loglik["satellite"] = {"gaussian": [-6.0, -6.0, -6.0], "student_t": [-6.5, -6.5, -4.0]}
    rep = _report(tmp_path)
    density(rep, res)
    row = next(line for line in rep.chunks[0].splitlines() if line.startswith("| Satellite"))
    assert "| yes | +0.333 ± 1.443, ahead in 1 / 3 |" in row


def test_fewshot_counts_the_machines_where_ours_is_ahead(tmp_path: Path) -> None:
    res = FewShotResults()
    for i, (ours, std) in enumerate(((0.5, 0.4), (0.5, 0.4), (0.2, 0.3))):
        for mth in METHODS:
            value = {METHODS[0]: ours, METHODS[1]: std}.get(mth, 0.1)
            res.add(100, mth, f"m{i}", Detection(value, 0.8, 0.2, 0.5, 0.5, 0.6, 1.0))
    rep = _report(tmp_path)
    fewshot(rep, res)
    text = "\n".join(rep.chunks)
    assert "(a) beats the best of (b)–(e) (0.400 vs 0.367, (b); ahead on 2 of 3" in text
