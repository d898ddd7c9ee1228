"""`streamvae train` / `score` / `models` round trip through subprocesses on tiny data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamvae.cli import main


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamvae", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_train_score_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(3)
    train = tmp_path / "train.jsonl"
    with train.open("w") as fh:
        for i in range(300):
            v = rng.normal(size=3) + (i % 2)
            rec = {
                "site": f"s{i % 2}",
                "ts": 1.7e9 + i,
                "values": {"a": v[0], "b": v[1], "c": v[2]},
            }
            fh.write(json.dumps(rec) + "\n")
    test = tmp_path / "test.jsonl"
    test.write_text(
        json.dumps({"site": "s0", "ts": 1.7e9, "values": [0.1, 0.2, 0.3]})
        + "\nnot json\n"
        + json.dumps({"site": "new", "ts": "2026-11-20T10:00:00Z", "values": [0, 0, 99]})
        + "\n"
    )
    csv = tmp_path / "test.csv"
    csv.write_text("site,ts,a,b,c\ns1,1700000000,1,1,1\ns1,1700000001,1,nan,1\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[model]\nhidden = [16]\ndiscriminator_hidden = [8]\nlatent_dim = 2\n"
        "[training]\nmax_epochs = 2\ndiscriminator_epochs_per_cycle = 1\n"
    )
    store = tmp_path / "store"
    out = _run("train", "--config", str(cfg), "--data", str(train), "--out", str(store))
    assert out.returncode == 0, out.stderr
    version = out.stdout.strip()
    assert version.startswith("v")

    scores = tmp_path / "scores.jsonl"
    out = _run("score", "--model", str(store), "--data", str(test), str(csv), "--out", str(scores))
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in scores.read_text().splitlines()]
    assert len(lines) == 5
    assert lines[0]["site"] == "s0"
    assert lines[0]["model_version"] == version
    assert set(lines[0]["contributions"]) == {"a", "b", "c"}
    assert lines[0]["status"] == "active"
    assert "score" not in lines[1]
    assert lines[1]["reason"] == "invalid_json"
    assert lines[1]["position"]["offset"] == 1
    assert lines[2]["status"] == "warming"
    assert lines[2]["score"] > lines[0]["score"]
    assert lines[3]["site"] == "s1"
    assert lines[4]["reason"] == "non_finite"

    # in-process from here on (a subprocess costs seconds of torch import)
    explicit = tmp_path / "explicit.jsonl"
    argv = ["score", "--model", str(store / version), "--data", str(test), "--out", str(explicit)]
    assert main(argv) == 0
    assert explicit.read_text().splitlines()[0] == scores.read_text().splitlines()[0]

    assert main(["models", "--store", str(store), "list"]) == 0
    assert f"* {version}" in capsys.readouterr().out


def test_score_missing_model_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "x.jsonl"
    data.write_text("")
    assert (
        main(["score", "--model", str(tmp_path / "nope"), "--data", str(data), "--out", "-"]) == 1
    )
    assert "StoreError" in capsys.readouterr().err
