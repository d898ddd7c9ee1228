"""Markdown tables and figures for each section of RESULTS.md."""

from __future__ import annotations

import numpy as np

from bench import plots
from bench.data import TABULAR_NAMES
from bench.density import DECODERS, DensityResults
from bench.fewshot import METHODS, FewShotResults
from bench.metrics import PairedDiff, paired_difference
from bench.metrics import mean_over as _mean
from bench.report import Report, fmt, pm
from bench.smd import OURS, SHORT, SmdResults

# dissertation Table 3.2 / data README: (mean, sd) over 10 runs
PUBLISHED = {
    "smtp": {"gaussian": (-1.248, 0.404), "student_t": (0.827, 0.105)},
    "aloi": {"gaussian": (45.418, 5.457), "student_t": (77.022, 0.539)},
    "thyroid": {"gaussian": (15.519, 4.422), "student_t": (69.543, 0.634)},
    "breast_cancer": {"gaussian": (-18.668, 3.448), "student_t": (-18.253, 2.629)},
    "satellite": {"gaussian": (-1.852, 0.370), "student_t": (-1.811, 0.289)},
}


def _mean_sd(v: list[float]) -> tuple[float, float, int]:
    a = np.asarray(v, dtype=np.float64)
    ok = a[np.isfinite(a)]
    if ok.size == 0:
        return float("nan"), float("nan"), 0
    return float(ok.mean()), float(ok.std(ddof=1)) if ok.size > 1 else 0.0, int(ok.size)


def _paired_seeds(t: list[float], g: list[float]) -> str:
    """Student-t − Gaussian seed by seed (each seed is one split, shared by both decoders):
    the mean difference ± its sd and in how many seeds Student-t was ahead."""
    d = np.asarray(t, dtype=np.float64) - np.asarray(g, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return "–"
    sd = float(d.std(ddof=1)) if d.size > 1 else 0.0
    return f"{float(d.mean()):+.3f} ± {sd:.3f}, ahead in {int((d > 0).sum())} / {d.size}"


def density(rep: Report, res: DensityResults) -> None:
    rows = []
    for name, by_dec in res.loglik.items():
        cells = [TABULAR_NAMES.get(name, name)]
        for dec in DECODERS:
            m, s, k = _mean_sd(by_dec.get(dec, []))
            n_runs = len(by_dec.get(dec, []))
            cells.append(pm(m, s) + ("" if k == n_runs else f" ({n_runs - k} failed)"))
        for dec in DECODERS:
            cells.append(pm(*PUBLISHED[name][dec]))
        g, t = (_mean_sd(by_dec.get(d, []))[0] for d in DECODERS)
        cells.append("yes" if t >= g else "**no**")
        cells.append(_paired_seeds(by_dec.get("student_t", []), by_dec.get("gaussian", [])))
        sp = res.spikes.get(name, {})
        cells.append(" / ".join(str(sp.get(d, 0)) for d in DECODERS))
        cells.append(str(res.epochs.get(name, "")))
        rows.append(cells)
    rep.table(
        [
            "data set",
            "Gaussian VAE (ours)",
            "Student-t VAE (ours)",
            "Gaussian (paper)",
            "Student-t (paper)",
            "Student-t ≥ Gaussian",
            "Student-t − Gaussian per seed (same split)",
            "loss spikes G / t",
            "max epochs",
        ],
        rows,
    )
    if res.failures:
        rep.text(
            "Runs the product refused to finish (TrainingError):\n\n"
            + "\n".join(f"- {f}" for f in res.failures)
        )
    if res.curves:
        path = rep.image(
            "density_loss_curves.png",
            "Training (solid) and validation (dashed) loss per epoch, first seed",
        )
        plots.loss_curves(res.curves, TABULAR_NAMES, path)
    rep.text(f"Training time, all runs of this section: {res.seconds / 60:.1f} min.")


def _per_seed(pairs: list[tuple[float, float]], which: int) -> str:
    return ", ".join(fmt(p[which]) for p in pairs)


def smd(rep: Report, res: SmdResults) -> None:
    methods = list(res.detection)
    rows = []
    for mth in methods:
        d = res.detection[mth]
        pairs = res.per_seed.get(mth, [])
        rows.append(
            [
                mth,
                fmt(_mean(d, "auprc")),
                _per_seed(pairs, 0),
                fmt(_mean(d, "auroc")),
                fmt(_mean(d, "f1")),
                _per_seed(pairs, 1),
                *(fmt(_mean(d, a)) for a in ("precision", "recall", "best_f1")),
                f"{res.seconds.get(mth, float('nan')):.0f}",
            ]
        )
    if res.seeds:
        rep.text(
            f"Every method is fitted once per training seed ({', '.join(map(str, res.seeds))}) "
            "on the same rows; each figure is the mean over the seeds (per machine, then "
            "over the machines); the per-seed means over the machines are listed."
        )
    rep.table(
        [
            "method",
            "AUPRC",
            "AUPRC per seed",
            "AUROC",
            "F1 (calibrated)",
            "F1 per seed",
            "precision",
            "recall",
            "best-F1 on test (upper bound)",
            "fit + score s (per seed)",
        ],
        rows,
    )
    targets(rep, res)
    path = rep.image("smd_means.png", "SMD: mean over the machines, per method")
    plots.method_bars(
        {
            k: {m: _mean(res.detection[m], a) for m in methods}
            for k, a in (("AUPRC", "auprc"), ("AUROC", "auroc"), ("F1 (cal.)", "f1"))
        },
        path,
        "SMD point-wise metrics (mean over machines)",
    )
    machines = sorted({m for d in res.detection.values() for m in d})
    for title, attr in (("AUPRC", "auprc"), ("F1 (calibrated)", "f1"), ("AUROC", "auroc")):
        rep.text(f"Per machine: {title}")
        rep.table(
            ["machine", *(SHORT.get(k, k) for k in methods)],
            [[m, *(fmt(getattr(res.detection[k][m], attr)) for k in methods)] for m in machines],
        )


def _verdict(d: PairedDiff) -> str:
    if not d.decided:
        return "tie (interval holds 0)"
    return "ours ahead" if d.low > 0 else "**ours behind**"


def targets(rep: Report, res: SmdResults) -> None:
    """The issue's targets (ours best on mean AUPRC and on mean calibrated F1), judged on
    the means as stated, and beside them the paired evidence: ours − each method per
    machine, a bootstrap interval over the machines, and in how many seeds ours led."""
    if OURS not in res.detection:
        return
    ours = res.detection[OURS]
    others = [m for m in res.detection if m != OURS]
    rows, lines = [], []
    for col, (attr, title) in enumerate((("auprc", "AUPRC"), ("f1", "F1 (calibrated)"))):
        mine = {k: getattr(v, attr) for k, v in ours.items()}
        for m in others:
            d = paired_difference(mine, {k: getattr(v, attr) for k, v in res.detection[m].items()})
            pairs = list(zip(res.per_seed.get(OURS, []), res.per_seed.get(m, []), strict=False))
            seeds = sum(o[col] > x[col] for o, x in pairs)
            rows.append(
                [
                    title,
                    SHORT.get(m, m),
                    f"{d.mean:+.3f}",
                    f"[{d.low:+.3f}, {d.high:+.3f}]",
                    f"{d.ahead} / {d.n}",
                    f"{seeds} / {len(pairs)}",
                    _verdict(d),
                ]
            )
        best = max(others, key=lambda m: _mean(res.detection[m], attr))
        mean_ours, mean_best = _mean(ours, attr), _mean(res.detection[best], attr)
        met = "**met**" if mean_ours > mean_best else "**not met**"
        lines.append(
            f"- ours best on mean {title}: {met} (ours {fmt(mean_ours)}, best other "
            f"{SHORT.get(best, best)} {fmt(mean_best)})"
        )
    rep.text("Targets, judged on the means above:\n\n" + "\n".join(lines))
    rep.text(
        "Paired evidence: ours − method, per machine (each a mean over the seeds), the mean "
        "difference over the machines with a 95 % percentile bootstrap interval over the "
        "machines (10,000 resamples); the machines and seeds where ours is ahead. An interval "
        "that holds 0 means the data cannot tell the two apart."
    )
    rep.table(
        [
            "metric",
            "ours − method",
            "mean difference",
            "95 % interval",
            "machines ahead",
            "seeds ahead",
            "verdict",
        ],
        rows,
    )


def explanations(rep: Report, res: SmdResults) -> None:
    rows = []
    for mth, by_m in res.hits.items():
        pts = sum(h.n_points for h in by_m.values())
        segs = sum(h.n_segments for h in by_m.values())
        w = {k: h.n_points / pts for k, h in by_m.items()}
        ws = {k: h.n_segments / segs for k, h in by_m.items()}
        rows.append(
            [
                mth,
                fmt(sum(w[k] * h.points for k, h in by_m.items())),
                fmt(sum(w[k] * h.random_points for k, h in by_m.items())),
                fmt(sum(ws[k] * h.segments for k, h in by_m.items())),
                fmt(sum(ws[k] * h.random_segments for k, h in by_m.items())),
                f"{pts} / {segs}",
            ]
        )
    rep.table(
        [
            "contributions from",
            "hit@3 (points)",
            "random (points)",
            "hit@3 (segments)",
            "random (segments)",
            "points / segments",
        ],
        rows,
    )


def fewshot(rep: Report, res: FewShotResults) -> None:
    ns = sorted(res.results)
    means: dict[str, dict[int, float]] = {}
    for attr, title in (("auprc", "AUPRC"), ("auroc", "AUROC")):
        rows = []
        for mth in METHODS:
            vals = [_mean(res.results[n].get(mth, {}), attr) for n in ns]
            if attr == "auprc":
                means[mth] = dict(zip(ns, vals, strict=True))
            rows.append([mth, *(fmt(v) for v in vals)])
        rep.text(f"Mean {title} over the held-out machines")
        rep.table(["method", *(f"n = {n}" for n in ns)], rows)
    for n in ns:
        a = means[METHODS[0]][n]
        f = means[METHODS[-1]][n]
        best = max(METHODS[1:5], key=lambda m: means[m][n])
        best_other = means[best][n]
        d = paired_difference(
            {k: v.auprc for k, v in res.results[n][METHODS[0]].items()},
            {k: v.auprc for k, v in res.results[n][best].items()},
        )
        rep.text(
            f"n = {n}: (a) / (f) = {fmt(a / f if f else float('nan'), 2)}; "
            f"(a) {'beats' if a > best_other else 'does **not** beat'} the best of (b)–(e) "
            f"({fmt(a)} vs {fmt(best_other)}, {best[:3]}; ahead on {d.ahead} of "
            f"{d.n} held-out machines)."
        )
    path = rep.image("fewshot_auprc.png", "New-site few-shot: mean AUPRC over held-out machines")
    plots.fewshot_lines(means, path)
    for n in ns:
        machines = sorted({m for d in res.results[n].values() for m in d})
        rep.text(f"Per held-out machine, n = {n}: AUPRC / AUROC")
        rep.table(
            ["machine", *METHODS],
            [
                [
                    m,
                    *(
                        f"{fmt(res.results[n][k][m].auprc)} / {fmt(res.results[n][k][m].auroc)}"
                        if m in res.results[n].get(k, {})
                        else "–"
                        for k in METHODS
                    ),
                ]
                for m in machines
            ],
        )
    rep.text(f"Training time, all runs of this section: {res.seconds / 60:.1f} min.")
