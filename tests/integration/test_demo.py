"""`streamvae demo`, the README's main job, end to end in a subprocess (real Tansu broker)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TAG = "DEMO-SUMMARY "


def _broker_processes(address: str) -> list[int]:
    """Pids of processes whose command line mentions the broker's address."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "tansu" in cmdline and address in cmdline:
            pids.append(int(entry.name))
    return pids


def _summary(stdout: str) -> dict[str, object]:
    lines = [line for line in stdout.splitlines() if line.startswith(TAG)]
    assert lines, stdout[-3000:]
    summary: dict[str, object] = json.loads(lines[-1][len(TAG) :])
    return summary


def _demo(tmp_path: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "streamvae", "demo", "--no-ui",
        "--duration", "16", "--rate", "60", "--sites", "2", "--seed", "3",
        "--workdir", str(tmp_path / "work"), *extra,
    ]  # fmt: skip


@pytest.mark.timeout(90)
def test_short_demo_finds_anomalies_onboards_the_new_site_and_cleans_up(tmp_path: Path) -> None:
    plot = tmp_path / "timeline.png"
    done = subprocess.run(
        _demo(tmp_path, "--plot", str(plot)),
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = _summary(done.stdout)
    assert summary["mode"] == "live"
    overall = summary["overall"]
    assert isinstance(overall, dict)
    assert overall["recall"] > 0
    assert summary["records"] == summary["produced"]
    new = summary["new_site"]
    sites = summary["sites"]
    assert isinstance(sites, dict)
    assert isinstance(new, str)
    assert sites[new]["status"] == "active"
    assert sites[new]["warming"]["records"] > 0
    assert sites[new]["active"]["records"] > 0
    retrains = summary["retrains"]
    assert isinstance(retrains, list)
    assert any(new in e.get("sites", []) for e in retrains if e["outcome"] == "promoted")
    assert str(summary["metrics_url"]).startswith("http://127.0.0.1:")
    scrape = summary["metrics_scrape"]
    assert isinstance(scrape, dict)
    assert scrape["ok"] is True
    assert scrape["samples"] > 10
    assert summary["broker_stopped"] is True
    assert _broker_processes(str(summary["broker"])) == []
    assert plot.stat().st_size > 10_000


@pytest.mark.timeout(90)
def test_ctrl_c_stops_everything_broker_included(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        _demo(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    address = ""
    deadline = time.monotonic() + 60
    for line in proc.stdout:  # wait until the stream flows, then interrupt
        if "broker at " in line:
            address = line.split("broker at ", 1)[1].split()[0]
        if "daemon ready" in line or time.monotonic() > deadline:
            break
    assert address
    assert _broker_processes(address)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=40)
    assert proc.returncode == 0, out[-3000:]
    summary = _summary(out)
    assert summary["interrupted"] is True
    assert summary["broker_stopped"] is True
    assert _broker_processes(address) == []
