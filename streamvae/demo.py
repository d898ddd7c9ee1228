"""`streamvae demo`: the whole story on simulated sites, in one command.

Composition root of the demo. The story:

1. the simulator makes `history_s` seconds of clean commissioning data for the
   initial sites, and the initial model is trained on it;
2. the rest is scored record by record; anomalies are injected and flagged with
   the sensors that explain them;
3. a new site joins part-way with no history: it is scored through the pooled
   slot and reported as *warming* until a retrained model that includes it is
   promoted; then it is *active*;
4. a summary compares the flags with the injected ground truth (per site, the new
   site before and after onboarding), and a last line `DEMO-SUMMARY {json}` gives
   it to scripts and tests.

This module runs the story offline (simulated time, no broker): the simulator
feeds the detector directly and the retraining is done in line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from streamvae.console import make_console
from streamvae.simulator import SimRecord, SimSpec

log = logging.getLogger(__name__)

SUMMARY_TAG = "DEMO-SUMMARY"


# train(records, features, version, init detector or None) -> Detector
def _limit_torch_threads() -> None:
    """One intra-op thread: on a small shared CPU, more threads make training many times
    slower, and the live demo trains and scores at the same time."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    torch.set_num_threads(1)


Trainer = Callable[[Sequence[SimRecord], tuple[str, ...], str, Any], Any]


@dataclass(frozen=True, slots=True)
class DemoPlan:
    """The demo's timeline and sizes (seconds of simulated time)."""

    duration_s: float = 150.0  # scored after the history
    sites: int = 5
    rate: float = 200.0  # records/s over the initial sites
    seed: int = 7
    sensors: int = 38
    history_s: float = 120.0  # clean data the initial model is trained on
    new_site_at: float = 0.25  # share of duration_s when the new site joins
    onboard_records: int = 1200  # a new site's records before it is retrained in
    per_site_cap: int = 1500  # retraining sample per site
    train_cap: int = 6000  # records per training run (a seeded subsample)
    retrain_every_s: float = 50.0  # scheduled retraining
    site_spread: float = 0.5  # how different the sites are
    false_positive_rate: float = 0.001  # threshold target
    max_epochs: int = 20

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DemoPlan:
        duration = float(args.duration)
        rate, sites = float(args.rate), int(args.sites)
        per_site = rate / max(1, sites)
        # short runs (tests): shorter history and onboarding, so the story still fits
        history = min(120.0, max(20.0, 0.8 * duration))
        onboard = int(min(1200, max(60, 0.2 * duration * per_site)))
        return cls(
            duration_s=duration,
            sites=sites,
            rate=rate,
            seed=int(args.seed),
            history_s=history,
            onboard_records=onboard,
            max_epochs=20 if duration >= 60 else 8,
            retrain_every_s=max(10.0, duration / 3),
        )

    def sim_spec(self, start_ts: float) -> SimSpec:
        return SimSpec(
            sites=self.sites,
            sensors=self.sensors,
            rate=self.rate,
            seed=self.seed,
            start_ts=start_ts,
            anomalies_after_s=self.history_s,
            hold_s=0.4 * self.history_s,
            anomaly_every_s=min(60.0, max(8.0, self.duration_s / 4)),
            new_site_at_s=self.history_s + self.new_site_at * self.duration_s,
            site_spread=self.site_spread,
            tau_s=1.0,
        )

    def settings_overrides(self) -> dict[str, dict[str, Any]]:
        """Config sections for a small, fast model (a few minutes on two cores)."""
        return {
            "model": {"hidden": [64, 64], "discriminator_hidden": [32, 32], "device": "cpu"},
            "training": {
                "seed": self.seed,
                "max_epochs": self.max_epochs,
                "patience": 5,
                "discriminator_epochs_per_cycle": 2,
            },
            "threshold": {
                "false_positive_rate": self.false_positive_rate,
                "min_site_records": 100,
            },
            "retraining": {"new_site_min_records": self.onboard_records},
        }


def demo_command(args: argparse.Namespace) -> int:
    """Entry point of `streamvae demo`. Returns the exit code."""
    plan = DemoPlan.from_args(args)
    _limit_torch_threads()
    console = make_console(sys.stdout, no_ui=bool(args.no_ui))
    workdir = Path(args.workdir) if args.workdir else None
    with tempfile.TemporaryDirectory(prefix="streamvae-demo-") as tmp:
        root = workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        try:
            if getattr(args, "offline", False):
                from streamvae.demo_offline import run_offline

                summary, timeline = run_offline(plan, console, make_trainer(plan))
            else:
                from streamvae.demo_live import run_live

                summary, timeline = run_live(plan, console, root)
        except KeyboardInterrupt:
            print("\ninterrupted; stopped", file=sys.stderr)
            return 130
        finally:
            console.close()
    print_summary(summary, sys.stdout)
    if args.plot and timeline:
        from streamvae.demo_plot import plot_timeline

        plot_timeline(timeline, Path(args.plot))
        print(f"timeline written to {args.plot}")
    print(f"{SUMMARY_TAG} {json.dumps(summary, sort_keys=True)}", flush=True)
    return 0


@dataclass(slots=True)
class TimelinePoint:
    site: str
    ts: float
    score: float
    threshold: float
    flagged: bool
    truth: bool


def make_trainer(plan: DemoPlan) -> Trainer | None:
    """`train_detector` with the demo's settings, or None while the model is not built."""
    try:
        from streamvae.detector import train_detector
        from streamvae.offline import specs_from_settings
    except ImportError:  # a partial build: the demo still shows the data
        return None
    from streamvae.config import load_settings

    settings = load_settings(None, **plan.settings_overrides())
    model_spec, train_spec, threshold_spec = specs_from_settings(settings)

    def train(
        records: Sequence[SimRecord], features: tuple[str, ...], version: str, init: Any
    ) -> Any:
        if len(records) > plan.train_cap:
            keep = np.random.default_rng(plan.seed).choice(len(records), plan.train_cap, False)
            records = [records[i] for i in np.sort(keep)]
        values = np.asarray([r.values for r in records], dtype=np.float32)
        return train_detector(
            values,
            [r.site for r in records],
            features=features,
            model_spec=model_spec,
            train_spec=train_spec,
            threshold_spec=threshold_spec,
            device="cpu",
            version=version,
            init=init,
        )

    return train


def _fmt(value: Any) -> str:
    return "  n/a" if value is None else f"{value:5.2f}"


def print_summary(summary: dict[str, Any], out: TextIO) -> None:
    """The human-readable end summary."""
    w = out.write
    w("\n=== demo summary ===\n")
    w(
        f"mode: {summary.get('mode')}   records: {summary.get('records', 0):,}   "
        f"wall time: {summary.get('wall_s')} s   "
        f"throughput: {summary.get('throughput_rps')} rec/s\n"
    )
    if summary.get("mode") == "data-only":
        w(f"anomalies injected: {summary.get('anomalies_injected')} (no model to score them)\n")
        return
    w(f"{'site':<12}{'phase':<9}{'records':>8}{'anoms':>7}{'flags':>7}{'prec':>7}{'recall':>7}\n")
    for site, entry in summary["sites"].items():
        for phase in ("warming", "active"):
            t = entry.get(phase)
            if t is None:
                continue
            name = "pooled" if phase == "warming" else "active"
            w(
                f"{site:<12}{name:<9}{t['records']:>8}{t['anomalies']:>7}{t['flagged']:>7}"
                f"{_fmt(t['precision']):>7}{_fmt(t['recall']):>7}\n"
            )
    o = summary["overall"]
    w(
        f"{'all sites':<12}{'active':<9}{o['records']:>8}{o['anomalies']:>7}{o['flagged']:>7}"
        f"{_fmt(o['precision']):>7}{_fmt(o['recall']):>7}\n"
    )
    w(
        "(point-wise, no point adjustment; 'pooled' = the new site before onboarding, scored "
        "through the pooled slot, not alerted)\n"
    )
    kinds = ", ".join(f"{k} {_fmt(v).strip()}" for k, v in summary.get("kinds", {}).items())
    w(f"recall by kind: {kinds}\n")
    ep = summary["episodes"]
    w(
        f"episodes found: {ep['found']}/{ep['total']}   false-positive rate: "
        f"{_fmt(summary.get('false_positive_rate')).strip()}   alerts whose top-3 sensors "
        f"include a blamed one: {_fmt(summary.get('blame_top3')).strip()}\n"
    )
    if "latency_s" in summary:
        lat = summary["latency_s"]
        w(
            f"end-to-end latency (event time to score read back): p50 {lat['p50']} s, "
            f"p95 {lat['p95']} s\n"
        )
    if "broker" in summary:
        stopped = "stopped" if summary.get("broker_stopped") else "STILL RUNNING"
        scrape = summary.get("metrics_scrape") or {}
        scraped = f" (last scrape: {scrape.get('samples')} samples)" if scrape.get("ok") else ""
        w(f"metrics were at {summary.get('metrics_url')}{scraped}; ")
        w(f"broker {summary['broker']} {stopped}\n")
    w("models:\n")
    for e in summary["retrains"]:
        sites = f" sites {', '.join(e['sites'])}" if e.get("sites") else ""
        w(f"  +{e['at_s']:6.1f}s {e['outcome']:<9} {e['version']} {e.get('detail', '')}{sites}\n")
    out.flush()
