"""The Kafka edge: the only module that imports aiokafka.

`KafkaSource` (consumer group, auto-commit off, pause/resume, commits only what the
pipeline says, lag from fetch highwater marks, revocation → `on_revoke` → drain) and
`KafkaSink` (outputs appended to per-partition record batches that it hands to the
producer itself; the returned awaitable completes when the broker acknowledged all of
them) implement the pipeline's Source and Sink. Every failure that a broker outage can
cause surfaces as `TransientError`; clients are (re)started with exponential backoff
and never give up while the daemon runs.
`produce_command` publishes JSONL/CSV files to a topic, keyed by site.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner

from streamvae.errors import TransientError
from streamvae.records import SourcePosition

if TYPE_CHECKING:
    from streamvae.config import KafkaSettings, Settings

log = logging.getLogger(__name__)

Output = tuple[bytes | None, bytes]


class RepeatFilter(logging.Filter):
    """Lets a repeated log message (same logger, level and template) through once per
    `window_s` and counts the rest: during an outage aiokafka logs the same connection
    error several times a second."""

    def __init__(self, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._window_s = window_s
        self._clock = clock
        self._last: dict[tuple[str, int, str], float] = {}
        self._suppressed: dict[tuple[str, int, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._window_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        if len(self._last) > 1000:  # bounded: forget the oldest half
            for old in sorted(self._last, key=self._last.__getitem__)[:500]:
                del self._last[old]
                self._suppressed.pop(old, None)
        repeats = self._suppressed.pop(key, 0)
        if repeats:
            record.msg = f"{record.msg} [repeated {repeats}x in the last {self._window_s:.0f}s]"
        return True


_THROTTLE = RepeatFilter()


def throttle_client_logs() -> None:
    """Attach the shared RepeatFilter to every aiokafka logger (idempotent)."""
    for name in [n for n in logging.Logger.manager.loggerDict if n.startswith("aiokafka")]:
        logger = logging.getLogger(name)
        if _THROTTLE not in logger.filters:
            logger.addFilter(_THROTTLE)


@dataclass(frozen=True, slots=True)
class KafkaSpec:
    """Connection and tuning values from [kafka] (built by `kafka_spec`)."""

    bootstrap_servers: str
    group_id: str = "streamvae"
    input_topic: str = "sensors"
    output_topic: str = "sensor-scores"
    dead_letter_topic: str = "sensor-dead-letters"
    client_id: str = "streamvae"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    auto_offset_reset: str = "earliest"
    request_timeout_ms: int = 30_000
    session_timeout_ms: int = 30_000
    max_poll_interval_ms: int = 300_000
    fetch_max_bytes: int = 52_428_800
    max_partition_fetch_bytes: int = 1_048_576
    fetch_max_wait_ms: int = 50
    producer_linger_ms: int = 5
    producer_max_batch_bytes: int = 1_048_576
    producer_compression: str = "none"
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0


def kafka_spec(kafka: KafkaSettings, bootstrap_servers: str | None = None) -> KafkaSpec:
    """[kafka] settings → plain spec (the password read from its file if configured)."""
    data = kafka.model_dump(exclude={"sasl_password", "sasl_password_file", "commit_interval_ms"})
    data["backoff_initial_s"] = data.pop("reconnect_backoff_initial_s")
    data["backoff_max_s"] = data.pop("reconnect_backoff_max_s")
    if bootstrap_servers is not None:
        data["bootstrap_servers"] = bootstrap_servers
    return KafkaSpec(sasl_password=kafka.password(), **data)


def client_options(spec: KafkaSpec) -> dict[str, Any]:
    """Options common to consumers and producers: address, timeouts, SASL/SSL."""
    opts: dict[str, Any] = {
        "bootstrap_servers": spec.bootstrap_servers,
        "client_id": spec.client_id,
        "request_timeout_ms": spec.request_timeout_ms,
        "retry_backoff_ms": int(spec.backoff_initial_s * 1000),
        "security_protocol": spec.security_protocol,
    }
    if spec.security_protocol in ("SSL", "SASL_SSL"):
        opts["ssl_context"] = create_ssl_context(
            cafile=spec.ssl_cafile or None,
            certfile=spec.ssl_certfile or None,
            keyfile=spec.ssl_keyfile or None,
        )
    if spec.security_protocol.startswith("SASL"):
        opts["sasl_mechanism"] = spec.sasl_mechanism
        opts["sasl_plain_username"] = spec.sasl_username
        opts["sasl_plain_password"] = spec.sasl_password
    return opts


async def start_with_retry(
    what: str,
    factory: Callable[[], Any],
    spec: KafkaSpec,
    stop: asyncio.Event,
    on_failure: Callable[[], None] | None = None,
) -> Any | None:
    """Create and start a client, retrying with exponential backoff until it starts
    (returns it) or `stop` is set (returns None)."""
    throttle_client_logs()
    delay = spec.backoff_initial_s
    while not stop.is_set():
        client = factory()
        try:
            await client.start()
        except (KafkaError, OSError) as exc:
            await client.stop()
            if on_failure is not None:
                on_failure()
            log.warning(
                "%s cannot reach %s (%s); retrying in %.1fs",
                what,
                spec.bootstrap_servers,
                exc,
                delay,
            )
            try:
                async with asyncio.timeout(delay):
                    await stop.wait()
            except TimeoutError:
                pass
            delay = min(delay * 2, spec.backoff_max_s)
            continue
        log.info("%s connected to %s", what, spec.bootstrap_servers)
        return client
    return None


# How much longer than its own timeout a fetch may wait (see KafkaSource.fetch).
FETCH_GRACE_S = 0.5


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        revoked = list(revoked)
        if revoked and self._source.on_revoke is not None:
            log.info("partitions revoked: %s; draining", sorted(tp.partition for tp in revoked))
            await self._source.on_revoke()

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))


class KafkaSource:
    """A consumer-group member on `spec.input_topic` (a pipeline Source)."""

    exhausted = False

    def __init__(self, spec: KafkaSpec) -> None:
        self._spec = spec
        self._consumer: AIOKafkaConsumer | None = None
        self._next: dict[TopicPartition, int] = {}
        self.on_revoke: Callable[[], Awaitable[None]] | None = None

    def _make(self) -> AIOKafkaConsumer:
        spec = self._spec
        consumer = AIOKafkaConsumer(
            group_id=spec.group_id,
            enable_auto_commit=False,
            auto_offset_reset=spec.auto_offset_reset,
            session_timeout_ms=spec.session_timeout_ms,
            heartbeat_interval_ms=max(100, spec.session_timeout_ms // 6),
            max_poll_interval_ms=spec.max_poll_interval_ms,
            rebalance_timeout_ms=spec.max_poll_interval_ms,
            fetch_max_bytes=spec.fetch_max_bytes,
            max_partition_fetch_bytes=spec.max_partition_fetch_bytes,
            # aiokafka's default (500 ms) is an upper bound that Kafka rarely reaches, but
            # Tansu holds each fetch for most of it even when records arrive: with 500 the
            # bench measured p50 ~140 ms end to end on a quiet topic, with 50 ~17 ms.
            fetch_max_wait_ms=spec.fetch_max_wait_ms,
            **client_options(spec),
        )
        consumer.subscribe([spec.input_topic], listener=_Listener(self))
        return consumer

    async def start(self, stop: asyncio.Event) -> bool:
        self._consumer = await start_with_retry("consumer", self._make, self._spec, stop)
        return self._consumer is not None

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise TransientError("consumer not started")
        return self._consumer

    async def fetch(self, max_records: int, timeout_s: float) -> list[tuple[bytes, SourcePosition]]:
        # Bounded: aiokafka's getmany waits without a bound for a group reassignment in
        # progress (the fetcher's `wait_for_assignment`), and that reassignment first runs
        # our on_partitions_revoked, which drains the pipeline and so waits for this fetch
        # to end: a deadlock until shutdown (seen once in the mid-run outage test, under
        # load). Cancelling getmany at one of its awaits takes no record.
        try:
            async with asyncio.timeout(timeout_s + FETCH_GRACE_S):
                data = await self.consumer.getmany(
                    timeout_ms=int(timeout_s * 1000), max_records=max_records
                )
        except TimeoutError:
            return []
        except KafkaError as exc:
            log.warning("fetch failed (%s); retrying", exc)
            await asyncio.sleep(self._spec.backoff_initial_s)
            return []
        out: list[tuple[bytes, SourcePosition]] = []
        for tp, messages in data.items():
            topic, partition = tp.topic, tp.partition
            out.extend(
                (
                    m.value if m.value is not None else b"",
                    SourcePosition(topic, partition, m.offset),
                )
                for m in messages
            )
            if messages:
                self._next[tp] = messages[-1].offset + 1
        return out

    def pause(self) -> None:
        self.consumer.pause(*self.consumer.assignment())

    def resume(self) -> None:
        self.consumer.resume(*self.consumer.paused())

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        assigned = self.consumer.assignment()
        todo = {TopicPartition(t, p): o for (t, p), o in offsets.items()}
        todo = {tp: o for tp, o in todo.items() if tp in assigned}
        if not todo:
            return
        try:
            await self.consumer.commit(todo)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("commit rejected after a rebalance (%s): records will be re-read", exc)
        except KafkaError as exc:
            raise TransientError(f"commit failed: {exc}") from exc

    def lags(self) -> dict[tuple[str, int], int]:
        consumer = self.consumer
        out: dict[tuple[str, int], int] = {}
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is not None:
                out[(tp.topic, tp.partition)] = max(0, high - self._next.get(tp, high))
        return out


@dataclass(slots=True)
class _Batch:
    """One producer batch being filled, and the ack of everything appended to it."""

    builder: Any  # aiokafka BatchBuilder
    acked: asyncio.Future[None]


@dataclass(slots=True)
class _Lane:
    """Batches of one (topic, partition) not yet handed to the producer: the last one open."""

    topic: str
    partition: int
    batches: collections.deque[_Batch] = field(default_factory=collections.deque)
    flushing: bool = False


class KafkaSink:
    """Producer of score records and dead letters (a pipeline Sink).

    Outputs are appended to per-partition record batches that we build ourselves
    (`create_batch` + `send_batch`), not sent one `producer.send` each. Why: `send` costs
    ~10 µs of Python per message in aiokafka (a coroutine, a metadata check that copies the
    partition set, a future per message and its resolution on the ack); profiling the
    daemon (docs/performance.md) put it at a fifth of the CPU per record. A batch append
    is one C call, and there is one future per batch.

    Batching must not serialise on round trips: aiokafka keeps one produce request in
    flight per broker and `send_batch` waits while the partition already has a batch
    queued. So each partition has a lane: `send_to` only appends to the lane's open batch
    and starts the lane's flusher if it is idle; the flusher hands batches over one by one,
    and whatever arrives while it waits goes into the next batch (the same "fill while the
    previous request is in flight" that `send` gives, without its per-message cost).
    """

    def __init__(self, spec: KafkaSpec) -> None:
        self._spec = spec
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = DefaultPartitioner()
        self._key_partition: dict[tuple[str, bytes], int] = {}
        self._partitions: dict[str, list[int]] = {}
        self._lanes: dict[tuple[str, int], _Lane] = {}
        self._flushers: set[asyncio.Task[None]] = set()

    def _make(self) -> AIOKafkaProducer:
        spec = self._spec
        return AIOKafkaProducer(
            acks="all",
            linger_ms=spec.producer_linger_ms,
            max_batch_size=spec.producer_max_batch_bytes,
            max_request_size=max(spec.producer_max_batch_bytes, 1_048_576),
            compression_type=None
            if spec.producer_compression == "none"
            else spec.producer_compression,
            **client_options(spec),
        )

    async def start(self, stop: asyncio.Event) -> bool:
        self._producer = await start_with_retry("producer", self._make, self._spec, stop)
        return self._producer is not None

    async def stop(self) -> None:
        """Hand over what the lanes hold, then stop the producer (which flushes)."""
        while self._flushers:
            await asyncio.gather(*self._flushers, return_exceptions=True)
        if self._producer is not None:
            await self._producer.stop()
        for lane in self._lanes.values():  # only left if the producer never started
            for batch in lane.batches:
                _settle(batch.acked, TransientError("producer stopped"))
            lane.batches.clear()

    async def reachable(self, timeout_s: float = 5.0) -> bool:
        """True if a metadata request to the cluster succeeds within `timeout_s`."""
        if self._producer is None:
            return False
        try:
            async with asyncio.timeout(timeout_s):
                return bool(await self._producer.client.force_metadata_update())
        except (KafkaError, OSError, TimeoutError):
            return False

    async def send(
        self, scores: Sequence[Output], dead_letters: Sequence[Output]
    ) -> Awaitable[None]:
        futures = await self.send_to(self._spec.output_topic, scores)
        futures += await self.send_to(self._spec.dead_letter_topic, dead_letters)
        return _all_acked(futures)

    async def _partitions_of(self, topic: str) -> list[int]:
        if self._producer is None:
            raise TransientError("producer not started")
        try:
            async with asyncio.timeout(self._spec.request_timeout_ms / 1000):
                parts = sorted(await self._producer.partitions_for(topic))
        except (KafkaError, TimeoutError) as exc:
            raise TransientError(f"no metadata for {topic}: {exc}") from exc
        if parts != self._partitions.get(topic):
            self._partitions[topic] = parts
            self._key_partition = {k: v for k, v in self._key_partition.items() if k[0] != topic}
        return parts

    def _new_batch(self, lane: _Lane) -> _Batch:
        assert self._producer is not None
        batch = _Batch(self._producer.create_batch(), asyncio.get_running_loop().create_future())
        lane.batches.append(batch)
        return batch

    async def send_to(self, topic: str, outputs: Sequence[Output]) -> list[asyncio.Future[None]]:
        """Append `outputs` to their partitions' open batches (keyed: the Kafka default
        partitioner, so a site keeps its partition; unkeyed: round robin); return one
        future per batch touched, done when the broker acknowledged that batch."""
        if not outputs:
            return []
        parts = await self._partitions_of(topic)
        cache, lanes = self._key_partition, self._lanes
        touched: dict[int, _Batch] = {}
        lane: _Lane | None = None
        batch: _Batch | None = None
        last = -1
        for i, (key, value) in enumerate(outputs):
            if key is None:
                part = parts[i % len(parts)]
            else:
                part = cache.get((topic, key), -1)
                if part < 0:
                    part = cache[(topic, key)] = self._partitioner(key, parts, parts)
            if part != last or lane is None or batch is None:
                last = part
                lane = lanes.get((topic, part))
                if lane is None:
                    lane = lanes[(topic, part)] = _Lane(topic, part)
                batch = lane.batches[-1] if lane.batches else self._new_batch(lane)
                if not lane.flushing:  # no await below: it runs once this call returns
                    lane.flushing = True
                    task = asyncio.create_task(self._flush(lane))
                    self._flushers.add(task)
                    task.add_done_callback(self._flushers.discard)
            if batch.builder.append(timestamp=None, key=key, value=value) is None:
                batch = self._new_batch(lane)  # full: the first append always fits
                batch.builder.append(timestamp=None, key=key, value=value)
            touched[id(batch)] = batch
        return [b.acked for b in touched.values()]

    async def _flush(self, lane: _Lane) -> None:
        """Hand the lane's batches to the producer, oldest first, until it is empty."""
        producer = self._producer
        try:
            while lane.batches:
                batch = lane.batches.popleft()  # appends from now on open a new batch
                if producer is None:
                    _settle(batch.acked, TransientError("producer not started"))
                    continue
                try:
                    sent = await producer.send_batch(
                        batch.builder, lane.topic, partition=lane.partition
                    )
                except (KafkaError, TimeoutError) as exc:
                    _settle(batch.acked, TransientError(f"send to {lane.topic} failed: {exc}"))
                    continue
                except Exception as exc:  # never expected: fail the batch (it is re-sent)
                    log.exception("handing a batch to the producer failed")
                    _settle(batch.acked, TransientError(f"send to {lane.topic} failed: {exc!r}"))
                    continue
                sent.add_done_callback(lambda done, acked=batch.acked: _propagate(done, acked))
        finally:
            lane.flushing = False


def _settle(acked: asyncio.Future[None], error: BaseException | None = None) -> None:
    if acked.done():
        return
    if error is None:
        acked.set_result(None)
    else:
        acked.set_exception(error)


def _propagate(done: asyncio.Future[Any], acked: asyncio.Future[None]) -> None:
    """Producer future of a batch → our ack future (as TransientError on failure)."""
    if done.cancelled():
        _settle(acked, TransientError("produce cancelled"))
    elif (exc := done.exception()) is not None:
        _settle(acked, TransientError(f"produce failed: {exc!r}"))
    else:
        _settle(acked)


async def _all_acked(futures: Sequence[asyncio.Future[None]]) -> None:
    """Wait for every future; raise `TransientError` if any failed (after all settled)."""
    results = await asyncio.gather(*futures, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise TransientError(f"{len(errors)} producer batches failed: {errors[0]!r}")


def produce_command(settings: Settings, paths: Sequence[Path], topic: str | None) -> int:
    """`streamvae produce`: publish JSONL/CSV files to `topic` (default: the input topic)."""
    from streamvae.producing import produce_files

    spec = kafka_spec(settings.kafka)
    return asyncio.run(produce_files(spec, KafkaSink(spec), paths, topic or spec.input_topic))
