"""The public Detector contract used by the daemon, retrainer, bench and demo."""

from __future__ import annotations

import numpy as np
import pytest

from streamvae.detector import Detector, ScoredBatch, TrainingReport
from streamvae.errors import TrainingError
from tests.unit.model.conftest import SiteData, tiny_detector


def test_score_shapes_and_known(detector: Detector, site_data: SiteData) -> None:
    x = site_data.values[:5]
    batch = detector.score(x, ["site-0", "site-1", "nowhere", "site-2", "site-0"])
    assert isinstance(batch, ScoredBatch)
    assert batch.scores.shape == (5,)
    assert batch.scores.dtype == np.float64
    assert batch.contributions.shape == (5, len(site_data.features))
    assert batch.contributions.dtype == np.float32
    assert batch.known.tolist() == [True, True, False, True, True]
    assert batch.thresholds[2] == detector.fallback_threshold
    assert np.isfinite(batch.scores).all()


def test_metadata_fields(detector: Detector, site_data: SiteData) -> None:
    assert detector.version == "v1"
    assert detector.features == site_data.features
    assert set(detector.sites) == {"site-0", "site-1", "site-2"}
    assert all(0 < slot < detector.model_spec.site_capacity for slot in detector.sites.values())
    assert set(detector.thresholds) <= set(detector.sites)
    assert np.isfinite(detector.fallback_threshold)
    assert detector.created_at == 1000.0
    assert isinstance(detector.report, TrainingReport)
    with pytest.raises(TypeError):
        detector.sites["x"] = 3  # type: ignore[index]


def test_score_is_batch_independent(detector: Detector, site_data: SiteData) -> None:
    x, s = site_data.values[:64], site_data.sites[:64]
    whole = detector.score(x, s).scores
    parts = np.concatenate(
        [detector.score(x[i : i + 7], s[i : i + 7]).scores for i in range(0, 64, 7)]
    )
    np.testing.assert_allclose(whole, parts, rtol=1e-5, atol=1e-5)


def test_loglik_is_minus_score_with_loglik_samples(detector: Detector, site_data: SiteData) -> None:
    from dataclasses import replace

    x, s = site_data.values[:10], site_data.sites[:10]
    k = detector.model_spec.loglik_samples
    same_k = replace(detector, model_spec=replace(detector.model_spec, importance_samples=k))
    np.testing.assert_allclose(detector.loglik(x, s), -same_k.score(x, s).scores)


def test_empty_batch(detector: Detector) -> None:
    batch = detector.score(np.zeros((0, len(detector.features)), np.float32), [])
    assert batch.scores.shape == (0,)


def test_wrong_width_rejected(detector: Detector) -> None:
    with pytest.raises(ValueError, match="values must be"):
        detector.score(np.zeros((2, 3), np.float32), ["a", "b"])


def test_training_error_on_no_data(site_data: SiteData) -> None:
    empty = SiteData(site_data.values[:1] * np.nan, site_data.sites[:1], site_data.features)
    with pytest.raises(TrainingError):
        tiny_detector(empty)


def test_report_json(detector: Detector) -> None:
    import json

    d = detector.report.to_dict()
    json.dumps(d, allow_nan=False)
    assert TrainingReport.from_dict(d).epochs == detector.report.epochs


def test_unconditional_model_knows_its_training_sites(site_data: SiteData) -> None:
    det = tiny_detector(site_data, conditional=False, prior="standard")
    assert set(det.sites) == {"site-0", "site-1", "site-2"}
    assert set(det.sites.values()) == {0}
    batch = det.score(site_data.values[:3], ["site-0", "site-2", "elsewhere"])
    assert batch.known.tolist() == [True, True, False]
