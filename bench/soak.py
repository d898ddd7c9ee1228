"""The daemon's memory under sustained load at 90 % of its maximum, with no broker in the way.

    PYTHONPATH=. python -m bench.soak [--seconds 300] [--load 0.9] [--quick]

Why not through Kafka: the test broker's memory storage cannot carry a paced load for
minutes (docs/performance.md: even with no worker at all it stops serving fetches after
about 80 s at 5k records/s), so bench/throughput's soak measures the daemon at whatever
the broker still delivers. Here the daemon reads its own stdin replay path instead:
`streamvae run --input - --output -`, the same process, decoder, micro-batcher, detector,
output encoder, metrics endpoint and retraining buffer as with Kafka, with the file
source and sink (streamvae.replay) as the edges. Only the Kafka client is left out.

1. burst: the harness writes synthetic records (bench.throughput_io: 38 sensors, 14
   sites) to the daemon's stdin as fast as the pipe takes them (a full pipe blocks the
   writer: the daemon is the bound); the rate of score lines read back from its stdout
   after the first 30 % is the drain rate.
2. ramp: paced steps of 50 %, 60 %, … 100 % of the drain rate (20 ms ticks, `ts` = send
   time), each on a fresh daemon; the maximum offered load is the highest rate of a step
   that kept up, with bench/throughput's test (offered within 5 % of what was asked,
   every record scored, p99 under a second). Latency = read time − `ts` of the last score
   line of each chunk read.
3. soak: `--load` of that maximum for `--seconds` on a fresh daemon. RSS of the daemon
   (psutil, every 100 ms): growth = max over the last 10 % of the run / median over
   10-20 % − 1, as in bench/throughput (the figure the target is judged by); beside it
   the like-for-like median growth and the slope over the second half of the run
   (bench.throughput.RssDrift: a working set that swings around a flat level, or one
   step when the in-flight bound first fills, is not a leak; a steady slope is); also per
   minute, with CPU per record and p99.

Every phase also reports the harness's own CPU (it shares the cores) and the host's steal
time (/proc/stat: CPU the hypervisor gave to other machines), which on a shared VM moves
the daemon's rate from one phase to the next.

After each phase stdin is closed, and every record sent must come back as a score line
(nothing lost, nothing rejected: the records are valid).

Results replace the section between `<!-- soak:start -->` and `<!-- soak:end -->` in
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from bench import throughput_io as tio
from bench.report import SOAK_MARKERS, cpu_model
from bench.throughput import (
    ROOT,
    RssSampler,
    pct,
    sustained,
    train_model,
    write_config,
)
from bench.throughput import write_results as write_section

MARKERS = SOAK_MARKERS
TICK_S = 0.02
CHUNK = 2048  # records per write when unpaced
READ = 1 << 20
RAMP = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # of the burst rate


@dataclass
class Reader:
    """Counts the score lines a daemon writes to `fd` (a thread); samples latency from the
    last complete line of each read."""

    fd: int
    counts: list[tuple[float, int]] = field(default_factory=list)
    latencies_ms: list[tuple[float, float]] = field(default_factory=list)
    lines: int = 0

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        rest = b""
        while chunk := os.read(self.fd, READ):
            now = time.time()
            rest += chunk
            cut = rest.rfind(b"\n")
            if cut < 0:
                continue
            done, rest = rest[:cut], rest[cut + 1 :]
            self.lines += done.count(b"\n") + 1
            self.counts.append((now, self.lines))
            last = done[done.rfind(b"\n") + 1 :]
            self.latencies_ms.append((now, (now - float(orjson.loads(last)["ts"])) * 1e3))

    def rate(self, a: float, b: float) -> float:
        inside = [(t, n) for t, n in self.counts if a <= t <= b]
        if len(inside) < 2:
            return 0.0
        (t0, n0), (t1, n1) = inside[0], inside[-1]
        return (n1 - n0) / (t1 - t0)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


@dataclass
class Phase:
    """One daemon fed at `asked` records/s; `sampler` and `reader` keep its series."""

    asked: float  # records/s; inf = as fast as the pipe takes them
    sampler: RssSampler
    reader: Reader
    harness: RssSampler  # this process: feeder, reader, samplers
    sent: int = 0
    base: int = 0  # records sent before t0 (warm-up)
    t0: float = 0.0
    t1: float = 0.0
    exit_code: int | None = None
    steal_s: float | None = None  # CPU time the hypervisor took from this VM over t0..t1

    @property
    def harness_cores(self) -> float:
        return self.harness.cpu_between(self.t0, self.t1) / (self.t1 - self.t0)

    @property
    def steal(self) -> str:
        """Steal as a share of the machine's CPU time over the phase ("" if unknown)."""
        if self.steal_s is None:
            return ""
        return f"{self.steal_s / ((self.t1 - self.t0) * (os.cpu_count() or 1)):.0%}"

    @property
    def scored(self) -> int:
        return self.reader.lines

    @property
    def cores(self) -> float:
        return self.sampler.cpu_between(self.t0, self.t1) / (self.t1 - self.t0)

    @property
    def offered(self) -> float:
        return (self.sent - self.base) / (self.t1 - self.t0)

    @property
    def drain_rate(self) -> float:
        """Score lines per second read back after the first 30 % (the unpaced phase)."""
        return self.reader.rate(self.t0 + 0.3 * (self.t1 - self.t0), self.t1)

    def latencies(self) -> list[float]:
        """Latency samples (ms), the first second skipped."""
        return [ms for t, ms in self.reader.latencies_ms if self.t0 + 1 <= t <= self.t1]

    def kept_up(self) -> bool:
        """bench/throughput's test of a paced phase: offered what was asked (within 5 %),
        everything scored, p99 under a second."""
        return sustained(
            {
                "offered": self.offered,
                "asked": self.asked,
                "received": self.scored,
                "sent": self.sent,
                "p99": pct(self.latencies(), 99),
            }
        )


def steal_s() -> float | None:
    """Steal time of the whole machine so far (Linux /proc/stat), in seconds."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def start(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    with open(log, "ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "streamvae", "run", "--config", str(cfg),
             "--input", "-", "--output", "-"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env, cwd=ROOT,
        )  # fmt: skip


def phase(cfg: Path, log: Path, payloads: tio.Payloads, asked: float, seconds: float) -> Phase:
    """One daemon, fed at `asked` records/s for `seconds` after its first score line."""
    proc = start(cfg, log)
    assert proc.stdin is not None
    assert proc.stdout is not None
    sampler = RssSampler(proc.pid, tree=True)
    reader = Reader(proc.stdout.fileno())
    harness = RssSampler(os.getpid())
    out = Phase(asked, sampler, reader, harness)
    stdin = proc.stdin
    i = 0

    def send(n: int) -> None:
        nonlocal i
        stamp = repr(time.time()).encode()
        stdin.write(b"".join(payloads.record(i + k, stamp) + b"\n" for k in range(n)))
        stdin.flush()
        i += n

    try:
        while reader.lines == 0:  # warm: the model loads, the first batch is scored
            send(1)
            time.sleep(0.1)
            if proc.poll() is not None:
                raise RuntimeError(f"daemon exited {proc.returncode}: see {log}")
        out.t0 = time.time()
        steal0 = steal_s()
        end, base = out.t0 + seconds, i
        while (now := time.time()) < end:
            if asked == float("inf"):
                send(CHUNK)
                continue
            due = base + int(asked * (now - out.t0)) - i
            if due > 0:
                send(due)
            time.sleep(max(0.0, TICK_S - (time.time() - now)))
        out.t1 = time.time()
        steal1 = steal_s()
        if steal0 is not None and steal1 is not None:
            out.steal_s = steal1 - steal0
        out.sent, out.base = i, base
        stdin.close()
        out.exit_code = proc.wait(timeout=120)
        reader.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sampler.stop()
        harness.stop()
    return out


def _row(p: Phase, kind: str) -> str:
    """One phase's row of the report's first table (the burst has no pacing to judge)."""
    seconds = f"{p.t1 - p.t0:.0f} s"
    if p.asked == float("inf"):
        name, asked, offered = f"{kind} ({seconds}, unpaced)", "—", p.drain_rate
        spread, kept = "", ""
    else:
        lat = p.latencies()
        name, asked, offered = f"{kind} ({seconds})", f"{p.asked:,.0f}", p.offered
        spread = f"{pct(lat, 50):,.0f} / {pct(lat, 99):,.0f}"
        kept = "yes" if p.kept_up() else "no"
    return (
        f"| {name} | {asked} | {offered:,.0f} | {p.scored:,} of {p.sent:,} | {p.cores:.2f} "
        f"| {spread} | {kept} | {p.harness_cores:.2f} | {p.steal} |"
    )


def report(
    args: argparse.Namespace,
    phases: list[Phase],
    top: float,
    soak: Phase,
    load: tuple[float, float],
) -> str:
    rows = [_row(p, "burst" if p.asked == float("inf") else "ramp") for p in phases]
    grown = soak.sampler.growth(soak.t0, soak.t1)
    assert grown is not None, "no RSS samples in the soak's early or late window"
    early, late, growth = grown
    drift = soak.sampler.drift(soak.t0, soak.t1)
    assert drift is not None
    mib = 1 << 20
    minutes = []
    for k, a in enumerate(np.arange(soak.t0, soak.t1 - 1, 60.0).tolist()):
        b = min(a + 60.0, soak.t1)
        rate = soak.reader.rate(a, b)
        cores = soak.sampler.cpu_between(a, b) / (b - a)
        window = soak.sampler.between(a, b)
        rss, median = max(window, default=0), float(np.median(window)) if window else 0.0
        p99 = pct([ms for t, ms in soak.reader.latencies_ms if a <= t < b], 99)
        minutes.append(
            f"| {k + 1} | {rate:,.0f} | {cores:.2f} | {cores / rate * 1e6 if rate else 0:.1f} "
            f"| {median / mib:.0f} / {rss / mib:.0f} | {p99:,.0f} |"
        )
    lost = soak.sent - soak.scored
    return "\n".join(
        [
            MARKERS[0],
            "## Soak: memory at 90 % load (stdin replay, no broker)",
            "",
            f"- command: `PYTHONPATH=. python -m bench.soak --seconds {args.seconds:.0f} "
            f"--load {args.load}`",
            f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: "
            f"{cpu_model()}, {os.cpu_count()} cores; load average {load[0]:.2f} → {load[1]:.2f}",
            "- the daemon (`streamvae run --input - --output -`, default model and batching "
            "settings, one process, retraining off) fed by the harness through a pipe; the "
            "test broker cannot carry a paced load for minutes (docs/performance.md), so "
            "the Kafka client is the one part left out",
            "",
            "| phase | asked (records/s) | offered | scored | daemon CPU (cores) | "
            "latency p50 / p99 (ms) | kept up | harness CPU (cores) | host steal |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
            _row(soak, "soak"),
            "",
            "Harness CPU: the feeding, reading and sampling process, on the same cores; host "
            "steal: CPU time the hypervisor gave to other machines, as a share of this "
            "machine's cores (both over the phase).",
            "",
            f"Maximum offered load: **{top:,.0f} records/s**, the highest rate of a ramp step "
            "that kept up (offered within 5 % of the rate asked, every record scored, p99 "
            "under 1 s; each step a fresh daemon, a failed step tried once more). "
            f"Soak: {args.seconds:.0f} s at {args.load:.0%} of it; daemon RSS "
            f"{early / mib:.0f} MiB early (median, 10-20 % of the run) → {late / mib:.0f} MiB "
            f"late (max, last 10 %): growth **{growth:+.1%}**; peak "
            f"{soak.sampler.peak / mib:.0f} MiB. Like for like (bench.throughput.RssDrift): "
            f"median of the last 10 % over the median of 10-20 % {drift.median_growth:+.1%}; "
            f"slope over the second half {drift.slope_mib_per_min:+.1f} MiB per minute. "
            "Records sent and not scored: "
            f"{lost:,}; daemon exit code {soak.exit_code}. Per minute of the soak:",
            "",
            "| minute | scored (records/s) | daemon CPU (cores) | CPU µs per record | "
            "RSS median / max (MiB) | latency p99 (ms) |",
            "|---|---|---|---|---|---|",
            *minutes,
            MARKERS[1],
        ]
    )


def ramp(
    args: argparse.Namespace, cfg: Path, tmp: Path, payloads: tio.Payloads, burst: float
) -> tuple[list[Phase], float]:
    """Paced steps of the burst rate, each on a fresh daemon, tried twice before the ramp
    ends (one host hiccup on a shared machine ruins a step's p99); the maximum offered load
    is the highest rate offered in a step that kept up (bench/throughput's definition)."""
    steps: list[Phase] = []
    top = 0.0
    for frac in RAMP:
        for attempt in range(2):
            step = phase(cfg, tmp / f"ramp-{frac}-{attempt}.log", payloads, burst * frac,
                         args.step_seconds)  # fmt: skip
            steps.append(step)
            p99 = pct(step.latencies(), 99)
            print(f"step {frac:.0%}: {step.offered:,.0f}/s, p99 {p99:,.0f} ms", flush=True)
            if step.kept_up():
                break
        if not step.kept_up():
            break
        top = step.offered
    return steps, top or steps[0].offered


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=300.0, help="the soak")
    parser.add_argument("--load", type=float, default=0.9, help="fraction of the maximum")
    parser.add_argument("--burst-seconds", type=float, default=30.0, help="the unpaced phase")
    parser.add_argument("--step-seconds", type=float, default=20.0, help="each ramp step")
    parser.add_argument("--quick", action="store_true", help="10 s phases, 30 s soak")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    args = parser.parse_args()
    if args.quick:
        args.seconds = min(args.seconds, 30.0)
        args.burst_seconds, args.step_seconds = 10.0, 10.0
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as name:
        tmp = Path(name)
        print(train_model(tmp / "models", args.seed, args.epochs), flush=True)
        cfg = tmp / "daemon.toml"
        # [kafka] is written but unused: --input/--output replace the broker
        write_config(cfg, "127.0.0.1:9", ("in", "scores", "dead"), tmp / "models",
                     device="cpu", workers=1)  # fmt: skip
        payloads = tio.Payloads.make(20_000, args.seed)
        burst = phase(cfg, tmp / "burst.log", payloads, float("inf"), args.burst_seconds)
        print(f"burst {burst.drain_rate:,.0f} records/s", flush=True)
        steps, top = ramp(args, cfg, tmp, payloads, burst.drain_rate)
        print(f"maximum {top:,.0f} records/s; soak at {args.load:.0%}", flush=True)
        soak = phase(cfg, tmp / "soak.log", payloads, top * args.load, args.seconds)
    section = report(args, [burst, *steps], top, soak, (load0, os.getloadavg()[0]))
    print(section)
    if not args.no_write:
        write_section(section, markers=MARKERS)


if __name__ == "__main__":
    main()
