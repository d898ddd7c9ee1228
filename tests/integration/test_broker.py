"""The embedded broker works with aiokafka: produce, group consume, commit, highwater."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamvae.broker import EmbeddedBroker

pytestmark = pytest.mark.integration


async def test_produce_consume_commit(broker: EmbeddedBroker, topics: Callable[..., str]) -> None:
    topic = topics("roundtrip", partitions=3)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=2)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, f"v{i}".encode(), key=f"site-{i % 5}".encode())
            for i in range(300)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap_servers,
        group_id=f"g-{topic}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=3000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    try:
        seen: list[bytes] = []
        async with asyncio.timeout(30):
            while len(seen) < 300:
                batches = await consumer.getmany(timeout_ms=200)
                seen.extend(m.value for msgs in batches.values() for m in msgs)
        await consumer.commit()
        total = 0
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            assert await consumer.committed(tp) == high
            total += high or 0
        assert total == 300
        assert sorted(seen) == sorted(f"v{i}".encode() for i in range(300))
    finally:
        await consumer.stop()


def test_restart_same_port() -> None:
    broker = EmbeddedBroker()
    with broker:
        port = broker.port
        broker.stop()
        assert not broker.running
        broker.start()
        assert broker.running
        assert broker.port == port
    assert not broker.running
