"""Point-wise detection metrics and the explanation hit rate (no point adjustment).

All functions take plain numpy arrays: `scores (T,)` (higher = more anomalous),
`labels (T,)` in {0, 1}.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import comb

import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from bench.data import Segment

Arr = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Detection:
    """Point-wise metrics of one score series on one machine."""

    auprc: float
    auroc: float
    f1: float  # at the threshold calibrated on training data only
    precision: float
    recall: float
    best_f1: float  # best F1 over all thresholds on test: an upper bound, not a result
    threshold: float


def mean_over(per_machine: Mapping[str, Detection], attr: str) -> float:
    """The mean of one metric (`auprc`, `f1`, ...) over the machines (nan if none)."""
    if not per_machine:
        return float("nan")
    return float(np.mean([getattr(d, attr) for d in per_machine.values()]))


@dataclass(frozen=True)
class PairedDiff:
    """Mean over machines of a paired difference (a − b), with a bootstrap interval."""

    mean: float
    low: float  # percentile bootstrap interval over machines (resampled with replacement)
    high: float
    ahead: int  # machines where a > b
    n: int  # machines compared

    @property
    def decided(self) -> bool:
        """True when the interval excludes 0 (a and b differ at this level)."""
        return self.low > 0 or self.high < 0


def paired_difference(
    a: Mapping[str, float],
    b: Mapping[str, float],
    *,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedDiff:
    """Paired difference of one metric between two methods over the machines both have.

    The machines are the unit that is resampled: the interval says how much the mean
    difference depends on which machines happened to be in the data set (each value is
    already a mean over training seeds). Deterministic given `seed`.
    """
    keys = sorted(set(a) & set(b))
    if not keys:
        nan = float("nan")
        return PairedDiff(nan, nan, nan, 0, 0)
    d = np.array([a[k] - b[k] for k in keys], dtype=np.float64)
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    return PairedDiff(float(d.mean()), float(low), float(high), int((d > 0).sum()), len(d))


def quantile_threshold(train_scores: npt.ArrayLike, fpr: float) -> float:
    """The (1 - fpr) quantile of scores on (held-out) training data.

    Used for the baselines, which have no calibration of their own; the product's
    detectors carry their own calibrated per-site thresholds.
    """
    s = np.asarray(train_scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    return float(np.quantile(s, 1.0 - fpr))


def _clean(scores: npt.ArrayLike) -> Arr:
    s = np.asarray(scores, dtype=np.float64).copy()
    finite = np.isfinite(s)
    if not finite.all():  # +inf/nan = "maximally anomalous"; keep the ranking defined
        top = s[finite].max() if finite.any() else 0.0
        s[~finite] = top + 1.0
    return s


def best_f1(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    p, r, _ = precision_recall_curve(np.asarray(labels), _clean(scores))
    f = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0.0)
    return float(f.max())


def f1_at(scores: npt.ArrayLike, labels: npt.ArrayLike, threshold: float) -> tuple[float, ...]:
    """(F1, precision, recall) flagging `score > threshold`."""
    pred = _clean(scores) > threshold
    y = np.asarray(labels).astype(bool)
    tp = float(np.sum(pred & y))
    fp = float(np.sum(pred & ~y))
    fn = float(np.sum(~pred & y))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return f1, precision, recall


def detection(scores: npt.ArrayLike, labels: npt.ArrayLike, threshold: float) -> Detection:
    s = _clean(scores)
    y = np.asarray(labels).astype(np.int64)
    f1, precision, recall = f1_at(s, y, threshold)
    return Detection(
        auprc=float(average_precision_score(y, s)),
        auroc=float(roc_auc_score(y, s)),
        f1=f1,
        precision=precision,
        recall=recall,
        best_f1=best_f1(s, y),
        threshold=float(threshold),
    )


@dataclass(frozen=True)
class HitRate:
    """Share of anomalous points (or segments) whose top-k sensors include a blamed one."""

    points: float  # over all labelled points of all segments
    segments: float  # per segment, ranking by the segment's mean contribution
    random_points: float  # expectation under a uniformly random ranking
    random_segments: float
    n_points: int
    n_segments: int


def _random_hit(n_sensors: int, n_blamed: int, k: int) -> float:
    n_blamed = min(n_blamed, n_sensors)
    return 1.0 - comb(n_sensors - n_blamed, k) / comb(n_sensors, k)


def hit_rate_at_k(contributions: npt.ArrayLike, segments: Sequence[Segment], k: int = 3) -> HitRate:
    """contributions: `(T, D)` per-sensor share of each test point's score."""
    c = np.asarray(contributions, dtype=np.float64)
    d = c.shape[1]
    hits = rnd = n_pts = 0.0
    seg_hits = seg_rnd = 0.0
    n_seg = 0
    for seg in segments:
        block = c[seg.start : seg.end]
        if len(block) == 0 or not seg.sensors:
            continue
        blamed = np.zeros(d, dtype=bool)
        blamed[list(seg.sensors)] = True
        top = np.argsort(-block, axis=1, kind="stable")[:, :k]
        hits += float(blamed[top].any(axis=1).sum())
        p_rand = _random_hit(d, int(blamed.sum()), k)
        rnd += p_rand * len(block)
        n_pts += len(block)
        seg_top = np.argsort(-block.mean(axis=0), kind="stable")[:k]
        seg_hits += float(blamed[seg_top].any())
        seg_rnd += p_rand
        n_seg += 1
    return HitRate(
        points=hits / n_pts if n_pts else float("nan"),
        segments=seg_hits / n_seg if n_seg else float("nan"),
        random_points=rnd / n_pts if n_pts else float("nan"),
        random_segments=seg_rnd / n_seg if n_seg else float("nan"),
        n_points=int(n_pts),
        n_segments=n_seg,
    )
