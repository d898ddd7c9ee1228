"""End-to-end throughput, latency and memory of the daemon against raw Kafka pass-through.

    PYTHONPATH=. python -m bench.throughput [--records N] [--quick] [--soak-seconds 300]

One run, one embedded broker (Tansu, memory storage), one backlog of N synthetic records
(38 sensors, 14 sites, keyed by site over a multi-partition input topic):

1. raw pass-through: `bench.throughput_io raw` (own process) consumes the backlog in its
   own group: orjson-decode each record, produce a tiny output per record, commit per
   fetched batch. The I/O ceiling of a naive Python consumer on this machine.
2. the daemon: `python -m streamvae run --config <generated config>` with the default
   model architecture (trained for a few epochs on the same synthetic data: scoring cost
   depends on the architecture, not on the fit) and default batching/scoring settings.

Throughput for both = N / (last commit seen by a 20 ms poller − earliest `scored_at` on
the output topic): the backlog (drain) rate.

Latency: a paced producer offers a rate with `ts` = send time and a reader takes
(receive time − ts) from the output topic; each phase runs a fresh worker on fresh
topics. A backlog drain runs nothing else, but a paced load also runs the producer, the
reader and the broker's produce path on the same cores, so the maximum offered load is
measured by a ramp (steps of the backlog rate; a step is sustained when the harness
offered what was asked, everything arrived and p99 stayed under a second). Then
`--repeat` interleaved rounds offer 25 %, 50 % and 90 % of that maximum to the daemon, the
raw pass-through and the floor (the reader on the input topic itself: one hop, no worker),
and the report takes medians. CPU of the worker, the broker and the bench process is
sampled per phase. Peak RSS of the daemon is sampled with psutil every 100 ms;
`--soak-seconds` adds a sustained run at 90 % of the maximum and reports RSS growth.
Results replace the section between `<!-- throughput:start -->` and
`<!-- throughput:end -->` in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
from aiokafka import AIOKafkaProducer

from bench import throughput_io as tio
from bench.report import THROUGHPUT_MARKERS, cpu_model
from streamvae.broker import EmbeddedBroker
from streamvae.config import ServiceSettings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
START, END = THROUGHPUT_MARKERS
PARTITIONS = 4
LOADS = (0.25, 0.5, 0.9)
# of the backlog rate, until one fails; the sustained maximum has been 20-30 % of it on
# this 2-core machine (a run whose first step, then 30 %, failed had no maximum at all)
RAMP = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
SUSTAINED_P99_MS = 1000.0
TAIL_S = 2.0
SOAK_DRAIN_S = 60.0  # the soak's wait for outstanding acks (latency_phase `bounded`)
WARM_MS, WARM_MAX_S = 100.0, 60.0
WORKERS = ("daemon", "raw", "floor")


@dataclass(frozen=True)
class RssDrift:
    """Two views of RSS over a run that `RssSampler.growth` (max late over median early,
    the conservative figure the targets are judged by) mixes up: `median_growth` compares
    the median of the last 10 % with the median of 10-20 % (a working set that swings by
    tens of MiB around a flat level counts as growth in the max/median figure, not here);
    `slope_mib_per_min` is the least-squares slope over the second half of the run, what a
    leak shows as and a one-off step early on does not."""

    median_growth: float
    slope_mib_per_min: float


def rss_windows(
    samples: Sequence[tuple[float, int]], a: float, b: float
) -> tuple[list[int], list[int]]:
    """RSS samples of a run from `a` to `b` in its early window (10-20 % of it) and its
    late one (the last 10 %): the windows every growth figure of the benches compares."""
    span = b - a
    early = [r for t, r in samples if a + 0.1 * span <= t <= a + 0.2 * span]
    late = [r for t, r in samples if b - 0.1 * span <= t <= b]
    return early, late


def rss_drift(samples: Sequence[tuple[float, int]], a: float, b: float) -> RssDrift | None:
    """`RssDrift` of the (time, RSS bytes) samples between `a` and `b`."""
    early, late = rss_windows(samples, a, b)
    half = [(t, r) for t, r in samples if (a + b) / 2 <= t <= b]
    if not early or not late or len(half) < 2:
        return None
    t, r = np.array(half, dtype=np.float64).T
    slope = float(np.polyfit(t - t[0], r / (1 << 20), 1)[0]) if np.ptp(t) > 0 else 0.0
    return RssDrift(float(np.median(late)) / float(np.median(early)) - 1, slope * 60.0)


class RssSampler:
    """Samples a process's RSS and CPU seconds (user + system) every `every_s` in a
    thread, with `tree` its child processes included (the daemon's serving workers): peak
    RSS, RSS series, CPU used between two times. CPU per record is far less sensitive to other
    jobs on a shared machine than records/s."""

    def __init__(self, pid: int, every_s: float = 0.1, *, tree: bool = False) -> None:
        self._proc = psutil.Process(pid)
        self._tree = tree
        self._every = every_s
        self.samples: list[tuple[float, int]] = []
        self.cpu: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                now, rss, times = time.time(), self._proc.memory_info().rss, self._proc.cpu_times()
                cpu = times.user + times.system
                for child in self._proc.children(recursive=True) if self._tree else ():
                    with contextlib.suppress(psutil.NoSuchProcess):
                        rss += child.memory_info().rss
                        child_times = child.cpu_times()
                        cpu += child_times.user + child_times.system
            except psutil.NoSuchProcess:
                return
            self.samples.append((now, rss))
            self.cpu.append((now, cpu))
            self._stop.wait(self._every)

    @property
    def peak(self) -> int:
        return max((r for _, r in self.samples), default=0)

    def between(self, a: float, b: float) -> list[int]:
        return [r for t, r in self.samples if a <= t <= b]

    def growth(self, a: float, b: float) -> tuple[int, int, float] | None:
        """RSS growth over a run from `a` to `b`: (median over 10-20 % of it, max over its
        last 10 %, max / median − 1); None without samples in either window."""
        early, late = rss_windows(self.samples, a, b)
        if not early or not late:
            return None
        median, peak = float(np.median(early)), max(late)
        return int(median), peak, peak / median - 1

    def drift(self, a: float, b: float) -> RssDrift | None:
        """Like-for-like views of the same run (see `RssDrift`); None without samples."""
        return rss_drift(self.samples, a, b)

    def cpu_between(self, a: float, b: float) -> float:
        """CPU seconds used from time `a` to `b` (to within one sampling interval)."""
        before = [c for t, c in self.cpu if t <= a] or [self.cpu[0][1]]
        after = [c for t, c in self.cpu if t >= b] or [self.cpu[-1][1]]
        return after[0] - before[-1]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


#: `--compare BENCH_TREE=<path>`: run that variant's daemon from another checkout (e.g. a
#: `git worktree` of the previous commit): a before/after of a code change in one run.
TREE = "BENCH_TREE"


@dataclass
class Child:
    """A subprocess logging to a file."""

    args: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> Child:
        overrides = dict(self.env)
        root = Path(overrides.pop(TREE, ROOT))  # `--compare BENCH_TREE=<checkout>`
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(root), **overrides}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *self.args], stdout=out, stderr=out, env=env, cwd=root
            )
        return self

    def wait_log(self, pattern: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.log.read_text(errors="replace")):
                return
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.1)
        tail = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{pattern!r} not logged in {timeout}s:\n{tail}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def train_model(store: Path, seed: int, epochs: int) -> str:
    """Default architecture (config defaults), a few epochs on synthetic data, promoted."""
    import dataclasses

    import torch

    from streamvae.artifacts import ModelStore
    from streamvae.config import load_settings
    from streamvae.detector import train_detector
    from streamvae.offline import specs_from_settings

    torch.set_num_threads(1)  # 2 OpenMP threads on a busy 2-core box are ~8x slower
    model, train, thresh = specs_from_settings(load_settings(None))
    values, site = tio.synthetic_values(14 * 800, seed + 1)
    detector = train_detector(
        values,
        [tio.site_name(s) for s in site.tolist()],
        features=tuple(f"m{i:02d}" for i in range(tio.SENSORS)),
        model_spec=model,
        train_spec=dataclasses.replace(train, seed=seed, max_epochs=epochs),
        threshold_spec=dataclasses.replace(thresh, min_site_records=50),
        device="cpu",
        version="bench-1",
    )
    ms = ModelStore(store)
    version = ms.save(detector)
    ms.promote(version)
    return f"hidden={list(model.hidden)} latent={model.latent_dim} K={model.importance_samples}"


def write_config(
    path: Path,
    bootstrap: str,
    topics: tuple[str, str, str],
    store: Path,
    *,
    device: str,
    workers: int,
) -> None:
    path.write_text(
        "\n".join(
            [
                "[kafka]",
                f'bootstrap_servers = "{bootstrap}"',
                'group_id = "bench-daemon"',
                f'input_topic = "{topics[0]}"',
                f'output_topic = "{topics[1]}"',
                f'dead_letter_topic = "{topics[2]}"',
                "session_timeout_ms = 10000",
                "[model]",
                f'device = "{device}"',
                "[store]",
                f'path = "{store}"',
                "[metrics]",
                "port = 0",
                "[service]",
                f"workers = {workers}",
                # serving only: no retraining pass may start mid-measurement (the buffer
                # still receives every scored batch); state in the run's own directory
                "[retraining]",
                "enabled = false",
                f'state_dir = "{path.with_suffix(".state")}"',
                "",
            ]
        )
    )


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


async def latency_phase(
    bootstrap: str,
    *,
    topic: str,
    out: str,
    payloads: tio.Payloads,
    rate: float,
    seconds: float,
    warmup: float,
    inputs: bool = False,
    bounded: bool = False,
) -> dict[str, float]:
    """Offer `rate` records/s to `topic` for `seconds` (after a warm-up, `warm_up`) and
    read `out`. Latency = receive time − ts over the records sent after the first second;
    `inputs`: `out` is the input topic itself (the floor control). `bounded` (the soak):
    stop sending by SOAK_DRAIN_S after the phase's end (`tio.paced`), then wait at most
    SOAK_DRAIN_S each for the broker's acks and the producer's close, so that a broker
    that fell behind cannot stall the run (Tansu's memory storage slows down as a
    topic grows to millions of records)."""
    reader = tio.LatencyReader(bootstrap, out, inputs=inputs)
    task = asyncio.create_task(reader.run())
    await reader.started()
    producer = tio.paced_producer(bootstrap)
    await producer.start()
    try:
        sent = await warm_up(producer, reader, topic, payloads, warmup)
        t0 = time.time()
        sent = await tio.paced(
            producer,
            topic,
            payloads,
            rate=rate,
            seconds=seconds,
            partitions=PARTITIONS,
            offset=sent,
            ack_timeout_s=SOAK_DRAIN_S if bounded else None,
        )
        t1 = time.time()
    finally:
        if bounded:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SOAK_DRAIN_S):
                    await producer.stop()
        else:
            await producer.stop()
    await asyncio.sleep(TAIL_S)  # let the tail arrive
    reader.stop()
    await task
    rows = [r for r in reader.rows if t0 + 1.0 <= r[0] <= t1]  # skip the first second
    e2e = [(seen - ts) * 1000 for ts, _, seen in rows]
    scored = [(sa - ts) * 1000 for ts, sa, _ in rows]
    return {
        "asked": rate,
        "offered": sent / seconds,
        "sent": sent,
        "received": sum(1 for r in reader.rows if t0 <= r[0] <= t1),
        "p50": pct(e2e, 50),
        "p95": pct(e2e, 95),
        "p99": pct(e2e, 99),
        "max": max(e2e, default=float("nan")),
        "scored_p50": pct(scored, 50),
        "scored_p99": pct(scored, 99),
        "t0": t0,
        "t1": t1,
    }


async def warm_up(
    producer: AIOKafkaProducer,
    reader: tio.LatencyReader,
    topic: str,
    payloads: tio.Payloads,
    least_s: float,
) -> int:
    """200 records/s for at least `least_s` and until the reader sees a record within
    WARM_MS of its send time (at most WARM_MAX_S): the worker has joined its group and
    caught up. A fixed warm-up was not enough: the group join on Tansu took 3 to 7 s, and
    the measured phase then queued behind the unread warm-up records (~1 s of latency
    at its start). Returns the records sent."""
    sent = 0
    start = time.monotonic()
    while time.monotonic() - start < WARM_MAX_S:
        sent += await tio.paced(
            producer, topic, payloads, rate=200, seconds=0.5, partitions=PARTITIONS, offset=sent
        )
        last = reader.rows[-1] if reader.rows else None
        if time.monotonic() - start >= least_s and last and last[2] - last[0] < WARM_MS / 1000:
            return sent
    raise RuntimeError(f"the worker did not catch up within {WARM_MAX_S:.0f} s of warm-up")


def sustained(phase: dict[str, float]) -> bool:
    """The system kept up with a paced phase: the harness offered what was asked (within
    5 %), every record sent arrived within TAIL_S of the phase's end, and p99 stayed
    under SUSTAINED_P99_MS (no queue building up)."""
    return (
        phase["offered"] >= 0.95 * phase["asked"]
        and phase["received"] == phase["sent"]
        and phase["p99"] <= SUSTAINED_P99_MS
    )


@dataclass(frozen=True)
class Measure:
    """One pass over the backlog: records/s, and CPU µs per record of the process under
    test and of the broker over the same window."""

    rate: float
    cpu_us: float
    broker_us: float


def measured(n: int, window: tuple[float, float], proc: RssSampler, broker: RssSampler) -> Measure:
    first, done = window
    return Measure(
        n / (done - first),
        proc.cpu_between(first, done) / n * 1e6,
        broker.cpu_between(first, done) / n * 1e6,
    )


def broker_pid() -> int:
    """The Tansu process started by EmbeddedBroker (a child of this process)."""
    for child in psutil.Process().children():
        if "--storage-engine" in child.cmdline():
            return child.pid
    raise RuntimeError("embedded broker process not found")


@dataclass
class Run:
    raw: list[Measure] = field(default_factory=list)
    daemon: list[Measure] = field(default_factory=list)
    variants: dict[str, list[Measure]] = field(default_factory=dict)
    raw_rss: int = 0
    daemon_rss: int = 0
    backlog_rate: float = 0.0  # median records/s of the daemon's passes over the backlog
    ramp: list[dict[str, float]] = field(default_factory=list)
    sustained: float = 0.0  # highest paced rate sustained (records/s offered)
    phases: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # by worker
    soak: dict[str, float] | None = None
    soak_growth: float | None = None
    soak_rss: tuple[int, int] | None = None
    soak_drift: RssDrift | None = None


def variants(specs: list[str]) -> list[tuple[str, dict[str, str]]]:
    """`--compare NAME=VALUE[,NAME=VALUE]` → (label, environment overrides for the daemon)."""
    out = []
    for spec in specs:
        env = dict(item.split("=", 1) for item in spec.split(","))
        out.append((spec, env))
    return out


def start_daemon(
    args: argparse.Namespace,
    broker: EmbeddedBroker,
    tmp: Path,
    tag: str,
    topics: tuple[str, str, str],
    *,
    env: dict[str, str] | None = None,
) -> tuple[Child, RssSampler]:
    """`streamvae run` in group `bench-daemon-<tag>` on (input, output, dead-letter)
    topics; the output and dead-letter topics are created here."""
    broker.create_topic(topics[1], PARTITIONS)
    broker.create_topic(topics[2], 1)
    cfg = tmp / f"daemon-{tag}.toml"
    write_config(
        cfg,
        broker.bootstrap_servers,
        topics,
        tmp / "models",
        device=args.device,
        workers=args.workers,
    )
    cfg.write_text(cfg.read_text().replace('"bench-daemon"', f'"bench-daemon-{tag}"'))
    daemon = Child(
        ["-m", "streamvae", "run", "--config", str(cfg)], tmp / f"daemon-{tag}.log", env=env or {}
    ).start()
    assert daemon.proc is not None
    return daemon, RssSampler(daemon.proc.pid, tree=True)


def start_raw(bootstrap: str, topics: tuple[str, str], group: str, log: Path, reset: str) -> Child:
    """The raw pass-through worker (bench/throughput_io.py) from `topics[0]` to `topics[1]`."""
    return Child(
        ["-m", "bench.throughput_io", "raw", "--bootstrap", bootstrap, "--topic", topics[0],
         "--out-topic", topics[1], "--group", group, "--reset", reset],
        log,
    ).start()  # fmt: skip


def daemon_run(
    args: argparse.Namespace,
    broker: EmbeddedBroker,
    *,
    tmp: Path,
    ends: dict[int, int],
    tag: str,
    env: dict[str, str],
    broker_cpu: RssSampler,
) -> tuple[Measure, Child, RssSampler]:
    """Start a daemon (own group and output topics) on the backlog; its records/s."""
    bootstrap = broker.bootstrap_servers
    daemon, sampler = start_daemon(
        args, broker, tmp, tag, ("in", f"scores-{tag}", f"dead-{tag}"), env=env
    )
    window = asyncio.run(
        measure_rate(bootstrap, f"bench-daemon-{tag}", f"scores-{tag}", ends, args.records)
    )
    return measured(args.records, window, sampler, broker_cpu), daemon, sampler


def run(args: argparse.Namespace, tmp: Path) -> tuple[Run, str]:
    result = Run()
    with EmbeddedBroker(log_path=tmp / "tansu.log") as broker:
        bootstrap = broker.bootstrap_servers
        broker.create_topic("in", PARTITIONS)
        model = train_model(tmp / "models", args.seed, args.epochs)
        payloads = tio.Payloads.make(min(args.records, 20_000), args.seed)
        guess = asyncio.run(
            tio.produce_backlog(bootstrap, "in", payloads, args.records, PARTITIONS)
        )
        ends = asyncio.run(tio.highwaters(bootstrap, "in", guess))
        if sum(ends.values()) != args.records:
            raise RuntimeError(f"backlog ends {ends} do not add up to {args.records}")
        daemon: Child | None = None
        sampler: RssSampler | None = None
        broker_cpu = RssSampler(broker_pid())
        backlog_topics = ["in"]
        for r in range(args.repeat):
            broker.create_topic(f"raw-out-{r}", PARTITIONS)
            backlog_topics.append(f"raw-out-{r}")
            raw = start_raw(
                bootstrap,
                ("in", f"raw-out-{r}"),
                f"bench-raw-{r}",
                tmp / f"raw-{r}.log",
                "earliest",
            )
            assert raw.proc is not None
            raw_sampler = RssSampler(raw.proc.pid)
            window = asyncio.run(
                measure_rate(bootstrap, f"bench-raw-{r}", f"raw-out-{r}", ends, args.records)
            )
            raw.stop()
            raw_sampler.stop()
            m = measured(args.records, window, raw_sampler, broker_cpu)
            result.raw.append(m)
            result.raw_rss = max(result.raw_rss, raw_sampler.peak)
            print(
                f"[{r}] raw pass-through: {m.rate:,.0f} records/s, {m.cpu_us:.1f} µs CPU/record",
                flush=True,
            )

            for i, (name, env) in enumerate([*variants(args.compare), ("", {})]):
                if daemon is not None and sampler is not None:  # the default runs last
                    daemon.stop()
                    sampler.stop()
                tag = f"{r}v{i}" if name else f"{r}"
                backlog_topics += [f"scores-{tag}", f"dead-{tag}"]
                m, daemon, sampler = daemon_run(
                    args, broker, tmp=tmp, ends=ends, tag=tag, env=env, broker_cpu=broker_cpu
                )
                (result.variants.setdefault(name, []) if name else result.daemon).append(m)
                print(
                    f"[{r}] daemon {name or '(default)'}: {m.rate:,.0f} records/s, "
                    f"{m.cpu_us:.1f} µs CPU/record",
                    flush=True,
                )
        assert daemon is not None
        assert sampler is not None
        broker_cpu.stop()
        daemon.stop()
        sampler.stop()
        result.daemon_rss = sampler.peak
        result.backlog_rate = float(np.median([m.rate for m in result.daemon]))
        asyncio.run(tio.delete_topics(bootstrap, backlog_topics))
        latency(args, broker, tmp, payloads, result)
    return result, model


@dataclass
class Lab:
    """What every latency phase needs: a fresh worker on fresh topics each time."""

    args: argparse.Namespace
    broker: EmbeddedBroker
    tmp: Path
    payloads: tio.Payloads
    broker_cpu: RssSampler
    harness_cpu: RssSampler

    def phase(
        self,
        worker: str,
        tag: str,
        rate: float,
        seconds: float,
        env: dict[str, str] | None = None,
        *,
        bounded: bool = False,
    ) -> tuple[dict[str, float], RssSampler | None]:
        """One paced phase through `worker` (daemon | raw | floor) on new topics; the
        phase's figures and CPU cores per process, and the worker's sampler (stopped).

        Fresh topics and a fresh worker each time: Tansu's memory storage slows down as
        a topic grows (a plain consumer at 5k records/s: p50 13 ms / p99 44 ms on a new
        topic, 72 / 403 ms on one holding the 200k-record backlog), which would measure
        the test broker, not the daemon. Real Kafka finds offsets through its indexes."""
        broker, bootstrap = self.broker, self.broker.bootstrap_servers
        topics = (f"{worker}-{tag}-in", f"{worker}-{tag}-out", f"{worker}-{tag}-dead")
        broker.create_topic(topics[0], PARTITIONS)
        child: Child | None = None
        sampler: RssSampler | None = None
        if worker == "daemon":
            child, sampler = start_daemon(
                self.args, broker, self.tmp, f"lat-{tag}", topics, env=env
            )
        elif worker == "raw":
            broker.create_topic(topics[1], PARTITIONS)
            child = start_raw(
                bootstrap, topics[:2], f"raw-{tag}", self.tmp / f"raw-{tag}.log", "latest"
            )
            assert child.proc is not None
            sampler = RssSampler(child.proc.pid)
        try:
            phase = asyncio.run(
                latency_phase(
                    bootstrap,
                    topic=topics[0],
                    out=topics[0] if worker == "floor" else topics[1],
                    payloads=self.payloads,
                    rate=rate,
                    seconds=seconds,
                    warmup=0.5 if worker == "floor" else 2.0,
                    inputs=worker == "floor",
                    bounded=bounded,
                )
            )
        finally:
            if child is not None:
                child.stop()
            if sampler is not None:
                sampler.stop()
            made = {"daemon": 3, "raw": 2, "floor": 1}[worker]
            asyncio.run(tio.delete_topics(bootstrap, topics[:made]))
        samplers = {"broker": self.broker_cpu, "harness": self.harness_cpu}
        if sampler is not None:
            samplers["worker"] = sampler
        phase.update(cores(phase, samplers))
        print(
            f"{worker} {tag} ({phase['offered']:,.0f}/s of {rate:,.0f}): p50 {phase['p50']:.1f} "
            f"ms, p99 {phase['p99']:.1f} ms ({phase['received']}/{phase['sent']}); cores: "
            + ", ".join(f"{k} {phase[k]:.2f}" for k in samplers),
            flush=True,
        )
        return phase, sampler


def latency(
    args: argparse.Namespace,
    broker: EmbeddedBroker,
    tmp: Path,
    payloads: tio.Payloads,
    result: Run,
) -> None:
    """The ramp to the sustained maximum, then latency at LOADS of it through the daemon,
    the raw pass-through and the floor, then the soak."""
    lab = Lab(args, broker, tmp, payloads, RssSampler(broker_pid()), RssSampler(os.getpid()))
    try:
        # The backlog rate is a drain rate with nothing else running; a paced load also
        # runs the producer, the reader and the broker's produce path on the same cores.
        # The maximum offered load is the highest paced rate the whole setup sustains.
        # A step that fails is tried once more (one host hiccup on a shared machine
        # ruins a phase's p99); the ramp ends at the first step that fails twice.
        for i, frac in enumerate(RAMP):
            for attempt in range(2):
                phase, _ = lab.phase(
                    "daemon", f"ramp{i}-{attempt}", result.backlog_rate * frac, args.phase_seconds
                )
                phase["step"] = frac
                result.ramp.append(phase)
                if sustained(phase):
                    break
            if not sustained(phase):
                break
            result.sustained = phase["offered"]
        top = result.sustained or result.ramp[0]["offered"]
        # `repeat` rounds, each through every worker and load, interleaved so that the
        # machine's slow spells spread over all of them; the report takes medians.
        for r in range(args.repeat):
            for worker in WORKERS:
                for k, frac in enumerate(LOADS):
                    phase, sampler = lab.phase(worker, f"{r}-{k}", top * frac, args.phase_seconds)
                    phase["load"] = frac
                    result.phases.setdefault(worker, []).append(phase)
                    if worker == "daemon" and sampler is not None:
                        result.daemon_rss = max(result.daemon_rss, sampler.peak)
        if args.soak_seconds:
            phase, sampler = lab.phase("daemon", "soak", top * 0.9, args.soak_seconds, bounded=True)
            assert sampler is not None
            phase["load"] = 0.9
            result.soak = phase
            grown = sampler.growth(phase["t0"], phase["t1"])
            if grown is not None:
                result.soak_rss, result.soak_growth = grown[:2], grown[2]
            result.soak_drift = sampler.drift(phase["t0"], phase["t1"])
            result.daemon_rss = max(result.daemon_rss, sampler.peak)
    finally:
        lab.broker_cpu.stop()
        lab.harness_cpu.stop()


def cores(phase: dict[str, float], samplers: dict[str, RssSampler]) -> dict[str, float]:
    """CPU cores each sampled process used during a latency phase (CPU seconds / s)."""
    a, b = phase["t0"], phase["t1"]
    return {name: s.cpu_between(a, b) / (b - a) for name, s in samplers.items()}


async def measure_rate(
    bootstrap: str, group: str, out: str, ends: dict[int, int], n: int
) -> tuple[float, float]:
    """(first output's `scored_at`, time the last record's offset was committed)."""
    done = await tio.wait_committed(bootstrap, group, "in", ends, timeout_s=900)
    if done is None:
        raise RuntimeError(f"{group} did not commit {n} records in time")
    first = await tio.first_scored_at(bootstrap, out)
    return first, done


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def med(ms: list[Measure], attr: str) -> float:
    return float(np.median([getattr(m, attr) for m in ms]))


def row(label: str, ms: list[Measure], rss: str) -> str:
    runs = ", ".join(f"{m.rate:,.0f}" for m in ms)
    return (
        f"| {label} | {med(ms, 'rate'):,.0f} | {runs} | {med(ms, 'cpu_us'):.1f} | "
        f"{med(ms, 'broker_us'):.1f} | {rss} |"
    )


def report(args: argparse.Namespace, res: Run, model: str, load: tuple[float, float]) -> str:
    raw, daemon = med(res.raw, "rate"), med(res.daemon, "rate")
    cmd = "PYTHONPATH=. python -m bench.throughput " + " ".join(sys.argv[1:])
    lines = [
        START,
        "## Throughput",
        "",
        "<!-- generated by bench/throughput.py: do not edit by hand -->",
        f"- command: `{cmd.strip()}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}; device `{args.device}`; "
        f"load average {load[0]:.1f} at start, {load[1]:.1f} at end (shared machine)",
        f"- data: {args.records:,} synthetic records, 38 sensors, 14 sites, keyed by site over "
        f"{PARTITIONS} partitions; seed {args.seed}; embedded Tansu broker (memory storage)",
        f"- model: default architecture ({model}), {args.epochs} training epochs; default "
        "batching and scoring settings; retraining passes off (serving only)",
        f"- daemon: `service.workers = {args.workers}` "
        + (
            f"(the daemon and {args.workers - 1} serving worker process(es) in one consumer "
            "group; CPU and RSS are summed over them)"
            if args.workers > 1
            else "(one process)"
        ),
        "",
        f"Medians of {args.repeat} passes over the same backlog (each pass listed); CPU = "
        "user + system seconds of the process per record over the measured window, and of "
        "the broker over the same window.",
        "",
        "| | records/s | runs | CPU µs/record | broker CPU µs/record | peak RSS |",
        "|---|---:|---|---:|---:|---:|",
        row("raw pass-through (naive aiokafka loop)", res.raw, mib(res.raw_rss)),
        row("daemon (`streamvae run`)", res.daemon, mib(res.daemon_rss)),
    ]
    lines += [row(f"daemon with `{name}`", ms, "") for name, ms in res.variants.items()]
    lines += [
        "",
        f"Daemon / raw: **{daemon / raw:.0%}**.",
        "",
        *latency_report(args, res),
    ]
    lines += ["", END]
    return "\n".join(lines)


def _ms(p: dict[str, float] | None, a: str = "p50", b: str = "p99") -> str:
    return f"{p[a]:.1f} / {p[b]:.1f}" if p else ""


def _cores(p: dict[str, float]) -> str:
    return " / ".join(f"{p[k]:.2f}" for k in ("worker", "broker", "harness") if k in p)


def medians(phases: list[dict[str, float]]) -> dict[float, dict[str, float]]:
    """Per load: the median of every figure over the rounds."""
    out: dict[float, dict[str, float]] = {}
    for load in sorted({p["load"] for p in phases}):
        same = [p for p in phases if p["load"] == load]
        out[load] = {k: float(np.median([p[k] for p in same])) for k in same[0]}
    return out


def latency_report(args: argparse.Namespace, res: Run) -> list[str]:
    """The ramp, the latency table (daemon, raw control, floor) and the soak."""
    lines = [
        "",
        "### Latency",
        "",
        "End-to-end latency = time the score is read from the output topic − `ts` (the "
        "paced producer's send time); the first second of each phase is skipped; every "
        "phase runs a fresh worker on fresh topics (Tansu's memory storage slows down as a "
        "topic grows). Cores = CPU seconds per second of the worker / the broker / the "
        "bench process (paced producer + reader) during the phase, on this "
        f"{os.cpu_count()}-core machine.",
        "",
        "**Maximum offered load.** The backlog rate above is a drain rate with nothing else "
        "running. A paced load also runs the producer, the reader and the broker's produce "
        "path on the same cores, so the maximum offered load is measured as the highest "
        "paced rate the whole setup sustains: a ramp in steps of the backlog rate, each "
        f"step sustained when the harness offered what was asked (±5 %), every record "
        f"arrived within {TAIL_S:.0f} s of the step's end and p99 ≤ {SUSTAINED_P99_MS:.0f} ms.",
        "",
        "| step (of backlog rate) | asked /s | offered /s | p50 / p99 ms | received / sent "
        "| sustained | cores daemon / broker / harness |",
        "|---:|---:|---:|---:|---:|---|---:|",
    ]
    for p in res.ramp:
        lines.append(
            f"| {p['step']:.0%} | {p['asked']:,.0f} | {p['offered']:,.0f} | {_ms(p)} | "
            f"{p['received']:,.0f} / {p['sent']:,.0f} | {'yes' if sustained(p) else '**no**'} | "
            f"{_cores(p)} |"
        )
    top = (
        f"Maximum offered load sustained: **{res.sustained:,.0f} records/s** "
        f"({res.sustained / res.backlog_rate:.0%} of the backlog rate)."
        if res.sustained
        else "**No step was sustained**: the loads below are shares of the first step's "
        "offered rate."
    )
    lines += [
        "",
        top,
        "",
        f"Latency at shares of it: medians over {args.repeat} rounds (each round runs every "
        "worker at every load, interleaved; the daemon's p99 of each round in the last "
        "column). Controls at the same offered rates: the raw pass-through (same broker, "
        "producer and reader: two hops and the naive loop) and the floor (the reader reads "
        "the input topic itself: one hop, producer → broker → consumer, no worker at all):",
        "",
        "| load | offered /s | p50 ms | p95 ms | p99 ms | max ms | scored_at − ts p50 / p99 ms "
        "| raw pass-through p50 / p99 ms | floor (one hop) p50 / p99 ms "
        "| cores daemon / broker / harness | p99 per round ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    raw = medians(res.phases.get("raw", []))
    floor = medians(res.phases.get("floor", []))
    daemon = medians(res.phases.get("daemon", []))
    for load, p in daemon.items():
        rounds = ", ".join(f"{q['p99']:.0f}" for q in res.phases["daemon"] if q["load"] == load)
        lines.append(
            f"| {load:.0%} | {p['offered']:,.0f} | {p['p50']:.1f} | {p['p95']:.1f} | "
            f"{p['p99']:.1f} | {p['max']:.1f} | {_ms(p, 'scored_p50', 'scored_p99')} | "
            f"{_ms(raw.get(load))} | {_ms(floor.get(load))} | {_cores(p)} | {rounds} |"
        )
    if res.soak:
        p = res.soak
        lines.append(
            f"| 90% (soak, {args.soak_seconds:.0f} s) | {p['offered']:,.0f} | {p['p50']:.1f} "
            f"| {p['p95']:.1f} | {p['p99']:.1f} | {p['max']:.1f} | "
            f"{_ms(p, 'scored_p50', 'scored_p99')} | | | {_cores(p)} | |"
        )
    if res.soak_growth is not None and res.soak_rss is not None:
        lines += [
            "",
            f"Soak: {args.soak_seconds:.0f} s at 90 % of the maximum offered load (asked "
            f"{res.soak['asked']:,.0f}/s, offered {res.soak['offered']:,.0f}/s, "
            f"{res.soak['received']:,.0f} of {res.soak['sent']:,.0f} scores read back within "
            f"{TAIL_S:.0f} s of the end; the test broker slows down as its topics grow); RSS "
            f"{mib(res.soak_rss[0])} early → {mib(res.soak_rss[1])} late: growth "
            f"**{res.soak_growth:+.1%}**"
            + (
                f" (median to median {res.soak_drift.median_growth:+.1%}, second-half slope "
                f"{res.soak_drift.slope_mib_per_min:+.1f} MiB per minute)."
                if res.soak_drift is not None
                else "."
            ),
        ]
    return lines


def write_results(
    section: str, path: Path = RESULTS, markers: tuple[str, str] = (START, END)
) -> None:
    """Replace our own section (between the markers) or append it; never touch the rest."""
    start, end = markers
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="50k records, 4 s phases, 1 run")
    parser.add_argument("--repeat", type=int, default=3, help="raw/daemon runs (medians)")
    parser.add_argument("--phase-seconds", type=float, default=10.0)
    parser.add_argument("--soak-seconds", type=float, default=0.0)
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="VAR=VALUE[,VAR=VALUE]",
        help="also run the daemon with these environment overrides in every repeat "
        "(e.g. STREAMVAE_MODEL__THREADS=0; BENCH_TREE=<checkout> runs that checkout's "
        "daemon): a before/after in the same run",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--workers",
        type=int,
        default=ServiceSettings().workers,
        help="service.workers of the daemon (default: the product's service.workers default; "
        "--compare STREAMVAE_SERVICE__WORKERS=2 measures two processes in the same run)",
    )
    parser.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    args = parser.parse_args()
    if args.quick:
        args.records, args.phase_seconds, args.repeat = min(args.records, 50_000), 4.0, 1
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        res, model = run(args, Path(tmp))
    section = report(args, res, model, (load0, os.getloadavg()[0]))
    print(section)
    if not args.no_write:
        write_results(section)


if __name__ == "__main__":
    main()
