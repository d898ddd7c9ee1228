"""ServingMetrics / TrainingMetrics read back through `registry.get_sample_value`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from streamvae.metrics import OTHER_SITE, ServingMetrics, TrainingMetrics, render


def _batch(metrics: ServingMetrics, sites: list[str], **kw: Any) -> None:
    n = len(sites)
    args: dict[str, Any] = {
        "consumed": n,
        "scored": n,
        "dead_letters": {},
        "scoring_seconds": 0.01,
        "lags_s": [0.1] * n,
        "sites": sites,
        "anomalies": [False] * n,
        "severities": [0.5] * n,
        "statuses": ["active"] * n,
    }
    args.update(kw)
    metrics.batch(**args)


def test_fresh_registry_is_separate_and_has_no_meaningless_series() -> None:
    a, b = CollectorRegistry(), CollectorRegistry()
    ServingMetrics(a)
    ServingMetrics(b)  # no clash: nothing on a global registry
    TrainingMetrics(a)
    assert a.get_sample_value("streamvae_ready") == 0
    assert a.get_sample_value("streamvae_records_consumed_total") == 0
    # zero-initialised per reason so that rate() works from the first scrape
    assert a.get_sample_value("streamvae_records_dead_lettered_total", {"reason": "bad_type"}) == 0
    # absent until they mean something: alerts must not fire on a fresh process
    for name in (
        "streamvae_model_created_timestamp_seconds",
        "streamvae_retrain_last_success_timestamp_seconds",
        "streamvae_training_discriminator_accuracy",
    ):
        assert a.get_sample_value(name) is None


def test_batch_counts_records_dead_letters_and_histograms(registry: CollectorRegistry) -> None:
    m = ServingMetrics(registry)
    m.batch(
        consumed=6,
        scored=4,
        dead_letters={"invalid_json": 1, "non_finite": 1},
        scoring_seconds=0.003,
        lags_s=[0.02, 0.2, 2.0, -1.0],
        sites=["a", "a", "b", "c"],
        anomalies=[True, False, True, False],
        severities=[2.0, 0.5, 1.5, 0.1],
        statuses=["active", "active", "active", "warming"],
    )
    get = registry.get_sample_value
    assert get("streamvae_records_consumed_total") == 6
    assert get("streamvae_records_scored_total", {"status": "active"}) == 3
    assert get("streamvae_records_scored_total", {"status": "warming"}) == 1
    assert get("streamvae_records_dead_lettered_total", {"reason": "invalid_json"}) == 1
    assert get("streamvae_records_dead_lettered_total", {"reason": "non_finite"}) == 1
    assert get("streamvae_batch_size_records_sum") == 6
    assert get("streamvae_scoring_duration_seconds_bucket", {"le": "0.005"}) == 1
    assert get("streamvae_scoring_duration_seconds_bucket", {"le": "0.0025"}) == 0
    # lags: negative skew counts as 0; le is inclusive
    assert get("streamvae_end_to_end_lag_seconds_count") == 4
    assert get("streamvae_end_to_end_lag_seconds_bucket", {"le": "0.005"}) == 1
    assert get("streamvae_end_to_end_lag_seconds_bucket", {"le": "0.25"}) == 3
    assert get("streamvae_end_to_end_lag_seconds_bucket", {"le": "+Inf"}) == 4
    assert get("streamvae_end_to_end_lag_seconds_sum") == pytest.approx(2.22)
    assert get("streamvae_severity_bucket", {"le": "1.0"}) == 2
    # per site
    assert get("streamvae_site_anomalies_total", {"site": "a"}) == 1
    assert get("streamvae_site_anomalies_total", {"site": "c"}) == 0
    assert get("streamvae_site_severity_count", {"site": "a"}) == 2
    assert get("streamvae_site_severity_sum", {"site": "a"}) == pytest.approx(2.5)
    assert get("streamvae_site_severity_max", {"site": "a"}) == 2.0
    # a later batch replaces the max, accumulates the counters
    _batch(m, ["a"], severities=[0.25], anomalies=[True])
    assert get("streamvae_site_severity_max", {"site": "a"}) == 0.25
    assert get("streamvae_site_anomalies_total", {"site": "a"}) == 2


def test_bucket_bounds_are_inclusive(registry: CollectorRegistry) -> None:
    m = ServingMetrics(registry)
    _batch(m, ["a", "a"], lags_s=[0.1, 0.1000001])
    assert registry.get_sample_value("streamvae_end_to_end_lag_seconds_bucket", {"le": "0.1"}) == 1


@pytest.mark.parametrize(
    ("cap", "expected_labels"),
    [(1, {OTHER_SITE}), (3, {"s0", "s1", OTHER_SITE}), (10, {"s0", "s1", "s2", "s3", "s4"})],
)
def test_site_label_cardinality_is_capped(
    registry: CollectorRegistry, cap: int, expected_labels: set[str]
) -> None:
    m = ServingMetrics(registry, max_site_labels=cap)
    sites = [f"s{i}" for i in range(5)]
    _batch(m, sites, anomalies=[True] * 5)
    _batch(m, sites[::-1], anomalies=[True] * 5)  # same sites keep the same labels
    labels = {
        s.labels["site"]
        for fam in registry.collect()
        if fam.name == "streamvae_site_anomalies"
        for s in fam.samples
    }
    assert labels == expected_labels
    assert len(labels) <= cap
    total = sum(
        registry.get_sample_value("streamvae_site_anomalies_total", {"site": s}) or 0
        for s in labels
    )
    assert total == 10  # nothing lost in aggregation
    assert registry.get_sample_value("streamvae_site_labels") == len(labels)


def test_non_finite_severity_and_lag_do_not_poison_sums(registry: CollectorRegistry) -> None:
    m = ServingMetrics(registry)
    _batch(m, ["a", "a", "a"], severities=[np.nan, np.inf, 1.0], lags_s=[np.nan, 1.0, 1.0])
    assert registry.get_sample_value("streamvae_end_to_end_lag_seconds_count") == 2
    total = registry.get_sample_value("streamvae_site_severity_sum", {"site": "a"})
    assert total is not None
    assert np.isfinite(total)


def test_batch_rejects_mismatched_lengths(registry: CollectorRegistry) -> None:
    m = ServingMetrics(registry)
    with pytest.raises(ValueError, match="scored"):
        _batch(m, ["a", "b"], anomalies=[True])


def test_empty_batch_of_dead_letters_only(registry: CollectorRegistry) -> None:
    m = ServingMetrics(registry)
    _batch(m, [], consumed=3, dead_letters={"too_large": 3})
    assert registry.get_sample_value("streamvae_records_consumed_total") == 3
    assert registry.get_sample_value("streamvae_scoring_duration_seconds_count") == 0


def test_state_setters(registry: CollectorRegistry) -> None:
    m = ServingMetrics(registry)
    get = registry.get_sample_value
    m.set_consumer_lag({("sensors", 0): 10, ("sensors", 1): 5})
    assert get("streamvae_consumer_lag_records", {"topic": "sensors", "partition": "1"}) == 5
    m.set_consumer_lag({("sensors", 0): 3})  # partition 1 revoked: its series goes away
    assert get("streamvae_consumer_lag_records", {"topic": "sensors", "partition": "1"}) is None
    assert get("streamvae_consumer_lag_records", {"topic": "sensors", "partition": "0"}) == 3
    m.set_in_flight(700)
    m.set_paused(True)
    m.set_ready(True)
    assert (get("streamvae_in_flight_records"), get("streamvae_consumer_paused")) == (700, 1)
    assert get("streamvae_ready") == 1
    m.set_model("20260101T000000-0001", 1_700_000_000.0)
    m.set_model("20260101T010000-0002", 1_700_003_600.0)
    assert get("streamvae_model_info", {"version": "20260101T000000-0001"}) is None
    assert get("streamvae_model_info", {"version": "20260101T010000-0002"}) == 1
    assert get("streamvae_model_created_timestamp_seconds") == 1_700_003_600.0
    m.model_rejected("artifact_invalid")
    m.model_rejected("artifact_invalid")
    assert get("streamvae_model_rejections_total", {"reason": "artifact_invalid"}) == 2
    m.set_site_statuses({"active": 4, "warming": 1})
    assert get("streamvae_sites", {"status": "warming"}) == 1
    m.set_site_statuses({"active": 5})
    assert get("streamvae_sites", {"status": "warming"}) == 0


REPORT = {
    "history": [
        {"loss": 9.0, "grad_norm": 50.0, "discriminator_accuracy": 0.9},
        {"loss": 2.0, "reconstruction": 1.5, "kl": 0.4, "grad_norm": 3.0},
    ],
    "summary": {
        "loss_spikes": 2,
        "nonfinite_batches": 1,
        "discriminator_accuracy": 0.62,
        "discriminator_loss": 0.66,
        "active_units": 6,
        "latent_dim": 8,
        "nu_min": 2.3,
        "nu_quantiles": {"0.05": 2.9, "0.5": 7.5},
        "precision_min": 0.01,
        "precision_q95": 40.0,
    },
}


def test_training_metrics_read_report(registry: CollectorRegistry) -> None:
    t = TrainingMetrics(registry, clock=lambda: 1234.0)
    t.retrain(outcome="promoted", reason="", duration_s=42.0, report=REPORT)
    get = registry.get_sample_value
    assert get("streamvae_retrains_total", {"outcome": "promoted", "reason": ""}) == 1
    assert get("streamvae_retrain_duration_seconds_sum") == 42.0
    assert get("streamvae_retrain_last_success_timestamp_seconds") == 1234.0
    assert get("streamvae_training_loss", {"term": "total"}) == 2.0  # last epoch
    assert get("streamvae_training_loss", {"term": "reconstruction"}) == 1.5
    assert get("streamvae_training_grad_norm") == 3.0  # no best_epoch: the last epoch
    assert get("streamvae_training_discriminator_accuracy") == 0.62  # summary wins
    assert get("streamvae_training_discriminator_loss") == 0.66
    assert get("streamvae_training_loss_spikes") == 2
    assert get("streamvae_retrain_loss_spikes_total") == 2
    assert get("streamvae_training_nonfinite_batches") == 1
    assert get("streamvae_training_active_latent_units") == 6
    assert get("streamvae_training_decoder_nu", {"quantile": "0"}) == 2.3
    assert get("streamvae_training_decoder_nu", {"quantile": "0.05"}) == 2.9
    assert get("streamvae_training_decoder_precision", {"quantile": "0.95"}) == 40.0


def test_retrain_outcomes_and_consecutive_failures(registry: CollectorRegistry) -> None:
    now = [100.0]
    t = TrainingMetrics(registry, clock=lambda: now[0])
    get = registry.get_sample_value
    for _ in range(3):
        t.retrain(outcome="failed", reason="TrainingError", duration_s=1.0, report=None)
    assert get("streamvae_retrain_consecutive_failures") == 3
    assert get("streamvae_retrains_total", {"outcome": "failed", "reason": "TrainingError"}) == 3
    assert get("streamvae_retrain_last_success_timestamp_seconds") is None
    now[0] = 200.0
    t.retrain(outcome="rejected", reason="loglik_worse", duration_s=5.0, report={"summary": {}})
    assert get("streamvae_retrain_consecutive_failures") == 0
    assert get("streamvae_retrains_total", {"outcome": "rejected", "reason": "loglik_worse"}) == 1
    assert get("streamvae_retrain_last_success_timestamp_seconds") == 200.0
    with pytest.raises(ValueError, match="outcome"):
        t.retrain(outcome="maybe", reason="", duration_s=1.0, report=None)


def test_render_is_prometheus_text(registry: CollectorRegistry) -> None:
    ServingMetrics(registry)
    TrainingMetrics(registry)
    text = render(registry).decode()
    assert "# TYPE streamvae_end_to_end_lag_seconds histogram" in text
    assert "streamvae_ready 0.0" in text


def _epoch(epoch: int, **kw: Any) -> Any:
    from streamvae.model.report import EpochStats

    base: dict[str, Any] = {
        "epoch": epoch, "beta": 1.0, "loss": 5.0 - epoch, "reconstruction": 4.0 - epoch,
        "kl": 1.0, "expected_t": 0.1, "val_loss": 6.0 - epoch, "grad_norm": 2.0,
        "grad_norm_max": 9.0, "nan_batches": 1, "spike": False, "precision_min": 0.02,
        "precision_q01": 0.1, "precision_q50": 1.0, "precision_q99": 30.0, "precision_max": 50.0,
        "nu_min": 2.2,
        "nu_q01": 2.5, "nu_q50": 8.0, "disc_loss": 0.6, "disc_accuracy": 0.7,
        "active_units": 5, "wall_s": 0.5,
    }  # fmt: skip
    base.update(kw)
    return EpochStats(**base)


def test_training_metrics_read_the_model_report(registry: CollectorRegistry) -> None:
    """The report as the model writes it: TrainingReport.to_dict()."""
    from streamvae.model.report import TrainingReport

    report = TrainingReport(
        epochs=3, best_epoch=1, best_val_loss=5.0, nan_batches=2, spikes=1,
        unresolved_spikes=1, stopped_early=False, warm_started=True, n_train=900, n_val=100,
        device="cpu", wall_s=1.5,
        history=(_epoch(0), _epoch(1, disc_accuracy=0.55, nu_min=float("nan")), _epoch(2)),
    ).to_dict()  # fmt: skip
    TrainingMetrics(registry).retrain(
        outcome="rejected", reason="unhealthy_training", duration_s=2.0, report=report
    )
    get = registry.get_sample_value
    # per-epoch signals come from the best epoch (the weights that were kept) ...
    assert get("streamvae_training_loss", {"term": "total"}) == 4.0
    assert get("streamvae_training_loss", {"term": "reconstruction"}) == 3.0
    assert get("streamvae_training_loss", {"term": "expected_t"}) == 0.1
    assert get("streamvae_training_loss", {"term": "validation"}) == 5.0
    assert get("streamvae_training_discriminator_accuracy") == 0.55
    assert get("streamvae_training_decoder_nu", {"quantile": "0"}) is None  # NaN -> absent
    assert get("streamvae_training_decoder_nu", {"quantile": "0.01"}) == 2.5
    assert get("streamvae_training_decoder_precision", {"quantile": "0.99"}) == 30.0
    assert get("streamvae_training_grad_norm_max") == 9.0
    # ... run-level totals from the report itself
    assert get("streamvae_training_nonfinite_batches") == 2
    assert get("streamvae_training_loss_spikes") == 1
    assert get("streamvae_training_unresolved_loss_spikes") == 1
    assert get("streamvae_training_epochs") == 3
    assert get("streamvae_training_train_records") == 900
    assert get("streamvae_retrain_nonfinite_batches_total") == 2


def test_new_registry_is_fresh_each_time() -> None:
    from streamvae.metrics import new_registry

    a, b = new_registry(), new_registry()
    ServingMetrics(a)
    ServingMetrics(b)  # would raise DuplicateTimeseries on a shared registry
    assert a is not b
