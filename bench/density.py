"""Section 1: density estimation (dissertation Table 3.2, Takahashi et al. IJCAI 2018).

Gaussian- vs Student-t-decoder VAE, standard prior, unconditional, on the five
tabular sets standardized with the training split's mean and sd (bench.data).
Training goes through the product's `train_detector`; it gets the training and
validation rows together and holds out the validation share itself for early
stopping (same sizes as the paper's 50/10 or 10/10 split). Test log-likelihood
is the product's importance-sampled `Detector.loglik`, mean over test rows,
expressed in the standardized space of the paper (see `jacobian`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench import product
from bench.data import TabularSplit, load_tabular
from streamvae.detector import Detector
from streamvae.errors import TrainingError
from streamvae.model.specs import ModelSpec, TrainSpec

log = logging.getLogger(__name__)

DECODERS = ("gaussian", "student_t")
MAX_EPOCHS = 500  # the paper's cap
SITE = "all"


@dataclass
class DensityResults:
    # loglik[dataset][decoder] = per-seed mean test log-likelihood (nan = training failed)
    loglik: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # curves[dataset][decoder] = (train losses, validation losses) of the first seed
    curves: dict[str, dict[str, tuple[list[float], list[float]]]] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)  # epoch cap per data set
    # spikes[dataset][decoder] = loss spikes flagged by the product's training report, all seeds
    spikes: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


def jacobian(det: Detector) -> float:
    """Correction (nats) from the product's loglik to the log-likelihood of its input.

    `Detector.loglik` is log p in the product's internal robust-standardized space
    u = (x − center) / scale (streamvae/detector.py, model/scaler.py). The density
    of the input x is p_x(x) = p_u(u) / Π_d scale_d, so subtract Σ_d log scale_d.
    """
    return -det.scaler.log_scale_sum


def epochs_for(n_train: int, batch_size: int, steps: int, min_epochs: int) -> int:
    """Epochs that make about `steps` gradient steps, within [min_epochs, MAX_EPOCHS]."""
    per_epoch = max(1, -(-n_train // batch_size))
    return int(min(MAX_EPOCHS, max(min_epochs, round(steps / per_epoch))))


def one(
    split: TabularSplit, decoder: str, base: ModelSpec, train: TrainSpec
) -> tuple[float, product.Fitted]:
    values = np.concatenate([split.train, split.valid])
    frac = len(split.valid) / len(values)
    latent = 2 if split.name == "smtp" else base.latent_dim
    spec = product.with_(
        base, decoder=decoder, prior="standard", conditional=False, latent_dim=latent
    )
    tr = product.replace_train(train, validation_fraction=frac)
    fitted = product.fit(values, [SITE] * len(values), model=spec, train=tr, label=decoder)
    ll = product.loglik(fitted.detector, split.test, SITE) + jacobian(fitted.detector)
    return float(np.mean(ll)), fitted


def run(
    data: Path,
    datasets: Sequence[str],
    seeds: Sequence[int],
    *,
    model: ModelSpec,
    train: TrainSpec,
    steps: int,
    min_epochs: int,
) -> DensityResults:
    res = DensityResults()
    for name in datasets:
        for seed in seeds:
            split = load_tabular(data, name, seed)
            epochs = epochs_for(len(split.train), train.batch_size, steps, min_epochs)
            res.epochs[name] = epochs
            for decoder in DECODERS:
                tr = product.replace_train(train, seed=seed, max_epochs=epochs)
                try:
                    ll, fitted = one(split, decoder, model, tr)
                except TrainingError as exc:
                    res.failures.append(f"{name}/{decoder}/seed {seed}: {exc}")
                    log.warning("training failed: %s %s seed %d: %s", name, decoder, seed, exc)
                    ll = float("nan")
                    fitted = None
                res.loglik.setdefault(name, {}).setdefault(decoder, []).append(ll)
                if fitted is not None:
                    res.seconds += fitted.seconds
                    sp = res.spikes.setdefault(name, {})
                    sp[decoder] = sp.get(decoder, 0) + fitted.detector.report.spikes
                    if seed == seeds[0]:
                        res.curves.setdefault(name, {})[decoder] = product.loss_curve(
                            fitted.detector
                        )
                log.info("density %s %s seed %d: %.3f", name, decoder, seed, ll)
    return res
