"""The retrainer: buffer + site lifecycle + periodic/triggered retraining. Orchestration.

In the daemon, one `Retrainer` is

- the pipeline's `TrainingSink`: `offer(sites, values, ts, normal)` once per
  batch on the event loop feeds the buffer and the site tracker (anomaly flags
  are `~normal`; warming sites' records arrive with normal=True);
- a task in the app's TaskGroup (`run(stop)`): every `check_interval_s` it
  retires idle sites, persists the buffer when it changed (every
  `persist_interval_s`, and on stop), and starts a retraining pass when one is due:
  * `interval`: `interval_s` since the last pass;
  * a trigger from the tracker (`initial`, `new_site`, `drift`), at most once
    per `trigger_cooldown_s`;
  and never with fewer than `min_total_records` buffered records.

A pass (`streamvae.retrain_job.run_pass`) runs in a daemon worker thread, so
scoring keeps its latency and a shutdown never waits for training; with
`mode="process"` the training runs in a spawned child that is killed on shutdown.
Outcomes go to `TrainingMetrics.retrain(...)`.

`retrain_command(settings)` is `streamvae retrain`: one pass over the persisted
buffer, for a cron job / systemd timer singleton (the store lock keeps it single).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from streamvae.buffer import TrainingBuffer
from streamvae.gate import GateSpec
from streamvae.retrain_job import PassResult, TrainingJob, run_pass
from streamvae.sites import SiteTracker
from streamvae.state import load_json, save_buffer, save_json
from streamvae.train_process import ChildHandle

if TYPE_CHECKING:
    from streamvae.config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")


class ServingModel(Protocol):
    """The serving detector, as far as the retrainer cares."""

    @property
    def version(self) -> str: ...
    @property
    def sites(self) -> Mapping[str, int]: ...


class TrainingMetricsLike(Protocol):
    """streamvae.metrics.TrainingMetrics (the part used here)."""

    def retrain(
        self, *, outcome: str, reason: str, duration_s: float, report: Mapping[str, Any] | None
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class RetrainSpec:
    interval_s: float = 3600.0
    mode: Literal["thread", "process"] = "thread"
    min_total_records: int = 1000
    trigger_cooldown_s: float = 300.0
    check_interval_s: float = 5.0
    persist_interval_s: float = 300.0
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class JobTemplate:
    """The constant part of a TrainingJob (everything but the data)."""

    store_root: str
    features: tuple[str, ...]
    model_spec: Any
    train_spec: Any
    threshold_spec: Any
    gate_spec: GateSpec
    device: str = "cpu"
    threads: int = 0  # torch threads of a training process (mode="process"); 0 = default

    def job(self, buffer: TrainingBuffer, trigger: str) -> TrainingJob:
        """Snapshot the buffer (cheap copy; call on the event loop) into a job."""
        train, hold = buffer.snapshot("train"), buffer.holdout()
        return TrainingJob(
            store_root=self.store_root,
            features=self.features,
            train_values=train.values,
            train_sites=np.array(train.sites, dtype=np.str_),
            holdout_values=hold.values,
            holdout_sites=np.array(hold.sites, dtype=np.str_),
            model_spec=self.model_spec,
            train_spec=self.train_spec,
            threshold_spec=self.threshold_spec,
            gate_spec=self.gate_spec,
            device=self.device,
            trigger=trigger,
            threads=self.threads,
        )


async def in_daemon_thread(fn: Callable[[], T]) -> T:
    """Run `fn` in a fresh daemon thread (unlike to_thread, exit never waits for it)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:  # delivered to the awaiting task
            loop.call_soon_threadsafe(_set_exception, fut, exc)
        else:
            loop.call_soon_threadsafe(_set_result, fut, result)

    threading.Thread(target=target, name="streamvae-retrain", daemon=True).start()
    return await fut


def _set_result(fut: asyncio.Future[T], value: T) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


class Retrainer:
    """Owns the buffer and the site tracker; schedules retraining passes."""

    def __init__(
        self,
        *,
        buffer: TrainingBuffer,
        tracker: SiteTracker,
        template: JobTemplate,
        spec: RetrainSpec,
        metrics: TrainingMetricsLike | None = None,
        state_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        serving: Callable[[], Any] | None = None,
        on_promoted: Callable[[str], Awaitable[object]] | None = None,
        publish_statuses: Callable[[Mapping[str, int]], None] | None = None,
        run: Callable[[TrainingJob], PassResult] | None = None,
    ) -> None:
        """Hooks into the daemon (all optional):

        serving: the detector serving now (checked every tick, so swaps by the store
            watcher and operator rollbacks re-derive site statuses);
        on_promoted: awaited after a promotion (e.g. the model holder's refresh, so the
            new model serves at once instead of at the next store poll);
        publish_statuses: receives {status: number of sites} every tick (the gauge);
        run: executes one pass in a worker thread (default: `run_pass` per `spec.mode`).
        """
        self.buffer = buffer
        self.tracker = tracker
        self.template = template
        self.spec = spec
        self._metrics = metrics
        self._state_dir = state_dir
        self._clock = clock
        self._serving = serving
        self._serving_version: str | None = None
        self._on_promoted = on_promoted
        self._publish_statuses = publish_statuses
        self._last_pass = clock()  # start counts as a pass for the cooldown and interval
        self._passes = 0
        self._last_persist = clock()
        self._persisted_version = buffer.version
        self._handle = ChildHandle()
        self._run = run or (lambda job: run_pass(job, mode=spec.mode, handle=self._handle))
        self.running = False
        self.last_result: PassResult | None = None

    # -- TrainingSink ----------------------------------------------------------------
    def offer(
        self,
        sites: Sequence[str],
        values: npt.ArrayLike,
        ts: npt.ArrayLike,
        normal: npt.ArrayLike,
    ) -> None:
        """One scored batch: buffer the normal rows, account statuses and drift."""
        flags = np.asarray(normal, dtype=bool)
        self.buffer.offer(sites, values, ts, flags)
        self.tracker.observe(sites, ~flags)

    def model_changed(self, sites: Collection[str]) -> None:
        """The serving model changed (promotion, rollback, reload): re-derive statuses."""
        activated = self.tracker.set_model_sites(sites)
        if activated:
            log.info("sites now active: %s", ", ".join(activated))

    # -- scheduling -------------------------------------------------------------------
    def due(self) -> str | None:
        """Why a pass should run now, or None."""
        if not self.spec.enabled or self.running:
            return None
        counts = self.buffer.counts()
        if sum(counts.values()) < self.spec.min_total_records:
            return None
        since = self._clock() - self._last_pass
        triggers = self.tracker.triggers(counts)
        first_model = bool(triggers) and triggers[0].kind == "initial" and self._passes == 0
        if triggers and (since >= self.spec.trigger_cooldown_s or first_model):
            return "; ".join(
                f"{t.kind}" + (f" {t.site}" if t.site else "") + f" ({t.detail})"
                for t in triggers[:5]
            )
        if since >= self.spec.interval_s:
            return "interval"
        return None

    def sync(self) -> None:
        """Follow the serving model, retire idle sites, publish the status counts."""
        current = self._serving() if self._serving is not None else None
        if current is not None and current.version != self._serving_version:
            self._serving_version = current.version
            self.model_changed(current.sites)
        retired = self.tracker.retire_idle()
        if retired:
            log.info("retired idle sites: %s", ", ".join(retired))
        if self._publish_statuses is not None:
            self._publish_statuses(self.tracker.counts())

    async def run(self, stop: asyncio.Event) -> None:
        """The retrainer task: check, retrain, persist; persists once more on stop.

        A pass still running at stop is abandoned (its daemon thread dies with the
        process, a training child is killed): the store stays consistent.
        """
        try:
            while not stop.is_set():
                self.sync()
                reason = self.due()
                if reason is not None and not await self._pass_unless_stopped(reason, stop):
                    break
                if self._clock() - self._last_persist >= self.spec.persist_interval_s:
                    await self.persist()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.spec.check_interval_s)
        finally:
            self._handle.kill()
        await self.persist()

    async def _pass_unless_stopped(self, reason: str, stop: asyncio.Event) -> bool:
        """Run a pass; False if `stop` came first (the pass is abandoned)."""
        task = asyncio.create_task(self.retrain_once(reason))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not task.done():
            log.warning("stop requested during a retraining pass: abandoning it")
            self._handle.kill()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return False
        try:
            task.result()
        except Exception:  # a bug in a pass must not take the daemon down
            log.exception("retraining pass crashed")
        return True

    async def retrain_once(self, trigger: str = "manual") -> PassResult:
        """One pass now (the buffer is snapshotted on the event loop)."""
        self.running = True
        self._last_pass = self._clock()
        log.info("retraining: %s", trigger)
        try:
            job = self.template.job(self.buffer, trigger)
            result = await in_daemon_thread(lambda: self._run(job))
        finally:
            self.running = False
            self._passes += 1
            self._last_pass = self._clock()
        self.tracker.clear_drift()
        self.last_result = result
        if self._metrics is not None and result.outcome != "skipped":
            self._metrics.retrain(
                outcome=result.outcome,
                reason=result.reason,
                duration_s=result.duration_s,
                report=result.report,
            )
        if result.outcome == "promoted" and result.version is not None:
            self.model_changed(result.sites)
            if self._on_promoted is not None:
                await self._on_promoted(result.version)
        return result

    async def persist(self) -> None:
        """Write the buffer (if changed) and the site tracker under the state dir."""
        self._last_persist = self._clock()
        if self._state_dir is None:
            return
        state_dir = self._state_dir
        sites = self.tracker.export()
        version = self.buffer.version
        state = self.buffer.export() if version != self._persisted_version else None
        features = self.template.features

        def write() -> None:
            if state is not None:
                save_buffer(state_dir, state, features)
            save_json(state_dir / "sites.json", sites)

        try:
            await asyncio.to_thread(write)
        except OSError as exc:
            log.error("could not persist the training buffer to %s: %s", state_dir, exc)
            return
        self._persisted_version = version

    def restore_sites(self) -> None:
        """Load `sites.json` (last-seen times, retired flags) if present."""
        if self._state_dir is not None:
            data = load_json(self._state_dir / "sites.json")
            if data is not None:
                self.tracker.restore(data)


def retrain_command(settings: Settings) -> int:
    """`streamvae retrain`: one pass over the persisted buffer. 0 unless training failed."""
    from streamvae.retrain_setup import command_pass

    return command_pass(settings)
