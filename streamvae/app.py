"""Composition root of `streamvae run`: the only place that turns Settings into objects.

One asyncio.TaskGroup holds every task: the model watcher, the HTTP endpoint, the
readiness ticker, the shutdown deadline, the serving worker processes when
`service.workers` > 1 (streamvae.workers) and, once a model is loaded and the clients
are connected, the pipeline's three loops. SIGTERM/SIGINT only set the stop event;
the loops leave through the path that delivers and commits. If that takes longer than
`service.shutdown_timeout_s`, everything is cancelled and the exit code is 1. A serving
worker runs the same `serve` with its own hooks (`DaemonState`).

Exit codes: 0 after a clean stop (or the end of a replayed file), 1 on a fatal error
(store unreadable, shutdown deadline missed, a serving worker died), 2 on bad
configuration (raised as ConfigError, mapped by the CLI).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamvae.batching import BatchPolicy
from streamvae.errors import ConfigError, StoreError, StreamvaeError
from streamvae.outputs import encode_scores
from streamvae.pipeline import (
    Codec,
    Pipeline,
    PipelineMetrics,
    PipelineSpec,
    TrainingSink,
)
from streamvae.records import (
    DecoderSpec,
    decode_record,
    decode_records,
    encode_dead_letter,
    encode_score,
)
from streamvae.swap import ModelHolder, StoreView

if TYPE_CHECKING:
    from streamvae.config import Settings
    from streamvae.kafka import KafkaSink
    from streamvae.retrainer import Retrainer
    from streamvae.workers import WorkerPool

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_PARTITIONS = 4
BROKER_PROBE_S = 2.0


class ShutdownTimeoutError(StreamvaeError):
    """The daemon did not finish its in-flight work within the shutdown deadline."""


TrainingFactory = Callable[
    ["DaemonState", tuple[str, ...], asyncio.TaskGroup, asyncio.Event], TrainingSink
]


@dataclass
class DaemonState:
    """One run: its inputs, and what the health endpoints read.

    The hooks differ between the daemon and a serving worker process (streamvae.workers):
    `make_training` builds the training sink (default: the in-daemon retrainer; a worker
    forwards to the daemon), `before_connect` runs once a model is there and before the
    clients connect (the daemon waits for its workers, so that the consumer group forms
    once), `pool` is the daemon's workers (ready only while all of them are)."""

    run: RunSpec
    holder: ModelHolder
    instruments: Instruments
    pipeline: Pipeline | None = None
    connected: bool = False
    broker_ok: bool = True
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    make_training: TrainingFactory | None = None
    before_connect: Callable[[asyncio.Event], Awaitable[None]] | None = None
    training: TrainingSink | None = None  # the training sink in use (set by `serve`)
    pool: WorkerPool | None = None

    def ready(self) -> bool:
        return (
            self.holder.current is not None
            and self.connected
            and self.broker_ok
            and self.pipeline is not None
            and self.pipeline.healthy
            and (self.pool is None or self.pool.ready())
        )


def resolve_device(device: str) -> str:
    """[model] device → a torch device name ("auto": CUDA when available, else CPU;
    ConfigError for "cuda" without a GPU)."""
    from streamvae.model.device import resolve_device as resolve

    return str(resolve(device))


def decoder_spec(settings: Settings, features: tuple[str, ...]) -> DecoderSpec:
    return DecoderSpec(
        features=features,
        unknown_feature=settings.input.unknown_feature,
        max_message_bytes=settings.input.max_message_bytes,
        max_site_length=settings.input.max_site_length,
    )


def pipeline_spec(settings: Settings) -> PipelineSpec:
    b = settings.batching
    return PipelineSpec(
        policy=BatchPolicy(b.max_records, b.max_wait_ms / 1000),
        max_in_flight=b.max_in_flight_records,
        eager=b.eager,
        scorers=b.scorers,
        commit_interval_s=settings.kafka.commit_interval_ms / 1000,
        top_contributions=settings.output.top_contributions,
        retry_initial_s=settings.kafka.reconnect_backoff_initial_s,
        retry_max_s=settings.kafka.reconnect_backoff_max_s,
    )


def open_store(settings: Settings) -> StoreView:
    """The model store; StoreError (fatal) if it cannot be read."""
    from streamvae.artifacts import ModelStore

    store: StoreView = ModelStore(Path(settings.store.path))
    store.current()  # fail fast on a store we cannot read
    return store


@dataclass(frozen=True, slots=True)
class Instruments:
    serving: PipelineMetrics
    training: Any  # streamvae.metrics.TrainingMetrics
    render: Callable[[], bytes]


def make_metrics(settings: Settings) -> Instruments:
    """Serving and training instruments on one fresh registry, and its /metrics renderer."""
    from streamvae.metrics import ServingMetrics, TrainingMetrics, new_registry, render

    registry = new_registry()
    return Instruments(
        serving=ServingMetrics(registry, max_site_labels=settings.metrics.max_site_labels),
        training=TrainingMetrics(registry),
        render=lambda: render(registry),
    )


def initial_features(settings: Settings) -> tuple[str, ...] | None:
    """Features fixed before any model: [model] features, else (when the daemon may
    buffer without a model) those of the persisted training buffer."""
    if settings.model.features:
        return tuple(settings.model.features)
    if not settings.service.wait_for_model:
        from streamvae.retrain_setup import persisted_features

        return persisted_features(Path(settings.retraining.state_dir))
    return None


def run_command(
    settings: Settings, input_path: str | None = None, output_path: str | None = None
) -> int:
    """`streamvae run`: serve until stopped (or until a replayed file ends)."""
    store = open_store(settings)
    from streamvae.model.device import limit_threads

    limit_threads(settings.model.threads)  # before any torch work (see limit_threads)
    broker = None
    bootstrap = settings.kafka.bootstrap_servers
    if (input_path is None or output_path is None) and bootstrap == EMBEDDED:
        from streamvae.broker import EmbeddedBroker

        broker = EmbeddedBroker().start()
        for topic in (settings.kafka.input_topic, settings.kafka.output_topic):
            broker.create_topic(topic, EMBEDDED_PARTITIONS)
        broker.create_topic(settings.kafka.dead_letter_topic, 1)
        bootstrap = broker.bootstrap_servers
        log.info("embedded broker at %s", bootstrap)
    try:
        return asyncio.run(_main(RunSpec(settings, store, input_path, output_path, bootstrap)))
    finally:
        if broker is not None:
            broker.stop()


@dataclass(frozen=True, slots=True)
class RunSpec:
    settings: Settings
    store: StoreView
    input_path: str | None
    output_path: str | None
    bootstrap: str


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def new_holder(settings: Settings, store: StoreView, metrics: PipelineMetrics) -> ModelHolder:
    return ModelHolder(
        store,
        metrics,
        device=resolve_device(settings.model.device),
        features=initial_features(settings),
        poll_interval_s=settings.store.poll_interval_s,
    )


def _worker_pool(state: DaemonState) -> WorkerPool | None:
    """`service.workers - 1` serving worker processes, when both ends are Kafka."""
    run = state.run
    workers = run.settings.service.workers
    if workers <= 1:
        return None
    if run.input_path is not None or run.output_path is not None:
        log.warning("service.workers = %d ignored: replaying a file runs in one process", workers)
        return None
    from streamvae.workers import WorkerPool

    return WorkerPool(
        run.settings,
        run.bootstrap,
        state.instruments.serving,
        training=lambda: state.training,
        count=workers - 1,
    )


async def _main(run: RunSpec) -> int:
    settings = run.settings
    stop = asyncio.Event()
    stop_on_signals(stop)
    instruments = make_metrics(settings)
    state = DaemonState(run, new_holder(settings, run.store, instruments.serving), instruments)
    pool = _worker_pool(state)
    if pool is not None:
        # this process is worker 0: its pipeline's gauges are combined with the others'
        state.instruments = instruments = dataclasses.replace(instruments, serving=pool.view(0))
        state.pool, state.before_connect = pool, pool.wait_started
    holder = state.holder
    await holder.refresh()  # the first look at the store: StoreError here is fatal
    # Start-up objects (torch, modules, the model) never die: moving them out of the
    # collector's generations keeps full collections from walking them again and again
    # while the hot path allocates a few containers per record.
    gc.freeze()

    def tasks(tg: asyncio.TaskGroup) -> None:
        tg.create_task(holder.watch(stop))
        tg.create_task(_http(settings, instruments.render, state, stop))
        tg.create_task(track_readiness(state, stop))
        tg.create_task(shutdown_deadline(stop, state.finished, settings.service.shutdown_timeout_s))
        if pool is not None:
            tg.create_task(pool.run(stop), name="workers")
        tg.create_task(serve(tg, state, stop))

    code = await run_tasks(settings, tasks)
    if pool is not None and pool.failed:
        log.error("stopped because %s", pool.failed)
        code = code or 1
    return code


async def run_tasks(settings: Settings, tasks: Callable[[asyncio.TaskGroup], None]) -> int:
    """Run the tasks `tasks` creates in one TaskGroup; the exit code (module docstring)."""
    code = 0
    try:
        async with asyncio.TaskGroup() as tg:
            tasks(tg)
    except* ShutdownTimeoutError:
        log.error("shutdown deadline of %.1fs missed", settings.service.shutdown_timeout_s)
        code = 1
    except* StoreError as group:
        log.error("model store failed: %s", group.exceptions[0])
        code = 1
    except* ConfigError as group:
        log.error("configuration error: %s", group.exceptions[0])
        code = 2
    return code


async def serve(tg: asyncio.TaskGroup, state: DaemonState, stop: asyncio.Event) -> None:
    """Wait for a model (or buffer without one), connect, run the pipeline, disconnect."""
    try:
        if not await _model_or_buffering(state, stop):
            return
        from streamvae.kafka import KafkaSink, KafkaSource, kafka_spec
        from streamvae.replay import FileSink, FileSource

        run, settings = state.run, state.run.settings
        kspec = kafka_spec(settings.kafka, run.bootstrap)
        source: FileSource | KafkaSource = (
            FileSource(run.input_path) if run.input_path else KafkaSource(kspec)
        )
        sink: FileSink | KafkaSink = (
            FileSink(run.output_path) if run.output_path else KafkaSink(kspec)
        )
        try:
            if state.before_connect is not None:
                await state.before_connect(stop)
            if not await sink.start(stop) or not await source.start(stop):
                return
            features = state.holder.features or ()
            make_training = state.make_training or _retrainer_sink
            state.training = training = make_training(state, features, tg, stop)
            spec = decoder_spec(settings, features)
            codec = Codec(
                decode=lambda payload, pos: decode_record(payload, spec, pos),
                encode_score=encode_score,
                encode_dead_letter=encode_dead_letter,
                encode_scores=encode_scores,
                decode_batch=lambda fetched: decode_records(fetched, spec),
            )
            pipeline = Pipeline(
                source,
                sink,
                state.holder,
                codec,
                pipeline_spec(settings),
                metrics=state.instruments.serving,
                training=training,
            )
            if isinstance(source, KafkaSource):
                source.on_revoke = pipeline.drain
            if isinstance(sink, KafkaSink):
                tg.create_task(_watch_broker(state, sink, stop))
            state.pipeline = pipeline
            state.connected = True
            log.info("consuming; batches of up to %d records", settings.batching.max_records)
            tasks = [tg.create_task(coro) for coro in pipeline.loops(stop)]
            await asyncio.wait(tasks)
            log.info("pipeline stopped after delivering %d records", pipeline.delivered)
        finally:
            state.connected = False
            await close_quietly("consumer", source.stop())
            await close_quietly("producer", sink.stop())
    finally:
        state.finished.set()
        stop.set()  # a replayed file has ended: let the other tasks go too


def _retrainer_sink(
    state: DaemonState, features: tuple[str, ...], tg: asyncio.TaskGroup, stop: asyncio.Event
) -> TrainingSink:
    """The retrainer is the training sink in every mode (a replay onboards sites too);
    `retraining.enabled` decides whether it also runs training passes."""
    retrainer = _retrainer(state, features)
    tg.create_task(retrainer.run(stop), name="retrainer")
    return retrainer


def _retrainer(state: DaemonState, features: tuple[str, ...]) -> Retrainer:
    """The in-daemon retrainer (always the training sink; `retraining.enabled` gates passes)."""
    from streamvae.retrain_setup import build_retrainer

    holder = state.holder

    async def promoted(version: str) -> None:
        await holder.refresh()  # serve the new model now, not at the next poll
        if state.pool is not None:
            state.pool.models_changed()  # and so do the workers

    return build_retrainer(
        state.run.settings,
        features,
        metrics=state.instruments.training,
        serving=lambda: holder.current,
        on_promoted=promoted,
        publish_statuses=state.instruments.serving.set_site_statuses,
    )


async def _model_or_buffering(state: DaemonState, stop: asyncio.Event) -> bool:
    """True once a model is loaded, or at once when the daemon may buffer without one
    (`service.wait_for_model = false` and the features are known); False on stop."""
    holder, settings = state.holder, state.run.settings
    if holder.current is not None:
        return True
    if not settings.service.wait_for_model:
        if holder.features:
            log.warning("no model yet: not ready; buffering the stream for the first training")
            return True
        log.warning("wait_for_model = false needs [model] features (or a persisted buffer)")
    log.warning("no model in the store yet: not ready, not consuming until one is promoted")
    await first_of(holder.ready, stop)
    return holder.current is not None and not stop.is_set()


async def first_of(*events: asyncio.Event) -> None:
    """Until one of `events` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def _watch_broker(state: DaemonState, sink: KafkaSink, stop: asyncio.Event) -> None:
    """Probe the cluster every few seconds; an unreachable broker makes the daemon not ready
    (the clients keep retrying on their own; nothing exits)."""
    while not stop.is_set():
        ok = await sink.reachable(BROKER_PROBE_S)
        if ok != state.broker_ok:
            state.broker_ok = ok
            if ok:
                log.info("broker reachable again")
            else:
                log.warning("broker unreachable: not ready; clients keep retrying")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(BROKER_PROBE_S):
                await stop.wait()


async def close_quietly(what: str, closing: Coroutine[Any, Any, None]) -> None:
    try:
        async with asyncio.timeout(10):
            await closing
    except (TimeoutError, OSError, StreamvaeError) as exc:
        log.warning("closing the %s failed: %s", what, exc)


async def shutdown_deadline(stop: asyncio.Event, finished: asyncio.Event, timeout_s: float) -> None:
    await stop.wait()
    try:
        async with asyncio.timeout(timeout_s):
            await finished.wait()
    except TimeoutError:
        raise ShutdownTimeoutError(f"still busy {timeout_s}s after the stop signal") from None


async def track_readiness(state: DaemonState, stop: asyncio.Event) -> None:
    metrics = state.instruments.serving
    last: bool | None = None
    while not stop.is_set():
        ready = state.ready()
        if ready != last:
            metrics.set_ready(ready)
            log.info("ready" if ready else "not ready")
            last = ready
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await stop.wait()
    metrics.set_ready(False)


async def _http(
    settings: Settings, render: Callable[[], bytes], state: DaemonState, stop: asyncio.Event
) -> None:
    from streamvae.httpd import serve_http

    try:
        await serve_http(
            settings.metrics.host,
            settings.metrics.port,
            metrics=render,
            live=lambda: True,
            ready=state.ready,
            stop=stop,
        )
    except OSError as exc:
        raise ConfigError(
            f"metrics.port: cannot listen on {settings.metrics.host}:{settings.metrics.port}: {exc}"
        ) from exc
