"""PNG figures for RESULTS.md (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

COLORS = {"gaussian": "tab:red", "student_t": "tab:blue"}


def loss_curves(
    curves: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
    titles: Mapping[str, str],
    path: Path,
) -> None:
    """One panel per data set: training (solid) and validation (dashed) loss per epoch."""
    names = list(curves)
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4 * max(1, len(names)), 3.4))
    axes = np.atleast_1d(axes)
    for ax, name in zip(axes, names, strict=False):
        for decoder, (tr, va) in curves[name].items():
            c = COLORS.get(decoder)
            label = "Gaussian" if decoder == "gaussian" else "Student-t"
            ax.plot(np.arange(1, len(tr) + 1), tr, color=c, label=f"{label} train")
            if va:
                ax.plot(np.arange(1, len(va) + 1), va, color=c, ls="--", label=f"{label} valid")
        ax.set_title(titles.get(name, name))
        ax.set_xlabel("epoch")
        ax.set_yscale("symlog")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("negative ELBO per record (symlog)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def method_bars(values: Mapping[str, Mapping[str, float]], path: Path, title: str) -> None:
    """Grouped bars: values[metric][method]."""
    metrics = list(values)
    methods = list(next(iter(values.values()))) if values else []
    fig, ax = plt.subplots(figsize=(9, 3.8))
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(metrics))
    for i, method in enumerate(methods):
        ax.bar(x + i * width, [values[k].get(method, np.nan) for k in metrics], width, label=method)
    ax.set_xticks(x + 0.4 - width / 2, metrics)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fewshot_lines(
    means: Mapping[str, Mapping[int, float]], path: Path, ylabel: str = "mean AUPRC"
) -> None:
    """means[method][n] -> one line per method over n (log x axis)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for method, by_n in means.items():
        ns = sorted(by_n)
        ax.plot(ns, [by_n[n] for n in ns], marker="o", label=method)
    ax.set_xscale("log")
    ax.set_xlabel("records of the new machine (n)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
