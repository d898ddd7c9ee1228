"""Crash safety, scale-out and rebalance, clean shutdown under load (real broker)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streamvae.broker import EmbeddedBroker
from tests.integration.daemon_harness import (
    Daemon,
    mixed,
    offsets,
    produce,
    read_outputs,
    setup_case,
    trickle,
)

pytestmark = pytest.mark.integration


def covered(outputs: list, n: int) -> set[tuple[int, int]]:  # type: ignore[type-arg]
    return {o.source for o in outputs}


async def test_kill9_then_restart_loses_nothing(
    broker: EmbeddedBroker,
    topics: Callable[..., str],
    tiny_models: dict[str, object],
    tmp_path: Path,
) -> None:
    names, group, config = setup_case(
        broker, topics, tmp_path, models=[tiny_models["v1"]], promote="v1", partitions=4
    )
    corpus = mixed(3000)
    first = Daemon(config, tmp_path / "first.log").start()
    second = Daemon(config, tmp_path / "second.log")
    try:
        first.wait_ready()
        feeding = asyncio.create_task(
            trickle(broker.bootstrap_servers, names[0], corpus, chunk=150, pause=0.05)
        )
        await read_outputs(broker.bootstrap_servers, names[1:], 100, settle=0.0)  # mid-stream
        first.kill()  # SIGKILL: no drain, no commit
        second.start()
        await feeding
        outputs = await read_outputs(broker.bootstrap_servers, names[1:], len(corpus), settle=2.0)
        assert second.stop() == 0
    finally:
        first.kill()
        second.kill()
    positions = [o.source for o in outputs]
    assert len(set(positions)) == len(corpus)  # every input has an output
    duplicates = len(positions) - len(set(positions))
    by_position: dict[tuple[int, int], set[str]] = {}
    for o in outputs:
        by_position.setdefault(o.source, set()).add(o.value.get("model_version", "dead"))
    assert all(len(v) == 1 for v in by_position.values())  # a duplicate is the same scoring
    committed, ends = await offsets(broker.bootstrap_servers, group, names[0])
    assert committed == ends
    print(f"duplicates after kill -9: {duplicates}")


async def test_two_instances_share_and_survive_a_rebalance(
    broker: EmbeddedBroker,
    topics: Callable[..., str],
    tiny_models: dict[str, object],
    tmp_path: Path,
) -> None:
    names, group, config = setup_case(
        broker, topics, tmp_path, models=[tiny_models["v1"]], promote="v1", partitions=4
    )
    corpus = mixed(3000)
    a = Daemon(config, tmp_path / "a.log").start()
    b = Daemon(config, tmp_path / "b.log").start()
    try:
        a.wait_ready()
        b.wait_ready()
        a.wait_log(r"partitions assigned: \[\d", 20)
        b.wait_log(r"partitions assigned: \[\d", 20)
        feeding = asyncio.create_task(
            trickle(broker.bootstrap_servers, names[0], corpus, chunk=100, pause=0.05)
        )
        await asyncio.sleep(0.8)
        started = time.monotonic()
        assert await asyncio.to_thread(b.stop) == 0  # leaves: a takes every partition over
        assert time.monotonic() - started < 10
        await feeding
        outputs = await read_outputs(broker.bootstrap_servers, names[1:], len(corpus), settle=2.0)
        assert a.stop() == 0
    finally:
        a.kill()
        b.kill()
    assert len({o.source for o in outputs}) == len(corpus)
    assert "partitions assigned: [0, 1, 2, 3]" in a.text()
    committed, ends = await offsets(broker.bootstrap_servers, group, names[0])
    assert committed == ends


async def test_sigterm_under_load_exits_zero_and_commits(
    broker: EmbeddedBroker,
    topics: Callable[..., str],
    tiny_models: dict[str, object],
    tmp_path: Path,
) -> None:
    names, group, config = setup_case(
        broker,
        topics,
        tmp_path,
        models=[tiny_models["v1"]],
        promote="v1",
        partitions=4,
        batching={"max_records": 16, "max_wait_ms": 5},
        service={"shutdown_timeout_s": 5.0},
    )
    corpus = mixed(20000)
    await produce(broker.bootstrap_servers, names[0], corpus)
    daemon = Daemon(config, tmp_path / "d.log").start()
    try:
        daemon.wait_log(r"streamvae\.app: consuming", 40)
        await asyncio.sleep(1.0)  # under load: a backlog of 20k records
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
        assert time.monotonic() - started < 5.0
    finally:
        daemon.kill()
    committed, ends = await offsets(broker.bootstrap_servers, group, names[0])
    assert sum(ends.values()) == len(corpus)
    assert 0 < sum(committed.values()) < len(corpus), "stopped mid-stream"
    outputs = await read_outputs(
        broker.bootstrap_servers, names[1:], sum(committed.values()), settle=1.0
    )
    done = {o.source for o in outputs}
    for partition, offset in committed.items():  # everything committed was delivered
        assert all((partition, k) in done for k in range(offset))
