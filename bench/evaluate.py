"""Evaluation harness: `PYTHONPATH=. python -m bench.evaluate [--quick] [--data ../shared/data]`.

Sections (docs/evaluation.md explains each): (1) density estimation on the five
tabular sets, (2) SMD detection against per-machine baselines, (3) explanation
hit rate, (4) new-site few-shot. Writes bench/RESULTS.md and PNGs next to it.
All VAEs are trained and scored through the product's public
`streamvae.detector.train_detector` / `Detector.score` / `Detector.loglik`.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from bench import density, fewshot, overrides, smd, tables
from bench.data import DEFAULT_DATA, TABULAR, load_smd, smd_machines
from bench.report import Report
from streamvae.model.specs import ModelSpec, ThresholdSpec, TrainSpec

log = logging.getLogger("bench.evaluate")

SECTIONS = ("density", "smd", "fewshot")


@dataclass(frozen=True)
class Budget:
    """Everything that trades accuracy of the estimate for run time."""

    mode: str
    seeds: tuple[int, ...]  # density-estimation seeds (SMD/few-shot use seeds[0])
    density_hidden: tuple[int, ...]
    density_steps: int  # gradient-step budget per run: epochs = steps / batches per epoch
    density_min_epochs: int
    density_patience: int
    density_k: int  # importance samples for the test log-likelihood
    smd_stride: int  # every k-th SMD training row
    smd_seeds: tuple[int, ...]  # training seeds of the SMD section (metrics averaged)
    smd_epochs: int
    hst: bool
    fewshot_machines: int
    fewshot_ns: tuple[int, ...]
    fewshot_stride: int
    fewshot_epochs: int


FULL = Budget(
    mode="full",
    seeds=(0, 1, 2, 3, 4),
    density_hidden=(128, 128),
    density_steps=2000,
    density_min_epochs=5,
    density_patience=10,
    density_k=50,
    smd_stride=10,
    smd_seeds=(0, 1, 2),
    smd_epochs=30,
    hst=True,
    fewshot_machines=5,
    fewshot_ns=(100, 300, 1000),
    fewshot_stride=20,
    fewshot_epochs=20,
)
QUICK = Budget(
    mode="quick",
    seeds=(0, 1),
    density_hidden=(64, 64),
    density_steps=400,
    density_min_epochs=3,
    density_patience=5,
    density_k=20,
    smd_stride=40,
    smd_seeds=(0,),
    smd_epochs=6,
    hst=True,
    fewshot_machines=1,
    fewshot_ns=(100, 300, 1000),
    fewshot_stride=80,
    fewshot_epochs=5,
)


def held_out(names: Sequence[str], k: int) -> list[str]:
    """k machines spread over the sorted list (deterministic)."""
    step = max(1, len(names) // k)
    return list(names[::step][:k])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.evaluate", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small budget (< 10 min)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="data folder")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent, help="RESULTS.md folder")
    ap.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset")
    ap.add_argument("--machines", type=int, default=0, help="use only the first N (dev)")
    ap.add_argument("--datasets", default=",".join(TABULAR), help="tabular subset (dev)")
    ap.add_argument(
        "--seed", type=int, default=None, help="SMD / few-shot seed (default: first seed)"
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: fastest for these small networks)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="model.KEY=VALUE|train.KEY=VALUE",
        help="change a ModelSpec / TrainSpec field in the SMD and few-shot sections "
        "(repeatable; for variant runs, stated in the RESULTS header)",
    )
    args = ap.parse_args(argv)
    try:
        ov = overrides.parse(args.set)
    except ValueError as e:
        ap.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    b = QUICK if args.quick else FULL
    seed = b.seeds[0] if args.seed is None else args.seed
    sections = [s for s in args.sections.split(",") if s]
    rep = Report(out_dir=args.out, mode=b.mode, seeds=b.seeds)
    rep.text(intro(b))
    tspec = ThresholdSpec()
    base = ModelSpec()
    smd_seeds = (seed,) if args.seed is not None else b.smd_seeds
    rep.facts.append(
        f"**SMD seeds**: {', '.join(map(str, smd_seeds))} (metrics averaged); **few-shot "
        f"seed**: {seed}; density uses every seed above"
    )
    rep.facts.append(f"**Product defaults used**: `{base}`, `{tspec}`, `{TrainSpec()}`")
    if ov:
        rep.facts.append(
            f"**Overrides** (SMD and few-shot sections; not the reported configuration): "
            f"`{ov.describe()}`"
        )
    smd_train = ov.apply_train(TrainSpec(seed=seed, max_epochs=b.smd_epochs))
    fewshot_train = ov.apply_train(TrainSpec(seed=seed, max_epochs=b.fewshot_epochs))
    variant = ov.apply_model(base)
    t_all = time.perf_counter()

    if "density" in sections:
        t0 = time.perf_counter()
        rep.text(DENSITY_TEXT)
        train = TrainSpec(batch_size=100, patience=b.density_patience)
        # scale_floor 1: on features already standardized to sd 1 the product's
        # robust scaler is then ~identity, so the networks see the paper's inputs
        model = replace(
            base,
            hidden=b.density_hidden,
            latent_dim=20,
            importance_samples=b.density_k,
            loglik_samples=b.density_k,  # Detector.loglik's K (the test log-likelihood)
            scale_floor=1.0,
        )
        res = density.run(
            args.data,
            args.datasets.split(","),
            b.seeds,
            model=model,
            train=train,
            steps=b.density_steps,
            min_epochs=b.density_min_epochs,
        )
        tables.density(rep, res)
        rep.text(f"Section time: {(time.perf_counter() - t0) / 60:.1f} min.")
        rep.write()

    names = smd_machines(args.data)
    if args.machines:
        names = names[: args.machines]
    ceiling = None
    if "smd" in sections or "fewshot" in sections:
        machines = load_smd(args.data, names)
    if "smd" in sections:
        t0 = time.perf_counter()
        rep.text(
            SMD_TEXT.format(
                stride=b.smd_stride, epochs=smd_train.max_epochs, fpr=tspec.false_positive_rate
            )
        )
        res_smd = smd.run_seeds(
            machines,
            smd_seeds,
            stride=b.smd_stride,
            model=variant,
            train=smd_train,
            tspec=tspec,
            hst=b.hst,
        )
        tables.smd(rep, res_smd)
        rep.text(EXPLAIN_TEXT)
        tables.explanations(rep, res_smd)
        rep.text(f"Sections 2–3 time: {(time.perf_counter() - t0) / 60:.1f} min.")
        rep.write()
        if b.smd_stride == b.fewshot_stride and smd_train == fewshot_train:
            ceiling = res_smd.ours
    if "fewshot" in sections:
        t0 = time.perf_counter()
        hold = held_out(names, b.fewshot_machines)
        rep.text(
            FEWSHOT_TEXT.format(
                machines=", ".join(hold),
                stride=b.fewshot_stride,
                epochs=fewshot_train.max_epochs,
            )
        )
        res_fs = fewshot.run(
            machines,
            hold,
            b.fewshot_ns,
            stride=b.fewshot_stride,
            model=variant,
            train=fewshot_train,
            tspec=tspec,
            ceiling=ceiling,
        )
        tables.fewshot(rep, res_fs)
        rep.text(f"Section time: {(time.perf_counter() - t0) / 60:.1f} min.")
    path = rep.write()
    log.info("wrote %s in %.1f min", path, (time.perf_counter() - t_all) / 60)
    return 0


def intro(b: Budget) -> str:
    return (
        f"Budget `{b.mode}`: density seeds {list(b.seeds)}, hidden {list(b.density_hidden)}, "
        f"about {b.density_steps} gradient steps per run (>= {b.density_min_epochs}, "
        f"<= 500 epochs; patience {b.density_patience}), K = {b.density_k} importance "
        f"samples; SMD training rows subsampled to every {b.smd_stride}th row, "
        f"<= {b.smd_epochs} epochs, seeds {list(b.smd_seeds)}; "
        f"few-shot on {b.fewshot_machines} held-out machine(s), "
        f"n in {list(b.fewshot_ns)}, other machines every {b.fewshot_stride}th row, "
        f"<= {b.fewshot_epochs} epochs. See docs/evaluation.md for what each table means "
        "and the choices behind it."
    )


DENSITY_TEXT = """
## 1. Density estimation (dissertation Table 3.2)

Test log-likelihood (nats per record, higher is better) of a VAE with a Gaussian
vs a Student-t decoder, standard prior, no site conditioning, trained and scored
through the product (`train_detector`, `Detector.loglik`, importance sampling).
Features standardized with the training split's mean and sd; SMTP 10/10/80 %,
others 50/10/40 % (random split per seed, all rows incl. anomalies).
Log-likelihoods include the product scaler's log-Jacobian, so they are on the
paper's scale. Why ours are lower than published (docs/evaluation.md): a much
smaller training budget (hidden sizes and gradient steps in the header, vs 2-3
layers of 500 units for up to 500 epochs), and the product's bounds on the
decoder precision, which also damp the Gaussian decoder's instability.
"""

SMD_TEXT = """
## 2. Detection on SMD (14 machines, point-wise, no point adjustment)

"Ours" is ONE site-conditioned model over all machines; the baselines are fitted
per machine. Training rows: every {stride}th row of each machine's training set
(time order kept), ≤ {epochs} epochs. F1 (calibrated) uses the threshold fixed
from training data only at the product's target FPR ({fpr}): the product's own
per-site thresholds for the VAEs, the product's `quantile_threshold` on a held-out
10 % of the training rows for the baselines. Best-F1 picks the threshold on the
test labels: an **upper bound**, not a result. Test sets are scored in full.
"""

EXPLAIN_TEXT = """
## 3. Explanations: hit rate at 3

For each labelled anomaly segment (`interpretation_label`), does the top-3 of the
per-sensor contributions include a sensor the operators blamed? "points" ranks
each anomalous minute, "segments" ranks the segment's mean contribution. Random =
the exact expectation for a uniformly random ranking of the 38 sensors.
"""

FEWSHOT_TEXT = """
## 4. New-site few-shot (issue 5)

Held out: {machines}. Training data = every {stride}th training row of the other
machines + the held-out machine's FIRST n raw training records (contiguous);
≤ {epochs} epochs; the held-out machine's whole test set is scored. (f) is ours
trained on every machine's subsampled training data (the ceiling).
"""


if __name__ == "__main__":
    raise SystemExit(main())
