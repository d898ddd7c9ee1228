"""Few-shot (issue 5) on several held-out machines for product variants, n = 300 by default.

Run: PYTHONPATH=. python -m bench.quality_fewshot [--held 5] [--ns 300]
     [--variant "name:model.site_scaling=False"]
Uses bench.fewshot.run (the harness's own experiment) at the --quick budget
(other machines every 80th row, <= 5 epochs) and prints the mean AUPRC over the
held-out machines per method and n, one JSON line per variant.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench import fewshot
from bench.data import load_smd
from bench.evaluate import held_out
from bench.quality_smd import _parse
from streamvae.model.specs import ModelSpec, ThresholdSpec, TrainSpec

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--held", type=int, default=5)
    ap.add_argument("--ns", default="300")
    ap.add_argument("--stride", type=int, default=80)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--variant", action="append", default=[])
    args = ap.parse_args()
    torch.set_num_threads(1)
    machines = load_smd(args.data)
    hold = held_out([m.name for m in machines], args.held)
    ns = [int(n) for n in args.ns.split(",")]
    for variant in args.variant or ["ours"]:
        name, mch, tch, thch = _parse(variant)
        res = fewshot.run(
            machines,
            hold,
            ns,
            stride=args.stride,
            model=replace(ModelSpec(), **mch),
            train=replace(TrainSpec(seed=0, max_epochs=args.epochs), **tch),
            tspec=replace(ThresholdSpec(), **thch),
            ceiling=None,
        )
        out = {
            str(n): {
                method: round(float(np.mean([d.auprc for d in per.values()])), 4)
                for method, per in res.results[n].items()
            }
            for n in ns
        }
        print(json.dumps({"variant": name, "held_out": hold, "auprc": out}), flush=True)


if __name__ == "__main__":
    main()
