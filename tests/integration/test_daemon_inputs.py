"""Hostile inputs, a broker that is down at start, and file replay."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamvae.broker import EmbeddedBroker
from streamvae.errors import TransientError
from tests.integration.daemon_harness import (
    Daemon,
    Item,
    mixed,
    offsets,
    produce,
    read_outputs,
    setup_case,
    store_with,
    valid,
    write_config,
)

pytestmark = pytest.mark.integration


def fuzz_corpus(seed: int = 3) -> list[Item]:
    rng = np.random.default_rng(seed)
    items: list[bytes] = [rng.bytes(int(n)) for n in rng.integers(0, 3000, 40)]
    items += [
        b"[" * 3000 + b"]" * 1000,  # deep nesting, unbalanced
        b"[" * 1500 + b"]" * 1500,
        b'{"site": "s0", "ts": 1732200000, "values": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        b'{"site": "s0", "ts": 1732200000, "values": [1e400, 2, 3]}',
        b'{"site": "s0", "ts": 1732200000, "values": [' + b"9" * 1000 + b", 2, 3]}",
        b'{"site": "s0", "ts": 1e308, "values": [1, 2, 3]}',
        b'{"site": "s0", "ts": -1e309, "values": [1, 2, 3]}',
        b'{"site": "s0", "ts": 1732200000, "values": {"a": "NaN", "b": 1, "c": 2}}',
        b'{"site": "s0", "ts": "NaN", "values": [1, 2, 3]}',
        b'{"site": "NaN", "ts": 1732200000, "values": [NaN, NaN, NaN]}',
        b'{"site": "s0", "ts": 1732200000, "values": [1.7976931348623157e308, 1, 2]}',
        b"\xff\xfe\x00\x00",
        b"",
        b"null",
        orjson.dumps({"site": "s0" * 10_000, "ts": 1, "values": [1, 2, 3]})[:4000],
        b"x" * (10 * 1024 * 1024),  # 10 MB
    ]
    return [(None, p) for p in items]


async def test_fuzzed_inputs_never_crash_the_daemon(
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
        kafka={"max_partition_fetch_bytes": 1_048_576},
    )
    corpus = [valid(0), *fuzz_corpus(), valid(1)]
    await produce(
        broker.bootstrap_servers,
        names[0],
        corpus,
        max_request_size=12 * 1024 * 1024,
        max_batch_size=12 * 1024 * 1024,
    )
    daemon = Daemon(config, tmp_path / "d.log").start()
    try:
        outputs = await read_outputs(broker.bootstrap_servers, names[1:], len(corpus))
        assert daemon.proc is not None
        assert daemon.proc.poll() is None, daemon.text()[-3000:]
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    assert len({o.source for o in outputs}) == len(outputs) == len(corpus)
    assert sum(o.topic == names[1] for o in outputs) >= 2
    committed, ends = await offsets(broker.bootstrap_servers, group, names[0])
    assert committed == ends


async def test_broker_down_at_start_then_up(tiny_models: dict[str, object], tmp_path: Path) -> None:
    later = EmbeddedBroker(log_path=tmp_path / "tansu.log")  # chosen port, not started yet
    names = ("in-down", "out-down", "dlq-down")
    store = store_with(tmp_path / "store", [tiny_models["v1"]], "v1")
    config = write_config(
        tmp_path / "c.toml",
        bootstrap=later.bootstrap_servers,
        topics=names,
        group="g-down",
        store=store,
    )
    daemon = Daemon(config, tmp_path / "d.log").start()
    try:
        daemon.wait_log(r"cannot reach", 30, count=2)
        assert daemon.proc is not None
        assert daemon.proc.poll() is None
        assert "streamvae.app: ready" not in daemon.text()
        with later:
            for name, parts in zip(names, (2, 2, 1), strict=True):
                # (may already be auto-created by the daemon's metadata request)
                with contextlib.suppress(TransientError):
                    later.create_topic(name, parts)
            corpus = mixed(300)
            await produce(later.bootstrap_servers, names[0], corpus)
            daemon.wait_ready(30)
            outputs = await read_outputs(later.bootstrap_servers, names[1:], len(corpus))
            assert daemon.stop() == 0
            committed, ends = await offsets(later.bootstrap_servers, "g-down", names[0])
    finally:
        daemon.kill()
    assert len({o.source for o in outputs}) == len(corpus)
    assert committed == ends


def test_replay_file_to_file(tiny_models: dict[str, object], tmp_path: Path) -> None:
    store = store_with(tmp_path / "store", [tiny_models["v1"]], "v1")
    config = write_config(
        tmp_path / "c.toml",
        bootstrap="127.0.0.1:1",
        topics=("i", "o", "d"),
        group="g",
        store=store,
    )
    corpus = mixed(500)
    data = tmp_path / "in.jsonl"
    data.write_bytes(b"\n".join(p for _, p in corpus) + b"\n")
    out = tmp_path / "scores.jsonl"
    cmd = [sys.executable, "-m", "streamvae", "run", "--config", str(config)]
    done = subprocess.run(
        [*cmd, "--input", str(data), "--output", str(out)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    scores = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    dead = [
        orjson.loads(line)
        for line in (tmp_path / "scores.jsonl.dead-letters.jsonl").read_bytes().splitlines()
    ]
    assert len(scores) + len(dead) == len(corpus)
    assert sorted(r["position"]["offset"] for r in scores + dead) == list(range(len(corpus)))
    assert len(dead) == 50


async def test_produce_command_publishes_csv_keyed_by_site(
    broker: EmbeddedBroker, topics: Callable[..., str], tmp_path: Path
) -> None:
    topic = topics("produced", 3)
    data = tmp_path / "data.csv"
    data.write_text(
        "site,ts,a,b,c\n" + "".join(f"s{i % 3},{1_700_000_000 + i},{i},1,2\n" for i in range(90))
    )
    config = write_config(
        tmp_path / "c.toml",
        bootstrap=broker.bootstrap_servers,
        topics=(topic, "o", "d"),
        group="g",
        store=tmp_path / "store",
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "streamvae",
            "produce",
            "--config",
            str(config),
            "--data",
            str(data),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap_servers)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        got: list[tuple[int, bytes | None, bytes]] = []
        async with asyncio.timeout(20):
            while len(got) < 90:
                for tp, msgs in (await consumer.getmany(timeout_ms=200)).items():
                    got.extend((tp.partition, m.key, m.value) for m in msgs)
    finally:
        await consumer.stop()
    partition_of: dict[bytes | None, set[int]] = {}
    for partition, key, value in got:
        assert orjson.loads(value)["site"].encode() == key
        partition_of.setdefault(key, set()).add(partition)
    assert all(len(parts) == 1 for parts in partition_of.values())  # a site stays on one partition


async def test_broker_outage_mid_run_means_not_ready_then_recovers(
    tiny_models: dict[str, object], tmp_path: Path
) -> None:
    names = ("in-mid", "out-mid", "dlq-mid")
    store = store_with(tmp_path / "store", [tiny_models["v1"]], "v1")
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as flaky:
        for name, parts in zip(names, (2, 2, 1), strict=True):
            flaky.create_topic(name, parts)
        config = write_config(
            tmp_path / "c.toml",
            bootstrap=flaky.bootstrap_servers,
            topics=names,
            group="g-mid",
            store=store,
        )
        daemon = Daemon(config, tmp_path / "d.log").start()
        try:
            await asyncio.to_thread(daemon.wait_ready)
            flaky.stop()
            await asyncio.to_thread(daemon.wait_log, r"broker unreachable", 30)
            assert (await asyncio.to_thread(daemon.http, "/readyz"))[0] == 503
            flaky.start()  # same port, empty storage
            for name, parts in zip(names, (2, 2, 1), strict=True):
                with contextlib.suppress(TransientError):
                    flaky.create_topic(name, parts)
            corpus = mixed(200)
            await produce(flaky.bootstrap_servers, names[0], corpus)
            await asyncio.to_thread(daemon.wait_log, r"broker reachable again", 30)
            outputs = await read_outputs(flaky.bootstrap_servers, names[1:], len(corpus))
            assert daemon.proc is not None
            assert daemon.proc.poll() is None
            assert daemon.stop() == 0
        finally:
            daemon.kill()
    assert len({o.source for o in outputs}) == len(corpus)


async def test_embedded_broker_mode(tiny_models: dict[str, object], tmp_path: Path) -> None:
    store = store_with(tmp_path / "store", [tiny_models["v1"]], "v1")
    names = ("sensors", "sensor-scores", "sensor-dead-letters")
    config = write_config(
        tmp_path / "c.toml", bootstrap="embedded", topics=names, group="g", store=store
    )
    daemon = Daemon(config, tmp_path / "d.log").start()
    try:
        await asyncio.to_thread(daemon.wait_ready)
        bootstrap = re.findall(r"embedded broker at ([\d.]+:\d+)", daemon.text())[0]
        corpus = mixed(100)
        await produce(bootstrap, names[0], corpus)
        outputs = await read_outputs(bootstrap, names[1:], len(corpus))
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    assert len({o.source for o in outputs}) == len(corpus)
    host, port = bootstrap.split(":")
    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, int(port)), 1):
        pass  # the embedded broker is gone with the daemon
