"""`streamvae demo --plot`: a PNG timeline of scores against thresholds per site.

The only module that imports matplotlib, and only when a plot is asked for
(Agg backend: no display needed).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol


class Point(Protocol):
    site: str
    ts: float
    score: float
    threshold: float
    flagged: bool
    truth: bool


def plot_timeline(points: Sequence[Point], path: Path) -> None:
    """One panel per site: score (log scale) vs threshold; injected anomalies shaded,
    flags marked. x: seconds since the first scored record."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_site: dict[str, list[Point]] = defaultdict(list)
    for p in points:
        by_site[p.site].append(p)
    t0 = min(p.ts for p in points)
    fig, axes = plt.subplots(len(by_site), 1, figsize=(12, 2.2 * len(by_site)), sharex=True)
    axes_list = list(axes) if len(by_site) > 1 else [axes]
    for ax, (site, rows) in zip(axes_list, sorted(by_site.items()), strict=True):
        t = [p.ts - t0 for p in rows]
        ax.plot(t, [max(p.score, 1e-3) for p in rows], lw=0.6, color="tab:blue", label="score")
        ax.plot(t, [p.threshold for p in rows], lw=1.0, color="tab:orange", label="threshold")
        for p, x in zip(rows, t, strict=True):
            if p.truth:
                ax.axvspan(x - 0.05, x + 0.05, color="tab:red", alpha=0.15, lw=0)
        flagged = [(x, p.score) for p, x in zip(rows, t, strict=True) if p.flagged]
        if flagged:
            ax.scatter(*zip(*flagged, strict=True), s=6, color="tab:red", label="flagged")
        ax.set_yscale("symlog")
        ax.set_ylabel(site)
    axes_list[0].legend(loc="upper right", fontsize="small")
    axes_list[-1].set_xlabel("seconds (red bands: injected anomalies)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
