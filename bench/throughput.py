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
the output topic). Then, with the daemon caught up, a paced producer offers 25 %, 50 %
and 90 % of the daemon's measured rate with `ts` = send time; the latency is
(reader's receive time − ts) over the scores; `scored_at − ts` is reported next to it.
Peak RSS of the daemon is sampled with psutil every 100 ms throughout; `--soak-seconds`
adds a sustained 90 % run and reports RSS growth. Results replace the section between
`<!-- throughput:start -->` and `<!-- throughput:end -->` in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from bench import throughput_io as tio
from streamvae.broker import EmbeddedBroker

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
START, END = "<!-- throughput:start -->", "<!-- throughput:end -->"
PARTITIONS = 4
LOADS = (0.25, 0.5, 0.9)


class RssSampler:
    """Samples a process's RSS and CPU seconds (user + system) every `every_s` in a
    thread: peak RSS, RSS series, CPU used between two times. CPU per record is far less
    sensitive to other jobs on a shared machine than records/s."""

    def __init__(self, pid: int, every_s: float = 0.1) -> None:
        self._proc = psutil.Process(pid)
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
            except psutil.NoSuchProcess:
                return
            self.samples.append((now, rss))
            self.cpu.append((now, times.user + times.system))
            self._stop.wait(self._every)

    @property
    def peak(self) -> int:
        return max((r for _, r in self.samples), default=0)

    def between(self, a: float, b: float) -> list[int]:
        return [r for t, r in self.samples if a <= t <= b]

    def cpu_between(self, a: float, b: float) -> float:
        """CPU seconds used from time `a` to `b` (to within one sampling interval)."""
        before = [c for t, c in self.cpu if t <= a] or [self.cpu[0][1]]
        after = [c for t, c in self.cpu if t >= b] or [self.cpu[-1][1]]
        return after[0] - before[-1]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Child:
    """A subprocess logging to a file."""

    args: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> Child:
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT), **self.env)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *self.args], stdout=out, stderr=out, env=env, cwd=ROOT
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
    path: Path, bootstrap: str, topics: tuple[str, str, str], store: Path, device: str
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


async def latency_phases(
    bootstrap: str,
    *,
    topic: str,
    out: str,
    payloads: tio.Payloads,
    rate: float,
    seconds: float,
    soak: float,
    warmup: float = 0.0,
    loads: tuple[float, ...] = LOADS,
) -> tuple[list[dict[str, float]], tuple[float, float] | None]:
    reader = tio.LatencyReader(bootstrap, out)
    task = asyncio.create_task(reader.run())
    await reader.started()
    if warmup:  # a consumer that just started must join its group first (~3 s on Tansu)
        await tio.paced(bootstrap, topic, payloads, rate=200, seconds=warmup, partitions=PARTITIONS)
    results = []
    sent_total = 0
    soak_window = None
    for frac in (*loads, *((0.9,) if soak else ())):
        duration = soak if (soak and len(results) == len(loads)) else seconds
        t0 = time.time()
        sent = await tio.paced(
            bootstrap,
            topic,
            payloads,
            rate=rate * frac,
            seconds=duration,
            partitions=PARTITIONS,
            offset=sent_total,
        )
        sent_total += sent
        t1 = time.time()
        await asyncio.sleep(2.0)  # let the tail arrive
        rows = [r for r in reader.rows if t0 + 1.0 <= r[0] <= t1]  # skip the first second
        e2e = [(seen - ts) * 1000 for ts, _, seen in rows]
        scored = [(sa - ts) * 1000 for ts, sa, _ in rows]
        got = sum(1 for r in reader.rows if t0 <= r[0] <= t1)
        results.append(
            {
                "load": frac,
                "offered": sent / duration,
                "sent": sent,
                "received": got,
                "p50": pct(e2e, 50),
                "p95": pct(e2e, 95),
                "p99": pct(e2e, 99),
                "max": max(e2e, default=float("nan")),
                "scored_p50": pct(scored, 50),
                "scored_p99": pct(scored, 99),
            }
        )
        if duration == soak and len(results) == len(loads) + 1:
            soak_window = (t0, t1)
    reader.stop()
    await task
    return results, soak_window


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


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
    phases: list[dict[str, float]] = field(default_factory=list)
    raw_phases: list[dict[str, float]] = field(default_factory=list)
    soak_growth: float | None = None
    soak_rss: tuple[int, int] | None = None


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
    write_config(cfg, broker.bootstrap_servers, topics, tmp / "models", args.device)
    cfg.write_text(cfg.read_text().replace('"bench-daemon"', f'"bench-daemon-{tag}"'))
    daemon = Child(
        ["-m", "streamvae", "run", "--config", str(cfg)], tmp / f"daemon-{tag}.log", env=env or {}
    ).start()
    assert daemon.proc is not None
    return daemon, RssSampler(daemon.proc.pid)


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
        for r in range(args.repeat):
            broker.create_topic(f"raw-out-{r}", PARTITIONS)
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
        top = float(np.median([m.rate for m in result.daemon]))
        # Each latency phase runs on fresh topics with a fresh daemon (and a fresh raw
        # worker for the control): Tansu's memory storage slows down as a topic grows (a
        # plain consumer at 5k records/s: p50 13 ms / p99 44 ms on a new topic, 72 / 403 ms
        # on one holding the 200k-record backlog; the daemon at 6k/s: p99 94 ms on a new
        # topic, 257 ms on the same topic 36k records later), which would measure the test
        # broker, not the daemon. Real Kafka finds offsets through its indexes.
        for k, frac in enumerate((*LOADS, *((0.9,) if args.soak_seconds else ()))):
            soak = args.soak_seconds if k == len(LOADS) else 0.0
            topics = (f"lat-in-{k}", f"lat-scores-{k}", f"lat-dead-{k}")
            broker.create_topic(topics[0], PARTITIONS)
            daemon, sampler = start_daemon(args, broker, tmp, f"lat-{k}", topics)
            phases, soak_window = asyncio.run(
                latency_phases(
                    bootstrap,
                    topic=topics[0],
                    out=topics[1],
                    payloads=payloads,
                    rate=top,
                    seconds=args.phase_seconds,
                    soak=soak,
                    warmup=6.0,  # the new daemon joins its group first (~3 s on Tansu)
                    loads=() if soak else (frac,),
                )
            )
            result.phases += phases
            for p in phases:
                print(
                    f"load {p['load']:.0%} ({p['offered']:,.0f}/s): p50 {p['p50']:.1f} ms, "
                    f"p95 {p['p95']:.1f} ms, p99 {p['p99']:.1f} ms "
                    f"({p['received']}/{p['sent']})",
                    flush=True,
                )
            if soak_window is not None:
                a, b = soak_window
                early = sampler.between(a + 0.1 * (b - a), a + 0.2 * (b - a))
                late = sampler.between(b - 0.1 * (b - a), b)
                if early and late:
                    result.soak_rss = (int(np.median(early)), max(late))
                    result.soak_growth = max(late) / np.median(early) - 1
            daemon.stop()
            sampler.stop()
            result.daemon_rss = max(result.daemon_rss, sampler.peak)
        for k, frac in enumerate(LOADS):
            broker.create_topic(f"raw-lat-in-{k}", PARTITIONS)
            broker.create_topic(f"raw-lat-out-{k}", PARTITIONS)
            raw = start_raw(
                bootstrap,
                (f"raw-lat-in-{k}", f"raw-lat-out-{k}"),
                f"bench-raw-latency-{k}",
                tmp / f"raw-latency-{k}.log",
                "latest",
            )
            phases, _ = asyncio.run(
                latency_phases(
                    bootstrap,
                    topic=f"raw-lat-in-{k}",
                    out=f"raw-lat-out-{k}",
                    payloads=payloads,
                    rate=top,  # the same absolute loads as the daemon's phases
                    seconds=args.phase_seconds,
                    soak=0.0,
                    warmup=6.0,
                    loads=(frac,),
                )
            )
            result.raw_phases += phases
            raw.stop()
    return result, model


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
        "End-to-end latency (produce time → score read from the output topic), paced load as a "
        "share of the daemon's measured rate; first second of each phase skipped; a fresh "
        "daemon on fresh topics (Tansu's memory storage slows down as a topic grows). The "
        "control is the raw pass-through at the same offered loads (same broker, producer and "
        "reader: what the harness and the broker cost by themselves):",
        "",
        "| load | offered records/s | p50 ms | p95 ms | p99 ms | max ms "
        "| scored_at−ts p50 / p99 ms | raw pass-through p50 / p99 ms (control) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    controls = {p["load"]: p for p in res.raw_phases}
    for p in res.phases:
        c = controls.get(p["load"]) if p is not res.phases[-1] or not res.soak_rss else None
        control = f"{c['p50']:.1f} / {c['p99']:.1f}" if c else ""
        lines.append(
            f"| {p['load']:.0%} | {p['offered']:,.0f} | {p['p50']:.1f} | {p['p95']:.1f} | "
            f"{p['p99']:.1f} | {p['max']:.1f} | {p['scored_p50']:.1f} / {p['scored_p99']:.1f} "
            f"| {control} |"
        )
    if res.soak_growth is not None and res.soak_rss is not None:
        lines += [
            "",
            f"Soak: {args.soak_seconds:.0f} s at 90 % load; RSS {mib(res.soak_rss[0])} early → "
            f"{mib(res.soak_rss[1])} late: growth **{res.soak_growth:+.1%}**.",
        ]
    lines += ["", END]
    return "\n".join(lines)


def write_results(section: str, path: Path = RESULTS) -> None:
    """Replace our own section (between the markers) or append it; never touch the rest."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + section + rest.split(END, 1)[1]
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
        "(e.g. STREAMVAE_MODEL__THREADS=0): a before/after in the same run",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
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
