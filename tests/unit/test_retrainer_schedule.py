"""Retrainer scheduling and bookkeeping with a fake pass (no torch)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np

from streamvae.buffer import BufferSpec, TrainingBuffer
from streamvae.gate import GateSpec
from streamvae.retrain_job import PassResult, TrainingJob
from streamvae.retrainer import JobTemplate, Retrainer, RetrainSpec
from streamvae.sites import LifecycleSpec, SiteTracker
from streamvae.state import load_buffer, load_json
from tests.conftest import FakeClock

FEATURES = ("a", "b")


class Metrics:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def retrain(self, **kw: Any) -> None:
        self.calls.append(kw)


class FakePass:
    def __init__(self, outcome: str = "promoted", sites: tuple[str, ...] = ()) -> None:
        self.outcome, self.sites = outcome, sites
        self.jobs: list[TrainingJob] = []

    def __call__(self, job: TrainingJob) -> PassResult:
        self.jobs.append(job)
        sites = self.sites or tuple(sorted(set(job.train_sites.tolist())))
        return PassResult(self.outcome, "ok", "fake", "v1", 0.5, sites, {"final_loss": 1.0})  # type: ignore[arg-type]


def _retrainer(
    clock: FakeClock, tmp_path: Path, run: FakePass, metrics: Metrics | None = None, **kw: Any
) -> Retrainer:
    spec = RetrainSpec(
        interval_s=kw.pop("interval_s", 3600.0),
        min_total_records=100,
        trigger_cooldown_s=60.0,
        check_interval_s=0.01,
        persist_interval_s=kw.pop("persist_interval_s", 3600.0),
    )
    tracker = SiteTracker(
        LifecycleSpec(new_site_min_records=50, min_total_records=100, drift_window=100), clock
    )
    return Retrainer(
        buffer=TrainingBuffer(BufferSpec(dim=2), np.random.default_rng(0)),
        tracker=tracker,
        template=JobTemplate(str(tmp_path / "store"), FEATURES, None, None, None, GateSpec()),
        spec=spec,
        metrics=metrics,
        state_dir=tmp_path / "state",
        clock=clock,
        run=run,
    )


def _offer(r: Retrainer, site: str, n: int, normal: bool = True) -> None:
    r.offer([site] * n, np.ones((n, 2), np.float32), np.arange(n, dtype=float), np.full(n, normal))


def test_due_reasons(clock: FakeClock, tmp_path: Path) -> None:
    r = _retrainer(clock, tmp_path, FakePass())
    _offer(r, "s1", 60)
    assert r.due() is None  # below min_total_records
    _offer(r, "s1", 60)
    assert (r.due() or "").startswith("initial")  # no model: no start-up cooldown
    clock.advance(61)
    r.model_changed(["s1"])
    assert r.due() is None
    _offer(r, "new", 49)
    assert r.due() is None
    _offer(r, "new", 1)
    assert (r.due() or "").startswith("new_site new")
    r.model_changed(["s1", "new"])
    assert r.due() is None
    clock.advance(3600)
    assert r.due() == "interval"


async def test_triggered_pass_promotes_activates_and_reports(
    clock: FakeClock, tmp_path: Path
) -> None:
    metrics = Metrics()
    run = FakePass()
    r = _retrainer(clock, tmp_path, run, metrics)
    r.model_changed(["s1"])
    _offer(r, "s1", 100)
    _offer(r, "new", 60)
    clock.advance(61)
    assert r.tracker.status("new") == "warming"
    result = await r.retrain_once(r.due() or "")
    assert result.outcome == "promoted"
    assert r.tracker.status("new") == "active"
    assert metrics.calls == [
        {"outcome": "promoted", "reason": "ok", "duration_s": 0.5, "report": {"final_loss": 1.0}}
    ]
    job = run.jobs[0]
    assert len(job.train_values) + len(job.holdout_values) == 160
    assert set(job.holdout_sites.tolist()) == {"s1", "new"}
    assert r.due() is None  # cooldown, and nothing left to trigger


async def test_anomalies_are_not_buffered_and_drift_triggers(
    clock: FakeClock, tmp_path: Path
) -> None:
    r = _retrainer(clock, tmp_path, FakePass())
    r.model_changed(["s1"])
    _offer(r, "s1", 200)
    _offer(r, "s1", 100, normal=False)
    assert r.buffer.counts() == {"s1": 200}
    clock.advance(61)
    assert (r.due() or "").startswith("drift s1")


async def test_run_loop_retrains_and_persists_on_stop(clock: FakeClock, tmp_path: Path) -> None:
    run = FakePass(outcome="rejected")
    r = _retrainer(clock, tmp_path, run, Metrics(), interval_s=1.0)
    _offer(r, "s1", 150)
    clock.advance(2.0)
    stop = asyncio.Event()
    task = asyncio.create_task(r.run(stop))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if run.jobs:
            break
    stop.set()
    await asyncio.wait_for(task, 5)
    assert run.jobs
    assert r.tracker.status("s1") == "warming"  # rejected: no model change
    state = load_buffer(tmp_path / "state", FEATURES)
    assert state is not None
    assert len(state.ts) == 150
    sites = load_json(tmp_path / "state" / "sites.json")
    assert sites is not None
    assert "s1" in sites["sites"]


class Serving:
    def __init__(self, version: str, sites: dict[str, int]) -> None:
        self.version, self.sites = version, sites


def test_sync_follows_the_serving_model_and_publishes_statuses(
    clock: FakeClock, tmp_path: Path
) -> None:
    published: list[dict[str, int]] = []
    serving = Serving("v1", {"s1": 1})
    r = _retrainer(clock, tmp_path, FakePass())
    r._serving = lambda: serving
    r._publish_statuses = lambda counts: published.append(dict(counts))
    _offer(r, "s1", 10)
    _offer(r, "s2", 10)
    r.sync()
    assert (r.tracker.status("s1"), r.tracker.status("s2")) == ("active", "warming")
    serving = Serving("v2", {"s1": 1, "s2": 2})  # e.g. an operator promoted another version
    r.sync()
    assert r.tracker.status("s2") == "active"
    assert published[-1] == {"warming": 0, "active": 2, "retired": 0}


async def test_stop_during_a_pass_abandons_it(clock: FakeClock, tmp_path: Path) -> None:
    release = threading.Event()

    def slow(job: TrainingJob) -> PassResult:
        release.wait(10)
        return FakePass()(job)

    r = _retrainer(clock, tmp_path, slow, interval_s=1.0)  # type: ignore[arg-type]
    _offer(r, "s1", 150)
    clock.advance(2.0)
    stop = asyncio.Event()
    task = asyncio.create_task(r.run(stop))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if r.running:
            break
    assert r.running
    stop.set()
    await asyncio.wait_for(task, 5)  # does not wait for the pass
    release.set()
    assert r.last_result is None
    assert load_buffer(tmp_path / "state", FEATURES) is not None
