"""Per-site thresholds calibrated on held-out normal scores for a target FPR.

For each site with at least `min_site_records` held-out scores, the threshold is
the empirical (1 − fpr) quantile of its scores. When `pot` is on and the tail is
large enough, it is refined by peaks-over-threshold (Siffer et al., KDD 2017):
take the initial level t0 = the (1 − tail) quantile with tail = min(0.1, 10·fpr),
fit a generalized Pareto distribution (GPD) to the n_t excesses above t0 by the
method of moments, and set

    threshold = t0 + σ/ξ · ((fpr · n / n_t)^(−ξ) − 1)     (ξ ≠ 0)
    threshold = t0 − σ · log(fpr · n / n_t)               (ξ ≈ 0)

POT is used only with >= `pot_min_exceedances` excesses and a finite result;
otherwise the empirical quantile stands.

Fallback: sites with fewer than `min_site_records` held-out scores (and sites
unknown to the model) use the pooled threshold computed the same way over the
held-out scores of all sites together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from streamvae.model.specs import ThresholdSpec


def gpd_moments(excesses: npt.NDArray[np.float64]) -> tuple[float, float]:
    """Method-of-moments GPD fit: returns (shape ξ, scale σ)."""
    m = float(excesses.mean())
    v = float(excesses.var())
    if v <= 0 or m <= 0:
        return 0.0, max(m, 1e-12)
    xi = 0.5 * (1.0 - m * m / v)
    sigma = 0.5 * m * (m * m / v + 1.0)
    return xi, sigma


def quantile_threshold(scores: npt.NDArray[np.floating[Any]], spec: ThresholdSpec) -> float:
    """The (1 − fpr) score quantile of `scores` (1-D), refined by POT when possible."""
    s = np.sort(np.asarray(scores, dtype=np.float64)[np.isfinite(scores)])
    if s.size == 0:
        raise ValueError("no finite scores to calibrate a threshold on")
    q = spec.false_positive_rate
    empirical = float(np.quantile(s, 1.0 - q))
    if not spec.pot:
        return empirical
    tail = min(0.1, 10.0 * q)
    t0 = float(np.quantile(s, 1.0 - tail))
    exc = s[s > t0] - t0
    if exc.size < spec.pot_min_exceedances:
        return empirical
    xi, sigma = gpd_moments(exc)
    ratio = q * s.size / exc.size
    if abs(xi) < 1e-6:
        pot = t0 - sigma * float(np.log(ratio))
    else:
        pot = t0 + sigma / xi * (ratio ** (-xi) - 1.0)
    if not np.isfinite(pot) or pot < t0:
        return empirical
    return float(pot)


def calibrate(
    scores: npt.NDArray[np.floating[Any]], sites: Sequence[str], spec: ThresholdSpec
) -> tuple[dict[str, float], float]:
    """scores: (N,) held-out normal scores; sites: (N,) their sites.

    Returns (per-site thresholds for sites with enough records, pooled fallback).
    """
    scores = np.asarray(scores, dtype=np.float64)
    fallback = quantile_threshold(scores, spec)
    site_arr = np.asarray(list(sites), dtype=object)
    per_site: dict[str, float] = {}
    for name in sorted(set(site_arr.tolist())):
        mask = site_arr == name
        if int(mask.sum()) >= spec.min_site_records:
            per_site[str(name)] = quantile_threshold(scores[mask], spec)
    return per_site, fallback
