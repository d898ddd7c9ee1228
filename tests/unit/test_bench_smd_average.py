"""bench.smd.average: SMD metrics over training seeds (pure; no data needed)."""

from __future__ import annotations

import pytest

from bench.metrics import Detection, HitRate
from bench.smd import SmdResults, average


def _det(auprc: float, f1: float) -> Detection:
    return Detection(auprc, 0.8, f1, 0.5, 0.5, 0.6, 1.0)


def _run(a: float, f: float, hit: float) -> SmdResults:
    res = SmdResults()
    res.add("ours", "m1", _det(a, f), HitRate(hit, hit, 0.5, 0.4, 10, 2))
    res.add("ours", "m2", _det(a + 0.2, f + 0.2), None)
    res.time("ours", 10.0)
    return res


def test_average_is_the_mean_over_seeds_per_machine() -> None:
    out = average([_run(0.1, 0.2, 0.6), _run(0.3, 0.4, 0.8)], (0, 1))
    assert out.seeds == (0, 1)
    assert out.detection["ours"]["m1"].auprc == pytest.approx(0.2)
    assert out.detection["ours"]["m2"].f1 == pytest.approx(0.5)
    assert out.per_seed["ours"] == [pytest.approx((0.2, 0.3)), pytest.approx((0.4, 0.5))]
    assert out.seconds["ours"] == pytest.approx(10.0)
    hit = out.hits["ours"]["m1"]
    assert hit.points == pytest.approx(0.7)
    assert (hit.n_points, hit.n_segments) == (10, 2)  # counts are not averaged
