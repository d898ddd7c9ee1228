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
import logging
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamvae.batching import BatchPolicy
from streamvae.errors import StoreError, StreamvaeError
from streamvae.pipeline import (
    Codec,
    NullMetrics,
    Pipeline,
    PipelineMetrics,
    PipelineSpec,
    TrainingSink,
)
from streamvae.records import DecoderSpec, decode_record, encode_dead_letter, encode_score
from streamvae.swap import ModelHolder, StoreView

if TYPE_CHECKING:
    from streamvae.config import Settings

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_PARTITIONS = 4


class ShutdownTimeoutError(StreamvaeError):
    """The daemon did not finish its in-flight work within the shutdown deadline."""


@dataclass
class _State:
    """One run: its inputs, and what the health endpoints read."""

    settings: Settings
    holder: ModelHolder
    metrics: PipelineMetrics
    input_path: str | None
    output_path: str | None
    bootstrap: str
    training: TrainingSink | None
    training_metrics: Any = None
    pipeline: Pipeline | None = None
    connected: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def ready(self) -> bool:
        return (
            self.holder.current is not None
            and self.connected
            and self.pipeline is not None
            and self.pipeline.healthy
        )


def resolve_device(device: str) -> str:
    """ "auto" → "cuda" when available, else "cpu"."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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


def make_metrics(settings: Settings) -> tuple[PipelineMetrics, Callable[[], bytes], Any]:
    """ServingMetrics and TrainingMetrics on a fresh registry, and the /metrics renderer."""
    try:  # TODO(daemon): drop the fallback once obs's metrics.py is in main
        from streamvae import metrics as instruments
    except ImportError:
        return NullMetrics(), lambda: b"", None
    # prometheus_client is imported only by streamvae.metrics: take its registry class there
    registry = instruments.new_registry()
    render = instruments.render
    metrics = instruments.ServingMetrics(registry, max_site_labels=settings.metrics.max_site_labels)
    return metrics, lambda: render(registry), instruments.TrainingMetrics(registry)


def run_command(
    settings: Settings,
    input_path: str | None = None,
    output_path: str | None = None,
    *,
    training: TrainingSink | None = None,
) -> int:
    """`streamvae run`: serve until stopped (or until a replayed file ends)."""
    store = open_store(settings)
    broker = None
    kafka_needed = input_path is None or output_path is None
    bootstrap = settings.kafka.bootstrap_servers
    if kafka_needed and bootstrap == EMBEDDED:
        from streamvae.broker import EmbeddedBroker

        broker = EmbeddedBroker().start()
        for topic in (settings.kafka.input_topic, settings.kafka.output_topic):
            broker.create_topic(topic, EMBEDDED_PARTITIONS)
        broker.create_topic(settings.kafka.dead_letter_topic, 1)
        bootstrap = broker.bootstrap_servers
        log.info("embedded broker at %s", bootstrap)
    try:
        return asyncio.run(
            _main(settings, store, input_path, output_path, bootstrap=bootstrap, training=training)
        )
    finally:
        if broker is not None:
            broker.stop()


async def _main(
    settings: Settings,
    store: StoreView,
    input_path: str | None,
    output_path: str | None,
    *,
    bootstrap: str,
    training: TrainingSink | None,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics, render, training_metrics = make_metrics(settings)
    holder = ModelHolder(
        store,
        metrics,
        device=resolve_device(settings.model.device),
        features=settings.model.features or None,
        poll_interval_s=settings.store.poll_interval_s,
    )
    state = _State(settings, holder, metrics, input_path, output_path, bootstrap, training)
    state.training_metrics = training_metrics
    await holder.refresh()  # the first look at the store: StoreError here is fatal
    missed = failed = False
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(holder.watch(stop))
            tg.create_task(_http(settings, render, state, stop))
            tg.create_task(_readiness(state, metrics, stop))
            tg.create_task(_deadline(stop, state.finished, settings.service.shutdown_timeout_s))
            tg.create_task(_serve(tg, state, stop))
    except* ShutdownTimeoutError:
        log.error("shutdown deadline of %.1fs missed", settings.service.shutdown_timeout_s)
        missed = True
    except* StoreError as group:
        log.error("model store failed: %s", group.exceptions[0])
        failed = True
    return 1 if missed or failed else 0


async def _serve(tg: asyncio.TaskGroup, state: _State, stop: asyncio.Event) -> None:
    """Wait for a model, connect, run the pipeline loops, disconnect."""
    try:
        if not await _first_model(state.holder, stop):
            return
        from streamvae.kafka import KafkaSink, KafkaSource, kafka_spec
        from streamvae.replay import FileSink, FileSource

        settings, input_path, output_path = state.settings, state.input_path, state.output_path
        kspec = kafka_spec(settings.kafka, state.bootstrap)
        source: FileSource | KafkaSource = (
            FileSource(input_path) if input_path else KafkaSource(kspec)
        )
        sink: FileSink | KafkaSink = FileSink(output_path) if output_path else KafkaSink(kspec)
        try:
            if not await sink.start(stop) or not await source.start(stop):
                return
            features = state.holder.features or ()
            if state.training is None:  # the retrainer: buffer, site lifecycle, retraining task
                from streamvae.retrain_setup import start_in_daemon

                state.training = start_in_daemon(
                    tg,
                    stop,
                    settings,
                    features,
                    holder=state.holder,
                    serving_metrics=state.metrics,
                    training_metrics=state.training_metrics,
                )
            spec = decoder_spec(settings, features)
            codec = Codec(
                decode=lambda payload, pos: decode_record(payload, spec, pos),
                encode_score=encode_score,
                encode_dead_letter=encode_dead_letter,
            )
            pipeline = Pipeline(
                source,
                sink,
                state.holder,
                codec,
                pipeline_spec(settings),
                metrics=state.metrics,
                training=state.training,
            )
            if isinstance(source, KafkaSource):
                source.on_revoke = pipeline.drain
            state.pipeline = pipeline
            state.connected = True
            log.info("consuming; batches of up to %d records", settings.batching.max_records)
            tasks = [tg.create_task(coro) for coro in pipeline.loops(stop)]
            await asyncio.wait(tasks)
            log.info("pipeline stopped after delivering %d records", pipeline.delivered)
        finally:
            state.connected = False
            await _close("consumer", source.stop())
            await _close("producer", sink.stop())
    finally:
        state.finished.set()
        stop.set()  # a replayed file has ended: let the other tasks go too


async def _close(what: str, closing: Coroutine[Any, Any, None]) -> None:
    try:
        async with asyncio.timeout(10):
            await closing
    except (TimeoutError, OSError, StreamvaeError) as exc:
        log.warning("closing the %s failed: %s", what, exc)


async def _first_model(holder: ModelHolder, stop: asyncio.Event) -> bool:
    """Wait until a model is loaded (True) or stop is set (False)."""
    if holder.current is None:
        log.warning("no model in the store yet: not ready, not consuming until one is promoted")
    waiter = asyncio.ensure_future(holder.ready.wait())
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        stopper.cancel()
    return holder.current is not None and not stop.is_set()


async def _deadline(stop: asyncio.Event, finished: asyncio.Event, timeout_s: float) -> None:
    await stop.wait()
    try:
        async with asyncio.timeout(timeout_s):
            await finished.wait()
    except TimeoutError:
        raise ShutdownTimeoutError(f"still busy {timeout_s}s after the stop signal") from None


async def _readiness(state: _State, metrics: PipelineMetrics, stop: asyncio.Event) -> None:
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
    settings: Settings, render: Callable[[], bytes], state: _State, stop: asyncio.Event
) -> None:
    try:  # TODO(daemon): drop the fallback once obs's httpd.py is in main
        from streamvae.httpd import serve_http
    except ImportError:
        log.warning("no HTTP endpoint yet (streamvae.httpd missing)")
        return
    await serve_http(
        settings.metrics.host,
        settings.metrics.port,
        metrics=render,
        live=lambda: True,
        ready=state.ready,
        stop=stop,
    )
