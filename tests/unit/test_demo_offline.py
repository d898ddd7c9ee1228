"""The offline demo story with a stand-in detector (per-site z-scores), no torch."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamvae.console import LogConsole
from streamvae.demo import DemoPlan, print_summary
from streamvae.demo_offline import run_offline
from streamvae.simulator import SimRecord


@dataclass(frozen=True)
class _Scored:
    scores: np.ndarray
    contributions: np.ndarray
    thresholds: np.ndarray
    known: np.ndarray


@dataclass(frozen=True)
class ZDetector:
    """Per-site mean/sd; score = mean squared z; threshold = a high training quantile."""

    version: str
    features: tuple[str, ...]
    stats: dict[str, tuple[np.ndarray, np.ndarray]]
    thresholds: dict[str, float]

    @property
    def sites(self) -> dict[str, int]:
        return {s: i + 1 for i, s in enumerate(sorted(self.stats))}

    def score(self, values: np.ndarray, sites: Sequence[str]) -> _Scored:
        contrib = np.zeros_like(values, dtype=np.float32)
        known = np.array([s in self.stats for s in sites])
        pooled = (
            np.mean([m for m, _ in self.stats.values()], axis=0),
            np.mean([sd for _, sd in self.stats.values()], axis=0) * 3,
        )
        for i, s in enumerate(sites):
            mean, sd = self.stats.get(s, pooled)
            contrib[i] = ((values[i] - mean) / sd) ** 2 / values.shape[1]
        scores = contrib.sum(axis=1).astype(np.float64)
        thr = np.array([self.thresholds.get(s, 10.0) for s in sites])
        return _Scored(scores, contrib, thr, known)


def z_train(
    records: Sequence[SimRecord], features: tuple[str, ...], version: str, init: Any
) -> ZDetector:
    stats, thresholds = {}, {}
    for site in sorted({r.site for r in records}):
        x = np.array([r.values for r in records if r.site == site])
        mean, sd = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-3 * (1 + np.abs(x.mean(axis=0))))
        stats[site] = (mean, sd)
        s = (((x - mean) / sd) ** 2).mean(axis=1)
        thresholds[site] = float(np.quantile(s, 0.995)) * 1.2
    return ZDetector(version, features, stats, thresholds)


def test_offline_story_onboards_the_new_site_and_finds_anomalies() -> None:
    plan = DemoPlan(
        duration_s=60, sites=3, rate=60, seed=2, sensors=12, history_s=30, onboard_records=100
    )
    out = io.StringIO()
    summary, timeline = run_offline(plan, LogConsole(out), z_train)
    assert summary["mode"] == "offline"
    assert summary["records"] == len(timeline) > 0
    assert summary["overall"]["recall"] > 0
    new = summary["new_site"]
    assert new == "plant-4"
    assert summary["sites"][new]["status"] == "active"
    assert summary["sites"][new]["warming"]["records"] >= 100
    assert summary["sites"][new]["active"]["records"] > 0
    outcomes = [e["outcome"] for e in summary["retrains"]]
    assert outcomes == ["initial", "promoted"]
    assert summary["retrains"][1]["sites"] == [new]
    text = io.StringIO()
    print_summary(summary, text)
    assert "plant-4" in text.getvalue()
    assert "recall by kind" in text.getvalue()


def test_without_a_model_the_demo_shows_the_data() -> None:
    plan = DemoPlan(duration_s=10, sites=2, rate=20, sensors=8, history_s=5)
    out = io.StringIO()
    summary, timeline = run_offline(plan, LogConsole(out), None)
    assert summary["mode"] == "data-only"
    assert timeline == []
    assert "not in this build" in out.getvalue()
