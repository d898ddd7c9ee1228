"""The demo's offline story: simulated time, scored in-process, no broker (`--offline`).

The simulator feeds the detector directly; retraining (new site, schedule) is done
in line with `train`. Used by `streamvae demo --offline`, the unit tests (with a
stand-in detector) and quick experiments on the simulator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from streamvae.console import Console
from streamvae.demo import DemoPlan, TimelinePoint, Trainer
from streamvae.scoreboard import Outcome, RetrainEvent, Scoreboard, top_sensors
from streamvae.simulator import SimRecord, Simulator


def score_records(detector: Any, records: Sequence[SimRecord]) -> list[Outcome]:
    """Score records with a detector (blocking: call from a worker thread when live)."""
    if not records:
        return []
    values = np.asarray([r.values for r in records], dtype=np.float32)
    batch = detector.score(values, [r.site for r in records])
    features = tuple(detector.features)
    out = []
    for i, r in enumerate(records):
        known = bool(batch.known[i])
        score, threshold = float(batch.scores[i]), float(batch.thresholds[i])
        contrib = dict(zip(features, batch.contributions[i].tolist(), strict=True))
        out.append(
            Outcome(
                site=r.site,
                ts=r.ts,
                score=score,
                threshold=threshold,
                anomaly=known and score > threshold,
                status="active" if known else "warming",
                model_version=str(detector.version),
                top=top_sensors(contrib),
            )
        )
    return out


class Reservoir:
    """A seeded uniform sample of up to `per_site` records per site (Algorithm R)."""

    def __init__(self, per_site: int, seed: int) -> None:
        self._per_site = per_site
        self._rng = np.random.default_rng([seed, 99])
        self._kept: dict[str, list[SimRecord]] = {}
        self._seen: dict[str, int] = {}

    def extend(self, records: Iterable[SimRecord]) -> None:
        for r in records:
            kept = self._kept.setdefault(r.site, [])
            n = self._seen[r.site] = self._seen.get(r.site, 0) + 1
            if len(kept) < self._per_site:
                kept.append(r)
            elif (j := int(self._rng.integers(n))) < self._per_site:
                kept[j] = r

    def seen(self, site: str) -> int:
        return self._seen.get(site, 0)

    def records(self, without: set[str] | frozenset[str] = frozenset()) -> list[SimRecord]:
        """The sample in time order, leaving out the sites in `without`."""
        kept = (r for site, rs in self._kept.items() if site not in without for r in rs)
        return sorted(kept, key=lambda r: r.ts)

    def __len__(self) -> int:
        return sum(len(k) for k in self._kept.values())


def run_offline(
    plan: DemoPlan,
    console: Console,
    train: Trainer | None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[dict[str, Any], list[TimelinePoint]]:
    """The story in simulated time: train, score, onboard the new site, summarise.

    `train(records, features, version, init) -> Detector` (None: no model in this build).
    """
    wall0 = clock()
    sim = Simulator(plan.sim_spec(start_ts=time.time() - plan.history_s - plan.duration_s))
    board = Scoreboard(sites=sim.sites, new_site=sim.new_site)
    history = sim.advance(plan.history_s)
    console.note(
        f"simulated {plan.history_s:.0f}s of history: {len(history):,} records, "
        f"{plan.sites} sites x {plan.sensors} sensors; new site {sim.new_site} joins at "
        f"+{sim.spec.new_site_at_s - plan.history_s if sim.spec.new_site_at_s else 0:.0f}s"
    )
    if train is None:
        console.note(
            "the model (streamvae.detector.train_detector) is not in this build yet: "
            "showing the simulated data only"
        )
        return _data_only_summary(sim, history, plan, clock() - wall0), []

    t0 = clock()
    console.note(f"training the initial model on {len(history):,} records ...")
    detector = train(history, sim.features, "demo-001", None)
    board.retrained(
        RetrainEvent(0.0, "initial", detector.version, tuple(detector.sites), _took(clock, t0))
    )
    known = set(detector.sites)
    sample = Reservoir(plan.per_site_cap, plan.seed)
    sample.extend(history)
    timeline: list[TimelinePoint] = []
    new, onboarded, last_retrain = sim.new_site, sim.new_site is None, 0.0
    t, step, scored_s = plan.history_s, 1.0, 0.0
    while t < plan.history_s + plan.duration_s:
        t = min(plan.history_s + plan.duration_s, t + step)
        records = sim.advance(t)
        s0 = clock()
        outcomes = score_records(detector, records)
        scored_s += clock() - s0
        for r, o in zip(records, outcomes, strict=True):
            board.add(o, r.label, now=t - plan.history_s)
            flagged = o.anomaly or (o.status == "warming" and o.score > o.threshold)
            timeline.append(
                TimelinePoint(r.site, r.ts, o.score, o.threshold, flagged, r.label.anomaly)
            )
        sample.extend(r for r, o in zip(records, outcomes, strict=True) if not o.anomaly)
        console.show(board.snapshot(t - plan.history_s))
        elapsed = t - plan.history_s
        ready = not onboarded and new is not None and sample.seen(new) >= plan.onboard_records
        due = elapsed - last_retrain >= plan.retrain_every_s
        if ready or due:
            reason = f"new site {new}" if ready else "scheduled"
            console.note(f"retraining ({reason}) on {len(sample):,} sampled records ...")
            t0 = clock()
            version = f"demo-{len(board.retrains) + 1:03d}"
            waiting = {new} if new is not None and not (onboarded or ready) else set()
            detector = train(sample.records(waiting), sim.features, version, detector)
            added = tuple(s for s in detector.sites if s not in known)
            known = set(detector.sites)
            board.retrained(
                RetrainEvent(elapsed, "promoted", detector.version, added, _took(clock, t0))
            )
            onboarded = onboarded or ready
            last_retrain = elapsed
    console.show(board.snapshot(t - plan.history_s))
    wall = clock() - wall0
    summary = board.summary(
        wall_s=wall,
        extra={
            "mode": "offline",
            "scoring_rps": round(board.records / scored_s, 1) if scored_s else None,
        },
    )
    return summary, timeline


def _took(clock: Callable[[], float], t0: float) -> str:
    return f"trained in {clock() - t0:.1f}s"


def _data_only_summary(
    sim: Simulator, history: Sequence[SimRecord], plan: DemoPlan, wall_s: float
) -> dict[str, Any]:
    rest = sim.advance(plan.history_s + plan.duration_s)
    anomalies = sum(r.label.anomaly for r in rest)
    return {
        "mode": "data-only",
        "records": len(history) + len(rest),
        "anomalies_injected": anomalies,
        "sites": {s: {"status": "no-model"} for s in sim.sites},
        "new_site": sim.new_site,
        "wall_s": round(wall_s, 2),
    }
