"""The detector: an immutable snapshot of everything needed to score.

model + scaler + feature names + site index + per-site thresholds + version.
The daemon holds one `Detector` and swaps it by assigning a new one; nothing
in a detector is mutated after construction. Pure core: no I/O.

CONTRACT (used by pipeline, retrainer, CLI, bench):

    detector.version: str
    detector.features: tuple[str, ...]
    detector.sites: Mapping[str, int]         known (active) sites -> embedding slot
    detector.thresholds: Mapping[str, float]  per-site calibrated thresholds
    detector.fallback_threshold: float        for sites with too little held-out data
    detector.score(values (B, D) float32 ndarray, sites: Sequence[str]) -> ScoredBatch
        runs torch under inference_mode on the detector's device; call it from a
        worker thread, never on the event loop. Unknown sites are scored through
        the pooled slot (index 0) and come back with known[i] = False.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class ScoredBatch:
    """Scores of one batch. All arrays have B rows, in input order."""

    scores: npt.NDArray[np.float64]  # (B,)  -log p(x|s)
    contributions: npt.NDArray[np.float32]  # (B, D) per-sensor share of the score
    thresholds: npt.NDArray[np.float64]  # (B,)  the threshold that applies to each row
    known: npt.NDArray[np.bool_]  # (B,)  site is active in this model
