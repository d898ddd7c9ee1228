"""Integration fixtures: one real Kafka-compatible broker (Tansu) for the whole session.

    def test_x(broker, topics):
        names = topics("sensors", partitions=4)   # unique per call, created now

Tansu notes for test writers: joining a consumer group costs ~2-3 s (initial rebalance
delay) and a member that vanished is only evicted after its session timeout, so give
consumers a short `session_timeout_ms` (3000) and a fresh group id per test. End
offsets: use `consumer.highwater(tp)` after a fetch, never ListOffsets(latest).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest

from streamvae.broker import EmbeddedBroker

_counter = itertools.count()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A Tansu broker on a free loopback port, memory storage, shared by the session."""
    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log_path) as running:
        yield running


@pytest.fixture
def topics(broker: EmbeddedBroker, request: pytest.FixtureRequest) -> Callable[..., str]:
    """`topics(base, partitions=1) -> name`: create a topic unique to this test."""

    def create(base: str, partitions: int = 1) -> str:
        name = f"{base}-{request.node.name[:40]}-{next(_counter)}"
        name = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)
        broker.create_topic(name, partitions)
        return name

    return create


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, object]:
    """Two tiny trained detectors, "v1" and "v2" (trained once per session)."""
    from tests.integration.daemon_harness import train_tiny

    return {"v1": train_tiny("v1", seed=1), "v2": train_tiny("v2", seed=2)}
