"""The daemon onboards a new site by itself: `streamvae run` replaying stdin (no broker).

A new site streams in warming (provisional scores, never flagged); once the buffer
holds `new_site_min_records` of it the in-daemon retrainer trains, gates and
promotes a model, the daemon swaps to it without a restart, and the same site's
next records come out active. On stop the buffer is persisted.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from streamvae.artifacts import ModelStore
from streamvae.detector import ModelSpec, ThresholdSpec, TrainSpec, train_detector
from streamvae.state import load_buffer, load_json
from tests.unit.retrain_data import FEATURES, SyntheticSites

pytestmark = pytest.mark.slow

MODEL = ModelSpec(
    latent_dim=2,
    hidden=(16,),
    discriminator_hidden=(16,),
    site_embedding_dim=2,
    site_capacity=16,
    importance_samples=4,
)
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
max_epochs = 15
batch_size = 128
discriminator_epochs_per_cycle = 2
[threshold]
false_positive_rate = 0.05
# The product default. Each known site has about 100 validation records in the
# retrain, so all of them take the location-shifted fallback. With 100 here, whether
# a site got its own threshold (a 5 % quantile of ~100 scores, noisy enough for the
# gate to reject it) depended on how many records were scored when the trigger fired.
min_site_records = 200
pot = false
[batching]
max_records = 64
max_wait_ms = 10
[retraining]
state_dir = "{state}"
new_site_min_records = 300
min_total_records = 300
trigger_cooldown_s = 0.0
check_interval_s = 0.2
gate_fpr_tolerance = 0.05
[store]
path = "{store}"
poll_interval_s = 0.5
[metrics]
port = 0
"""


def _lines(data: SyntheticSites, parts: dict[str, int], t0: float) -> bytes:
    """JSONL of `parts[site]` normal records per site, interleaved."""
    values = np.concatenate([data.normal(s, n) for s, n in parts.items()])
    names = [s for s, n in parts.items() for _ in range(n)]
    order = data.rng.permutation(len(names))
    values, names = values[order], [names[i] for i in order]
    out = [
        orjson.dumps(
            {"site": s, "ts": t0 + i, "values": dict(zip(FEATURES, map(float, v), strict=True))}
        )
        for i, (s, v) in enumerate(zip(names, values, strict=True))
    ]
    return b"\n".join(out) + b"\n"


def test_new_site_is_onboarded_by_the_running_daemon(tmp_path: Path) -> None:
    data = SyntheticSites(seed=11)
    values, sites = data.normal_mix(["s0", "s1", "s2"], 500)
    first = train_detector(
        values,
        sites,
        features=FEATURES,
        model_spec=MODEL,
        train_spec=TrainSpec(max_epochs=15, batch_size=128, discriminator_epochs_per_cycle=2),
        threshold_spec=ThresholdSpec(false_positive_rate=0.05, min_site_records=200, pot=False),
        device="cpu",
        version="v20000101T000000-000000",
    )
    store = ModelStore(tmp_path / "store")
    store.save(first)
    store.promote(first.version)
    state = tmp_path / "state"
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(state=state, store=tmp_path / "store"))
    out = tmp_path / "scores.jsonl"
    log = (tmp_path / "daemon.log").open("wb")
    cmd = [sys.executable, "-m", "streamvae", "run", "--config", str(config)]
    daemon = subprocess.Popen(
        [*cmd, "--input", "-", "--output", str(out)],
        stdin=subprocess.PIPE,
        stderr=log,
    )
    try:
        assert daemon.stdin is not None
        # Phase A: the known sites and 349 records of the new site "s9". 4096 lines, a
        # whole number of batches: a stdin replay reads 4096 lines at a time.
        phase_a = {"s0": 1249, "s1": 1249, "s2": 1249, "s9": 349}
        daemon.stdin.write(_lines(data, phase_a, 1e9))
        daemon.stdin.flush()
        deadline = time.monotonic() + 90
        while store.current() == first.version and time.monotonic() < deadline:
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
            time.sleep(0.2)
        promoted = store.current()
        assert promoted != first.version, (tmp_path / "daemon.log").read_text()[-3000:]
        time.sleep(1.5)  # the holder refreshes right after the promotion (poll 0.5 s at worst)
        # Phase B: more of s9, scored by the new model.
        daemon.stdin.write(_lines(data, {"s9": 200}, 2e9))
        daemon.stdin.close()
        assert daemon.wait(timeout=60) == 0, (tmp_path / "daemon.log").read_text()[-3000:]
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        if daemon.stdin is not None and not daemon.stdin.closed:
            daemon.stdin.close()
        log.close()
    scores = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    phase_a = [r for r in scores if r["site"] == "s9" and r["ts"] < 2e9]
    phase_b = [r for r in scores if r["site"] == "s9" and r["ts"] >= 2e9]
    assert len(phase_a) == 349
    assert len(phase_b) == 200
    warming = [r for r in phase_a if r["status"] == "warming"]
    assert len(warming) >= 300  # before the promotion
    assert not any(r["anomaly"] for r in warming)
    assert {r["status"] for r in phase_b} == {"active"}
    assert {r["model_version"] for r in phase_b} == {promoted}
    assert np.mean([r["anomaly"] for r in phase_b]) < 0.2
    # On stop the buffer and the site lifecycle were persisted.
    buffered = load_buffer(state, FEATURES)
    assert buffered is not None
    assert "s9" in buffered.sites
    lifecycle = load_json(state / "sites.json")
    assert lifecycle is not None
    assert lifecycle["sites"]["s9"]["status"] == "active"
