"""Model quality vs network size and K on SMD (3 machines): AUROC and held-out log-lik.

Run: PYTHONPATH=. /work/venv/bin/python -m bench.model_quality_smd [--epochs 20]
Reads ../shared/data/smd (see its README). Trains on 6000 random training rows of
each machine (the machine is the site), scores every third test row with
K in {1, 4, 8, 32}; reports point-wise AUROC (pooled and mean per machine) and
the mean log-likelihood of the normal test rows. One training seed per size: the
spread between sizes below ~0.02 AUROC is within seed noise.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench.model_throughput import auroc
from streamvae.detector import ModelSpec, ThresholdSpec, TrainSpec, train_detector

SMD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "smd"
MACHINES = ("machine-1-2", "machine-1-3", "machine-2-1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--data", default=str(SMD))
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    xs, sites, txs, tsites, labels = [], [], [], [], []
    for m in MACHINES:
        d = np.load(Path(args.data) / f"{m}.npz")
        idx = np.sort(rng.choice(len(d["train"]), 6000, replace=False))
        xs.append(d["train"][idx])
        sites += [m] * len(idx)
        ti = np.arange(0, len(d["test"]), 3)
        txs.append(d["test"][ti])
        tsites += [m] * len(ti)
        labels.append(d["test_label"][ti])
    x, tx, y = np.concatenate(xs), np.concatenate(txs), np.concatenate(labels).astype(bool)
    ts = np.asarray(tsites)
    feats = [f"m{i}" for i in range(x.shape[1])]
    for hidden in [(32, 32), (64, 64), (128, 128)]:
        t0 = time.perf_counter()
        det = train_detector(
            x, sites, features=feats, model_spec=ModelSpec(hidden=hidden),
            train_spec=TrainSpec(max_epochs=args.epochs, patience=4),
            threshold_spec=ThresholdSpec(), device="cpu", version="q",
        )  # fmt: skip
        train_s = time.perf_counter() - t0
        for k in (1, 4, 8, 32):
            dk = replace(det, model_spec=replace(det.model_spec, importance_samples=k))
            sc = dk.score(tx, tsites).scores
            per = [auroc(sc[(ts == m) & ~y], sc[(ts == m) & y]) for m in MACHINES]
            row = {
                "hidden": list(hidden), "K": k, "auroc": round(auroc(sc[~y], sc[y]), 4),
                "auroc_per_machine_mean": round(float(np.mean(per)), 4),
                "heldout_loglik_normal": round(float(-sc[~y].mean()), 3),
                "train_s": round(train_s, 1), "epochs": det.report.epochs,
            }  # fmt: skip
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
