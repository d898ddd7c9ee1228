"""Pipeline loops against in-memory sources and sinks (no broker, no torch)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from streamvae.batching import BatchPolicy
from streamvae.detector import ScoredBatch
from streamvae.pipeline import Pipeline, PipelineSpec
from streamvae.records import SourcePosition
from tests.unit.daemon_fakes import (
    FAKE_CODEC,
    FakeDetector,
    Holder,
    ListSink,
    ListSource,
    RecordingMetrics,
    RecordingTraining,
    payload,
)


def make(
    source: ListSource,
    sink: ListSink,
    detector: FakeDetector | None = None,
    *,
    max_records: int = 5,
    max_in_flight: int = 1000,
    top: int = 0,
    metrics: RecordingMetrics | None = None,
    training: RecordingTraining | None = None,
    scorers: int = 2,
    commit_interval_s: float = 0.0,
) -> tuple[Pipeline, Holder]:
    holder = Holder(detector or FakeDetector())
    spec = PipelineSpec(
        BatchPolicy(max_records, 0.01),
        max_in_flight=max_in_flight,
        scorers=scorers,
        top_contributions=top,
        retry_initial_s=0.01,
        commit_interval_s=commit_interval_s,
    )
    pipe = Pipeline(source, sink, holder, FAKE_CODEC, spec, metrics=metrics, training=training)
    return pipe, holder


async def run(pipe: Pipeline, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        for coro in pipe.loops(stop):
            tg.create_task(coro)


async def until(predicate: Callable[[], bool]) -> None:
    for _ in range(5000):
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never became true")


def mixed(n: int, part: int) -> list[bytes]:
    out = []
    for i in range(n):
        if i % 4 == 3:
            out.append(b"{not json")
        else:
            out.append(payload(f"s{i % 3}", 100.0 + i, [i, 1.0, 2.0]))
    return out


async def test_every_record_one_output_and_commits_at_end() -> None:
    parts = [mixed(23, 0), mixed(17, 1), []]
    source, sink = ListSource(parts), ListSink()
    metrics, training = RecordingMetrics(), RecordingTraining()
    pipe, _ = make(source, sink, metrics=metrics, training=training)
    await run(pipe)
    positions = [(s["position"]["partition"], s["position"]["offset"]) for s in sink.scores]
    positions += [(d["position"]["partition"], d["position"]["offset"]) for d in sink.dead]
    assert sorted(positions) == sorted([(0, i) for i in range(23)] + [(1, i) for i in range(17)])
    assert source.committed == {("in", 0): 23, ("in", 1): 17}
    assert all(d["reason"] == "invalid_json" for d in sink.dead)
    assert len(sink.dead) == 5 + 4
    assert pipe.in_flight == 0
    assert sum(c["consumed"] for c in metrics.named("batch")) == 40
    assert sum(len(o[0]) for o in training.offers) == len(sink.scores)


@dataclass(frozen=True)
class SlowFirstBatch(FakeDetector):
    """The batch holding offset 0 takes 0.3 s to score, the others none."""

    def score(self, values: npt.NDArray[np.float32], sites: Sequence[str]) -> ScoredBatch:
        if values[0, 0] == 0.0:
            time.sleep(0.3)
        return super().score(values, sites)


@pytest.mark.parametrize("scorers", [1, 3])
async def test_outputs_and_commits_stay_in_batch_order(scorers: int) -> None:
    """With several scorers a later batch may be scored first; it still waits its turn."""
    source, sink = ListSource([[payload("s0", 1.0, [i, 1, 1]) for i in range(30)]]), ListSink()
    pipe, _ = make(source, sink, SlowFirstBatch(), max_records=5, scorers=scorers)
    commits: list[dict[tuple[str, int], int]] = []
    commit = source.commit

    async def recording(offsets: Mapping[tuple[str, int], int]) -> None:
        commits.append(dict(offsets))
        await commit(offsets)

    source.commit = recording  # type: ignore[method-assign]
    await run(pipe)
    assert [s["position"]["offset"] for s in sink.scores] == list(range(30))
    ends = [c[("in", 0)] for c in commits]
    assert ends == sorted(ends)
    assert ends[-1] == 30


async def test_score_fields_warming_and_severity() -> None:
    source = ListSource([[payload("s0", 1.0, [5, 5, 5]), payload("new", 2.0, [9, 9, 9])]])
    sink = ListSink()
    pipe, _ = make(source, sink, FakeDetector(version="v7"), top=2)
    await run(pipe)
    known, new = sink.scores
    assert known["anomaly"] is True
    assert known["status"] == "active"
    assert known["severity"] == pytest.approx(1.5)
    assert known["model_version"] == "v7"
    assert len(known["contributions"]) == 2
    assert new["status"] == "warming"
    assert new["anomaly"] is False
    assert new["severity"] == pytest.approx(2.7)


async def test_scoring_failure_becomes_dead_letters() -> None:
    source, sink = ListSource([mixed(8, 0)]), ListSink()
    pipe, _ = make(source, sink, FakeDetector(fail=True))
    await run(pipe)
    assert not sink.scores
    assert sorted(d["reason"] for d in sink.dead) == ["invalid_json"] * 2 + ["scoring_failed"] * 6
    assert source.committed == {("in", 0): 8}


async def test_sink_and_commit_failures_are_retried() -> None:
    source, sink = ListSource([mixed(12, 0)]), ListSink()
    sink.fail_sends = 2
    source.commit_failures = 2
    pipe, _ = make(source, sink)
    await run(pipe)
    assert len(sink.scores) + len(sink.dead) == 12
    assert source.committed == {("in", 0): 12}


async def test_back_pressure_pauses_and_bounds_in_flight() -> None:
    source, sink = ListSource([mixed(200, 0)]), ListSink()
    sink.hold.clear()  # nothing is acknowledged
    pipe, _ = make(source, sink, max_records=10, max_in_flight=50)
    stop = asyncio.Event()
    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        for coro in pipe.loops(stop):
            tg.create_task(coro)
        for _ in range(50):
            await asyncio.sleep(0.005)
            assert pipe.in_flight <= 50 + 7  # one fetch may overshoot by its size
        assert source.paused
        assert source.committed == {}
        sink.hold.set()
    assert source.pause_count >= 1
    assert source.committed == {("in", 0): 200}


async def test_stop_finishes_batch_in_flight_and_commits_it() -> None:
    source, sink = ListSource([mixed(50, 0)], finite=False), ListSink()
    pipe, _ = make(source, sink, max_records=5)
    stop = asyncio.Event()
    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        for coro in pipe.loops(stop):
            tg.create_task(coro)
        await until(lambda: source.next >= 20)
        stop.set()
    committed = source.committed.get(("in", 0), 0)
    outputs = len(sink.scores) + len(sink.dead)
    assert committed == outputs  # everything committed was delivered, nothing more
    assert 0 < committed <= source.next


async def test_drain_waits_for_commit() -> None:
    source, sink = ListSource([mixed(30, 0)], finite=False), ListSink()
    pipe, _ = make(source, sink, max_records=1000)  # only the wait closes batches
    stop = asyncio.Event()
    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        for coro in pipe.loops(stop):
            tg.create_task(coro)
        await until(lambda: source.next >= 30)
        await pipe.drain()
        assert source.committed == {("in", 0): 30}
        stop.set()


async def test_acknowledged_records_leave_the_bound_before_their_commit() -> None:
    """The in-flight bound counts records until their outputs are acknowledged; a commit
    spaced out by commit_interval_s holds only offsets, and drain() still waits for it."""
    source, sink = ListSource([mixed(30, 0)], finite=False), ListSink()
    pipe, _ = make(source, sink, max_records=10, commit_interval_s=60.0)
    stop = asyncio.Event()
    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        for coro in pipe.loops(stop):
            tg.create_task(coro)
        await until(lambda: pipe.in_flight == 0 and source.committed != {})  # the first commit
        first = dict(source.committed)
        await until(lambda: source.next >= 30 and pipe.in_flight == 0)
        assert source.committed == first  # acknowledged, the next commit not due for 60 s
        await pipe.drain()
        assert source.committed == {("in", 0): 30}
        stop.set()


async def test_without_a_model_valid_records_are_buffered_unscored() -> None:
    source, sink, training = ListSource([mixed(12, 0)]), ListSink(), RecordingTraining()
    pipe, holder = make(source, sink, training=training)
    holder.current = None
    await run(pipe)
    assert sink.scores == []
    assert len(sink.dead) == 12  # 3 invalid + 9 buffered unscored: every record has an output
    assert sum(d["reason"] == "no_model" for d in sink.dead) == 9
    assert sum(len(o[0]) for o in training.offers) == 9
    assert all(o[3].all() for o in training.offers)
    assert source.committed == {("in", 0): 12}


class EndlessSource(ListSource):
    """Always has more records (a busy topic)."""

    async def fetch(self, max_records: int, timeout_s: float) -> list[tuple[bytes, SourcePosition]]:
        if self.paused:
            await asyncio.sleep(min(timeout_s, 0.01))
            return []
        n = min(max_records, 7)
        out = [
            (payload("s0", 1.0, [1, 2, 3]), SourcePosition("in", 0, self.next + i))
            for i in range(n)
        ]
        self.next += n
        await asyncio.sleep(0)
        return out


async def test_drain_completes_on_a_busy_stream_and_commits_all_fetched() -> None:
    source, sink = EndlessSource([], finite=False), ListSink()
    pipe, _ = make(source, sink, max_records=50)
    stop = asyncio.Event()
    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        for coro in pipe.loops(stop):
            tg.create_task(coro)
        await until(lambda: source.next >= 200)
        await pipe.drain()
        assert source.committed == {("in", 0): source.next}  # everything fetched so far
        assert not source.paused  # fetching resumed
        await until(lambda: source.committed[("in", 0)] < source.next)  # and goes on
        stop.set()


@pytest.mark.parametrize("eager", [True, False])
async def test_idle_scorer_takes_the_open_batch_at_once(eager: bool) -> None:
    """Eager: 3 records, a 1024-record batch and a 5 s deadline are scored at once
    (the scorer is idle); not eager: they wait for the deadline."""
    source = ListSource([[payload("s0", 1.0 + i, [1.0, 2.0, 3.0]) for i in range(3)]], finite=False)
    sink = ListSink()
    spec = PipelineSpec(BatchPolicy(1024, 5.0), eager=eager)
    pipe = Pipeline(source, sink, Holder(FakeDetector()), FAKE_CODEC, spec)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        for coro in pipe.loops(stop):
            tg.create_task(coro)
        await asyncio.sleep(0.3)
        scored_early = len(sink.scores)
        stop.set()
    assert scored_early == (3 if eager else 0)


async def test_eager_batches_grow_while_a_batch_is_scored() -> None:
    """Eager hand-over only when nothing is being scored: while the slow first batch is
    in the model, the next records gather into one batch (deadline 5 s, not reached)
    instead of going to the second scorer a fetch at a time."""
    sizes: list[int] = []

    @dataclass(frozen=True)
    class Recording(SlowFirstBatch):
        def score(self, values: npt.NDArray[np.float32], sites: Sequence[str]) -> ScoredBatch:
            sizes.append(len(values))
            return super().score(values, sites)

    source = ListSource([[payload("s0", 1.0, [i, 1, 1]) for i in range(20)]])
    sink = ListSink()
    spec = PipelineSpec(BatchPolicy(1024, 5.0), eager=True, scorers=2)
    pipe = Pipeline(source, sink, Holder(Recording()), FAKE_CODEC, spec)
    async with asyncio.timeout(5):
        await run(pipe)
    assert sizes == [7, 13]  # ListSource hands out 7 records per fetch
    assert len(sink.scores) == 20


@pytest.mark.parametrize("interval", [0.0, 10.0])
async def test_commits_are_spaced_but_the_last_one_is_not_lost(interval: float) -> None:
    """commit_interval_s spaces commits; the stream's end (and stop) still commits at once
    (a 10 s interval must not hold the end of the stream for 10 s)."""
    calls: list[int] = []

    class Counting(ListSource):
        async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
            calls.append(sum(offsets.values()))
            await super().commit(offsets)

    source = Counting([[payload("s0", 1.0 + i, [1.0, 2.0, 3.0]) for i in range(40)]])
    sink = ListSink()
    spec = PipelineSpec(BatchPolicy(3, 0.001), commit_interval_s=interval)
    pipe = Pipeline(source, sink, Holder(FakeDetector()), FAKE_CODEC, spec)
    async with asyncio.timeout(5):
        await run(pipe)
    assert len(sink.scores) == 40
    assert source.committed == {("in", 0): 40}
    if interval:  # the first batch, then whatever was acknowledged when the stream ended
        assert len(calls) <= 3
