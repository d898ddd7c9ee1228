"""Hot swap mid-stream (v1 → v2, then a corrupt v3 rejected) and start without a model."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from streamvae.artifacts import ModelStore
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


async def test_hot_swap_mid_stream_and_corrupt_artifact_rejected(
    broker: EmbeddedBroker,
    topics: Callable[..., str],
    tiny_models: dict[str, object],
    tmp_path: Path,
) -> None:
    names, group, config = setup_case(
        broker, topics, tmp_path, models=[tiny_models["v1"]], promote="v1"
    )
    store = ModelStore(tmp_path / "store")
    corpus = mixed(4000)
    daemon = Daemon(config, tmp_path / "d.log").start()
    try:
        daemon.wait_ready()
        feeding = asyncio.create_task(
            trickle(broker.bootstrap_servers, names[0], corpus, chunk=100, pause=0.05)
        )
        await read_outputs(broker.bootstrap_servers, names[1:], 50, settle=0.0)  # v1 serves
        store.save(tiny_models["v2"])  # type: ignore[arg-type]
        store.promote("v2")
        await asyncio.to_thread(daemon.wait_log, r"serving model v2", 10)
        broken = dataclasses.replace(tiny_models["v2"], version="v3")  # type: ignore[type-var]
        store.save(broken)
        (tmp_path / "store" / "versions" / "v3" / "weights.safetensors").write_bytes(
            b"\x00garbage" * 10
        )
        store.promote("v3")
        await asyncio.to_thread(daemon.wait_log, r"model v3 rejected", 10)
        await feeding
        outputs = await read_outputs(broker.bootstrap_servers, names[1:], len(corpus))
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    positions = [o.source for o in outputs]
    assert len(positions) == len(set(positions)) == len(corpus)  # no gap, no duplicate
    scores = sorted(
        (o.source, o.value["model_version"]) for o in outputs if "model_version" in o.value
    )
    assert {v for _, v in scores} == {"v1", "v2"}
    for partition in {p for (p, _), _ in scores}:
        versions = [v for (p, _), v in scores if p == partition]
        switch = versions.index("v2") if "v2" in versions else len(versions)
        assert set(versions[switch:]) <= {"v2"}, "v1 after v2, or a v3 output"
    committed, ends = await offsets(broker.bootstrap_servers, group, names[0])
    assert committed == ends


async def test_no_model_means_not_ready_and_no_consumption(
    broker: EmbeddedBroker,
    topics: Callable[..., str],
    tiny_models: dict[str, object],
    tmp_path: Path,
) -> None:
    names, _group, config = setup_case(broker, topics, tmp_path, partitions=1)
    root = tmp_path / "store"
    corpus = mixed(50)
    await produce(broker.bootstrap_servers, names[0], corpus)
    daemon = Daemon(config, tmp_path / "d.log").start()
    try:
        daemon.wait_log(r"no model in the store yet", 30)
        early = await read_outputs(broker.bootstrap_servers, names[1:], 0, settle=1.5)
        assert early == []
        assert "streamvae.app: ready" not in daemon.text()
        assert "streamvae.app: consuming" not in daemon.text()
        assert (await asyncio.to_thread(daemon.http, "/readyz"))[0] == 503
        assert (await asyncio.to_thread(daemon.http, "/healthz"))[0] == 200
        store = ModelStore(root)
        store.save(tiny_models["v1"])  # type: ignore[arg-type]
        store.promote("v1")
        await asyncio.to_thread(daemon.wait_ready)
        outputs = await read_outputs(broker.bootstrap_servers, names[1:], len(corpus))
        assert (await asyncio.to_thread(daemon.http, "/readyz"))[0] == 200
        status, text = await asyncio.to_thread(daemon.http, "/metrics")
        assert status == 200
        assert b"streamvae_ready 1.0" in text
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    assert len({o.source for o in outputs}) == len(corpus)


async def test_without_a_model_buffers_then_serves_the_first_trained_model(
    broker: EmbeddedBroker, topics: Callable[..., str], tmp_path: Path
) -> None:
    names, _group, config = setup_case(
        broker,
        topics,
        tmp_path,
        service={"wait_for_model": False, "shutdown_timeout_s": 10.0},
        model={
            "features": ["a", "b", "c"],
            "hidden": [16],
            "discriminator_hidden": [16],
            "latent_dim": 2,
            "site_capacity": 8,
            "importance_samples": 2,
        },
        training={"max_epochs": 3, "batch_size": 128},
        threshold={"min_site_records": 20},
        retraining={
            "enabled": True,
            "min_total_records": 300,
            "check_interval_s": 0.2,
            "trigger_cooldown_s": 1.0,
        },
    )
    first = mixed(600, invalid_every=1000)  # all valid: the first training data
    await produce(broker.bootstrap_servers, names[0], first)
    daemon = Daemon(config, tmp_path / "d.log").start()
    try:
        await asyncio.to_thread(daemon.wait_ready, 90)  # a model was trained and promoted
        later = mixed(100, start=600)
        await produce(broker.bootstrap_servers, names[0], later)
        outputs = await read_outputs(broker.bootstrap_servers, names[1:], len(later))
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    scored = [o for o in outputs if "model_version" in o.value]
    assert scored
    assert len({o.value["model_version"] for o in scored}) == 1
    assert "buffering" in daemon.text()
    assert len({o.source for o in outputs}) >= len(later)
