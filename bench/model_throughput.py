"""Model-only scoring throughput, training time per epoch, and the quality/speed trade-off.

Run: PYTHONPATH=. /work/venv/bin/python -m bench.model_throughput [--quick]
Writes bench/out/model_throughput.md and prints the same tables.

* Scoring: `importance_score` on pre-built tensors (no scaler, no numpy
  conversion) for batch sizes 1…4096 and K in {1, 8, 32}, D = 38, default
  network; medians of repeated timings (the 2 cores are shared: noisy).
  Baselines measured in the same run: the same layer sizes as plain matmuls
  (no activations, no distributions, K = 1), and the paper's 2×500 network.
  `Detector.score` end to end (numpy in/out, scaler, thresholds) for reference.
* Trade-off: hidden sizes × K at batch 1024 against held-out log-likelihood
  (reference estimate with K = 256) and AUROC on synthetic 38-sensor data with
  injected anomalies (one sensor shifted by 1.5 robust sd), each network trained
  with the same budget (10 epochs, 3 discriminator epochs per cycle).
* Training: seconds per VAE epoch and per cycle of discriminator epochs.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from streamvae.detector import Detector, ModelSpec, ThresholdSpec, TrainSpec, train_detector
from streamvae.model.scoring import importance_score, scoring_noise
from streamvae.model.training import build

D = 38
OUT = Path(__file__).resolve().parent / "out" / "model_throughput.md"


def median_rate(fn: Callable[[], object], records: int, repeats: int, min_s: float = 0.2) -> float:
    """records/s: median over `repeats` timings, each looping `fn` for >= min_s."""
    fn()
    rates = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= min_s:
                break
        rates.append(n * records / dt)
    return statistics.median(rates)


def scoring_rate(spec: ModelSpec, batch: int, repeats: int) -> float:
    torch.manual_seed(0)
    vae, disc = build(D, spec, torch.device("cpu"))
    vae.eval()
    if disc is not None:
        disc.eval()
    eps = scoring_noise(spec.importance_samples, spec.latent_dim, torch.device("cpu"))
    x = torch.randn(batch, D)
    s = torch.randint(0, 16, (batch,))
    with torch.inference_mode():
        return median_rate(lambda: importance_score(vae, disc, x, s, eps), batch, repeats)


def matmul_rate(hidden: tuple[int, ...], latent: int, batch: int, repeats: int) -> float:
    """The same layer sizes as bare matmuls: encoder D->h..->2L, decoder L->h..->3D."""
    g = torch.Generator().manual_seed(0)
    enc = [D, *hidden, 2 * latent]
    dec = [latent, *reversed(hidden), 3 * D]
    ws = [
        torch.randn(a, b, generator=g) * 0.1
        for dims in (enc, dec)
        for a, b in itertools.pairwise(dims)
    ]
    n_enc = len(enc) - 1
    x = torch.randn(batch, D)

    def run() -> torch.Tensor:
        h = x
        for w in ws[:n_enc]:
            h = h @ w
        h = h[:, :latent]
        for w in ws[n_enc:]:
            h = h @ w
        return h

    with torch.inference_mode():
        return median_rate(run, batch, repeats)


def synthetic(seed: int, n: int, sites: int = 4) -> tuple[np.ndarray, list[str]]:
    """38 sensors: a 4-D nonlinear manifold + Student-t(3) noise, per-site offsets.

    The structure is fixed; `seed` draws the samples.
    """
    structure = np.random.default_rng(12345)
    w1, w2 = structure.normal(size=(4, 16)), structure.normal(size=(16, D)) / 4
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4))
    x = np.tanh(z @ w1) @ w2 + 0.05 * rng.standard_t(3, size=(n, D))
    site = rng.integers(0, sites, size=n)
    x += site[:, None] * 0.5
    x[:, :6] = np.round(x[:, :6], 1)  # some quantized / near-constant sensors
    return x.astype(np.float32), [f"s{i}" for i in site]


def auroc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    """P(anomalous score > normal score), ties 1/2 (Mann-Whitney)."""
    allv = np.concatenate([normal, anomalous])
    ranks = allv.argsort().argsort().astype(np.float64) + 1
    r = ranks[len(normal) :].sum()
    n1, n0 = len(anomalous), len(normal)
    return float((r - n1 * (n1 + 1) / 2) / (n1 * n0))


def tradeoff(quick: bool, repeats: int) -> list[dict[str, object]]:
    x, sites = synthetic(0, 3000 if quick else 6000)
    xt, st = synthetic(1, 2000)
    # anomalies: one random sensor shifted by 1.5 robust sd (hard enough not to saturate)
    xa = xt.copy()
    rows = np.arange(len(xa))
    cols = np.random.default_rng(2).integers(0, D, size=len(xa))
    scale = np.maximum(np.subtract(*np.quantile(x, [0.75, 0.25], axis=0)) / 1.349, 0.01)
    xa[rows, cols] += 1.5 * scale[cols]
    out = []
    tspec = TrainSpec(max_epochs=6 if quick else 10, discriminator_epochs_per_cycle=3, patience=4)
    for hidden in [(32, 32), (64, 64), (128, 128), (500, 500)] if not quick else [(64, 64)]:
        spec = ModelSpec(hidden=hidden, importance_samples=1)
        t0 = time.perf_counter()
        det = train_detector(
            x, sites, features=[f"m{i}" for i in range(D)], model_spec=spec, train_spec=tspec,
            threshold_spec=ThresholdSpec(), device="cpu", version="b",
        )  # fmt: skip
        train_s = time.perf_counter() - t0
        ref = -_with_k(det, 256).score(xt, st).scores
        for k in (1, 4, 8, 32):
            dk = _with_k(det, k)
            ll = -dk.score(xt, st).scores
            out.append(
                {
                    "hidden": "x".join(map(str, hidden)),
                    "K": k,
                    "loglik": float(ll.mean()),
                    "gap_to_K256": float((ref - ll).mean()),
                    "auroc": auroc(-ll, dk.score(xa, st).scores),
                    "rec_s_b1024": scoring_rate(replace(spec, importance_samples=k), 1024, repeats),
                    "train_s": train_s,
                    "epochs": det.report.epochs,
                }
            )
            print(out[-1], flush=True)
    return out


def _with_k(det: Detector, k: int) -> Detector:
    return replace(det, model_spec=replace(det.model_spec, importance_samples=k))


def epoch_times(spec: ModelSpec, n: int) -> dict[str, float]:
    x, sites = synthetic(3, n)
    det = train_detector(
        x, sites, features=[f"m{i}" for i in range(D)], model_spec=spec,
        train_spec=TrainSpec(max_epochs=3, kl_warmup_epochs=1, discriminator_epochs_per_cycle=10),
        threshold_spec=ThresholdSpec(), device="cpu", version="e",
    )  # fmt: skip
    walls = [h.wall_s for h in det.report.history]
    return {"records": n, "s_per_epoch_incl_10_disc_epochs": statistics.median(walls)}


def vae_only_epoch(spec: ModelSpec, n: int) -> float:
    x, sites = synthetic(3, n)
    det = train_detector(
        x, sites, features=[f"m{i}" for i in range(D)], model_spec=replace(spec, prior="standard"),
        train_spec=TrainSpec(max_epochs=3, kl_warmup_epochs=1),
        threshold_spec=ThresholdSpec(), device="cpu", version="e",
    )  # fmt: skip
    return statistics.median(h.wall_s for h in det.report.history)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    repeats = 3 if args.quick else args.repeats
    lines = [
        "# Model throughput (model only, CPU)",
        "",
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, D = {D}; medians of "
        f"{repeats} timings (shared 2-core machine: noisy).",
        "",
    ]
    default = ModelSpec()
    lines += [
        f"Default network: hidden {default.hidden}, latent {default.latent_dim}, "
        f"discriminator {default.discriminator_hidden}, K = {default.importance_samples}.",
        "",
        "## Scoring throughput (records/s), default network",
        "",
    ]
    batches = [1, 8, 64, 512, 1024, 4096]
    header = "| threads | K | " + " | ".join(f"B={b}" for b in batches) + " |"
    lines += [header, "|" + "---|" * (len(batches) + 2)]
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for k in (1, 8, 32):
            spec = replace(default, importance_samples=k)
            rates = [scoring_rate(spec, b, repeats) for b in batches]
            lines.append(f"| {threads} | {k} | " + " | ".join(f"{r:,.0f}" for r in rates) + " |")
            print(lines[-1], flush=True)
    torch.set_num_threads(1)
    lines += ["", "Everything below: 1 torch thread."]
    lines += [
        "",
        "## Baselines (same run)",
        "",
        "| network | K | B=1024 records/s |",
        "|---|---|---|",
    ]
    mm = matmul_rate(default.hidden, default.latent_dim, 1024, repeats)
    lines.append(f"| default sizes, bare matmuls | 1 | {mm:,.0f} |")
    paper = replace(default, hidden=(500, 500))
    for k in (1, 8):
        r = scoring_rate(replace(paper, importance_samples=k), 1024, repeats)
        lines.append(f"| paper 2x500 | {k} | {r:,.0f} |")
    print("\n".join(lines[-4:]), flush=True)
    det = train_detector(
        *synthetic(5, 2000), features=[f"m{i}" for i in range(D)], model_spec=default,
        train_spec=TrainSpec(max_epochs=1), threshold_spec=ThresholdSpec(), device="cpu",
        version="e2e",
    )  # fmt: skip
    xv, sv = synthetic(6, 1024)
    e2e = median_rate(lambda: det.score(xv, sv), 1024, repeats)
    lines.append(f"| default, `Detector.score` end to end (numpy, scaler) | 1 | {e2e:,.0f} |")

    lines += ["", "## Quality / speed trade-off (synthetic 38 sensors, 4 sites)", ""]
    lines += [
        "| hidden | K | held-out log-lik | gap to K=256 | AUROC | records/s B=1024 "
        "| train s (epochs) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in tradeoff(args.quick, repeats):
        lines.append(
            f"| {r['hidden']} | {r['K']} | {r['loglik']:.2f} | {r['gap_to_K256']:.3f} | "
            f"{r['auroc']:.3f} | {r['rec_s_b1024']:,.0f} | {r['train_s']:.0f} ({r['epochs']}) |"
        )
    n = 5000 if args.quick else 10000
    et = epoch_times(default, n)
    vo = vae_only_epoch(default, n)
    lines += [
        "",
        "## Training time per epoch (default network, batch 256)",
        "",
        f"- {n} records: {vo:.2f} s per VAE epoch (standard prior); "
        f"{et['s_per_epoch_incl_10_disc_epochs']:.2f} s per epoch with the optimal prior "
        "(VAE epoch + 10 discriminator epochs + validation).",
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
