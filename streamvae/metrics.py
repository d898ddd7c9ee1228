"""Prometheus instruments for the daemon (serving) and the retrainer (training).

The only module that imports prometheus_client. Every instrument lives on a registry
passed in by the composition root; nothing touches the global registry. Callers update
once per batch (never per record): per-record data arrives as sequences and is folded
into bucket/site counts with numpy (`streamvae.metric_state`).

Label cardinality: per-site series carry a `site` label for at most `max_site_labels`
distinct values, `"__other__"` included. The first `max_site_labels - 1` sites seen get
their own label (for the life of the process; counters never disappear); later sites
are aggregated under `site="__other__"`.

Series that have no meaning yet (model version/age before a model is loaded, training
signals before the first retrain, consumer lag before partitions are assigned) are
absent rather than 0, so alerts on them do not fire on a fresh process.
The metric list with types and labels is in docs/operations.md.
"""

from __future__ import annotations

import time
from collections import Counter as _Tally
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)

from streamvae import __version__
from streamvae.metric_state import OTHER_SITE, BulkHistogram, SiteTotals
from streamvae.records import Reason
from streamvae.report_signals import training_signals

# CollectorRegistry is re-exported: the composition root makes registries without
# importing prometheus_client itself.
__all__ = [
    "OTHER_SITE",
    "CollectorRegistry",
    "ServingMetrics",
    "TrainingMetrics",
    "new_registry",
    "render",
]

PREFIX = "streamvae_"
SITE_STATUSES = ("active", "warming")

BATCH_SIZE_BUCKETS = tuple(float(2**i) for i in range(14))  # 1 … 8192 records
SCORING_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
SEVERITY_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
RETRAIN_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
_SEVERITY_CAP = 1e6  # +inf severities (zero thresholds) are clipped here


def _le(bound: float) -> str:
    """Prometheus' spelling of a bucket bound (`le` label)."""
    return "+Inf" if bound == float("inf") else repr(bound)


class _HistogramFamily:
    """Exposes a `BulkHistogram` as one histogram family."""

    def __init__(self, name: str, doc: str, buckets: Sequence[float]) -> None:
        self.name, self.doc, self.state = name, doc, BulkHistogram(buckets)

    def describe(self) -> Iterable[Metric]:
        yield HistogramMetricFamily(self.name, self.doc, labels=())

    def collect(self) -> Iterable[Metric]:
        counts, total = self.state.snapshot()
        buckets = [(_le(b), float(c)) for b, c in zip(self.state.bounds, counts, strict=True)]
        yield HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=total)


class _Gauges:
    """Label-keyed gauges that are absent until set; `replace` swaps the whole set."""

    def __init__(self, name: str, doc: str, labelnames: Sequence[str] = ()) -> None:
        self.name, self.doc, self.labelnames = name, doc, tuple(labelnames)
        self._values: dict[tuple[str, ...], float] = {}

    def replace(self, values: Mapping[tuple[str, ...], float]) -> None:
        """Swap in a new dict (one assignment: a concurrent collect() sees old or new)."""
        self._values = {key: float(v) for key, v in values.items()}

    def describe(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(self.name, self.doc, labels=self.labelnames)

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self.name, self.doc, labels=self.labelnames)
        for labels, value in self._values.items():
            family.add_metric(list(labels), value)
        yield family


class _SiteFamilies:
    """Exposes `SiteTotals` as anomalies (counter), severity (summary), severity max."""

    def __init__(self, max_labels: int) -> None:
        self.state = SiteTotals(max_labels)

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, SummaryMetricFamily, GaugeMetricFamily]:
        return (
            CounterMetricFamily(
                f"{PREFIX}site_anomalies", "Records flagged anomalous, per site.", labels=["site"]
            ),
            SummaryMetricFamily(
                f"{PREFIX}site_severity",
                "Normalized severity (score / threshold) per site; _count = records scored.",
                labels=["site"],
            ),
            GaugeMetricFamily(
                f"{PREFIX}site_severity_max",
                "Largest severity of the site in its latest batch.",
                labels=["site"],
            ),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        anomalies, severity, severity_max = self._families()
        for row in self.state.rows():
            anomalies.add_metric([row.site], row.anomalies)
            severity.add_metric([row.site], row.records, row.severity_sum)
            severity_max.add_metric([row.site], row.severity_max)
        return (anomalies, severity, severity_max)


def _count_statuses(statuses: Sequence[str]) -> Mapping[str, int]:
    """Records per status; `list.count` (C speed) for the two known statuses."""
    try:
        counts = {status: statuses.count(status) for status in SITE_STATUSES}
    except AttributeError:  # not a list/tuple (e.g. a numpy array)
        return _Tally(statuses)
    if sum(counts.values()) == len(statuses):
        return {status: n for status, n in counts.items() if n}
    return _Tally(statuses)


class ServingMetrics:
    """The daemon's instruments. Call `batch` once per scored batch, from one thread."""

    def __init__(self, registry: CollectorRegistry, *, max_site_labels: int = 500) -> None:
        p = PREFIX
        self._consumed = Counter(
            f"{p}records_consumed", "Records read from the input.", registry=registry
        )
        self._scored = Counter(
            f"{p}records_scored", "Records scored, by site status.", ["status"], registry=registry
        )
        self._dead = Counter(
            f"{p}records_dead_lettered",
            "Records sent to the dead-letter output, by reason.",
            ["reason"],
            registry=registry,
        )
        self._batch_size = Histogram(
            f"{p}batch_size_records",
            "Records per scored batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self._scoring = Histogram(
            f"{p}scoring_duration_seconds",
            "Model time per batch.",
            buckets=SCORING_BUCKETS,
            registry=registry,
        )
        self._lag = _HistogramFamily(
            f"{p}end_to_end_lag_seconds",
            "Record timestamp to score available, per record (negative clock skew counts as 0).",
            LAG_BUCKETS,
        )
        self._severity = _HistogramFamily(
            f"{p}severity",
            "Normalized severity (score / threshold) of scored records.",
            SEVERITY_BUCKETS,
        )
        self._sites = _SiteFamilies(max_site_labels)
        self._consumer_lag = _Gauges(
            f"{p}consumer_lag_records",
            "Records behind the partition's end offset.",
            ["topic", "partition"],
        )
        self._in_flight = Gauge(
            f"{p}in_flight_records",
            "Records fetched whose outputs are not yet acknowledged.",
            registry=registry,
        )
        self._paused = Gauge(
            f"{p}consumer_paused", "1 while fetching is paused (back-pressure).", registry=registry
        )
        self._model = _Gauges(
            f"{p}model_info", "The model version being served (value 1).", ["version"]
        )
        self._model_created = _Gauges(
            f"{p}model_created_timestamp_seconds",
            "Creation time of the served model (Unix seconds).",
        )
        self._rejections = Counter(
            f"{p}model_rejections",
            "Model versions the daemon refused to load, by reason.",
            ["reason"],
            registry=registry,
        )
        self._ready = Gauge(f"{p}ready", "1 when the daemon is ready to score.", registry=registry)
        self._statuses = _Gauges(f"{p}sites", "Known sites by lifecycle status.", ["status"])
        self._labels_in_use = Gauge(
            f"{p}site_labels",
            "Distinct site label values in use (cap: max_site_labels).",
            registry=registry,
        )
        build = Gauge(
            f"{p}build_info", "streamvae version (value 1).", ["version"], registry=registry
        )
        build.labels(__version__).set(1)
        for collector in (
            self._lag,
            self._severity,
            self._sites,
            self._consumer_lag,
            self._model,
            self._model_created,
            self._statuses,
        ):
            registry.register(collector)
        for reason in Reason:
            self._dead.labels(reason.value)
        for status in SITE_STATUSES:
            self._scored.labels(status)

    def batch(
        self,
        *,
        consumed: int,
        scored: int,
        dead_letters: Mapping[str, int],
        scoring_seconds: float,
        lags_s: Sequence[float] | npt.NDArray[Any],
        sites: Sequence[str],
        anomalies: Sequence[bool] | npt.NDArray[Any],
        severities: Sequence[float] | npt.NDArray[Any],
        statuses: Sequence[str],
    ) -> None:
        """One scored batch. sites/anomalies/severities/statuses: (scored,); lags_s: (scored,)
        or empty. lags_s, anomalies and severities may be numpy arrays (cheaper than lists:
        no conversion). Raises ValueError when the per-record sequences disagree in length."""
        n = len(sites)
        if not (n == scored == len(anomalies) == len(severities) == len(statuses)):
            raise ValueError("sites, anomalies, severities and statuses must have `scored` rows")
        self._consumed.inc(consumed)
        for reason, count in dead_letters.items():
            if count:
                self._dead.labels(reason).inc(count)
        if consumed or scored:
            self._batch_size.observe(consumed or scored)
        if n == 0:
            return
        self._scoring.observe(scoring_seconds)
        for status, count in _count_statuses(statuses).items():
            self._scored.labels(status).inc(count)
        lags = np.asarray(lags_s, dtype=np.float64)
        self._lag.state.observe_many(np.maximum(lags[np.isfinite(lags)], 0.0))
        severity = np.nan_to_num(
            np.asarray(severities, dtype=np.float64), nan=0.0, posinf=_SEVERITY_CAP, neginf=0.0
        )
        self._severity.state.observe_many(severity)
        self._sites.state.add(sites, np.asarray(anomalies, dtype=np.float64), severity)
        self._labels_in_use.set(self._sites.state.labels_in_use())

    def set_consumer_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """Replace the per-partition lag set (revoked partitions disappear)."""
        self._consumer_lag.replace({(t, str(p)): lag for (t, p), lag in lags.items()})

    def set_in_flight(self, records: int) -> None:
        self._in_flight.set(records)

    def set_paused(self, paused: bool) -> None:
        self._paused.set(1 if paused else 0)

    def set_model(self, version: str, created_at: float) -> None:
        self._model.replace({(version,): 1.0})
        self._model_created.replace({(): created_at})

    def model_rejected(self, reason: str) -> None:
        self._rejections.labels(reason).inc()

    def set_ready(self, ready: bool) -> None:
        self._ready.set(1 if ready else 0)

    def set_site_statuses(self, counts: Mapping[str, int]) -> None:
        values: dict[tuple[str, ...], float] = {(s,): 0.0 for s in SITE_STATUSES}
        values.update({(status,): float(n) for status, n in counts.items()})
        self._statuses.replace(values)


class TrainingMetrics:
    """The retrainer's instruments: outcomes, duration, and the last report's signals."""

    def __init__(
        self, registry: CollectorRegistry, *, clock: Callable[[], float] = time.time
    ) -> None:
        p = PREFIX
        self._clock = clock
        self._outcomes = Counter(
            f"{p}retrains",
            "Retraining passes by outcome (promoted|rejected|failed) and reason.",
            ["outcome", "reason"],
            registry=registry,
        )
        self._duration = Histogram(
            f"{p}retrain_duration_seconds",
            "Wall time of a retraining pass.",
            buckets=RETRAIN_BUCKETS,
            registry=registry,
        )
        self._failures = Gauge(
            f"{p}retrain_consecutive_failures",
            "Failed retraining passes since the last one that completed.",
            registry=registry,
        )
        self._spikes_total = Counter(
            f"{p}retrain_loss_spikes", "Loss spikes over all retrains.", registry=registry
        )
        self._nonfinite_total = Counter(
            f"{p}retrain_nonfinite_batches",
            "NaN/inf batches rejected over all retrains.",
            registry=registry,
        )
        self._last_success = _Gauges(
            f"{p}retrain_last_success_timestamp_seconds",
            "When a retraining pass last completed (promoted or "
            "rejected by the gate; Unix seconds).",
        )
        self._loss = _Gauges(
            f"{p}training_loss", "Last retrain: final loss and its terms.", ["term"]
        )
        self._scalars = {
            name: _Gauges(f"{p}training_{name}", doc)
            for name, doc in (
                ("loss_spikes", "Last retrain: epochs flagged as loss spikes."),
                ("unresolved_loss_spikes", "Last retrain: spikes the loss never recovered from."),
                ("nonfinite_batches", "Last retrain: NaN/inf batches rejected."),
                ("grad_norm", "Last retrain: mean pre-clipping gradient norm (kept epoch)."),
                ("grad_norm_max", "Last retrain: largest pre-clipping gradient norm (kept epoch)."),
                (
                    "discriminator_accuracy",
                    "Last retrain: density-ratio discriminator T(z) "
                    "accuracy, aggregate posterior vs N(0,I) (kept epoch).",
                ),
                ("discriminator_loss", "Last retrain: discriminator loss (kept epoch)."),
                ("active_latent_units", "Last retrain: latent units with Var_x[E q(z|x)] > 0.01."),
                ("epochs", "Last retrain: epochs run."),
                ("train_records", "Last retrain: training records."),
            )
        }
        self._nu = _Gauges(
            f"{p}training_decoder_nu",
            "Last retrain: decoded Student-t "
            "degrees of freedom ν, quantiles over sensors and records "
            "(quantile=0 is the minimum).",
            ["quantile"],
        )
        self._precision = _Gauges(
            f"{p}training_decoder_precision",
            "Last retrain: decoded precision λ quantiles (quantile=0 is the minimum).",
            ["quantile"],
        )
        for collector in (
            self._last_success,
            self._loss,
            *self._scalars.values(),
            self._nu,
            self._precision,
        ):
            registry.register(collector)
        self._outcomes.labels("promoted", "")

    def retrain(
        self, *, outcome: str, reason: str, duration_s: float, report: Mapping[str, Any] | None
    ) -> None:
        """Record one retraining pass. outcome: promoted|rejected|failed."""
        if outcome not in ("promoted", "rejected", "failed"):
            raise ValueError(f"unknown retrain outcome {outcome!r}")
        self._outcomes.labels(outcome, reason if outcome != "promoted" else "").inc()
        self._duration.observe(duration_s)
        if outcome == "failed":
            self._failures.inc()
        else:
            self._failures.set(0)
            self._last_success.replace({(): self._clock()})
        signals = training_signals(report)
        if signals.loss_terms:
            self._loss.replace({(term,): v for term, v in signals.loss_terms.items()})
        for name, gauges in self._scalars.items():
            if name in signals.scalars:
                gauges.replace({(): signals.scalars[name]})
        self._spikes_total.inc(max(0.0, signals.scalars.get("loss_spikes", 0.0)))
        self._nonfinite_total.inc(max(0.0, signals.scalars.get("nonfinite_batches", 0.0)))
        if signals.nu_quantiles:
            self._nu.replace({(q,): v for q, v in signals.nu_quantiles.items()})
        if signals.precision_quantiles:
            self._precision.replace({(q,): v for q, v in signals.precision_quantiles.items()})


def new_registry() -> CollectorRegistry:
    """A fresh registry (the composition root must not import prometheus_client)."""
    return CollectorRegistry()


def render(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text exposition format 0.0.4 (see streamvae.httpd)."""
    return generate_latest(registry)
