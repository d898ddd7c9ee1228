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
    store_with,
    trickle,
    write_config,
)

pytestmark = pytest.mark.integration


async def test_hot_swap_mid_stream_and_corrupt_artifact_rejected(
    broker: EmbeddedBroker,
    topics: Callable[..., str],
    tiny_models: dict[str, object],
    tmp_path: Path,
) -> None:
    names = (topics("in", 2), topics("out", 2), topics("dlq", 1))
    group = f"g-{names[0]}"
    root = store_with(tmp_path / "store", [tiny_models["v1"]], "v1")
    config = write_config(
        tmp_path / "c.toml",
        bootstrap=broker.bootstrap_servers,
        topics=names,
        group=group,
        store=root,
    )
    store = ModelStore(root)
    corpus = mixed(4000)
    daemon = Daemon(config, tmp_path / "d.log").start()
    try:
        daemon.wait_ready()
        feeding = asyncio.create_task(
            trickle(broker.bootstrap_servers, names[0], corpus, chunk=100, pause=0.05)
        )
        await asyncio.sleep(0.5)
        store.save(tiny_models["v2"])  # type: ignore[arg-type]
        store.promote("v2")
        await asyncio.to_thread(daemon.wait_log, r"serving model v2", 10)
        broken = dataclasses.replace(tiny_models["v2"], version="v3")  # type: ignore[type-var]
        store.save(broken)
        (root / "versions" / "v3" / "weights.safetensors").write_bytes(b"\x00garbage" * 10)
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
    names = (topics("in", 1), topics("out", 1), topics("dlq", 1))
    root = store_with(tmp_path / "store", [], None)
    config = write_config(
        tmp_path / "c.toml",
        bootstrap=broker.bootstrap_servers,
        topics=names,
        group=f"g-{names[0]}",
        store=root,
    )
    corpus = mixed(50)
    await produce(broker.bootstrap_servers, names[0], corpus)
    daemon = Daemon(config, tmp_path / "d.log").start()
    try:
        daemon.wait_log(r"no model in the store yet", 30)
        early = await read_outputs(broker.bootstrap_servers, names[1:], 0, settle=1.5)
        assert early == []
        assert "streamvae.app: ready" not in daemon.text()
        assert "streamvae.app: consuming" not in daemon.text()
        store = ModelStore(root)
        store.save(tiny_models["v1"])  # type: ignore[arg-type]
        store.promote("v1")
        await asyncio.to_thread(daemon.wait_ready)
        outputs = await read_outputs(broker.bootstrap_servers, names[1:], len(corpus))
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    assert len({o.source for o in outputs}) == len(corpus)
