"""MicroBatcher: size and time triggers, order, multi-batch adds; driven by a fake clock."""

from __future__ import annotations

import pytest

from streamvae.batching import BatchPolicy, MicroBatcher
from tests.conftest import FakeClock


@pytest.mark.parametrize(
    ("max_records", "adds", "expected_ready", "pending"),
    [
        (3, [[1]], [], 1),
        (3, [[1, 2, 3]], [[1, 2, 3]], 0),
        (3, [[1, 2], [3, 4]], [[1, 2, 3]], 1),
        (3, [list(range(7))], [[0, 1, 2], [3, 4, 5]], 1),
        (3, [[1], list(range(2, 9))], [[1, 2, 3], [4, 5, 6]], 2),
        (1, [[1, 2]], [[1], [2]], 0),
        (3, [[]], [], 0),
    ],
)
def test_size_trigger(
    max_records: int, adds: list[list[int]], expected_ready: list[list[int]], pending: int
) -> None:
    batcher: MicroBatcher[int] = MicroBatcher(BatchPolicy(max_records, 1.0), FakeClock())
    ready: list[list[int]] = []
    for items in adds:
        ready.extend(batcher.add(items))
    assert ready == expected_ready
    assert len(batcher) == pending


@pytest.mark.parametrize(
    ("max_wait", "advance", "due"),
    [(0.02, 0.0, False), (0.02, 0.019, False), (0.02, 0.02, True), (0.0, 0.0, True)],
)
def test_time_trigger(clock: FakeClock, max_wait: float, advance: float, due: bool) -> None:
    batcher: MicroBatcher[str] = MicroBatcher(BatchPolicy(10, max_wait), clock)
    assert batcher.poll() is None
    assert batcher.timeout() is None
    batcher.add(["a", "b"])
    clock.advance(advance)
    assert batcher.timeout() == pytest.approx(max(0.0, max_wait - advance))
    batch = batcher.poll()
    assert (batch == ["a", "b"]) if due else (batch is None)


def test_wait_counts_from_first_item(clock: FakeClock) -> None:
    batcher: MicroBatcher[int] = MicroBatcher(BatchPolicy(10, 1.0), clock)
    batcher.add([1])
    clock.advance(0.6)
    batcher.add([2])  # does not restart the wait
    clock.advance(0.4)
    assert batcher.poll() == [1, 2]
    batcher.add([3])  # a new batch opens now
    clock.advance(0.5)
    assert batcher.poll() is None
    clock.advance(0.5)
    assert batcher.poll() == [3]


def test_remainder_after_full_batch_opens_new_wait(clock: FakeClock) -> None:
    batcher: MicroBatcher[int] = MicroBatcher(BatchPolicy(2, 1.0), clock)
    batcher.add([1])
    clock.advance(0.9)
    assert batcher.add([2, 3]) == [[1, 2]]
    clock.advance(0.5)
    assert batcher.poll() is None
    clock.advance(0.5)
    assert batcher.poll() == [3]


def test_flush_takes_everything(clock: FakeClock) -> None:
    batcher: MicroBatcher[int] = MicroBatcher(BatchPolicy(5, 1.0), clock)
    batcher.add([1, 2])
    assert batcher.flush() == [1, 2]
    assert batcher.flush() == []


@pytest.mark.parametrize(("max_records", "max_wait"), [(0, 1.0), (1, -0.1)])
def test_policy_rejects_nonsense(max_records: int, max_wait: float) -> None:
    with pytest.raises(ValueError, match="max_"):
        BatchPolicy(max_records, max_wait)
