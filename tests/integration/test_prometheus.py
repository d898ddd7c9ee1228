"""The rules with the real promtool, and a real Prometheus scraping a real endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streamvae.httpd import serve_http
from streamvae.metrics import ServingMetrics, render

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
RULES = PROM_DIR / "streamvae-rules.yml"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (Debian package prometheus; make system-deps)")
    return path


def test_promtool_check_rules() -> None:
    out = subprocess.run(
        [_tool("promtool"), "check", "rules", str(RULES)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("config", ["prometheus-compose.yml", "prometheus.example.yml"])
def test_promtool_check_config(config: str) -> None:
    out = subprocess.run(
        [_tool("promtool"), "check", "config", str(PROM_DIR / config)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_test_rules() -> None:
    files = sorted(str(p) for p in (PROM_DIR / "tests").glob("*.test.yml"))
    assert files
    out = subprocess.run(
        [_tool("promtool"), "test", "rules", *files],
        capture_output=True, text=True, timeout=60, check=False, cwd=PROM_DIR / "tests",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(files)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _api(port: int, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{port}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())["data"]


async def _wait_for(port: int, query: str, deadline_s: float = 25.0) -> list[dict[str, Any]]:
    """Poll an instant query until it returns samples."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            data = await asyncio.to_thread(_api, port, "query", query=query)
            if data["result"]:
                result: list[dict[str, Any]] = data["result"]
                return result
        except OSError:
            pass  # Prometheus still starting
        if time.monotonic() > end:
            raise AssertionError(f"no samples for {query!r} within {deadline_s} s")
        await asyncio.sleep(0.25)


def write_prometheus_config(tmp: Path, target_port: int) -> Path:
    config = tmp / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {RULES}\n"
        "scrape_configs:\n  - job_name: streamvae\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target_port}']\n"
    )
    return config


@contextlib.asynccontextmanager
async def running_prometheus(tmp: Path, target_port: int) -> AsyncIterator[int]:
    """A Prometheus server scraping 127.0.0.1:target_port every second; yields its API port."""
    port = _free_port()
    config = write_prometheus_config(tmp, target_port)
    with (tmp / "prometheus.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            _tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )
        try:
            yield port
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


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
        up = await _wait_for(port, 'up{job="streamvae"} == 1')
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{target_port}"
        result = await _wait_for(port, 'streamvae_site_anomalies_total{site="plant-a"}')
        assert float(result[0]["value"][1]) == 1.0
        result = await _wait_for(port, "streamvae_model_info")
        assert result[0]["metric"]["version"] == "v-e2e"
        result = await _wait_for(
            port, 'streamvae_records_dead_lettered_total{reason="invalid_json"}'
        )
        assert float(result[0]["value"][1]) == 1.0
        # the rules load and evaluate against live data
        await _wait_for(port, "streamvae:model_age_seconds")
        groups = (await asyncio.to_thread(_api, port, "rules"))["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert rules
        assert all(rule["health"] in ("ok", "unknown") for rule in rules), rules
