"""Micro-batching: close a batch at `max_records` items or `max_wait_s` after its first item.

Pure: no I/O, the clock is injected. Items from every partition share one batch (the
pipeline keeps each item's source position, so commits stay per partition). Order is
preserved: items leave in the order they were added.

    batcher = MicroBatcher(BatchPolicy(max_records=1024, max_wait_s=0.02), time.monotonic)
    for batch in batcher.add(items): ...       # full batches, ready now
    if (batch := batcher.poll()) is not None:  # the partial batch, once it is due
        ...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """When a batch closes: at `max_records` items, or `max_wait_s` after its first item."""

    max_records: int
    max_wait_s: float

    def __post_init__(self) -> None:
        if self.max_records <= 0:
            raise ValueError("max_records must be positive")
        if self.max_wait_s < 0:
            raise ValueError("max_wait_s must not be negative")


class MicroBatcher(Generic[T]):
    """Accumulates items into batches; see the module docstring."""

    def __init__(self, policy: BatchPolicy, clock: Callable[[], float]) -> None:
        self._policy = policy
        self._clock = clock
        self._pending: list[T] = []
        self._opened_at = 0.0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, items: Sequence[T]) -> list[list[T]]:
        """Append `items`; return every batch that reached `max_records` (possibly none)."""
        if not items:
            return []
        if not self._pending:
            self._opened_at = self._clock()
        size = self._policy.max_records
        ready: list[list[T]] = []
        start = 0
        room = size - len(self._pending)
        if len(items) >= room:
            self._pending.extend(items[:room])
            ready.append(self._pending)
            self._pending = []
            start = room
            while len(items) - start >= size:
                ready.append(list(items[start : start + size]))
                start += size
            if start < len(items):
                self._opened_at = self._clock()
        self._pending.extend(items[start:])
        return ready

    def timeout(self) -> float | None:
        """Seconds until the partial batch is due (0 when due), None when nothing is pending."""
        if not self._pending:
            return None
        return max(0.0, self._opened_at + self._policy.max_wait_s - self._clock())

    def poll(self) -> list[T] | None:
        """The partial batch if its wait has run out, else None."""
        left = self.timeout()
        if left is None or left > 0:
            return None
        return self.flush()

    def flush(self) -> list[T]:
        """Take whatever is pending now (possibly empty)."""
        batch, self._pending = self._pending, []
        return batch
