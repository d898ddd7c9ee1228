"""The rules with the real promtool, and a real Prometheus scraping a real endpoint."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from streamvae.httpd import serve_http
from streamvae.metrics import ServingMetrics, render
from tests.integration.prometheus_harness import (
    api_get,
    running_prometheus,
    tool,
    wait_for_samples,
)

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


@pytest.fixture
async def metrics_endpoint() -> AsyncIterator[tuple[int, ServingMetrics]]:
    registry = CollectorRegistry()
    serving = ServingMetrics(registry)
    stop = asyncio.Event()
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_http(
            "127.0.0.1", 0, metrics=lambda: render(registry), live=lambda: True,
            ready=lambda: True, stop=stop, bound=bound,
        )
    )  # fmt: skip
    yield await asyncio.wait_for(bound, 5), serving
    stop.set()
    await asyncio.wait_for(task, 5)


@pytest.mark.timeout(60)
async def test_prometheus_scrapes_serving_metrics(
    tmp_path: Path, metrics_endpoint: tuple[int, ServingMetrics]
) -> None:
    target_port, serving = metrics_endpoint
    serving.set_ready(True)
    serving.set_model("v-e2e", 1_700_000_000.0)
    serving.batch(
        consumed=3, scored=2, dead_letters={"invalid_json": 1}, scoring_seconds=0.01,
        lags_s=[0.1, 0.2], sites=["plant-a", "plant-b"], anomalies=[True, False],
        severities=[2.0, 0.3], statuses=["active", "active"],
    )  # fmt: skip
    async with running_prometheus(tmp_path, target_port) as port:
        up = await wait_for_samples(port, 'up{job="streamvae"} == 1')
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{target_port}"
        result = await wait_for_samples(port, 'streamvae_site_anomalies_total{site="plant-a"}')
        assert float(result[0]["value"][1]) == 1.0
        result = await wait_for_samples(port, "streamvae_model_info")
        assert result[0]["metric"]["version"] == "v-e2e"
        result = await wait_for_samples(
            port, 'streamvae_records_dead_lettered_total{reason="invalid_json"}'
        )
        assert float(result[0]["value"][1]) == 1.0
        # the rules load and evaluate against live data
        await wait_for_samples(port, "streamvae:model_age_seconds")
        groups = (await asyncio.to_thread(api_get, port, "rules"))["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert rules
        assert all(rule["health"] in ("ok", "unknown") for rule in rules), rules
