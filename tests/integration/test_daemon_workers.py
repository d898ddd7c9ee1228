"""`service.workers = 2` against a real broker: the daemon and one worker process share
the input's partitions; every record gets one output, the daemon's metrics and retraining
buffer add up both, a worker that dies stops the daemon with exit code 1."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from streamvae.broker import EmbeddedBroker
from tests.integration.daemon_harness import (
    FEATURES,
    Daemon,
    mixed,
    offsets,
    produce,
    read_outputs,
    setup_case,
    valid,
)

pytestmark = pytest.mark.integration


def _metric(text: str, name: str) -> float:
    """Sum of the samples of `name` (any labels) in a /metrics page."""
    pattern = rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$"
    return sum(float(v) for v in re.findall(pattern, text, flags=re.M))


def _two_processes(
    broker: EmbeddedBroker,
    topics: Callable[..., str],
    tmp_path: Path,
    tiny_models: dict[str, object],
    partitions: int,
) -> tuple[tuple[str, str, str], str, Path]:
    """`setup_case` with model v1 promoted and `service.workers = 2`."""
    return setup_case(
        broker,
        topics,
        tmp_path,
        models=[tiny_models["v1"]],
        promote="v1",
        partitions=partitions,
        service={"workers": 2, "shutdown_timeout_s": 10.0, "log_level": "INFO"},
    )


def _worker_pid(daemon: Daemon) -> int:
    daemon.wait_log(r"worker 1 started as pid \d+", 60)
    return int(re.findall(r"worker 1 started as pid (\d+)", daemon.text())[-1])


async def test_two_processes_share_the_partitions_and_the_metrics_add_up(
    broker: EmbeddedBroker,
    topics: Callable[..., str],
    tiny_models: dict[str, object],
    tmp_path: Path,
) -> None:
    names, group, config = _two_processes(broker, topics, tmp_path, tiny_models, 4)
    corpus = [*mixed(800, invalid_every=8), valid(99_999, site="brand-new-site")]
    sites = {key for key, _ in corpus if key is not None}
    await produce(broker.bootstrap_servers, names[0], corpus)
    daemon = Daemon(config, tmp_path / "daemon.log").start()
    try:
        pid = _worker_pid(daemon)
        outputs = await read_outputs(broker.bootstrap_servers, names[1:], len(corpus))
        daemon.wait_ready(60)
        status, page = daemon.http("/metrics")
        assert status == 200
        text = page.decode()
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    positions = [o.source for o in outputs]
    assert len(positions) == len(set(positions)) == len(corpus)
    log = daemon.text()
    # both processes consumed: the daemon's and the worker's own assignments
    assert re.search(r"streamvae\.kafka: partitions assigned: \[\d", log), log[-3000:]
    assert re.search(r"streamvae\.kafka\[worker 1\]: partitions assigned: \[\d", log), log[-3000:]
    assert re.search(r"worker 1 stopped \(exit code 0\)", log)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # the daemon's metrics count both processes' records
    assert _metric(text, "streamvae_records_consumed_total") == len(corpus)
    assert _metric(text, "streamvae_records_dead_lettered_total") == 800 // 8
    assert _metric(text, "streamvae_records_scored_total") == len(corpus) - 800 // 8
    assert _metric(text, "streamvae_in_flight_records") == 0
    assert _metric(text, "streamvae_ready") == 1
    assert _metric(text, "streamvae_site_severity_count") == len(corpus) - 800 // 8
    # the retraining buffer (persisted at stop) holds records of every site
    committed, ends = await offsets(broker.bootstrap_servers, group, names[0])
    assert committed == ends
    from streamvae.config import load_settings
    from streamvae.retrain_setup import load_or_new_buffer

    buffered = load_or_new_buffer(load_settings(config), FEATURES, 0, owner=False).counts()
    assert {s.decode() for s in sites} <= set(buffered)


async def test_a_worker_that_dies_stops_the_daemon_with_code_1(
    broker: EmbeddedBroker,
    topics: Callable[..., str],
    tiny_models: dict[str, object],
    tmp_path: Path,
) -> None:
    names, group, config = _two_processes(broker, topics, tmp_path, tiny_models, 2)
    corpus = mixed(200, invalid_every=10)
    await produce(broker.bootstrap_servers, names[0], corpus)
    daemon = Daemon(config, tmp_path / "daemon.log").start()
    try:
        pid = _worker_pid(daemon)
        await read_outputs(broker.bootstrap_servers, names[1:], len(corpus))
        os.kill(pid, signal.SIGKILL)
        code = await asyncio.to_thread(daemon.wait, 30)
    finally:
        daemon.kill()
    assert code == 1
    assert "worker 1 exited with code -9" in daemon.text()
    # what was delivered is committed; nothing is lost (re-read after a restart)
    committed, ends = await offsets(broker.bootstrap_servers, group, names[0])
    assert sum(committed.values()) <= sum(ends.values()) == len(corpus)


async def test_a_promoted_model_reaches_every_process(
    broker: EmbeddedBroker,
    topics: Callable[..., str],
    tiny_models: dict[str, object],
    tmp_path: Path,
) -> None:
    from streamvae.artifacts import ModelStore

    names, _group, config = _two_processes(broker, topics, tmp_path, tiny_models, 4)
    corpus = [valid(i, site=f"site-{i % 12}") for i in range(600)]  # keys over 4 partitions
    first, second = corpus[:300], corpus[300:]
    daemon = Daemon(config, tmp_path / "daemon.log").start()
    try:
        daemon.wait_ready(60)
        await produce(broker.bootstrap_servers, names[0], first)
        await read_outputs(broker.bootstrap_servers, names[1:], len(first), settle=0.0)
        store = ModelStore(tmp_path / "store")
        store.save(tiny_models["v2"])  # type: ignore[arg-type]
        store.promote("v2")
        await asyncio.to_thread(daemon.wait_log, r"streamvae\.swap: serving model v2", 10)
        await asyncio.to_thread(daemon.wait_log, r"swap\[worker 1\]: serving model v2", 10)
        await produce(broker.bootstrap_servers, names[0], second)
        outputs = await read_outputs(broker.bootstrap_servers, names[1:], len(first + second))
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    late = [o.value for o in outputs if o.value["ts"] >= 1_732_200_300.0]
    assert len(late) == len(second)
    assert {o["model_version"] for o in late} == {"v2"}
    # both processes scored some of the second half (each owns two of the four partitions)
    log = daemon.text()
    owned = [
        set(orjson.loads(m))
        for m in re.findall(
            r"streamvae\.kafka(?:\[worker 1\])?: partitions assigned: (\[.*\])", log
        )
    ]
    assert len(owned) == 2
    used = {o["position"]["partition"] for o in late}
    assert all(used & mine for mine in owned)
