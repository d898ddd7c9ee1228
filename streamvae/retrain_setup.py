"""Build the retraining parts from settings (composition helpers for app.py and the CLI).

The settings object stops here: below, everything takes plain specs.
`build_retrainer` is what the daemon wires in; `command_pass` is `streamvae retrain`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamvae.buffer import BufferSpec, TrainingBuffer
from streamvae.gate import GateSpec
from streamvae.retrain_job import run_pass
from streamvae.retrainer import (
    JobTemplate,
    Retrainer,
    RetrainSpec,
    TrainingMetricsLike,
)
from streamvae.sites import LifecycleSpec, SiteTracker
from streamvae.state import MANIFEST, load_buffer

if TYPE_CHECKING:
    from streamvae.config import Settings

log = logging.getLogger(__name__)


def buffer_spec(settings: Settings, dim: int) -> BufferSpec:
    r = settings.retraining
    return BufferSpec(
        dim=dim,
        per_site_cap=r.per_site_cap,
        total_cap=r.total_cap,
        holdout_fraction=r.holdout_fraction,
        recency_factor=r.recency_factor,
    )


def lifecycle_spec(settings: Settings) -> LifecycleSpec:
    r = settings.retraining
    return LifecycleSpec(
        new_site_min_records=r.new_site_min_records,
        retire_after_s=r.site_retire_after_s,
        target_fpr=settings.threshold.false_positive_rate,
        drift_factor=r.drift_anomaly_rate_factor,
        drift_window=r.drift_window_records,
        min_total_records=r.min_total_records,
    )


def gate_spec(settings: Settings) -> GateSpec:
    r = settings.retraining
    return GateSpec(
        target_fpr=settings.threshold.false_positive_rate,
        fpr_tolerance=r.gate_fpr_tolerance,
        loglik_tolerance=r.gate_loglik_tolerance,
        contamination_factor=r.drift_anomaly_rate_factor,
    )


def retrain_spec(settings: Settings) -> RetrainSpec:
    r = settings.retraining
    return RetrainSpec(
        interval_s=r.interval_s,
        mode=r.mode,
        min_total_records=r.min_total_records,
        trigger_cooldown_s=r.trigger_cooldown_s,
        check_interval_s=r.check_interval_s,
        persist_interval_s=r.persist_interval_s,
        enabled=r.enabled,
    )


def job_template(settings: Settings, features: Sequence[str]) -> JobTemplate:
    from streamvae.offline import specs_from_settings

    model_spec, train_spec, threshold_spec = specs_from_settings(settings)
    return JobTemplate(
        store_root=settings.store.path,
        features=tuple(features),
        model_spec=model_spec,
        train_spec=train_spec,
        threshold_spec=threshold_spec,
        gate_spec=gate_spec(settings),
        device=settings.model.device,
    )


def load_or_new_buffer(
    settings: Settings, features: Sequence[str], seed: int, *, owner: bool = True
) -> TrainingBuffer:
    """The persisted buffer (if usable) or an empty one. `owner`: see `load_buffer`."""
    spec = buffer_spec(settings, len(features))
    rng = np.random.default_rng(seed)
    state = load_buffer(Path(settings.retraining.state_dir), features, owner=owner)
    if state is None:
        return TrainingBuffer(spec, rng)
    return TrainingBuffer.from_state(state, spec, rng)


def build_retrainer(
    settings: Settings,
    features: Sequence[str],
    *,
    metrics: TrainingMetricsLike | None = None,
    serving: Callable[[], Any] | None = None,
    on_promoted: Callable[[str], Awaitable[object]] | None = None,
    publish_statuses: Callable[[Mapping[str, int]], None] | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> Retrainer:
    """The daemon's retrainer (also its TrainingSink), with the persisted state restored.

    Hooks: see `Retrainer`. Call `run(stop)` as a task of the app's TaskGroup.
    """
    tracker = SiteTracker(lifecycle_spec(settings), wall_clock)
    current = serving() if serving is not None else None
    if current is not None:
        tracker.set_model_sites(current.sites)
    retrainer = Retrainer(
        buffer=load_or_new_buffer(settings, features, settings.training.seed),
        tracker=tracker,
        template=job_template(settings, features),
        spec=retrain_spec(settings),
        metrics=metrics,
        state_dir=Path(settings.retraining.state_dir),
        serving=serving,
        on_promoted=on_promoted,
        publish_statuses=publish_statuses,
    )
    retrainer.restore_sites()
    return retrainer


def persisted_features(state_dir: Path) -> tuple[str, ...] | None:
    """The feature list recorded in the buffer manifest, if readable."""
    try:
        manifest = json.loads((state_dir / MANIFEST).read_bytes())
        return tuple(str(f) for f in manifest["features"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def command_pass(settings: Settings) -> int:
    """`streamvae retrain`: one pass over the persisted buffer.

    Exit 0 when a candidate was promoted or rejected, when another retrainer holds
    the lock, or when there is too little data; 1 when training failed.
    """
    state_dir = Path(settings.retraining.state_dir)
    features = tuple(settings.model.features) or persisted_features(state_dir)
    if not features:
        log.warning("no training buffer in %s (and no [model] features): nothing to do", state_dir)
        return 0
    buffer = load_or_new_buffer(settings, features, settings.training.seed, owner=False)
    total = len(buffer)
    if total < settings.retraining.min_total_records:
        log.warning(
            "training buffer in %s holds %d records (< min_total_records %d): nothing to do",
            state_dir,
            total,
            settings.retraining.min_total_records,
        )
        return 0
    job = job_template(settings, features).job(buffer, "streamvae retrain")
    result = run_pass(job, mode=settings.retraining.mode)
    print(
        json.dumps(
            {
                "outcome": result.outcome,
                "reason": result.reason,
                "detail": result.detail,
                "version": result.version,
                "duration_s": round(result.duration_s, 3),
            }
        )
    )
    return 1 if result.outcome == "failed" else 0
