"""The harness's only door into the product: `streamvae.detector` and the model specs.

Every VAE number in RESULTS.md comes from `train_detector` / `Detector.score` /
`Detector.loglik`, the same calls the daemon and the retrainer make. This module
only adds chunking (to bound memory) and reads the training report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from streamvae.detector import Detector, train_detector
from streamvae.model.specs import ModelSpec, ThresholdSpec, TrainSpec

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

CHUNK = 4096


@dataclass(frozen=True)
class Fitted:
    """A trained detector and how long training took."""

    detector: Detector
    seconds: float
    label: str

    def threshold(self, site: str) -> float:
        """The threshold the product calibrated for `site` (pooled fallback if none)."""
        return float(self.detector.thresholds.get(site, self.detector.fallback_threshold))


def fit(
    values: F32,
    sites: Sequence[str],
    *,
    model: ModelSpec,
    train: TrainSpec,
    threshold: ThresholdSpec | None = None,
    label: str = "",
) -> Fitted:
    """Train through the product's public `train_detector` on CPU."""
    features = tuple(f"x{i}" for i in range(values.shape[1]))
    t0 = time.perf_counter()
    det = train_detector(
        np.ascontiguousarray(values, dtype=np.float32),
        list(sites),
        features=features,
        model_spec=model,
        train_spec=train,
        threshold_spec=threshold or ThresholdSpec(),
        device="cpu",
        version=label or "bench",
    )
    seconds = time.perf_counter() - t0
    rep = det.report
    log.info(
        "trained %s on %d rows in %.1f s: %d epochs, best epoch %d%s",
        label,
        len(values),
        seconds,
        rep.epochs,
        rep.best_epoch + 1,  # the report counts from 0
        ", stopped early" if rep.stopped_early else "",
    )
    return Fitted(det, seconds, label)


def score(det: Detector, values: F32, site: str) -> tuple[F64, npt.NDArray[np.float32]]:
    """Scores `(T,)` and per-sensor contributions `(T, D)` for rows of one site."""
    scores: list[F64] = []
    contrib: list[npt.NDArray[np.float32]] = []
    for i in range(0, len(values), CHUNK):
        batch = np.ascontiguousarray(values[i : i + CHUNK], dtype=np.float32)
        out = det.score(batch, [site] * len(batch))
        scores.append(np.asarray(out.scores, dtype=np.float64))
        contrib.append(np.asarray(out.contributions, dtype=np.float32))
    return np.concatenate(scores), np.concatenate(contrib)


def loglik(det: Detector, values: F32, site: str) -> F64:
    """Held-out log-likelihood per row `(T,)` as the product computes it."""
    out = [
        np.asarray(det.loglik(values[i : i + CHUNK], [site] * len(values[i : i + CHUNK])))
        for i in range(0, len(values), CHUNK)
    ]
    return np.concatenate(out).astype(np.float64)


def loss_curve(det: Detector) -> tuple[list[float], list[float]]:
    """(training loss per epoch, validation loss per epoch) from the training report."""
    hist = det.report.history
    return [float(h.loss) for h in hist], [float(h.val_loss) for h in hist]


def replace_train(spec: TrainSpec, **changes: Any) -> TrainSpec:
    return replace(spec, **changes)


def with_(spec: ModelSpec, **changes: Any) -> ModelSpec:
    """A copy of `spec` with some fields changed (`dataclasses.replace`)."""
    return replace(spec, **changes)
