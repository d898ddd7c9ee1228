"""Consume → decode → micro-batch → score → produce → commit. Orchestration only, no maths.

Three kinds of loop share one pipeline; the composition root runs them in its TaskGroup
(`Pipeline.loops(stop)`):

    intake   fetch from the Source, decode (rejections become dead letters later, in order),
             micro-batch; pauses the Source while `max_in_flight` records wait for scoring
             or for the Sink's acknowledgement
    process  score each batch in a worker thread with the model current at that moment,
             build score records and dead letters, hand them to the Sink (non-blocking);
             `scorers` of these run at once, handing over in batch order
    deliver  wait until the Sink acknowledged every output of a batch (re-sending on
             failure), then commit `last offset + 1` per partition, in batch order

Delivery is at-least-once: an offset is committed only after every output of every record
up to it was acknowledged. `drain()` (called on partition revocation) closes the open
batch and waits until everything fetched so far is delivered and committed. On stop, the
batch being scored is finished, delivered and committed; batches not started yet are
dropped uncommitted (they are fetched again after a restart).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamvae.batching import BatchPolicy, MicroBatcher
from streamvae.errors import NotReadyError, TransientError
from streamvae.outputs import ScoredRows, build_scores, record_payload, stack_values
from streamvae.ports import (
    Codec,
    Fetched,
    Item,
    ModelView,
    NullMetrics,
    Output,
    PipelineMetrics,
    Scorer,
    Sink,
    Source,
    TrainingSink,
)
from streamvae.records import Reason, Rejection, SensorRecord, dead_letter_of

__all__ = [
    "Codec",
    "Fetched",
    "Item",
    "ModelView",
    "NullMetrics",
    "Output",
    "Pipeline",
    "PipelineMetrics",
    "PipelineSpec",
    "Scorer",
    "Sink",
    "Source",
    "TrainingSink",
]

log = logging.getLogger(__name__)

Offsets = dict[tuple[str, int], int]  # (topic, partition) -> next offset to read


@dataclass(frozen=True, slots=True)
class PipelineSpec:
    """Plain tuning knobs, built from [batching] and [output] at the composition root."""

    policy: BatchPolicy
    max_in_flight: int = 20_000
    # close the open batch as soon as the scorer is idle (see `Pipeline.process`)
    eager: bool = True
    # batches scored at once (`process` loops); outputs still go out in batch order
    scorers: int = 2
    # least time between two offset commits (see `Pipeline.deliver`); 0 = after every ack
    commit_interval_s: float = 0.0
    top_contributions: int = 0
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0


@dataclass(slots=True)
class _Delivery:
    scores: list[Output]
    dead_letters: list[Output]
    offsets: Offsets
    count: int
    acked: Awaitable[None]


class Pipeline:
    """See the module docstring. All collaborators are constructor arguments."""

    def __init__(
        self,
        source: Source,
        sink: Sink,
        model: ModelView,
        codec: Codec,
        spec: PipelineSpec,
        *,
        metrics: PipelineMetrics | None = None,
        training: TrainingSink | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._source, self._sink, self._model, self._codec = source, sink, model, codec
        self._spec = spec
        self._metrics: PipelineMetrics = metrics or NullMetrics()
        self._training = training
        self._clock, self._wall = clock, wall
        self._batcher: MicroBatcher[Item] = MicroBatcher(spec.policy, clock)
        self._batches: asyncio.Queue[list[Item] | None] = asyncio.Queue()
        self._deliveries: asyncio.Queue[_Delivery | None] = asyncio.Queue()
        self._in_flight = 0  # fetched, outputs not yet acknowledged (back-pressure)
        self._uncommitted = 0  # fetched, not yet committed (drain)
        self._changed = asyncio.Condition()
        self._closed = False
        self._draining = 0  # drains in progress (partition revocation)
        self._fetching = False  # intake is inside source.fetch
        self._starved = False  # every scorer is idle and no batch is queued (eager mode)
        self._last_commit = -float("inf")  # self._clock() of the last commit
        self._processed = False  # every process loop has ended (no more deliveries)
        self._running = 0  # process loops running
        self._taken = 0  # batches taken for scoring (ticket of the next one)
        self._handed = 0  # batches handed to the sink (ticket whose turn it is)
        self.delivered = 0  # records whose outputs were acknowledged and committed
        self._buffered = 0  # records buffered unscored while no model existed
        self.healthy = True  # False while the sink or the commit keeps failing

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def loops(self, stop: asyncio.Event) -> list[Coroutine[Any, Any, None]]:
        """The coroutines to run in the caller's TaskGroup: intake, `spec.scorers` process
        loops, deliver."""
        scorers = [self.process(stop) for _ in range(self._spec.scorers)]
        return [self.intake(stop), *scorers, self.deliver()]

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _wait_for(self, predicate: Callable[[], bool]) -> None:
        async with self._changed:
            await self._changed.wait_for(predicate)

    def _idle(self) -> bool:
        """No batch queued and none being scored (the caller's own was handed over)."""
        return self._batches.empty() and self._taken == self._handed

    async def _turn(self, ticket: int) -> None:
        """Wait until the batch with this ticket may hand over its outputs (`process`)."""
        await self._wait_for(lambda: self._handed == ticket)

    def _hand_over(self) -> bool:
        """Close the open batch (if any) and queue it for scoring; True if there was one."""
        batch = self._batcher.flush()
        if batch:
            self._batches.put_nowait(batch)
        return bool(batch)

    async def drain(self) -> None:
        """Pause fetching, close the open batch, and wait until every fetched record is
        delivered and committed (on partition revocation: nothing new may arrive meanwhile,
        or a busy stream would never drain)."""
        if self._closed:
            return
        self._draining += 1
        self._source.pause()
        await self._notify()  # a commit being spaced out (deliver) goes ahead now
        try:
            self._hand_over()
            await self._wait_for(
                lambda: (self._uncommitted == 0 and not self._fetching) or self._closed
            )
        finally:
            self._draining -= 1
            if not self._draining:
                self._source.resume()
            await self._notify()

    async def intake(self, stop: asyncio.Event) -> None:
        """Fetch, decode and batch until `stop` is set or the source is exhausted."""
        spec, source, codec = self._spec, self._source, self._codec
        decode, decode_batch = codec.decode, codec.decode_batch
        idle_wait = max(spec.policy.max_wait_s, 0.05)
        try:
            while not stop.is_set():
                if self._draining:
                    await self._wait_for(lambda: not self._draining or self._closed)
                    continue
                if self._in_flight >= spec.max_in_flight:
                    await self._back_off(stop)
                    continue
                due = self._batcher.timeout()
                room = min(spec.max_in_flight - self._in_flight, spec.policy.max_records)
                self._fetching = True
                try:
                    fetched = await source.fetch(room, idle_wait if due is None else due)
                finally:
                    self._fetching = False
                if fetched:
                    if decode_batch is not None:
                        items = decode_batch(fetched)
                    else:
                        items = [decode(payload, pos) for payload, pos in fetched]
                    self._in_flight += len(items)
                    self._uncommitted += len(items)
                    for full in self._batcher.add(items):
                        self._batches.put_nowait(full)
                    if self._starved and spec.eager and self._hand_over():
                        self._starved = False  # the scorers are idle: no reason to wait
                    self._metrics.set_in_flight(self._in_flight)
                    self._metrics.set_consumer_lag(source.lags())
                if self._draining:  # a drain began during the fetch: hand everything over
                    self._hand_over()
                    await self._notify()
                if (due_batch := self._batcher.poll()) is not None:
                    self._batches.put_nowait(due_batch)
                if source.exhausted and not fetched:
                    self._hand_over()
                    return
        finally:
            self._batches.put_nowait(None)

    async def _back_off(self, stop: asyncio.Event) -> None:
        """Pause the source until half the in-flight budget is free again."""
        self._hand_over()
        self._source.pause()
        self._metrics.set_paused(True)
        log.debug("in-flight limit reached (%d records): fetching paused", self._in_flight)
        low = self._spec.max_in_flight // 2
        await self._wait_for(lambda: self._in_flight <= low or stop.is_set() or self._closed)
        if not self._draining:
            self._source.resume()
        self._metrics.set_paused(False)

    async def process(self, stop: asyncio.Event) -> None:
        """Score batches; on stop, finish the batch in hand and drop the rest.

        `spec.scorers` of these loops run at once: while one waits for its worker thread,
        another scores the next batch (a worker thread spends much of a batch waiting for
        the GIL while the event loop decodes the next fetch; bench/throughput.py). Each
        batch takes a ticket when it is taken from the queue and hands its outputs to the
        sink and its delivery to `deliver` only in its turn, so outputs and commits stay
        in batch order.

        Eager batching (`spec.eager`): when no batch is queued or being scored, an idle
        scorer takes the open batch at once, or the intake hands it over as soon as
        records arrive, instead of waiting for `max_wait` to run out. The deadline exists
        to bound latency while the pipeline is busy; waiting while it is idle only added
        latency (about `max_wait`/2 per record at low load: bench/throughput.py). While a
        batch is being scored the open batch keeps growing until it is full or due (the
        other scorers take it then): handing every few records to the next idle scorer
        made batches tiny under moderate load and their per-batch costs (a thread
        hand-off, encoding templates, metrics) saturated the event loop.
        """
        self._running += 1
        dropped = 0
        try:
            while True:
                if self._idle() and self._spec.eager and not stop.is_set():
                    self._starved = not self._hand_over()
                batch = await self._batches.get()
                self._starved = False
                if batch is None:
                    self._batches.put_nowait(None)  # the other process loops end too
                    break
                ticket = self._taken
                self._taken += 1
                delivery = None
                if stop.is_set():
                    dropped += len(batch)
                else:
                    delivery = await self._score_batch(batch, ticket)
                await self._turn(ticket)
                if delivery is not None:
                    await self._deliveries.put(delivery)
                self._handed += 1
                await self._notify()
        finally:
            if dropped:
                log.info(
                    "stopping: %d fetched records left uncommitted (re-read on restart)", dropped
                )
            self._running -= 1
            if not self._running:
                await self._deliveries.put(None)
                self._processed = True
                await self._notify()  # a commit being spaced out goes ahead now

    async def deliver(self) -> None:
        """Wait for acknowledgements, then commit, strictly in batch order.

        Deliveries already waiting in the queue are settled together with one commit
        (the offsets of the last of them, per partition): settling one batch costs an ack
        wait plus a commit round trip, and under a steady load of small batches (20 ms at
        max_wait_ms) one commit per batch made this loop the bottleneck and the queue
        back up (bench/throughput.py: p50 latency of ~0.8 s at half the measured maximum
        load before, see docs/performance.md). Nothing is committed before its outputs
        were acknowledged.

        Commits are also spaced by `commit_interval_s` (except when draining or stopping):
        outputs are produced when a batch is scored, so a later commit delays no score; it
        only means a few more records are re-read after a crash. Committing after every
        small batch cost the broker a request each (Tansu, bench/throughput.py: ~100
        commits/s at 5k records/s with eager batching).

        Acknowledged records leave the in-flight count (the back-pressure bound) before
        the spaced-out commit: from then on only their offsets are held, so the bound
        measures memory, and a commit interval no longer keeps `rate × interval` records
        counted against it (a 5,000-record bound drained a file at half the rate of
        20,000 when records stayed counted until their commit; docs/performance.md).
        `drain()` still waits for the commit."""
        try:
            done = False
            offsets: Offsets = {}  # of acknowledged records, to commit
            held = 0  # acknowledged records not yet committed
            while not done or held:
                if not done and (not held or not self._deliveries.empty()):
                    group, done = await self._next_group()
                    for delivery in group:
                        await self._acknowledged(delivery)
                        offsets.update(delivery.offsets)  # in batch order: the last one wins
                        delivery.scores = delivery.dead_letters = []  # nothing left to re-send
                    count = sum(d.count for d in group)
                    if count:
                        self._in_flight -= count  # acknowledged: only offsets are held now
                        held += count
                        self._metrics.set_in_flight(self._in_flight)
                        await self._notify()
                    if not held:
                        continue
                if not done and await self._commit_later():
                    continue  # more deliveries arrived while the commit waited: settle them
                await self._commit(offsets)
                self._last_commit = self._clock()
                self._uncommitted -= held
                self.delivered += held
                offsets, held = {}, 0
                await self._notify()
        finally:
            self._closed = True
            self._in_flight = self._uncommitted = 0
            await self._notify()

    async def _next_group(self) -> tuple[list[_Delivery], bool]:
        """The deliveries waiting in the queue (at least one item, waiting for it), and
        whether the end of the stream (None) was among them."""
        group: list[_Delivery] = []
        item = await self._deliveries.get()
        while item is not None:
            group.append(item)
            if self._deliveries.empty():
                break
            item = self._deliveries.get_nowait()
        return group, item is None

    async def _commit_later(self) -> bool:
        """Wait until `commit_interval_s` after the last commit, a drain begins, the stream
        ends (stop, or the end of a replayed file), or another delivery is queued. True in
        the last case (commit later, with it), False when the commit is due now."""
        wait = self._last_commit + self._spec.commit_interval_s - self._clock()
        if wait <= 0 or self._draining or self._processed:
            return False
        try:
            async with asyncio.timeout(wait):
                await self._wait_for(
                    lambda: (
                        self._draining > 0
                        or self._closed
                        or self._processed
                        or not self._deliveries.empty()
                    )
                )
        except TimeoutError:
            return False
        return not (self._draining or self._closed or self._processed)

    async def _acknowledged(self, delivery: _Delivery) -> None:
        """Wait for every ack of a delivery, re-sending on failure."""
        delay = self._spec.retry_initial_s
        while True:
            try:
                await delivery.acked
                break
            except TransientError as exc:
                self.healthy = False
                log.warning("outputs not acknowledged (%s); re-sending in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._spec.retry_max_s)
                delivery.acked = await self._send(delivery.scores, delivery.dead_letters)

    async def _commit(self, offsets: Offsets) -> None:
        """Commit `offsets`, retrying transient errors."""
        delay = self._spec.retry_initial_s
        while offsets:
            try:
                await self._source.commit(offsets)
                break
            except TransientError as exc:
                self.healthy = False
                log.warning("commit failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._spec.retry_max_s)
        self.healthy = True

    async def _send(self, scores: list[Output], dead: list[Output]) -> Awaitable[None]:
        """`sink.send`, with a failure to even hand over turned into a failed acknowledgement."""
        try:
            return await self._sink.send(scores, dead)
        except TransientError as exc:
            return _failed(exc)

    async def _score_batch(self, batch: list[Item], ticket: int) -> _Delivery:
        """Score one batch and, in its turn (`process`), hand its outputs to the sink."""
        offsets: Offsets = {}
        valid: list[SensorRecord] = []
        rejected: list[Rejection] = []
        for item in batch:
            pos = item.position
            if pos is not None:
                offsets[(pos.topic, pos.partition)] = pos.offset + 1
            if isinstance(item, SensorRecord):
                valid.append(item)
            else:
                rejected.append(item)
        model = self._model.current
        scores: list[Output] = []
        seconds = 0.0
        rows = None
        if valid and model is None:
            rejected.extend(self._buffer_only(valid))
        if valid and model is not None:
            rows, scores, failed, seconds = await self._score_valid(model, valid)
            rejected.extend(failed)
        now = self._wall()
        encode_dl = self._codec.encode_dead_letter
        dead = [
            (r.site.encode() if r.site else None, encode_dl(dead_letter_of(r, now)))
            for r in rejected
        ]
        await self._turn(ticket)
        acked = await self._send(scores, dead)
        self._record(len(batch), rejected, rows, seconds, now)
        return _Delivery(scores, dead, offsets, len(batch), acked)

    async def _score_valid(
        self, model: Scorer, valid: list[SensorRecord]
    ) -> tuple[ScoredRows | None, list[Output], list[Rejection], float]:
        """Score and encode the valid records of one batch: (rows, encoded scores,
        rejections, seconds spent in `model.score`).

        Only `model.score` runs in a worker thread; stacking the values and building and
        encoding the score records (Python, holding the GIL) run here on the event loop.
        Why: a worker thread doing Python work contends with the event loop for the GIL,
        and every hand-back of the lock waits for the interpreter's switch interval while
        the other side is busy; the torch part releases the GIL for the whole traced graph
        (`packed_scorer`), so it overlaps the event loop's work instead of queueing behind
        it (bench/throughput.py, docs/performance.md)."""
        values = stack_values(valid)
        sites = [r.site for r in valid]
        started = self._clock()
        try:
            scored = await asyncio.to_thread(model.score, values, sites)
        except Exception as exc:  # a model bug must not stop the stream: dead-letter it
            log.exception("scoring a batch of %d records failed", len(valid))
            detail = f"{type(exc).__name__}: {exc}"[:500]
            failed = [
                Rejection(
                    Reason.SCORING_FAILED,
                    detail,
                    record_payload(r, model.features),
                    r.position,
                    r.site,
                )
                for r in valid
            ]
            return None, [], failed, 0.0
        seconds = self._clock() - started
        rows = build_scores(
            valid,
            values,
            scored,
            features=model.features,
            model_version=model.version,
            top=self._spec.top_contributions,
            scored_at=self._wall(),
        )
        codec = self._codec
        if codec.encode_scores is not None:
            payloads = codec.encode_scores(rows)
        else:
            payloads = [codec.encode_score(r) for r in rows.score_records()]
        keys = [site.encode() for site in rows.sites]
        scores: list[Output] = list(zip(keys, payloads, strict=True))
        return rows, scores, rows.rejections, seconds

    def _buffer_only(self, valid: list[SensorRecord]) -> list[Rejection]:
        """No model yet (`wait_for_model = false`): hand valid records to the training sink
        for the first training. They get no score, so each becomes a `no_model` dead letter
        (replayable once a model exists): no record ends without an output.
        Without a sink: NotReadyError."""
        if self._training is None:
            raise NotReadyError("no model to score with and no training sink to buffer into")
        if not self._buffered:
            log.warning("no model yet: buffering valid records for the first training, unscored")
        self._buffered += len(valid)
        ts = np.array([r.ts for r in valid], dtype=np.float64)
        normal = np.ones(len(valid), dtype=np.bool_)
        self._training.offer([r.site for r in valid], stack_values(valid), ts, normal)
        features = self._model.features
        detail = "no model yet: buffered for the first training, not scored"
        return [
            Rejection(Reason.NO_MODEL, detail, record_payload(r, features), r.position, r.site)
            for r in valid
        ]

    def _record(
        self,
        consumed: int,
        rejected: Sequence[Rejection],
        rows: ScoredRows | None,
        seconds: float,
        now: float,
    ) -> None:
        reasons = collections.Counter(str(r.reason) for r in rejected)
        if rows is None:
            self._metrics.batch(
                consumed=consumed,
                scored=0,
                dead_letters=reasons,
                scoring_seconds=seconds,
                lags_s=[],
                sites=[],
                anomalies=[],
                severities=[],
                statuses=[],
            )
            return
        self._metrics.batch(
            consumed=consumed,
            scored=len(rows),
            dead_letters=reasons,
            scoring_seconds=seconds,
            lags_s=(now - rows.ts).tolist(),
            sites=rows.sites,
            anomalies=rows.anomalies.tolist(),
            severities=rows.severities.tolist(),
            statuses=rows.statuses,
        )
        if self._training is not None and len(rows):
            self._training.offer(rows.sites, rows.values, rows.ts, ~rows.anomalies)


async def _failed(exc: BaseException) -> None:
    raise exc
