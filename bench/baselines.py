"""Per-machine baselines on the raw [0, 1] SMD values.

Each baseline is fitted on one machine's training rows and returns anomaly
scores (higher = more anomalous) for the rows it is asked about:

- PCA reconstruction error (scikit-learn PCA keeping 95 % of the variance; the
  per-sensor squared error doubles as an explanation baseline),
- Isolation Forest (scikit-learn, 100 trees),
- HalfSpaceTrees (river, streaming: learns the training stream, then scores each
  test record before learning it, as it would run online). river's defaults
  (10 trees, height 8, window 250) are used: the 25-tree, height-15 setting of
  the original paper costs ~20 s per machine just to build and ~50x slower to
  stream, too slow for a bounded harness.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class PCAModel:
    """PCA fitted on training rows; score = squared reconstruction error."""

    pca: PCA

    @classmethod
    def fit(cls, train: F32, variance: float = 0.95, seed: int = 0) -> PCAModel:
        n_max = min(train.shape)
        if n_max < 2:
            pca = PCA(n_components=n_max, random_state=seed)
        else:
            pca = PCA(n_components=variance, svd_solver="full", random_state=seed)
        return cls(pca.fit(train.astype(np.float64)))

    def errors(self, x: F32) -> F64:
        """(T, D) per-sensor squared reconstruction error."""
        x64 = x.astype(np.float64)
        rec = self.pca.inverse_transform(self.pca.transform(x64))
        return np.asarray((x64 - rec) ** 2)

    def score(self, x: F32) -> F64:
        return self.errors(x).sum(axis=1)


@dataclass(frozen=True)
class IForestModel:
    forest: IsolationForest

    @classmethod
    def fit(cls, train: F32, seed: int = 0) -> IForestModel:
        forest = IsolationForest(n_estimators=100, random_state=seed, n_jobs=1)
        return cls(forest.fit(train))

    def score(self, x: F32) -> F64:
        return np.asarray(-self.forest.score_samples(x), dtype=np.float64)


def half_space_trees(train: F32, calib: F32, test: F32, seed: int = 0) -> tuple[F64, F64]:
    """Stream `train` (learn only), then `calib` and `test` (score, then learn each).

    Returns (calibration scores, test scores). Calibration rows are held-out
    training rows scored by the model that has seen the training stream, so
    the calibrated threshold uses training data only.
    """
    from river.anomaly import HalfSpaceTrees

    names = [f"x{i}" for i in range(train.shape[1])]
    model = HalfSpaceTrees(seed=seed)
    for row in train:
        model.learn_one(dict(zip(names, row.tolist(), strict=True)))

    def stream(x: F32) -> F64:
        out = np.empty(len(x), dtype=np.float64)
        for i, row in enumerate(x):
            rec = dict(zip(names, row.tolist(), strict=True))
            out[i] = model.score_one(rec)
            model.learn_one(rec)
        return out

    calib_scores = stream(calib)
    return calib_scores, stream(test)
