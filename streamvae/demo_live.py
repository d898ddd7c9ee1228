"""The live demo: the real daemon on an embedded broker, fed by the simulator.

Composition (one process, one asyncio.TaskGroup; the broker is a child process):

    simulator ──producer──► [sensors] ──► daemon (pipeline + retrainer + /metrics)
                                               │            │
                                               ▼            ▼ promotes into the store
                                       [sensor-scores]   ModelHolder swaps it in
                                               │
                 terminal view + summary ◄─consumer

The daemon is built from the app's own composition functions (`streamvae.app`),
with a config pointing at the embedded broker, a temporary model store and state
dir. The initial model is trained on simulated history before the stream starts.
SIGINT/SIGTERM set the stop event (a second one cancels); the broker process is
stopped on every way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from streamvae import app
from streamvae.artifacts import ModelStore
from streamvae.broker import EmbeddedBroker
from streamvae.config import Settings
from streamvae.console import Console
from streamvae.demo import DemoPlan, TimelinePoint, make_trainer
from streamvae.errors import TransientError
from streamvae.httpd import serve_http
from streamvae.kafka import KafkaSink, KafkaSource, kafka_spec
from streamvae.records import decode_score
from streamvae.retrainer import in_daemon_thread
from streamvae.scoreboard import Outcome, RetrainEvent, Scoreboard, top_sensors
from streamvae.simulator import Label, Simulator, encode_record
from streamvae.swap import ModelHolder

log = logging.getLogger(__name__)

PARTITIONS = 4
DRAIN_TIMEOUT_S = 15.0


def live_settings(
    plan: DemoPlan, workdir: Path, bootstrap: str, features: tuple[str, ...]
) -> Settings:
    """The daemon's configuration for the demo: small model, quick retraining."""
    from streamvae.config import load_settings

    base = plan.settings_overrides()
    onboard = plan.onboard_records
    return load_settings(
        None,
        kafka={
            "bootstrap_servers": bootstrap,
            "group_id": "streamvae-demo",
            "session_timeout_ms": 3000,  # Tansu: quicker group joins
            "max_poll_interval_ms": 10000,
        },
        model={**base["model"], "features": list(features)},
        training=base["training"],
        threshold=base["threshold"],
        batching={"max_records": 512, "max_wait_ms": 50},
        store={"path": str(workdir / "models"), "poll_interval_s": 1.0},
        metrics={"host": "127.0.0.1", "port": 0},
        service={"shutdown_timeout_s": 20.0},
        retraining={
            "state_dir": str(workdir / "state"),
            "new_site_min_records": onboard,
            "min_total_records": min(1000, 2 * onboard),
            "interval_s": max(30.0, 0.6 * plan.duration_s),
            "trigger_cooldown_s": 5.0,
            "check_interval_s": 1.0,
            "persist_interval_s": 3600.0,
            "per_site_cap": plan.per_site_cap,
            "drift_anomaly_rate_factor": 200.0,  # injected faults are not drift
        },
    )


@dataclasses.dataclass(slots=True)
class _Training:
    """Tees the retrainer's outcomes to the real instruments and to the demo."""

    inner: Any
    events: list[tuple[str, str, float]]

    def retrain(
        self, *, outcome: str, reason: str, duration_s: float, report: Mapping[str, Any] | None
    ) -> None:
        self.inner.retrain(outcome=outcome, reason=reason, duration_s=duration_s, report=report)
        self.events.append((outcome, reason, duration_s))


def run_live(
    plan: DemoPlan, console: Console, workdir: Path
) -> tuple[dict[str, Any], list[TimelinePoint]]:
    """Start the broker, run the story, stop the broker. Returns (summary, timeline)."""
    broker = EmbeddedBroker(log_path=workdir / "broker.log")
    console.note("starting the embedded broker (Tansu) ...")
    with broker:
        live = _Live(plan, console, workdir, broker.bootstrap_servers)
        kafka = live.settings.kafka
        for topic in (kafka.input_topic, kafka.output_topic):
            broker.create_topic(topic, PARTITIONS)
        broker.create_topic(kafka.dead_letter_topic, 1)
        console.note(f"broker at {broker.bootstrap_servers}")
        try:
            summary, timeline = asyncio.run(live.main())
        except asyncio.CancelledError:  # a second Ctrl-C: abort (the broker still stops)
            raise KeyboardInterrupt from None
    summary["broker"] = broker.bootstrap_servers
    summary["broker_stopped"] = not broker.running
    return summary, timeline


class _Live:
    def __init__(self, plan: DemoPlan, console: Console, workdir: Path, bootstrap: str) -> None:
        self.plan, self.console, self.bootstrap = plan, console, bootstrap
        self.sim = Simulator(plan.sim_spec(start_ts=time.time() - plan.history_s))
        self.board = Scoreboard(sites=self.sim.sites, new_site=self.sim.new_site)
        self.settings = live_settings(plan, workdir, bootstrap, self.sim.features)
        self.store = ModelStore(Path(self.settings.store.path))
        self.stop = asyncio.Event()
        self.produced_all = asyncio.Event()
        self.all_scored = asyncio.Event()
        self.labels: dict[tuple[str, float], Label] = {}
        self.timeline: list[TimelinePoint] = []
        self.latencies: list[float] = []
        self.produced = 0
        self.live_t0: float | None = None
        self.metrics_url = ""
        self.scrape: dict[str, Any] = {}

    def elapsed(self) -> float:
        return 0.0 if self.live_t0 is None else time.monotonic() - self.live_t0

    async def main(self) -> tuple[dict[str, Any], list[TimelinePoint]]:
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                self.console.note("stopping (Ctrl-C again to abort) ...")
                self.stop.set()
            elif main_task is not None:
                main_task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            if await self._initial_model():
                try:
                    await self._run_daemon()
                except* app.ShutdownTimeoutError:
                    self.console.note("the daemon missed its shutdown deadline; stopped anyway")
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        wall = self.elapsed()
        extra: dict[str, Any] = {
            "mode": "live",
            "produced": self.produced,
            "metrics_url": self.metrics_url,
            "metrics_scrape": self.scrape,
            "interrupted": signals > 0,
        }
        if self.latencies:
            lat = sorted(self.latencies)
            extra["latency_s"] = {
                "p50": round(statistics.median(lat), 3),
                "p95": round(lat[int(0.95 * (len(lat) - 1))], 3),
            }
        return self.board.summary(wall_s=wall, extra=extra), self.timeline

    async def _initial_model(self) -> bool:
        """Simulate the history, train on it, promote it. False when stopped first."""
        plan, sim = self.plan, self.sim
        history = sim.advance(plan.history_s)
        self.console.note(
            f"simulated {plan.history_s:.0f}s of history: {len(history):,} records from "
            f"{plan.sites} sites x {plan.sensors} sensors; training the initial model ..."
        )
        train = make_trainer(plan)
        if train is None:  # pragma: no cover - the model is part of every build
            self.console.note("no model in this build: nothing to serve")
            return False
        version = self.store.new_version()
        started = time.monotonic()
        job = asyncio.ensure_future(
            in_daemon_thread(lambda: train(history, sim.features, version, None))
        )
        stopper = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait({job, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not job.done():
            job.cancel()
            return False
        detector = job.result()
        self.store.save(detector)
        self.store.promote(detector.version)
        took = time.monotonic() - started
        self.board.retrained(
            RetrainEvent(
                0.0, "initial", detector.version, tuple(detector.sites), f"trained in {took:.1f}s"
            )
        )
        self.console.note(f"initial model {detector.version} trained in {took:.1f}s")
        return True

    async def _run_daemon(self) -> None:
        settings = self.settings
        instruments = app.make_metrics(settings)
        events: list[tuple[str, str, float]] = []
        instruments = dataclasses.replace(
            instruments, training=_Training(instruments.training, events)
        )
        holder = ModelHolder(
            self.store,
            instruments.serving,
            device="cpu",
            features=self.sim.features,
            poll_interval_s=settings.store.poll_interval_s,
        )
        run = app.RunSpec(settings, self.store, None, None, self.bootstrap)
        state = app.DaemonState(run, holder, instruments)
        await holder.refresh()
        bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(holder.watch(self.stop))
            tg.create_task(
                serve_http(
                    settings.metrics.host,
                    settings.metrics.port,
                    metrics=instruments.render,
                    live=lambda: True,
                    ready=state.ready,
                    stop=self.stop,
                    bound=bound,
                )
            )
            tg.create_task(app.track_readiness(state, self.stop))
            tg.create_task(app.serve(tg, state, self.stop))
            timeout = settings.service.shutdown_timeout_s
            tg.create_task(app.shutdown_deadline(self.stop, state.finished, timeout))
            port = await bound
            self.metrics_url = f"http://{settings.metrics.host}:{port}/metrics"
            self.console.note(f"metrics at {self.metrics_url}")
            if hasattr(self.console, "set_header"):
                self.console.set_header(f"metrics {self.metrics_url}   broker {self.bootstrap}")
            self.console.note("waiting for the daemon to join its consumer group ...")
            if not await self._until(state.ready, timeout_s=60.0):
                self.console.note("the daemon did not become ready; stopping")
                self.stop.set()
                return
            self.live_t0 = time.monotonic()
            self.console.note(f"daemon ready; streaming {self.plan.rate:.0f} records/s")
            tg.create_task(self._produce())
            tg.create_task(self._consume())
            tg.create_task(self._view(holder, events))
            tg.create_task(self._finish())

    async def _until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until `predicate()` holds (True), or stop/timeout (False)."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if self.stop.is_set() or time.monotonic() > deadline:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=0.1)
        return True

    async def _produce(self) -> None:
        """Send the simulated stream at the plan's rate, in real time."""
        spec = kafka_spec(self.settings.kafka, self.bootstrap)
        sink = KafkaSink(spec)
        if not await sink.start(self.stop):
            return
        plan, sim = self.plan, self.sim
        shift = time.time() - (sim.spec.start_ts + plan.history_s)
        try:
            pending: list[Any] = []
            while not self.stop.is_set():
                elapsed = min(self.elapsed(), plan.duration_s)
                records = sim.advance(plan.history_s + elapsed)
                outputs = []
                for r in records:
                    shifted = dataclasses.replace(r, ts=round(r.ts + shift, 6))
                    self.labels[(r.site, shifted.ts)] = r.label
                    outputs.append((r.site.encode(), encode_record(shifted, sim.features)))
                if outputs:
                    acks = await asyncio.gather(*pending, return_exceptions=True)
                    if failed := [e for e in acks if isinstance(e, BaseException)]:
                        log.warning("a produce batch was not acknowledged: %s", failed[0])
                    try:
                        pending = list(await sink.send_to(spec.input_topic, outputs))
                    except TransientError as exc:
                        log.warning("could not produce %d records: %s", len(outputs), exc)
                        pending = []
                    self.produced += len(outputs)
                if elapsed >= plan.duration_s:
                    break
                await asyncio.sleep(0.1)
            if pending:  # the last acknowledgements, unless the broker is gone
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5.0):
                        await asyncio.gather(*pending, return_exceptions=True)
        finally:
            self.produced_all.set()
            await app.close_quietly("demo producer", sink.stop())

    async def _consume(self) -> None:
        """Read the daemon's score records: they feed the view and the summary."""
        base = kafka_spec(self.settings.kafka, self.bootstrap)
        spec = dataclasses.replace(
            base, input_topic=base.output_topic, group_id="streamvae-demo-view"
        )
        source = KafkaSource(spec)
        if not await source.start(self.stop):
            return
        try:
            while not self.stop.is_set():
                fetched = await source.fetch(2000, 0.2)
                if self.produced_all.is_set() and not self.labels:
                    self.all_scored.set()
                wall = time.time()
                for payload, _ in fetched:
                    try:
                        rec = decode_score(payload)
                    except ValueError as exc:
                        log.warning("unreadable score record: %s", exc)
                        continue
                    label = self.labels.pop((rec.site, round(rec.ts, 6)), None)
                    if label is None:
                        continue  # a duplicate after a redelivery
                    self.latencies.append(max(0.0, wall - rec.ts))
                    outcome = Outcome(
                        rec.site,
                        rec.ts,
                        rec.score,
                        rec.threshold,
                        rec.anomaly,
                        rec.status,
                        rec.model_version,
                        top_sensors(rec.contributions),
                    )
                    self.board.add(outcome, label, now=self.elapsed())
                    flagged = rec.anomaly or (rec.status == "warming" and rec.score > rec.threshold)
                    self.timeline.append(
                        TimelinePoint(
                            rec.site, rec.ts, rec.score, rec.threshold, flagged, label.anomaly
                        )
                    )
        finally:
            await app.close_quietly("demo consumer", source.stop())

    async def _view(self, holder: ModelHolder, events: list[tuple[str, str, float]]) -> None:
        """Refresh the terminal view; turn retrainer outcomes into model events."""
        serving = holder.current.version if holder.current is not None else None
        known = set(getattr(holder.current, "sites", ()))
        seen, detail = 0, "from the store"
        while not self.stop.is_set():
            for outcome, reason, duration in events[seen:]:
                if outcome == "promoted":
                    detail = f"trained in {duration:.1f}s" + (
                        "" if reason == "ok" else f" ({reason})"
                    )
                else:
                    text = f"{reason}, {duration:.1f}s"
                    self.board.retrained(RetrainEvent(self.elapsed(), outcome, "-", (), text))
            current = holder.current
            if current is not None and current.version != serving:
                serving = current.version
                sites = set(getattr(current, "sites", ()))
                added = tuple(sorted(sites - known))
                known = sites
                self.board.retrained(
                    RetrainEvent(self.elapsed(), "promoted", serving, added, detail)
                )
                detail = "from the store"
            seen = len(events)
            self.console.show(self.board.snapshot(self.elapsed()))
            try:
                async with asyncio.timeout(0.5):
                    await self.stop.wait()
            except TimeoutError:
                pass
        self.console.show(self.board.snapshot(self.elapsed()))

    async def _finish(self) -> None:
        """After the duration: wait until every produced record is scored, then stop."""
        produced = asyncio.ensure_future(self.produced_all.wait())
        stopped = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait({produced, stopped}, return_when=asyncio.FIRST_COMPLETED)
        produced.cancel()
        stopped.cancel()
        if self.stop.is_set():
            return
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                await self.all_scored.wait()
        except TimeoutError:
            log.warning(
                "%d records not scored %.0fs after the end", len(self.labels), DRAIN_TIMEOUT_S
            )
        self.scrape = await _scrape(self.metrics_url)
        self.stop.set()


async def _scrape(url: str) -> dict[str, Any]:
    """GET the daemon's /metrics once, as a user would: status and a few counters."""
    host, _, rest = url.removeprefix("http://").partition(":")
    port, _, path = rest.partition("/")
    try:
        async with asyncio.timeout(5.0):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                f"GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            body = await reader.read()
            writer.close()
            await writer.wait_closed()
    except (OSError, TimeoutError, ValueError) as exc:
        return {"ok": False, "error": str(exc)}
    head, _, text = body.decode(errors="replace").partition("\r\n\r\n")
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    return {"ok": head.startswith("HTTP/1.1 200"), "samples": len(samples)}
