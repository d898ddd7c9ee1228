"""Composition root of `streamvae run`: the only place that turns Settings into objects.

One asyncio.TaskGroup holds every task: the model watcher, the HTTP endpoint, the
readiness ticker, the shutdown deadline and, once a model is loaded and the clients
are connected, the pipeline's three loops. SIGTERM/SIGINT only set the stop event;
the loops leave through the path that delivers and commits. If that takes longer than
`service.shutdown_timeout_s`, everything is cancelled and the exit code is 1.

Exit codes: 0 after a clean stop (or the end of a replayed file), 1 on a fatal error
(store unreadable, shutdown deadline missed), 2 on bad configuration (raised as
ConfigError, mapped by the CLI).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable, Coroutine
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
)
from streamvae.records import DecoderSpec, decode_record, encode_dead_letter, encode_score
from streamvae.swap import ModelHolder, StoreView

if TYPE_CHECKING:
    from streamvae.config import Settings
    from streamvae.kafka import KafkaSink
    from streamvae.retrainer import Retrainer

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_PARTITIONS = 4
BROKER_PROBE_S = 2.0


class ShutdownTimeoutError(StreamvaeError):
    """The daemon did not finish its in-flight work within the shutdown deadline."""


@dataclass
class DaemonState:
    """One run: its inputs, and what the health endpoints read."""

    run: RunSpec
    holder: ModelHolder
    instruments: Instruments
    pipeline: Pipeline | None = None
    connected: bool = False
    broker_ok: bool = True
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def ready(self) -> bool:
        return (
            self.holder.current is not None
            and self.connected
            and self.broker_ok
            and self.pipeline is not None
            and self.pipeline.healthy
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


async def _main(run: RunSpec) -> int:
    settings = run.settings
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    instruments = make_metrics(settings)
    holder = ModelHolder(
        run.store,
        instruments.serving,
        device=resolve_device(settings.model.device),
        features=initial_features(settings),
        poll_interval_s=settings.store.poll_interval_s,
    )
    state = DaemonState(run, holder, instruments)
    await holder.refresh()  # the first look at the store: StoreError here is fatal
    # Start-up objects (torch, modules, the model) never die: moving them out of the
    # collector's generations keeps full collections from walking them again and again
    # while the hot path allocates a few containers per record.
    gc.freeze()
    code = 0
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(holder.watch(stop))
            tg.create_task(_http(settings, instruments.render, state, stop))
            tg.create_task(track_readiness(state, stop))
            tg.create_task(
                shutdown_deadline(stop, state.finished, settings.service.shutdown_timeout_s)
            )
            tg.create_task(serve(tg, state, stop))
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
            if not await sink.start(stop) or not await source.start(stop):
                return
            features = state.holder.features or ()
            # the retrainer is the training sink in every mode (a replay onboards sites too);
            # `retraining.enabled` decides whether it also runs training passes
            retrainer = _retrainer(state, features)
            tg.create_task(retrainer.run(stop), name="retrainer")
            spec = decoder_spec(settings, features)
            codec = Codec(
                decode=lambda payload, pos: decode_record(payload, spec, pos),
                encode_score=encode_score,
                encode_dead_letter=encode_dead_letter,
                encode_scores=encode_scores,
            )
            pipeline = Pipeline(
                source,
                sink,
                state.holder,
                codec,
                pipeline_spec(settings),
                metrics=state.instruments.serving,
                training=retrainer,
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


def _retrainer(state: DaemonState, features: tuple[str, ...]) -> Retrainer:
    """The in-daemon retrainer (always the training sink; `retraining.enabled` gates passes)."""
    from streamvae.retrain_setup import build_retrainer

    holder = state.holder

    async def promoted(version: str) -> None:
        await holder.refresh()  # serve the new model now, not at the next poll

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
    waiter = asyncio.ensure_future(holder.ready.wait())
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        stopper.cancel()
    return holder.current is not None and not stop.is_set()


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
