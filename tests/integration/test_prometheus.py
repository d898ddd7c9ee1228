"""The rules and configurations with the real promtool (Debian package prometheus).
The live scrape of a running daemon is in test_prometheus_daemon.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.prometheus_harness import tool

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
RULES = PROM_DIR / "streamvae-rules.yml"


def test_promtool_check_rules() -> None:
    out = subprocess.run(
        [tool("promtool"), "check", "rules", str(RULES)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("config", ["prometheus-compose.yml", "prometheus.example.yml"])
def test_promtool_check_config(config: str) -> None:
    out = subprocess.run(
        [tool("promtool"), "check", "config", str(PROM_DIR / config)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_test_rules() -> None:
    files = sorted(str(p) for p in (PROM_DIR / "tests").glob("*.test.yml"))
    assert files
    out = subprocess.run(
        [tool("promtool"), "test", "rules", *files],
        capture_output=True, text=True, timeout=60, check=False, cwd=PROM_DIR / "tests",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(files)
