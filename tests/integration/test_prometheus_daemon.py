"""End to end: a real Prometheus server scrapes a real `python -m streamvae run` (real
broker, tiny model) on loopback, and its query API returns the expected series."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.prometheus_harness import api_get, running_prometheus, wait_for_samples

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

harness = pytest.importorskip(
    "tests.integration.daemon_harness", reason="the daemon's test harness is not here yet"
)


def _bound_port(daemon: Any, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(r"HTTP endpoints on http://127\.0\.0\.1:(\d+)", daemon.text())
        if match:
            return int(match.group(1))
        time.sleep(0.05)
    raise AssertionError(f"no HTTP endpoint logged:\n{daemon.text()[-3000:]}")


async def test_prometheus_scrapes_the_daemon(
    tmp_path: Path, broker: Any, topics: Any, tiny_models: dict[str, Any]
) -> None:
    names = (topics("in", partitions=2), topics("out", partitions=2), topics("dl"))
    store = harness.store_with(tmp_path / "models", [tiny_models["v1"]], promote="v1")
    config = harness.write_config(
        tmp_path / "config.toml",
        bootstrap=broker.bootstrap_servers,
        topics=names,
        group=f"obs-{tmp_path.name}",
        store=store,
        metrics={"host": "127.0.0.1", "port": 0},
        retraining={"enabled": False, "state_dir": str(tmp_path / "state")},
    )
    daemon = harness.Daemon(config, tmp_path / "daemon.log").start()
    try:
        port = _bound_port(daemon)
        daemon.wait_ready()
        await harness.produce(broker.bootstrap_servers, names[0], harness.mixed(200))
        async with running_prometheus(tmp_path / "prometheus", port) as api:
            await wait_for_samples(api, 'up{job="streamvae"} == 1')
            await wait_for_samples(api, 'streamvae_ready{job="streamvae"} == 1')
            info = await wait_for_samples(api, "streamvae_model_info")
            assert info[0]["metric"]["version"] == "v1"
            scored = await wait_for_samples(api, "sum(streamvae_records_scored_total) >= 180")
            assert float(scored[0]["value"][1]) == 180.0  # 200 records, every 10th invalid
            dead = await wait_for_samples(api, "sum(streamvae_records_dead_lettered_total) >= 20")
            assert float(dead[0]["value"][1]) == 20.0
            sites = await wait_for_samples(api, "count(streamvae_site_severity_count)")
            assert float(sites[0]["value"][1]) == len(harness.SITES)
            await wait_for_samples(api, "streamvae_end_to_end_lag_seconds_count > 0")
            await wait_for_samples(api, "streamvae_consumer_lag_records")
            # the shipped rules load and evaluate against the live series
            await wait_for_samples(api, "streamvae:model_age_seconds")
            groups = (await asyncio.to_thread(api_get, api, "rules"))["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            assert len(rules) > 20
            assert all(rule["health"] in ("ok", "unknown") for rule in rules), rules
        assert daemon.stop() == 0
    finally:
        daemon.kill()
