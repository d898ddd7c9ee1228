"""Threshold calibration: empirical quantile, POT refinement, pooled fallback, FPR on fresh data."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from streamvae.detector import ThresholdSpec, train_detector
from streamvae.model.thresholds import calibrate, gpd_moments, quantile_threshold
from tests.unit.model.conftest import TINY_MODEL, TINY_TRAIN, make_sites


def test_empirical_quantile_without_pot(rng: np.random.Generator) -> None:
    s = rng.normal(size=10_000)
    t = quantile_threshold(s, ThresholdSpec(false_positive_rate=0.05, pot=False))
    assert t == pytest.approx(np.quantile(s, 0.95))


@pytest.mark.parametrize("fpr", [0.01, 0.001])
def test_pot_matches_exponential_tail(rng: np.random.Generator, fpr: float) -> None:
    s = rng.exponential(size=5_000)  # true (1 − q) quantile: −log q
    t = quantile_threshold(s, ThresholdSpec(false_positive_rate=fpr, pot=True))
    assert t == pytest.approx(-np.log(fpr), rel=0.15)


def test_pot_needs_enough_exceedances(rng: np.random.Generator) -> None:
    s = rng.exponential(size=100)  # 10 excesses < pot_min_exceedances
    spec = ThresholdSpec(false_positive_rate=0.01, pot=True)
    assert quantile_threshold(s, spec) == pytest.approx(np.quantile(s, 0.99))


def test_gpd_moments_recovers_shape(rng: np.random.Generator) -> None:
    from scipy import stats

    x = stats.genpareto.rvs(0.2, scale=2.0, size=50_000, random_state=1)
    xi, sigma = gpd_moments(x)
    assert xi == pytest.approx(0.2, abs=0.05)
    assert sigma == pytest.approx(2.0, rel=0.1)


def test_small_sites_fall_back_to_pooled(rng: np.random.Generator) -> None:
    scores = np.concatenate([rng.normal(0, 1, 500), rng.normal(5, 1, 500), rng.normal(10, 1, 50)])
    sites = ["a"] * 500 + ["b"] * 500 + ["tiny"] * 50
    spec = ThresholdSpec(false_positive_rate=0.05, min_site_records=200, pot=False)
    per_site, pooled = calibrate(scores, sites, spec)
    assert set(per_site) == {"a", "b"}
    assert per_site["a"] < per_site["b"]
    assert pooled == pytest.approx(np.quantile(scores, 0.95))


def test_detector_thresholds_give_target_fpr_on_fresh_normal_data() -> None:
    fpr = 0.05
    data = make_sites(np.random.default_rng(11), n_per_site=800, n_sites=2)
    det = train_detector(
        data.values,
        data.sites,
        features=data.features,
        model_spec=TINY_MODEL,
        train_spec=replace(TINY_TRAIN, validation_fraction=0.5),
        threshold_spec=ThresholdSpec(false_positive_rate=fpr, min_site_records=200),
        device="cpu",
        version="t",
    )
    assert set(det.thresholds) == {"site-0", "site-1"}
    fresh = make_sites(
        np.random.default_rng(11), n_per_site=2000, n_sites=2, sample_rng=np.random.default_rng(99)
    )
    batch = det.score(fresh.values, fresh.sites)
    rate = float((batch.scores > batch.thresholds).mean())
    assert 0.4 * fpr <= rate <= 2.5 * fpr
