"""Section 4: new-site few-shot (issue 5).

For each held-out machine m and each n: the other machines contribute their
(subsampled) training rows, m contributes its first n raw training records
(the first n minutes it sends: contiguous, not subsampled). m's whole test set
is scored. Methods:

(a) ours: Student-t, optimal prior, site-conditioned (m has its own slot);
(b) the same with the standard prior;
(c) an unconditional pooled VAE (Student-t, optimal prior, no site input);
(d) a VAE trained only on the n records (ours minus conditioning);
(e) PCA reconstruction error fitted on the n records;
(f) ours trained with every machine's full (subsampled) training data: the
    section-2 model, the ceiling.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bench import product
from bench.baselines import PCAModel
from bench.data import Machine, subsample
from bench.metrics import Detection, detection
from streamvae.model.specs import ModelSpec, ThresholdSpec, TrainSpec
from streamvae.model.thresholds import quantile_threshold

log = logging.getLogger(__name__)

A = "(a) ours"
B = "(b) ours, standard prior"
C = "(c) unconditional pooled VAE"
D = "(d) VAE on the n records only"
E = "(e) PCA on the n records"
F = "(f) ours, full data (ceiling)"
METHODS = (A, B, C, D, E, F)


@dataclass
class FewShotResults:
    # results[n][method][machine]
    results: dict[int, dict[str, dict[str, Detection]]] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, n: int, method: str, machine: str, det: Detection) -> None:
        self.results.setdefault(n, {}).setdefault(method, {})[machine] = det


def run(
    machines: Sequence[Machine],
    held_out: Sequence[str],
    ns: Sequence[int],
    *,
    stride: int,
    model: ModelSpec,
    train: TrainSpec,
    tspec: ThresholdSpec,
    ceiling: product.Fitted | None,
) -> FewShotResults:
    res = FewShotResults()
    by_name = {m.name: m for m in machines}
    trains = {m.name: subsample(m.train, stride) for m in machines}
    if ceiling is None:  # section 2 did not run: train (f) here
        values = np.concatenate([trains[m.name] for m in machines])
        sites = [m.name for m in machines for _ in range(len(trains[m.name]))]
        ceiling = product.fit(values, sites, model=model, train=train, threshold=tspec, label=F)
        res.seconds += ceiling.seconds
    variants = {
        A: model,
        B: product.with_(model, prior="standard"),
        C: product.with_(model, conditional=False),
    }
    for name in held_out:
        m = by_name[name]
        others = [o for o in machines if o.name != name]
        base = np.concatenate([trains[o.name] for o in others])
        base_sites = [o.name for o in others for _ in range(len(trains[o.name]))]
        for n in ns:
            new = np.ascontiguousarray(m.train[:n])
            values = np.concatenate([base, new])
            sites = [*base_sites, *([name] * n)]
            for label, spec in variants.items():
                f = product.fit(
                    values, sites, model=spec, train=train, threshold=tspec, label=label
                )
                res.seconds += f.seconds
                s, _ = product.score(f.detector, m.test, name)
                res.add(n, label, name, detection(s, m.test_label, f.threshold(name)))
            f = product.fit(
                new,
                [name] * n,
                model=product.with_(model, conditional=False),
                train=train,
                threshold=tspec,
                label=D,
            )
            res.seconds += f.seconds
            s, _ = product.score(f.detector, m.test, name)
            res.add(n, D, name, detection(s, m.test_label, f.threshold(name)))
            pca = PCAModel.fit(new, seed=train.seed)
            thr = quantile_threshold(pca.score(new), tspec)  # in-sample: training data only
            res.add(n, E, name, detection(pca.score(m.test), m.test_label, thr))
            s, _ = product.score(ceiling.detector, m.test, name)
            res.add(n, F, name, detection(s, m.test_label, ceiling.threshold(name)))
            log.info("few-shot %s n=%d done", name, n)
    return res
