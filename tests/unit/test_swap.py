"""ModelHolder: first load, switch on promote, rejection of broken or incompatible versions."""

from __future__ import annotations

import asyncio

from streamvae.swap import ModelHolder
from tests.unit.daemon_fakes import FakeDetector, FakeStore, RecordingMetrics


def holder(store: FakeStore, metrics: RecordingMetrics) -> ModelHolder:
    return ModelHolder(store, metrics, poll_interval_s=0.01)


async def test_no_model_means_not_ready() -> None:
    h = holder(FakeStore({}), RecordingMetrics())
    assert await h.refresh() is False
    assert h.current is None
    assert not h.ready.is_set()


async def test_switches_when_promoted_and_keeps_serving_over_broken_versions() -> None:
    store = FakeStore(
        {
            "v1": FakeDetector("v1"),
            "v2": FakeDetector("v2"),
            "bad": None,
            "other": FakeDetector("other", features=("x", "y", "z")),
        }
    )
    metrics = RecordingMetrics()
    h = holder(store, metrics)
    store.pointer = "v1"
    assert await h.refresh() is True
    assert h.ready.is_set()
    assert h.current is not None
    assert h.current.version == "v1"
    assert h.features == ("a", "b", "c")
    store.pointer = "v2"
    assert await h.refresh() is True
    assert h.current.version == "v2"
    for broken, reason in [("bad", "invalid_artifact"), ("other", "incompatible")]:
        store.pointer = broken
        assert await h.refresh() is False
        assert h.current.version == "v2"
        assert metrics.named("model_rejected")[-1] == (reason,)
    assert await h.refresh() is False  # a rejected version is not retried
    assert len(metrics.named("model_rejected")) == 2
    assert [c[0] for c in metrics.named("set_model")] == ["v1", "v2"]


async def test_broken_probe_is_rejected() -> None:
    store = FakeStore({"v1": FakeDetector("v1", fail=True)})
    store.pointer = "v1"
    metrics = RecordingMetrics()
    h = holder(store, metrics)
    assert await h.refresh() is False
    assert h.current is None
    assert metrics.named("model_rejected") == [("invalid_artifact",)]


async def test_watch_picks_up_a_model_later() -> None:
    store = FakeStore({"v1": FakeDetector("v1")})
    h = holder(store, RecordingMetrics())
    stop = asyncio.Event()
    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        tg.create_task(h.watch(stop))
        await asyncio.sleep(0.03)
        assert not h.ready.is_set()
        store.pointer = "v1"
        await h.ready.wait()
        stop.set()
    assert h.current is not None
