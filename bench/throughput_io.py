"""Kafka side of `bench.throughput`: synthetic payloads, fast backlog producer, paced
producer, the raw pass-through worker, committed-offset polling and the latency reader.

The raw pass-through (`python -m bench.throughput_io raw ...`) is the naive loop a user
would write first: getmany → orjson.loads each record → producer.send one tiny output per
record → wait for the acks → commit. It runs in its own process, like the daemon, so the
two are measured identically by the parent (first output's `scored_at` → last commit).

Tansu quirk: ListOffsets(latest) is wrong for multi-record batches, so end offsets are
computed from the producer's acks and confirmed from a fetch's highwater mark.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

SENSORS = 38
SITES = 14
# The paced producer sends what is due every TICK_S (each record stamped with its send time):
# 5 ms, like a producer with linger.ms = 5. Ticks of 2 ms cost the shared broker ~0.1 core
# more in produce requests at 10k records/s and made every phase on the machine slower.
TICK_S = 0.005


def site_name(i: int) -> str:
    return f"site-{i:02d}"


def synthetic_values(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 38) float32 values and (n,) site indices: per-site means in [0.2, 0.8],
    per-sensor noise 0.02..0.1, a slow daily-like sine shared by half the sensors."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(0.2, 0.8, size=(SITES, SENSORS))
    sds = rng.uniform(0.02, 0.1, size=(SITES, SENSORS))
    site = np.arange(n) % SITES
    phase = np.sin(np.arange(n) / 500.0)[:, None] * 0.05 * (np.arange(SENSORS) % 2)
    values = means[site] + sds[site] * rng.standard_normal((n, SENSORS)) + phase
    return values.astype(np.float32), site


@dataclass
class Payloads:
    """Pre-rendered record pieces: `head(i) + ts + tail(i)` is one JSON input record."""

    heads: list[bytes]
    tails: list[bytes]
    keys: list[bytes]
    sites: list[int]

    @classmethod
    def make(cls, n: int, seed: int) -> Payloads:
        values, site = synthetic_values(n, seed)
        heads, tails, keys = [], [], []
        for row, s in zip(np.round(values, 4).tolist(), site.tolist(), strict=True):
            name = site_name(s)
            heads.append(b'{"site":"' + name.encode() + b'","ts":')
            tails.append(b',"values":' + orjson.dumps(row) + b"}")
            keys.append(name.encode())
        return cls(heads, tails, keys, site.tolist())

    def record(self, i: int, ts: float | bytes) -> bytes:
        j = i % len(self.heads)
        stamp = ts if isinstance(ts, bytes) else repr(ts).encode()
        return self.heads[j] + stamp + self.tails[j]


def partition_of(site: int, partitions: int) -> int:
    """Records are keyed by site: all of a site's records land on one partition."""
    return site % partitions


@dataclass
class Ends:
    """Per-partition end offsets learned from the producer's acks."""

    ends: dict[int, int] = field(default_factory=dict)

    def add(self, partition: int, base: int, count: int) -> None:
        self.ends[partition] = max(self.ends.get(partition, 0), base + count)


async def _send_grouped(
    producer: AIOKafkaProducer,
    topic: str,
    items: Sequence[tuple[int, bytes, bytes]],
    ends: Ends,
) -> list[asyncio.Future[object]]:
    """items: (partition, key, value); one producer batch per partition (split when full)."""
    grouped: dict[int, list[tuple[bytes, bytes]]] = {}
    for part, key, value in items:
        grouped.setdefault(part, []).append((key, value))
    futures: list[asyncio.Future[object]] = []

    async def ship(batch: object, part: int, count: int) -> None:
        fut = await producer.send_batch(batch, topic, partition=part)
        fut.add_done_callback(
            lambda f, p=part, c=count: None if f.exception() else ends.add(p, f.result().offset, c)
        )
        futures.append(fut)

    for part, rows in grouped.items():
        batch, count = producer.create_batch(), 0
        for key, value in rows:
            if batch.append(key=key, value=value, timestamp=None) is None:
                await ship(batch, part, count)
                batch, count = producer.create_batch(), 0
                batch.append(key=key, value=value, timestamp=None)
            count += 1
        await ship(batch, part, count)
    return futures


def _items(
    payloads: Payloads, indices: range, ts: float, partitions: int
) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) for records `indices`, all stamped `ts`."""
    n = len(payloads.heads)
    stamp = repr(ts).encode()
    return [
        (
            partition_of(payloads.sites[i % n], partitions),
            payloads.keys[i % n],
            payloads.record(i, stamp),
        )
        for i in indices
    ]


async def produce_backlog(
    bootstrap: str, topic: str, payloads: Payloads, n: int, partitions: int
) -> dict[int, int]:
    """Produce `n` records as fast as possible; return end offsets per partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    ends = Ends()
    try:
        chunk = 5000
        for start in range(0, n, chunk):
            items = _items(payloads, range(start, min(n, start + chunk)), time.time(), partitions)
            await asyncio.gather(*await _send_grouped(producer, topic, items, ends))
    finally:
        await producer.stop()
    return dict(ends.ends)


def paced_producer(bootstrap: str) -> AIOKafkaProducer:
    """The producer `paced` sends with (start it first; one for a warm-up and its phase)."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)


async def paced(
    producer: AIOKafkaProducer,
    topic: str,
    payloads: Payloads,
    *,
    rate: float,
    seconds: float,
    partitions: int,
    offset: int = 0,
    ack_timeout_s: float | None = None,
) -> int:
    """Produce at `rate` records/s for `seconds`, `ts` = send time; returns records sent
    once all are acknowledged, or once `ack_timeout_s` has passed after the last send (a
    broker that fell behind: the soak). With `ack_timeout_s`, sending also stops at
    `seconds` + `ack_timeout_s` even while a send waits: `send_batch` blocks while its
    partition already has a batch queued (the likely reason one soak on a drowned broker
    had not ended after 25 minutes); records of an interrupted send are not counted.
    `producer` is started and already knows the topic (a warm-up phase): a new producer's
    first sends wait for its connection and the topic's metadata, which added up to a
    second to the first records' latency."""
    ends = Ends()
    sent = 0
    futures: list[asyncio.Future[object]] = []
    start = time.monotonic()
    deadline = None if ack_timeout_s is None else start + seconds + ack_timeout_s
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(rate * elapsed) - sent
        if due > 0:
            items = _items(
                payloads, range(offset + sent, offset + sent + due), time.time(), partitions
            )
            try:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                async with asyncio.timeout(left):
                    futures += await _send_grouped(producer, topic, items, ends)
            except TimeoutError:
                break
            sent += due
            futures = [f for f in futures if not f.done()]
        await asyncio.sleep(TICK_S)
    if futures:
        await asyncio.wait(futures, timeout=ack_timeout_s)
    return sent


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    for _ in range(100):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return sorted(parts)
        await consumer.force_metadata_update()
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no partitions for {topic}")


async def delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    """Delete finished phases' topics: Tansu keeps every record in memory, and a full run
    (backlog, ~30 paced phases, a 5-minute soak of ~3M records) grew it past 9 GB, at
    which point it served the soak so slowly that the run stalled (2026-12-02)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(list(names))
    finally:
        await admin.close()


async def highwaters(bootstrap: str, topic: str, near: dict[int, int]) -> dict[int, int]:
    """End offsets from fetch responses (seeking just before the `near` guesses)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, max(0, near.get(tp.partition, 0) - 1))
        out: dict[int, int] = {}
        deadline = time.monotonic() + 20
        while len(out) < len(tps) and time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=200)
            for tp in tps:
                high = consumer.highwater(tp)
                if high is not None:
                    out[tp.partition] = high
        return out
    finally:
        await consumer.stop()


async def wait_committed(
    bootstrap: str, group: str, topic: str, ends: dict[int, int], timeout_s: float
) -> float | None:
    """Poll the group's committed offsets every 20 ms; the time (epoch s) at which they
    first reached `ends` on every partition, or None on timeout."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in ends]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = True
            for tp in tps:
                if ((await consumer.committed(tp)) or 0) < ends[tp.partition]:
                    done = False
                    break
            if done:
                return time.time()
            await asyncio.sleep(0.02)
        return None
    finally:
        await consumer.stop()


async def first_scored_at(bootstrap: str, topic: str) -> float:
    """The earliest `scored_at` among the first output record of each partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        seen: dict[int, float] = {}
        deadline = time.monotonic() + 10
        while len(seen) < len(tps) and time.monotonic() < deadline:
            data = await consumer.getmany(timeout_ms=200, max_records=len(tps) * 10)
            for tp, msgs in data.items():
                if msgs and tp.partition not in seen:
                    seen[tp.partition] = float(orjson.loads(msgs[0].value)["scored_at"])
                    consumer.pause(tp)
        return min(seen.values())
    finally:
        await consumer.stop()


def _number_after(value: bytes, key: bytes) -> float:
    start = value.index(key) + len(key)
    end = start
    while value[end] not in b",}":
        end += 1
    return float(value[start:end])


def stamps(value: bytes) -> tuple[float, float]:
    """(ts, scored_at) of an output record without parsing all of it: the daemon's score
    records carry 38 contributions, and a full `orjson.loads` of each (~3 µs) made the
    bench's reader a noticeable CPU user on the machine it measures. Both keys are the
    first occurrences in the daemon's and the raw worker's records (the contributions,
    keyed by sensor name, come after them)."""
    return _number_after(value, b'"ts":'), _number_after(value, b'"scored_at":')


def input_stamps(value: bytes) -> tuple[float, float]:
    """(ts, ts) of an input record: the floor control reads the input topic itself."""
    ts = _number_after(value, b'"ts":')
    return ts, ts


# The reader stands for "the score is readable downstream". Tansu holds every fetch for
# its whole max wait when the partition is empty at arrival (a Kafka broker answers as
# soon as data arrives), so a 50 ms wait added up to 50 ms (p50 ~15 ms) of the reader's
# own to every figure, the floor control's included. 5 ms keeps it within one tick of the
# paced producer (TICK_S) at the cost of more (empty) fetch requests.
READER_FETCH_WAIT_MS = 5


class LatencyReader:
    """Reads a topic from its current end; keeps (ts, scored_at, seen) per record.
    `inputs`: the topic holds input records (no `scored_at`: the floor control)."""

    def __init__(self, bootstrap: str, topic: str, *, inputs: bool = False) -> None:
        self._bootstrap, self._topic = bootstrap, topic
        self._stamps = input_stamps if inputs else stamps
        self.rows: list[tuple[float, float, float]] = []
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=READER_FETCH_WAIT_MS,
        )
        await consumer.start()
        try:
            tps = [
                TopicPartition(self._topic, p) for p in await partitions_of(consumer, self._topic)
            ]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, 0)
            highs: dict[TopicPartition, int] = {}
            while len(highs) < len(tps):
                await consumer.getmany(timeout_ms=200, max_records=1)
                highs = {tp: h for tp in tps if (h := consumer.highwater(tp)) is not None}
            for tp, high in highs.items():
                consumer.seek(tp, high)
            self._ready.set()
            while not self._stop.is_set():
                data = await consumer.getmany(timeout_ms=100)
                seen = time.time()
                for msgs in data.values():
                    for m in msgs:
                        self.rows.append((*self._stamps(m.value), seen))
        finally:
            await consumer.stop()

    async def started(self) -> None:
        await self._ready.wait()

    def stop(self) -> None:
        self._stop.set()


async def raw_worker(
    bootstrap: str, topic: str, out_topic: str, group: str, reset: str = "earliest"
) -> None:
    """The naive pass-through loop (see the module docstring); runs until SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset=reset,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    try:
        while not stop.is_set():
            data = await consumer.getmany(timeout_ms=100)
            if not data:
                continue
            now = time.time()
            futures = []
            for tp, msgs in data.items():
                for m in msgs:
                    rec = orjson.loads(m.value)
                    out = orjson.dumps(
                        {
                            "site": rec["site"],
                            "ts": rec["ts"],
                            "p": tp.partition,
                            "o": m.offset,
                            "scored_at": now,
                        }
                    )
                    futures.append(await producer.send(out_topic, out, key=m.key))
            await asyncio.gather(*futures)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    raw = sub.add_parser("raw", help="run the raw pass-through worker until SIGTERM")
    raw.add_argument("--bootstrap", required=True)
    raw.add_argument("--topic", required=True)
    raw.add_argument("--out-topic", required=True)
    raw.add_argument("--group", required=True)
    raw.add_argument("--reset", default="earliest", choices=["earliest", "latest"])
    args = parser.parse_args()
    asyncio.run(raw_worker(args.bootstrap, args.topic, args.out_topic, args.group, args.reset))


if __name__ == "__main__":
    main()
