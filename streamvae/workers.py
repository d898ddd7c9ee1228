"""Serving worker processes: `service.workers = N` runs the daemon and N - 1 workers.

Why: one process's event loop bounds the daemon at roughly one core (decoding, encoding
and the Kafka clients are Python holding the GIL; bench/throughput.py, docs/performance.md),
while Kafka already knows how to split a topic between processes: a consumer group.
Every worker is a full pipeline (its own consumer in the daemon's group, its own
producer, its own scoring thread), so the at-least-once rules hold per process and a
rebalance moves partitions between them like between any two consumers.

The daemon (this module's `WorkerPool`, in its TaskGroup) stays the one owner of what
must exist once: the metrics endpoint, the retrainer and the model store's promotions.
A worker (`worker_command`, started as `python -m streamvae worker`):
- reads the daemon's effective settings from its stdin (secrets stay off the command line
  and out of the environment) and loads the model from the same store, polling it like
  the daemon (and at once on SIGUSR1, which the daemon sends after promoting a model);
- reports to the daemon through a pipe (streamvae.worker_link, no pickle): its gauges,
  the figures of every batch (the daemon's counters and histograms add them up exactly)
  and the records it offers for training (the retrainer sees every site of the stream);
- stops on SIGTERM like the daemon (finish, deliver, commit), and on its own when the
  daemon's end of the pipe closes (the daemon is gone).

A worker that exits while the daemon is not stopping stops the daemon with exit code 1:
the service manager restarts the whole unit (systemd `Restart=on-failure`, Kubernetes),
and the uncommitted records are read again (at-least-once). The daemon is ready only
while every worker is running and ready.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from streamvae.ports import PipelineMetrics, TrainingSink
from streamvae.worker_link import (
    LENGTH_BYTES,
    BatchFigures,
    Offer,
    Update,
    decode_update,
    encode_update,
    read_length,
)

if TYPE_CHECKING:
    from streamvae.app import DaemonState
    from streamvae.config import Settings
    from streamvae.swap import StoreView

log = logging.getLogger(__name__)

REPORT_S = 0.1  # a worker's flush interval (its batches reach the daemon's metrics this late)
HEARTBEAT_S = 1.0  # a worker reports at least this often (and so notices a vanished daemon)
STARTUP_TIMEOUT_S = 300.0  # the daemon connects without its workers after this long
PENDING_OFFERS = 256  # offers kept while the daemon's retrainer does not exist yet


# --- the daemon's side -------------------------------------------------------------------


class CombinedGauges:
    """The serving metrics seen through each worker: what adds up (batch figures) goes
    straight to the shared instruments; the gauges a pipeline sets (records in flight,
    consumer lag per partition, paused) are kept per worker and combined (sum, union of
    the partitions, any)."""

    def __init__(self, target: PipelineMetrics) -> None:
        self.target = target
        self._in_flight: dict[int, int] = {}
        self._lags: dict[int, dict[tuple[str, int], int]] = {}
        self._paused: dict[int, bool] = {}

    def view(self, index: int) -> _WorkerView:
        return _WorkerView(self, index)

    def set(
        self,
        index: int,
        *,
        in_flight: int | None = None,
        lags: Mapping[tuple[str, int], int] | None = None,
        paused: bool | None = None,
    ) -> None:
        if in_flight is not None:
            self._in_flight[index] = in_flight
            self.target.set_in_flight(sum(self._in_flight.values()))
        if lags is not None:
            self._lags[index] = dict(lags)
            self._publish_lags()
        if paused is not None:
            self._paused[index] = paused
            self.target.set_paused(any(self._paused.values()))

    def forget(self, index: int) -> None:
        """A worker has ended: its gauges no longer count."""
        self._in_flight.pop(index, None)
        self._lags.pop(index, None)
        self._paused.pop(index, None)
        self.target.set_in_flight(sum(self._in_flight.values()))
        self.target.set_paused(any(self._paused.values()))
        self._publish_lags()

    def _publish_lags(self) -> None:
        merged: dict[tuple[str, int], int] = {}
        for lags in self._lags.values():
            merged.update(lags)
        self.target.set_consumer_lag(merged)


class _WorkerView:
    """`PipelineMetrics` of one worker (see CombinedGauges)."""

    def __init__(self, combined: CombinedGauges, index: int) -> None:
        self._combined, self._index = combined, index
        target = combined.target
        self.batch = target.batch
        self.set_model = target.set_model
        self.model_rejected = target.model_rejected
        self.set_ready = target.set_ready
        self.set_site_statuses = target.set_site_statuses

    def set_consumer_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        self._combined.set(self._index, lags=lags)

    def set_in_flight(self, records: int) -> None:
        self._combined.set(self._index, in_flight=records)

    def set_paused(self, paused: bool) -> None:
        self._combined.set(self._index, paused=paused)


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.started = False
        self.ready = False
        self.alive = False


class WorkerPool:
    """Starts, feeds and stops the daemon's worker processes (module docstring).

    `metrics`: the daemon's serving instruments (view(0) is the daemon's own pipeline);
    `training()`: the daemon's training sink once it exists (offers arriving before it
    are kept, up to PENDING_OFFERS batches). `command`: how to start a worker (tests)."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        metrics: PipelineMetrics,
        *,
        training: Callable[[], TrainingSink | None],
        count: int,
        command: Sequence[str] | None = None,
    ) -> None:
        self._settings, self._bootstrap = settings, bootstrap
        self._gauges = CombinedGauges(metrics)
        self._training = training
        self._command = list(command or [sys.executable, "-m", "streamvae", "worker"])
        self._workers = [_Worker(i) for i in range(1, count + 1)]
        self._pending: collections.deque[Offer] = collections.deque(maxlen=PENDING_OFFERS)
        self._started = asyncio.Event()
        self.failed: str | None = None  # why the pool stopped the daemon

    def view(self, index: int) -> PipelineMetrics:
        return self._gauges.view(index)

    def ready(self) -> bool:
        return all(w.alive and w.ready for w in self._workers)

    async def wait_started(self, stop: asyncio.Event) -> None:
        """Until every worker has a model and connects (so that the consumer group forms
        once instead of rebalancing as each joins), `stop`, or STARTUP_TIMEOUT_S."""
        from streamvae.app import first_of

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STARTUP_TIMEOUT_S):
                await first_of(self._started, stop)
        if not self._started.is_set() and not stop.is_set():
            log.warning(
                "workers not started after %.0fs: connecting without them", STARTUP_TIMEOUT_S
            )

    def models_changed(self) -> None:
        """A model was promoted: the workers look at the store now (SIGUSR1)."""
        for w in self._workers:
            if w.started and w.alive and w.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signal.SIGUSR1)

    async def run(self, stop: asyncio.Event) -> None:
        """Start every worker, relay their reports, stop them when `stop` is set."""
        log.info("starting %d serving worker process(es)", len(self._workers))
        async with asyncio.TaskGroup() as tg:
            for w in self._workers:
                tg.create_task(self._tend(w, stop), name=f"worker-{w.index}")

    async def _tend(self, w: _Worker, stop: asyncio.Event) -> None:
        from streamvae.config import settings_json

        loop = asyncio.get_running_loop()
        r, wfd = os.pipe()
        try:
            w.proc = await asyncio.create_subprocess_exec(
                *self._command,
                "--index",
                str(w.index),
                "--fd",
                str(wfd),
                "--bootstrap",
                self._bootstrap,
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(wfd,),
            )
        except OSError as exc:
            os.close(r)
            self._fail(f"worker {w.index} could not start: {exc}", stop)
            return
        finally:
            os.close(wfd)
        w.alive = True
        proc = w.proc
        log.info("worker %d started as pid %d", w.index, proc.pid)
        assert proc.stdin is not None
        proc.stdin.write(settings_json(self._settings))
        with contextlib.suppress(ConnectionError):
            await proc.stdin.drain()
        proc.stdin.close()
        reader = asyncio.StreamReader(limit=16 << 20)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(r, "rb", buffering=0)
        )
        reading = asyncio.ensure_future(self._read(w, reader, stop))
        exited = asyncio.ensure_future(proc.wait())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(self._settings.service.shutdown_timeout_s + 5):
                        await asyncio.shield(exited)
                except TimeoutError:
                    log.error("worker %d did not stop in time: killed", w.index)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await exited
            elif not stop.is_set():
                self._fail(f"worker {w.index} exited with code {proc.returncode}", stop)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.shield(reading)  # its last reports
        finally:
            w.alive = False
            for task in (reading, exited, stopping):
                task.cancel()
            transport.close()
            self._gauges.forget(w.index)
        log.info("worker %d stopped (exit code %s)", w.index, proc.returncode)

    def _fail(self, why: str, stop: asyncio.Event) -> None:
        if self.failed is None:
            self.failed = why
            log.error("%s: stopping the daemon", why)
        stop.set()

    async def _read(self, w: _Worker, reader: asyncio.StreamReader, stop: asyncio.Event) -> None:
        while True:
            try:
                prefix = await reader.readexactly(LENGTH_BYTES)
                body = await reader.readexactly(read_length(prefix))
                update = decode_update(body)
            except asyncio.IncompleteReadError:
                return  # the worker closed its end
            except (ValueError, KeyError, TypeError) as exc:
                self._fail(f"worker {w.index} sent a malformed report ({exc})", stop)
                return
            self._apply(w, update)

    def _apply(self, w: _Worker, update: Update) -> None:
        self._gauges.set(
            w.index, in_flight=update.in_flight, lags=update.lags, paused=update.paused
        )
        w.ready = update.ready
        if update.started and not w.started:
            w.started = True
            log.info("worker %d started", w.index)
            if all(x.started for x in self._workers):
                self._started.set()
        for figures in update.batches:
            self._gauges.target.batch(**figures.as_kwargs())
        self._pending.extend(update.offers)
        sink = self._training()
        while sink is not None and self._pending:
            o = self._pending.popleft()
            sink.offer(o.sites, o.values, o.ts, o.normal)


# --- a worker's side ---------------------------------------------------------------------


class WorkerReport:
    """A worker's serving metrics and training sink: collects what the daemon is told
    at the next flush (`take`)."""

    def __init__(self) -> None:
        self.started = False
        self._in_flight = 0
        self._paused = False
        self._lags: dict[tuple[str, int], int] = {}
        self._batches: list[BatchFigures] = []
        self._offers: list[Offer] = []
        self._told: tuple[bool, bool, bool] | None = None  # (started, ready, paused) last sent

    def pending(self, ready: bool) -> bool:
        """Anything the daemon does not know yet (batches, offers, a changed flag)."""
        told = (self.started, ready, self._paused)
        return bool(self._batches or self._offers) or told != self._told

    def take(self, ready: bool) -> Update:
        self._told = (self.started, ready, self._paused)
        update = Update(
            ready=ready,
            started=self.started,
            in_flight=self._in_flight,
            paused=self._paused,
            lags=dict(self._lags),
            batches=self._batches,
            offers=self._offers,
        )
        self._batches, self._offers = [], []
        return update

    async def start(self, stop: asyncio.Event) -> None:
        """`DaemonState.before_connect`: from now on the daemon may count on this worker
        (told at the next flush, within REPORT_S)."""
        self.started = True

    # PipelineMetrics
    def batch(
        self,
        *,
        consumed: int,
        scored: int,
        dead_letters: Mapping[str, int],
        scoring_seconds: float,
        lags_s: Sequence[float] | npt.NDArray[Any],
        sites: Sequence[str],
        anomalies: Sequence[bool] | npt.NDArray[Any],
        severities: Sequence[float] | npt.NDArray[Any],
        statuses: Sequence[str],
    ) -> None:
        self._batches.append(
            BatchFigures(
                consumed=consumed,
                scored=scored,
                dead_letters=dict(dead_letters),
                scoring_seconds=scoring_seconds,
                lags_s=np.asarray(lags_s, dtype=np.float64),
                sites=list(sites),
                anomalies=np.asarray(anomalies, dtype=np.bool_),
                severities=np.asarray(severities, dtype=np.float64),
                statuses=list(statuses),
            )
        )

    def set_consumer_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        self._lags = dict(lags)

    def set_in_flight(self, records: int) -> None:
        self._in_flight = records

    def set_paused(self, paused: bool) -> None:
        self._paused = paused

    def set_model(self, version: str, created_at: float) -> None:
        return None  # the daemon reports the model (it loads the same store)

    def model_rejected(self, reason: str) -> None:
        return None  # logged here; the daemon's own check counts it

    def set_ready(self, ready: bool) -> None:
        return None  # reported with every update

    def set_site_statuses(self, counts: Mapping[str, int]) -> None:
        return None  # the daemon's retrainer publishes them

    # TrainingSink
    def offer(
        self,
        sites: Sequence[str],
        values: npt.NDArray[np.float32],
        ts: npt.NDArray[np.float64],
        normal: npt.NDArray[np.bool_],
    ) -> None:
        self._offers.append(Offer(list(sites), values, ts, normal))


class _Link(asyncio.Protocol):
    def __init__(self) -> None:
        self.lost = asyncio.Event()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


def worker_command(index: int, fd: int, bootstrap: str) -> int:
    """`python -m streamvae worker`: serve as worker `index` of the daemon that started
    this process, reporting on `fd` (module docstring). Exit codes as `streamvae run`."""
    from streamvae.app import open_store
    from streamvae.config import settings_from_json
    from streamvae.model.device import limit_threads

    settings = settings_from_json(sys.stdin.buffer.read())
    logging.basicConfig(
        level=getattr(logging, settings.service.log_level),
        format=f"%(asctime)s %(levelname)s %(name)s[worker {index}]: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    store = open_store(settings)
    limit_threads(settings.model.threads)
    return asyncio.run(_serve_as_worker(settings, store, index, fd, bootstrap))


async def _serve_as_worker(
    settings: Settings, store: StoreView, index: int, fd: int, bootstrap: str
) -> int:
    import gc

    from streamvae.app import (
        DaemonState,
        Instruments,
        RunSpec,
        new_holder,
        run_tasks,
        serve,
        shutdown_deadline,
        stop_on_signals,
    )

    stop = asyncio.Event()
    stop_on_signals(stop)
    loop = asyncio.get_running_loop()
    transport, link = await loop.connect_write_pipe(_Link, os.fdopen(fd, "wb", buffering=0))
    report = WorkerReport()
    holder = new_holder(settings, store, report)
    state = DaemonState(
        RunSpec(settings, store, None, None, bootstrap),
        holder,
        Instruments(serving=report, training=None, render=lambda: b""),
        make_training=lambda state, features, tg, stop: report,
        before_connect=report.start,
    )
    await holder.refresh()
    gc.freeze()  # as in the daemon (app._main)

    def tasks(tg: asyncio.TaskGroup) -> None:
        def refresh() -> None:  # SIGUSR1: the daemon promoted a model
            if not stop.is_set():
                tg.create_task(holder.refresh())

        loop.add_signal_handler(signal.SIGUSR1, refresh)
        tg.create_task(holder.watch(stop))
        tg.create_task(_report(report, state, transport, link, stop))
        tg.create_task(shutdown_deadline(stop, state.finished, settings.service.shutdown_timeout_s))
        tg.create_task(serve(tg, state, stop))

    code = await run_tasks(settings, tasks)
    log.info("worker %d stopped", index)
    return code


async def _report(
    report: WorkerReport,
    state: DaemonState,
    transport: asyncio.WriteTransport,
    link: _Link,
    stop: asyncio.Event,
) -> None:
    """Flush `report` to the daemon every REPORT_S (when there is news, else every
    HEARTBEAT_S) until the pipeline has finished; stop when the daemon is gone."""
    parent = os.getppid()
    last = 0.0
    while True:
        finished = state.finished.is_set()
        now = time.monotonic()
        if link.lost.is_set() or os.getppid() != parent:
            if not stop.is_set():
                log.error("the daemon is gone: stopping")
                stop.set()
            return
        ready = state.ready()
        if report.pending(ready) or finished or now - last >= HEARTBEAT_S:
            transport.write(encode_update(report.take(ready)))
            last = now
        if finished:
            break
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REPORT_S):
                await state.finished.wait()
    transport.close()  # flushes what is buffered, then closes
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await link.lost.wait()
