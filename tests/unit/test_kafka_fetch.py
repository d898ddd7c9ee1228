"""KafkaSource.fetch returns within its timeout even when getmany does not."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from streamvae.kafka import FETCH_GRACE_S, KafkaSource, KafkaSpec


class _StuckConsumer:
    """getmany blocked as aiokafka's is while a group reassignment is in progress."""

    def __init__(self) -> None:
        self.cancelled = False

    async def getmany(self, **_: Any) -> dict[Any, Any]:
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return {}


async def test_fetch_is_bounded_while_getmany_waits_for_an_assignment() -> None:
    source = KafkaSource(KafkaSpec(bootstrap_servers="127.0.0.1:9"))
    stuck = _StuckConsumer()
    source._consumer = stuck
    started = time.monotonic()
    assert await source.fetch(10, 0.05) == []
    assert time.monotonic() - started < 0.05 + FETCH_GRACE_S + 1.0
    assert stuck.cancelled
