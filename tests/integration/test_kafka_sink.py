"""KafkaSink builds its own per-partition record batches: nothing lost, nothing reordered
within a partition, keyed outputs on the Kafka default partitioner's partition."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner

from streamvae.broker import EmbeddedBroker
from streamvae.errors import TransientError
from streamvae.kafka import KafkaSink, KafkaSpec, Output

pytestmark = pytest.mark.integration


async def _read_all(bootstrap: str, topic: str, count: int) -> dict[int, list[tuple[bytes, bytes]]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"read-{topic}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    out: dict[int, list[tuple[bytes, bytes]]] = {}
    try:
        seen = 0
        async with asyncio.timeout(30):
            while seen < count:
                for tp, msgs in (await consumer.getmany(timeout_ms=200)).items():
                    out.setdefault(tp.partition, []).extend((m.key or b"", m.value) for m in msgs)
                    seen += len(msgs)
    finally:
        await consumer.stop()
    return out


async def test_batches_keep_order_and_partitions(
    broker: EmbeddedBroker, topics: Callable[..., str]
) -> None:
    topic = topics("sink-batches", partitions=3)
    # small batches: 2 KiB values, 16 KiB per batch -> many batches per partition
    spec = KafkaSpec(bootstrap_servers=broker.bootstrap_servers, producer_max_batch_bytes=16_384)
    sink = KafkaSink(spec)
    assert await sink.start(asyncio.Event())
    pad = b"x" * 2048
    sent: list[Output] = []
    try:
        acks = []
        for call in range(20):  # calls overlap: no await on the acks in between
            outputs: list[Output] = [
                (f"site-{i % 7}".encode(), b"%d:%d:" % (call, i) + pad) for i in range(50)
            ]
            sent += outputs
            acks += await sink.send_to(topic, outputs)
        unkeyed: list[Output] = [(None, b"u%d" % i) for i in range(9)]
        sent += unkeyed
        acks += await sink.send_to(topic, unkeyed)
        await asyncio.gather(*acks)
    finally:
        await sink.stop()
    got = await _read_all(broker.bootstrap_servers, topic, len(sent))
    assert sum(map(len, got.values())) == len(sent)
    parts = [0, 1, 2]
    partitioner = DefaultPartitioner()
    for part, msgs in got.items():
        keyed = [m for m in msgs if m[0]]
        for key, _ in keyed:
            assert partitioner(key, parts, parts) == part
        expected = [(k, v) for k, v in sent if k and partitioner(k, parts, parts) == part]
        assert keyed == expected  # every keyed output once, in send order
    assert sorted(v for msgs in got.values() for k, v in msgs if not k) == sorted(
        v for k, v in unkeyed
    )


async def test_send_before_start_is_transient() -> None:
    sink = KafkaSink(KafkaSpec(bootstrap_servers="127.0.0.1:1"))
    with pytest.raises(TransientError):
        await sink.send_to("t", [(b"k", b"v")])
    await sink.stop()
