"""Sections 2 and 3: detection on SMD and explanation hit rate.

Split (per machine): the training rows are subsampled every `stride`-th row
(time order kept); the product gets all of them and calibrates its own per-site
thresholds on its internal held-out slice. The baselines are fitted on a random
90 % of the same rows and calibrated (same rule: the product's
`quantile_threshold` at the product's target FPR) on the other 10 %. The whole
test set of every machine is scored; labels are never used before scoring.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from bench import product
from bench.baselines import IForestModel, PCAModel, half_space_trees
from bench.data import Machine, subsample
from bench.metrics import Detection, HitRate, detection, hit_rate_at_k, mean_over
from streamvae.model.specs import ModelSpec, ThresholdSpec, TrainSpec
from streamvae.model.thresholds import quantile_threshold

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
_D = TypeVar("_D", Detection, HitRate)

OURS = "ours (Student-t, optimal prior, site-conditioned)"
OURS_STD = "ours, standard prior"
GAUSS = "Gaussian-decoder VAE (per machine)"
PCA = "PCA recon. error (per machine)"
IFOREST = "Isolation Forest (per machine)"
HST = "HalfSpaceTrees (per machine, streaming)"
SHORT = {
    OURS: "ours",
    OURS_STD: "ours-std",
    GAUSS: "Gauss-VAE",
    PCA: "PCA",
    IFOREST: "IForest",
    HST: "HST",
}


@dataclass
class SmdResults:
    detection: dict[str, dict[str, Detection]] = field(default_factory=dict)
    hits: dict[str, dict[str, HitRate]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    ours: product.Fitted | None = None  # reused as the few-shot ceiling (f)
    losses: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    # per method: (mean AUPRC, mean calibrated F1) over the machines, one pair per seed
    per_seed: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    seeds: tuple[int, ...] = ()

    def add(self, method: str, machine: str, det: Detection, hit: HitRate | None) -> None:
        self.detection.setdefault(method, {})[machine] = det
        if hit is not None:
            self.hits.setdefault(method, {})[machine] = hit

    def time(self, method: str, seconds: float) -> None:
        self.seconds[method] = self.seconds.get(method, 0.0) + seconds


def split_fit_calib(x: F32, seed: int, frac: float = 0.1) -> tuple[F32, F32]:
    """Random (fit, calibration) split of rows, both kept in time order."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(x), dtype=bool)
    mask[rng.choice(len(x), size=max(1, round(frac * len(x))), replace=False)] = True
    return x[~mask], x[mask]


def _baselines(
    m: Machine, train: F32, seed: int, tspec: ThresholdSpec, *, hst: bool, res: SmdResults
) -> None:
    fit_x, cal_x = split_fit_calib(train, seed)

    def run(name: str, build: Callable[[], tuple[npt.NDArray[np.float64], ...]]) -> None:
        t0 = time.perf_counter()
        out = build()
        res.time(name, time.perf_counter() - t0)
        cal, test = out[0], out[1]
        contrib = out[2] if len(out) > 2 else None
        thr = quantile_threshold(cal, tspec)
        hit = hit_rate_at_k(contrib, m.segments) if contrib is not None else None
        res.add(name, m.name, detection(test, m.test_label, thr), hit)

    def pca() -> tuple[npt.NDArray[np.float64], ...]:
        model = PCAModel.fit(fit_x, seed=seed)
        err = model.errors(m.test)
        return model.score(cal_x), err.sum(axis=1), err

    def iforest() -> tuple[npt.NDArray[np.float64], ...]:
        model = IForestModel.fit(fit_x, seed=seed)
        return model.score(cal_x), model.score(m.test)

    run(PCA, pca)
    run(IFOREST, iforest)
    if hst:
        run(HST, lambda: half_space_trees(fit_x, cal_x, m.test, seed=seed))


def _score_product(
    fitted: product.Fitted, name: str, machines: Sequence[Machine], res: SmdResults
) -> None:
    t0 = time.perf_counter()
    for m in machines:
        s, c = product.score(fitted.detector, m.test, m.name)
        hit = hit_rate_at_k(c, m.segments)
        res.add(name, m.name, detection(s, m.test_label, fitted.threshold(m.name)), hit)
    res.time(name, time.perf_counter() - t0)
    res.losses[name] = product.loss_curve(fitted.detector)


def run(
    machines: Sequence[Machine],
    *,
    stride: int,
    model: ModelSpec,
    train: TrainSpec,
    tspec: ThresholdSpec,
    hst: bool,
) -> SmdResults:
    """All detectors on all machines; returns per-method, per-machine metrics."""
    res = SmdResults()
    trains = {m.name: subsample(m.train, stride) for m in machines}
    for m in machines:
        log.info("baselines on %s", m.name)
        _baselines(m, trains[m.name], train.seed, tspec, hst=hst, res=res)

    values = np.concatenate([trains[m.name] for m in machines])
    sites = [m.name for m in machines for _ in range(len(trains[m.name]))]
    for name, spec in ((OURS, model), (OURS_STD, product.with_(model, prior="standard"))):
        fitted = product.fit(values, sites, model=spec, train=train, threshold=tspec, label=name)
        res.time(name, fitted.seconds)
        _score_product(fitted, name, machines, res)
        if name == OURS:
            res.ours = fitted

    gauss = product.with_(model, decoder="gaussian", prior="standard", conditional=False)
    for m in machines:
        x = trains[m.name]
        fitted = product.fit(
            x,
            [m.name] * len(x),
            model=gauss,
            train=train,
            threshold=tspec,
            label=f"{GAUSS} {m.name}",
        )
        res.time(GAUSS, fitted.seconds)
        _score_product(fitted, GAUSS, [m], res)
    return res


def run_seeds(
    machines: Sequence[Machine],
    seeds: Sequence[int],
    *,
    stride: int,
    model: ModelSpec,
    train: TrainSpec,
    tspec: ThresholdSpec,
    hst: bool,
) -> SmdResults:
    """`run` once per training seed (the same rows every time), averaged by `average`.

    Why several seeds: one seed's mean AUPRC moves by about ±0.01 with the seed (one
    machine, 1-5 with 0.42 % anomalies, swings between 0.07 and 0.47 across seeds and
    variants), as much as the gaps between the methods compared here."""
    runs = [
        run(
            machines, stride=stride, model=model, train=replace(train, seed=s), tspec=tspec, hst=hst
        )
        for s in seeds
    ]
    return average(runs, tuple(seeds))


def _mean_of(items: Sequence[_D], cls: type[_D]) -> _D:
    """A dataclass of type `cls` whose float fields are the means over `items`."""
    values = {}
    for f in fields(cls):
        column = [getattr(i, f.name) for i in items]
        values[f.name] = column[0] if isinstance(column[0], int) else float(np.mean(column))
    return cls(**values)


def average(runs: Sequence[SmdResults], seeds: tuple[int, ...]) -> SmdResults:
    """Per method and machine, every metric averaged over the runs (seeds); the first
    run's fitted model and loss curves are kept (the few-shot ceiling, the plots)."""
    first = runs[0]
    out = SmdResults(ours=first.ours, losses=first.losses, seeds=seeds)
    for method, by_machine in first.detection.items():
        for machine in by_machine:
            dets = [r.detection[method][machine] for r in runs]
            out.detection.setdefault(method, {})[machine] = _mean_of(dets, Detection)
        out.per_seed[method] = [
            (mean_over(r.detection[method], "auprc"), mean_over(r.detection[method], "f1"))
            for r in runs
        ]
        out.seconds[method] = float(np.mean([r.seconds.get(method, 0.0) for r in runs]))
    for method, by_machine in first.hits.items():
        for machine in by_machine:
            hits = [r.hits[method][machine] for r in runs]
            out.hits.setdefault(method, {})[machine] = _mean_of(hits, HitRate)
    return out
