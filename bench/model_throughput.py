"""Model-only scoring throughput, training time per epoch, and the quality/speed trade-off.

Run: PYTHONPATH=. .venv/bin/python -m bench.model_throughput [--quick] [--device cuda]
Writes bench/out/model_throughput.md (`model_throughput_cuda.md` on a GPU) and prints
the same tables.

* Scoring: the daemon's scoring graph (`packed_scorer`: traced, MLPs in sigmoid form)
  on pre-built tensors on the device (no scaler, no numpy conversion) for batch sizes
  1…4096 (1,024…262,144 on a GPU) and K in {1, 8, 32}, D = 38, default network;
  medians of repeated timings (the 2 cores are shared: noisy). Baselines measured in
  the same run: the eager `importance_score` (tanh maths, what the graph replaces),
  the same layer sizes as plain matmuls (no activations, no distributions, K = 1),
  and the paper's 2×500 network. `Detector.score` end to end (numpy in/out, scaler,
  thresholds, host↔device copies through pinned buffers) for reference.
* With `--device cuda` only the scoring tables run (the rest is about the CPU).
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
from streamvae.model.scoring import importance_score, packed_scorer, scoring_noise
from streamvae.model.training import build

D = 38
OUT = Path(__file__).resolve().parent / "out" / "model_throughput.md"


def _synced(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """`fn` followed by a device sync (CUDA runs asynchronously)."""
    if device.type != "cuda":
        return fn

    def run() -> object:
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return run


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


def scoring_rate(
    spec: ModelSpec,
    batch: int,
    repeats: int,
    device: torch.device | None = None,
    *,
    eager: bool = False,
) -> float:
    """records/s of the daemon's scoring graph (`packed_scorer`), or with `eager` of
    `importance_score` as written (tanh, one op at a time)."""
    device = device or torch.device("cpu")
    torch.manual_seed(0)
    vae, disc = build(D, spec, device)
    vae.eval()
    if disc is not None:
        disc.eval()
    eps = scoring_noise(spec.importance_samples, spec.latent_dim, device)
    x = torch.randn(batch, D, device=device)
    s = torch.randint(0, 16, (batch,), device=device)
    if eager:
        fn: Callable[[], object] = lambda: importance_score(vae, disc, x, s, eps)  # noqa: E731
    else:
        scorer = packed_scorer(vae, disc, eps, D)
        fn = lambda: scorer(x, s)  # noqa: E731
    with torch.inference_mode():
        return median_rate(_synced(fn, device), batch, repeats)


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
    ap.add_argument("--device", default="cpu", help="cpu or cuda (only the scoring tables)")
    args = ap.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    torch.set_num_threads(1)
    repeats = 3 if args.quick else args.repeats
    where = torch.cuda.get_device_name(device) if gpu else "CPU"
    lines = [
        f"# Model throughput (model only, {where})",
        "",
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, D = {D}; medians of "
        f"{repeats} timings (shared machine: noisy).",
        "",
    ]
    default = ModelSpec()
    lines += [
        f"Default network: hidden {default.hidden}, latent {default.latent_dim}, "
        f"discriminator {default.discriminator_hidden}, K = {default.importance_samples}.",
        "",
        "## Scoring throughput (records/s), default network, the daemon's scoring graph",
        "",
    ]
    batches = [1024, 8192, 65536, 262144] if gpu else [1, 8, 64, 512, 1024, 4096]
    header = "| threads | K | " + " | ".join(f"B={b}" for b in batches) + " |"
    lines += [header, "|" + "---|" * (len(batches) + 2)]
    for threads in (1,) if gpu else (1, 2):
        torch.set_num_threads(threads)
        for k in (1, 8, 32):
            spec = replace(default, importance_samples=k)
            rates = [scoring_rate(spec, b, repeats, device) for b in batches]
            lines.append(f"| {threads} | {k} | " + " | ".join(f"{r:,.0f}" for r in rates) + " |")
            print(lines[-1], flush=True)
    torch.set_num_threads(1)
    big = batches[-1] if gpu else 1024
    lines += ["", "Everything below: 1 torch thread."]
    lines += [
        "",
        "## Baselines (same run)",
        "",
        f"| network | K | B={big} records/s |",
        "|---|---|---|",
    ]
    for k in (1, 8):
        spec = replace(default, importance_samples=k)
        graph = scoring_rate(spec, big, repeats, device)
        eager = scoring_rate(spec, big, repeats, device, eager=True)
        lines.append(f"| default, the daemon's graph | {k} | {graph:,.0f} |")
        lines.append(f"| default, eager `importance_score` (tanh) | {k} | {eager:,.0f} |")
    if not gpu:
        mm = matmul_rate(default.hidden, default.latent_dim, 1024, repeats)
        lines.append(f"| default sizes, bare matmuls | 1 | {mm:,.0f} |")
    paper = replace(default, hidden=(500, 500))
    for k in (1, 8):
        rate = scoring_rate(replace(paper, importance_samples=k), big, repeats, device)
        lines.append(f"| paper 2x500 | {k} | {rate:,.0f} |")
    print("\n".join(lines[-8:]), flush=True)
    det = train_detector(
        *synthetic(5, 2000), features=[f"m{i}" for i in range(D)], model_spec=default,
        train_spec=TrainSpec(max_epochs=1), threshold_spec=ThresholdSpec(), device=args.device,
        version="e2e",
    )  # fmt: skip
    xv, sv = synthetic(6, big)
    e2e = median_rate(lambda: det.score(xv, sv), big, repeats)
    lines.append(f"| default, `Detector.score` end to end (numpy, scaler) | 1 | {e2e:,.0f} |")
    if gpu:
        _write(OUT.with_name("model_throughput_cuda.md"), lines)
        return

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
    _write(OUT, lines)


def _write(out: Path, lines: list[str]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
