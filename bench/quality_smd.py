"""Quality experiments on an SMD subset: product variants vs PCA and the Gaussian VAE.

Run: PYTHONPATH=. python -m bench.quality_smd --machines machine-1-1,... \
        --variant "ours" --variant "pooled-scaler:model.site_scaling=False"
Every run fits, on the same rows (every `--stride`-th training row per machine),
per-machine PCA (bench.baselines, calibrated as in bench.smd), the per-machine
Gaussian-decoder VAE of bench.smd, and each product variant (ONE site-conditioned
model over the machines, product thresholds). Prints one JSON line per method:
mean AUPRC / AUROC / calibrated F1 over the machines, and per machine.
A variant is `name:section.field=value,...` (sections model, train, thr; values are
Python literals, e.g. `model.discriminator_hidden=(128,128),train.seed=1`).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import product
from bench.baselines import PCAModel
from bench.data import load_smd, subsample
from bench.metrics import Detection, detection
from bench.smd import split_fit_calib
from streamvae.model.specs import ModelSpec, ThresholdSpec, TrainSpec
from streamvae.model.thresholds import quantile_threshold

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _parse(variant: str) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]:
    name, _, rest = variant.partition(":")
    model: dict[str, Any] = {}
    train: dict[str, Any] = {}
    thr: dict[str, Any] = {}
    for item in filter(None, re.split(r",(?![^()]*\))", rest)):  # not inside (…)
        key, _, raw = item.partition("=")
        section, _, field = key.partition(".")
        words = ("gaussian", "student_t", "optimal", "standard")
        value: Any = raw if raw in words else ast.literal_eval(raw)
        {"model": model, "train": train, "thr": thr}[section][field] = value
    return name, model, train, thr


def _summary(name: str, per: dict[str, Detection], seconds: float) -> dict[str, Any]:
    return {
        "method": name,
        "auprc": round(float(np.mean([d.auprc for d in per.values()])), 4),
        "auroc": round(float(np.mean([d.auroc for d in per.values()])), 4),
        "f1": round(float(np.mean([d.f1 for d in per.values()])), 4),
        "prec": round(float(np.mean([d.precision for d in per.values()])), 4),
        "rec": round(float(np.mean([d.recall for d in per.values()])), 4),
        "s": round(seconds, 1),
        "per_machine": {m: [round(d.auprc, 3), round(d.f1, 3)] for m, d in per.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--machines", required=True)
    ap.add_argument("--stride", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--floor", type=float, default=None, help="scale_floor for every VAE")
    args = ap.parse_args()
    torch.set_num_threads(1)
    machines = load_smd(args.data, args.machines.split(","))
    trains = {m.name: subsample(m.train, args.stride) for m in machines}
    tspec = ThresholdSpec()
    base_train = TrainSpec(seed=0, max_epochs=args.epochs)
    base_model = ModelSpec() if args.floor is None else ModelSpec(scale_floor=args.floor)
    if not args.no_baselines:
        per: dict[str, Detection] = {}
        t0 = time.perf_counter()
        for m in machines:
            fit_x, cal_x = split_fit_calib(trains[m.name], 0)
            pca = PCAModel.fit(fit_x, seed=0)
            thr = quantile_threshold(pca.score(cal_x), tspec)
            per[m.name] = detection(pca.errors(m.test).sum(axis=1), m.test_label, thr)
        print(json.dumps(_summary("PCA", per, time.perf_counter() - t0)), flush=True)
        gauss = replace(base_model, decoder="gaussian", prior="standard", conditional=False)
        per, t0 = {}, time.perf_counter()
        for m in machines:
            x = trains[m.name]
            f = product.fit(x, [m.name] * len(x), model=gauss, train=base_train, threshold=tspec)
            s, _ = product.score(f.detector, m.test, m.name)
            per[m.name] = detection(s, m.test_label, f.threshold(m.name))
        print(json.dumps(_summary("Gauss-VAE", per, time.perf_counter() - t0)), flush=True)
    values = np.concatenate([trains[m.name] for m in machines])
    sites = [m.name for m in machines for _ in range(len(trains[m.name]))]
    for variant in args.variant or ["ours"]:
        name, mch, tch, thch = _parse(variant)
        model, train = replace(base_model, **mch), replace(base_train, **tch)
        t0 = time.perf_counter()
        f = product.fit(values, sites, model=model, train=train, threshold=replace(tspec, **thch))
        per = {}
        for m in machines:
            s, _ = product.score(f.detector, m.test, m.name)
            per[m.name] = detection(s, m.test_label, f.threshold(m.name))
        row = _summary(name, per, time.perf_counter() - t0)
        row["epochs"] = f.detector.report.epochs
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
