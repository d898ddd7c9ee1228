"""End to end without Kafka: a stream of scored batches drives the retrainer and a Detector.

Tiny models (hidden [16], latent 2, few epochs) on small synthetic multi-site data.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from streamvae.artifacts import ModelStore
from streamvae.buffer import BufferSpec, TrainingBuffer
from streamvae.config import load_settings
from streamvae.detector import Detector, ModelSpec, ThresholdSpec, TrainSpec, train_detector
from streamvae.gate import GateSpec
from streamvae.retrain_job import run_pass
from streamvae.retrainer import JobTemplate, Retrainer, RetrainSpec, retrain_command
from streamvae.sites import LifecycleSpec, SiteTracker
from streamvae.state import load_buffer, save_buffer
from tests.unit.retrain_data import FEATURES, SyntheticSites

pytestmark = pytest.mark.slow

TARGET_FPR = 0.05
MODEL = ModelSpec(
    latent_dim=2,
    hidden=(16,),
    discriminator_hidden=(16,),
    site_embedding_dim=2,
    site_capacity=16,
    importance_samples=4,
    # Pooled scaler statistics, as this flow was tuned with. With per-site statistics
    # the new site's FPR after promotion sits at the edge of the bound below
    # (measured over data seeds 2-4: 0.09-0.10 per-site vs 0.05-0.11 pooled): its
    # location-shifted fallback threshold comes from optimistic training-part scores.
    site_scaling=False,
)
TRAIN = TrainSpec(
    seed=0,
    max_epochs=30,
    batch_size=128,
    validation_fraction=0.25,
    discriminator_epochs_per_cycle=2,
    kl_warmup_epochs=2,
    patience=4,
)
THRESH = ThresholdSpec(false_positive_rate=TARGET_FPR, min_site_records=100, pot=False)
GATE = GateSpec(target_fpr=TARGET_FPR, fpr_tolerance=0.03, loglik_tolerance=0.5)


@pytest.fixture(scope="module")
def initial_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store whose current model knows sites s0..s2 (trained once per module)."""
    data = SyntheticSites(seed=1)
    values, sites = data.normal_mix(["s0", "s1", "s2"], 600)
    det = train_detector(
        values,
        sites,
        features=FEATURES,
        model_spec=MODEL,
        train_spec=TRAIN,
        threshold_spec=THRESH,
        device="cpu",
        version="v20000101T000000-000000",
    )
    root = tmp_path_factory.mktemp("initial") / "store"
    store = ModelStore(root)
    store.save(det)
    store.promote(det.version)
    return root


@pytest.fixture
def store_root(initial_store: Path, tmp_path: Path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(initial_store, root)
    return root


def make_retrainer(store_root: Path, **spec: object) -> Retrainer:
    store = ModelStore(store_root)
    current = store.load()
    tracker = SiteTracker(
        LifecycleSpec(new_site_min_records=300, target_fpr=TARGET_FPR, min_total_records=300),
        clock=lambda: 0.0,
    )
    tracker.set_model_sites(current.sites)
    return Retrainer(
        buffer=TrainingBuffer(BufferSpec(dim=len(FEATURES)), np.random.default_rng(0)),
        tracker=tracker,
        template=JobTemplate(str(store_root), FEATURES, MODEL, TRAIN, THRESH, GATE, threads=1),
        spec=RetrainSpec(min_total_records=300, trigger_cooldown_s=0.0, **spec),  # type: ignore[arg-type]
    )


def serve(detector: Detector, r: Retrainer, sites: list[str], values: np.ndarray) -> np.ndarray:
    """What the pipeline does per batch: score, flag known sites only, offer. Returns flags."""
    scored = detector.score(values, sites)
    anomaly = scored.known & (scored.scores > scored.thresholds)
    r.offer(sites, values, np.zeros(len(sites)), ~anomaly)
    return np.asarray(anomaly)


async def test_new_site_goes_warming_to_active_without_restart(store_root: Path) -> None:
    store = ModelStore(store_root)
    detector = store.load()
    r = make_retrainer(store_root)
    data = SyntheticSites(seed=2)
    # The stream: 100 records per batch of each known site, 35 of a new site "s9".
    for _ in range(10):
        known, known_sites = data.normal_mix(["s0", "s1", "s2"], 100)
        new, new_sites = data.normal_mix(["s9"], 35)
        values, sites = np.concatenate([known, new]), known_sites + new_sites
        flags = serve(detector, r, sites, values)
        assert r.tracker.status("s9") == "warming"
        assert not flags[np.array(sites) == "s9"].any()  # warming: never flagged
    reason = r.due()
    assert reason is not None
    assert "new_site s9" in reason
    result = await r.retrain_once(reason)
    assert result.outcome == "promoted", result
    assert r.tracker.status("s9") == "active"
    detector = store.load()  # what the daemon's model swap does
    assert detector.version == result.version
    assert "s9" in detector.sites
    # After promotion: normal records of s9 are within the target FPR; anomalies flagged.
    values, sites = data.normal_mix(["s9"], 2000)
    fpr = serve(detector, r, sites, values).mean()
    assert fpr <= TARGET_FPR + GATE.fpr_tolerance
    bad = data.anomalies("s9", 200)
    recall = serve(detector, r, ["s9"] * 200, bad).mean()
    assert recall >= 0.9


async def test_gate_rejects_a_candidate_trained_on_anomalies(store_root: Path) -> None:
    store = ModelStore(store_root)
    before = store.current()
    r = make_retrainer(store_root)
    data = SyntheticSites(seed=3)
    # Poisoning: anomalous records offered as normal for a known site.
    values, sites = data.normal_mix(["s0", "s1"], 200)
    r.offer(sites, values, np.zeros(len(sites)), np.ones(len(sites), bool))
    bad = data.anomalies("s2", 400)
    r.offer(["s2"] * 400, bad, np.zeros(400), np.ones(400, bool))
    result = await r.retrain_once("test")
    assert (result.outcome, result.reason) == ("rejected", "data_anomalous")
    assert store.current() == before
    assert result.version in store.rejected()
    assert store.load().version == before  # the current version keeps serving


async def test_nan_producing_data_never_promotes(store_root: Path) -> None:
    store = ModelStore(store_root)
    before = store.current()
    r = make_retrainer(store_root)
    huge = np.full((600, len(FEATURES)), 3e38, dtype=np.float32)
    huge[::2] *= -1
    r.offer(["s0"] * 600, huge, np.zeros(600), np.ones(600, bool))
    result = await r.retrain_once("test")
    assert result.outcome in ("failed", "rejected")
    assert result.reason != "ok"
    assert store.current() == before
    assert store.load().version == before


async def test_two_retrainers_against_one_store_only_one_promotes(store_root: Path) -> None:
    store = ModelStore(store_root)
    data = SyntheticSites(seed=4)
    a, b = make_retrainer(store_root), make_retrainer(store_root)
    for r in (a, b):
        values, sites = data.normal_mix(["s0", "s1", "s2"], 600)
        r.offer(sites, values, np.zeros(len(sites)), np.ones(len(sites), bool))
    results = await asyncio.gather(a.retrain_once("a"), b.retrain_once("b"))
    outcomes = sorted(x.outcome for x in results)
    assert outcomes == ["promoted", "skipped"], results
    assert len(store.versions()) == 2  # the initial one and the promoted candidate


def test_process_mode_pass_promotes(store_root: Path) -> None:
    store = ModelStore(store_root)
    r = make_retrainer(store_root)
    values, sites = SyntheticSites(seed=5).normal_mix(["s0", "s1", "s2"], 300)
    r.offer(sites, values, np.zeros(len(sites)), np.ones(len(sites), bool))
    job = dataclasses.replace(
        r.template.job(r.buffer, "test"), train_spec=dataclasses.replace(TRAIN, max_epochs=8)
    )
    result = run_pass(job, mode="process")
    assert result.outcome == "promoted", result
    assert store.current() == result.version
    assert store.load().version == result.version


CONFIG = """
[model]
features = ["f0", "f1", "f2", "f3"]
hidden = [16]
discriminator_hidden = [16]
latent_dim = 2
site_embedding_dim = 2
site_capacity = 16
importance_samples = 4
device = "cpu"
[training]
max_epochs = 5000
patience = 5000
batch_size = 32
[retraining]
mode = "process"
min_total_records = 100
state_dir = "{state}"
[store]
path = "{store}"
"""


def test_sigkill_during_retraining_leaves_store_and_buffer_consistent(
    store_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    psutil = pytest.importorskip("psutil")
    store = ModelStore(store_root)
    before = store.current()
    state_dir = tmp_path / "state"
    buf = TrainingBuffer(BufferSpec(dim=len(FEATURES)), np.random.default_rng(0))
    values, sites = SyntheticSites(seed=6).normal_mix(["s0", "s1", "s2"], 300)
    buf.offer(sites, values, np.zeros(len(sites)), np.ones(len(sites), bool))
    save_buffer(state_dir, buf.export(), FEATURES)
    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG.format(state=state_dir, store=store_root))
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamvae", "retrain", "--config", str(cfg)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "training candidate" in line:
                break
        time.sleep(1.0)  # well inside training (thousands of epochs to go)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "the training child process should be running"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        _, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, "the orphaned training process must exit by itself"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert store.current() == before
    assert store.load().version == before
    for version in store.versions():
        store.load(version)  # nothing half-written in versions/
    with store.lock():  # the lock died with its holder
        pass
    state = load_buffer(state_dir, FEATURES)
    assert state is not None
    assert TrainingBuffer.from_state(state, buf.spec, np.random.default_rng(0)).counts() == (
        buf.counts()
    )
    # The next `streamvae retrain` pass gets the lock and completes.
    settings = load_settings(
        cfg, training={"max_epochs": 5, "patience": 5}, retraining={"mode": "thread"}
    )
    assert retrain_command(settings) == 0
    outcome = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert outcome["outcome"] in ("promoted", "rejected"), outcome
