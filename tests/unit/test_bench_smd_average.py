"""bench.smd.average and bench.metrics.paired_difference: SMD metrics over seeds and
machines (pure; no data needed)."""

from __future__ import annotations

import math

import pytest

from bench.metrics import Detection, HitRate, paired_difference
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


def test_paired_difference_interval_and_counts() -> None:
    a = {f"m{i}": 0.5 + 0.01 * i for i in range(10)}
    b = {k: v - 0.1 for k, v in a.items()}  # a is ahead by exactly 0.1 everywhere
    d = paired_difference(a, b | {"extra": 0.0})  # only shared machines count
    assert (d.mean, d.low, d.high) == pytest.approx((0.1, 0.1, 0.1))
    assert (d.ahead, d.n, d.decided) == (10, 10, True)


def test_paired_difference_holds_zero_for_a_coin_flip() -> None:
    a = {f"m{i}": 0.5 + (0.05 if i % 2 else -0.05) for i in range(12)}
    b = dict.fromkeys(a, 0.5)
    d = paired_difference(a, b, seed=1)
    assert d.mean == pytest.approx(0.0)
    assert d.low < 0 < d.high
    assert not d.decided
    assert paired_difference(a, b, seed=1) == d  # deterministic given the seed


def test_paired_difference_with_nothing_shared_is_nan() -> None:
    d = paired_difference({"m1": 1.0}, {"m2": 1.0})
    assert d.n == 0
    assert math.isnan(d.mean)
