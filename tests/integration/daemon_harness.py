"""Helpers for the daemon's integration tests: tiny models, configs, a daemon subprocess,
producing input and reading every output back from the real broker."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamvae.records import Reason

FEATURES = ("a", "b", "c")
SITES = ("s0", "s1", "s2")
MAX_MESSAGE_BYTES = 4096

Item = tuple[bytes | None, bytes]  # key, payload


def train_tiny(version: str, seed: int) -> Any:
    """A detector small enough to train in about a second (hidden [16], 3 epochs)."""
    from streamvae.detector import ModelSpec, ThresholdSpec, TrainSpec, train_detector

    rng = np.random.default_rng(seed)
    n = 600
    values = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
    sites = [SITES[i % len(SITES)] for i in range(n)]
    return train_detector(
        values,
        sites,
        features=FEATURES,
        model_spec=ModelSpec(
            hidden=(16,),
            discriminator_hidden=(16,),
            latent_dim=2,
            site_capacity=8,
            importance_samples=2,
        ),
        train_spec=TrainSpec(seed=seed, max_epochs=3, batch_size=128),
        threshold_spec=ThresholdSpec(min_site_records=20),
        device="cpu",
        version=version,
    )


def setup_case(
    broker: Any,
    topics: Callable[..., str],
    tmp_path: Path,
    *,
    models: Iterable[Any] = (),
    promote: str | None = None,
    partitions: int = 2,
    **sections: dict[str, Any],
) -> tuple[tuple[str, str, str], str, Path]:
    """One test daemon's world: input/output topics with `partitions` partitions and a
    one-partition dead-letter topic, a store at tmp_path/store holding `models` (with
    `promote` current), and a config at tmp_path/c.toml. Returns (topics, group, config)."""
    names = (topics("in", partitions), topics("out", partitions), topics("dlq", 1))
    group = f"g-{names[0]}"
    store = store_with(tmp_path / "store", models, promote)
    config = write_config(
        tmp_path / "c.toml",
        bootstrap=broker.bootstrap_servers,
        topics=names,
        group=group,
        store=store,
        **sections,
    )
    return names, group, config


def store_with(root: Path, models: Iterable[Any], promote: str | None) -> Path:
    """A model store at `root` holding `models`, with `promote` current."""
    from streamvae.artifacts import ModelStore

    store = ModelStore(root)
    for detector in models:
        store.save(detector)
    if promote:
        store.promote(promote)
    return root


async def trickle(
    bootstrap: str, topic: str, items: Sequence[Item], chunk: int = 100, pause: float = 0.05
) -> None:
    """Produce `items` in chunks with a pause between them (a steady stream)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for start in range(0, len(items), chunk):
            futures = [
                await producer.send(topic, value, key=key)
                for key, value in items[start : start + chunk]
            ]
            await asyncio.gather(*futures)
            await asyncio.sleep(pause)
    finally:
        await producer.stop()


def valid(i: int, site: str | None = None) -> Item:
    site = site or SITES[i % len(SITES)]
    ts = 1_732_200_000.0 + i
    value = {"a": (i % 7) / 7.0, "b": -0.5, "c": 0.25}
    return site.encode(), orjson.dumps({"site": site, "ts": ts, "values": value})


def _msg(**fields: Any) -> bytes:
    base: dict[str, Any] = {"site": "s0", "ts": 1_732_200_000.0, "values": [0.1, 0.2, 0.3]}
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not _DROP})


_DROP = object()

#: one payload per rejection reason the decoder can produce
INVALID: list[tuple[bytes, Reason]] = [
    (b"{not json", Reason.INVALID_JSON),
    (b"[1, 2]", Reason.NOT_OBJECT),
    (_msg(ts=_DROP), Reason.MISSING_FIELD),
    (_msg(site=7), Reason.BAD_TYPE),
    (_msg(site=""), Reason.BAD_SITE),
    (_msg(ts="yesterday"), Reason.BAD_TIMESTAMP),
    (b'{"site": "s0", "ts": 1732200000, "values": [1, NaN, 2]}', Reason.NON_FINITE),
    (_msg(values=[1.0]), Reason.WRONG_LENGTH),
    (_msg(values={"a": 1.0, "b": 2.0}), Reason.MISSING_FEATURE),
    (_msg(values={"a": 1.0, "b": 2.0, "c": 3.0, "zz": 4.0}), Reason.UNKNOWN_FEATURE),
    (_msg(pad="x" * MAX_MESSAGE_BYTES), Reason.TOO_LARGE),
]


def mixed(n: int, *, invalid_every: int = 10, start: int = 0) -> list[Item]:
    """`n` records; every `invalid_every`-th is invalid, cycling through every reason."""
    out: list[Item] = []
    for i in range(start, start + n):
        if i % invalid_every == invalid_every - 1:
            out.append((None, INVALID[(i // invalid_every) % len(INVALID)][0]))
        else:
            out.append(valid(i))
    return out


def write_config(
    path: Path,
    *,
    bootstrap: str,
    topics: tuple[str, str, str],
    group: str,
    store: Path,
    **sections: dict[str, Any],
) -> Path:
    """A TOML config for one test daemon; `sections` override/extend the defaults."""
    data: dict[str, dict[str, Any]] = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": group,
            "input_topic": topics[0],
            "output_topic": topics[1],
            "dead_letter_topic": topics[2],
            "session_timeout_ms": 3000,
            "max_poll_interval_ms": 10000,
            "request_timeout_ms": 5000,
            "reconnect_backoff_initial_s": 0.2,
            "reconnect_backoff_max_s": 1.0,
            "producer_linger_ms": 2,
        },
        "input": {"max_message_bytes": MAX_MESSAGE_BYTES},
        "batching": {"max_records": 64, "max_wait_ms": 10},
        "model": {"device": "cpu"},
        "store": {"path": str(store), "poll_interval_s": 0.2},
        "retraining": {"enabled": False, "state_dir": str(path.parent / "state")},
        "metrics": {"port": 0},
        "service": {"shutdown_timeout_s": 10.0, "log_level": "INFO"},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    lines: list[str] = []
    for name, values in data.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in values.items())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


class Daemon:
    """`python -m streamvae run --config C` as a child process, logging to a file."""

    def __init__(self, config: Path, log: Path, *extra: str) -> None:
        self.config, self.log = config, log
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "streamvae",
                    "run",
                    "--config",
                    str(self.config),
                    *self.extra,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env,
            )
        return self

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_log(self, pattern: str, timeout: float = 30.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(re.findall(pattern, self.text())) >= count:
                return
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not logged in {timeout}s:\n{self.text()[-4000:]}")

    def wait_ready(self, timeout: float = 40.0) -> None:
        self.wait_log(r"streamvae\.app: ready", timeout)

    def http(self, path: str) -> tuple[int, bytes]:
        """GET `path` from the daemon's HTTP endpoint (port taken from its log)."""
        self.wait_log(r"HTTP endpoints on http://[\d.]+:\d+", 30)
        port = int(re.findall(r"HTTP endpoints on http://[\d.]+:(\d+)", self.text())[-1])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


async def produce(bootstrap: str, topic: str, items: Iterable[Item], **opts: Any) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, **opts)
    await producer.start()
    n = 0
    try:
        futures = []
        for key, value in items:
            futures.append(await producer.send(topic, value, key=key))
            n += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return n


@dataclass(frozen=True)
class Output:
    topic: str
    value: dict[str, Any]

    @property
    def source(self) -> tuple[int, int]:
        pos = self.value["position"]
        return pos["partition"], pos["offset"]


async def read_outputs(
    bootstrap: str,
    topics: Sequence[str],
    expected: int,
    wait_s: float = 60.0,
    settle: float = 1.0,
) -> list[Output]:
    """Everything on `topics` from the beginning: waits for `expected` records, then
    `settle` seconds more to catch extras (duplicates)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(await _partitions(consumer, t))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Output] = []
        deadline = time.monotonic() + wait_s
        quiet_until: float | None = None
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for tp, msgs in batches.items():
                out.extend(Output(tp.topic, orjson.loads(m.value)) for m in msgs)
            if len(out) >= expected:
                quiet_until = quiet_until or time.monotonic() + settle
                if time.monotonic() >= quiet_until:
                    break
        return out
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return set(parts)
        await consumer.force_metadata_update()
        await asyncio.sleep(0.1)
    raise AssertionError(f"no partitions for {topic}")


async def offsets(bootstrap: str, group: str, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """(committed offsets of `group`, end offsets read from fetch highwater marks)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
        consumer.assign(tps)
        committed = {tp.partition: (await consumer.committed(tp)) or 0 for tp in tps}
        await consumer.seek_to_end(*tps)  # position only; the highwater comes from a fetch
        for tp in tps:
            consumer.seek(tp, 0)
        ends: dict[int, int] = {}
        deadline = time.monotonic() + 20
        while len(ends) < len(tps) and time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=200)
            for tp in tps:
                high = consumer.highwater(tp)
                if high is not None and await consumer.position(tp) >= high:
                    ends[tp.partition] = high
        return committed, ends
    finally:
        await consumer.stop()


def check_exactly_once_each(
    outputs: Sequence[Output],
    produced: Sequence[Item],
    topic: str,
    partitions: Sequence[int] | None = None,
) -> None:
    """Every input position has exactly one output (scores and dead letters together)."""
    positions = sorted(o.source for o in outputs)
    assert len(positions) == len(set(positions)), "duplicate outputs"
    assert len(positions) == len(produced)
    assert all(o.value["position"]["topic"] == topic for o in outputs)
