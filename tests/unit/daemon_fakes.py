"""In-memory fakes for the daemon's unit tests: source, sink, detector, store, codec, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from streamvae.detector import ScoredBatch
from streamvae.errors import ArtifactError, TransientError
from streamvae.pipeline import Codec, Output
from streamvae.records import (
    DeadLetter,
    Reason,
    Rejection,
    ScoreRecord,
    SensorRecord,
    SourcePosition,
)

FEATURES = ("a", "b", "c")


def fake_decode(payload: bytes, pos: SourcePosition) -> SensorRecord | Rejection:
    try:
        obj = orjson.loads(payload)
        return SensorRecord(obj["site"], float(obj["ts"]), tuple(obj["values"]), pos)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        return Rejection(Reason.INVALID_JSON, str(exc), payload, pos, None)


def _encode(obj: Any) -> bytes:
    return orjson.dumps(asdict(obj), default=_plain)


def _plain(obj: Any) -> Any:
    """bytes -> text, SourcePosition (a NamedTuple) -> an object."""
    if isinstance(obj, SourcePosition):
        return obj._asdict()
    return obj.decode(errors="replace")


FAKE_CODEC = Codec(decode=fake_decode, encode_score=_encode, encode_dead_letter=_encode)


def payload(site: str, ts: float, values: Sequence[float]) -> bytes:
    return orjson.dumps({"site": site, "ts": ts, "values": list(values)})


@dataclass(frozen=True)
class FakeDetector:
    """score = sum of values; threshold 10; known sites s0/s1; contributions = values."""

    version: str = "v1"
    features: tuple[str, ...] = FEATURES
    sites: Mapping[str, int] = field(default_factory=lambda: {"s0": 1, "s1": 2})
    created_at: float = 0.0
    fail: bool = False

    def score(self, values: npt.NDArray[np.float32], sites: Sequence[str]) -> ScoredBatch:
        if self.fail:
            raise RuntimeError("boom")
        return ScoredBatch(
            scores=values.sum(axis=1).astype(np.float64),
            contributions=values.astype(np.float32),
            thresholds=np.full(len(sites), 10.0),
            known=np.array([s in self.sites for s in sites], dtype=np.bool_),
        )


class FakeStore:
    def __init__(self, detectors: Mapping[str, FakeDetector | None]) -> None:
        self.detectors = dict(detectors)
        self.pointer: str | None = None

    def current(self) -> str | None:
        return self.pointer

    def load(self, version: str | None = None, device: str = "cpu") -> FakeDetector:
        detector = self.detectors[version or self.pointer or ""]
        if detector is None:
            raise ArtifactError("corrupt")
        return detector


class Holder:
    def __init__(self, current: FakeDetector | None) -> None:
        self.current = current
        self.features: tuple[str, ...] | None = FEATURES


class ListSource:
    """Partitioned in-memory topic; `exhausted` once everything was fetched if `finite`."""

    def __init__(self, partitions: Sequence[Sequence[bytes]], *, finite: bool = True) -> None:
        self.items: list[tuple[bytes, SourcePosition]] = [
            (p, SourcePosition("in", part, off))
            for off in range(max((len(x) for x in partitions), default=0))
            for part, msgs in enumerate(partitions)
            if off < len(msgs)
            for p in [msgs[off]]
        ]
        self.next = 0
        self.finite = finite
        self.paused = False
        self.pause_count = 0
        self.committed: dict[tuple[str, int], int] = {}
        self.commit_failures = 0

    @property
    def exhausted(self) -> bool:
        return self.finite and self.next >= len(self.items)

    async def fetch(self, max_records: int, timeout_s: float) -> list[tuple[bytes, SourcePosition]]:
        assert not self.paused
        chunk = self.items[self.next : self.next + min(max_records, 7)]
        self.next += len(chunk)
        if not chunk:
            await asyncio.sleep(min(timeout_s, 0.01))
        else:
            await asyncio.sleep(0)
        return chunk

    def pause(self) -> None:
        self.paused = True
        self.pause_count += 1

    def resume(self) -> None:
        self.paused = False

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        if self.commit_failures:
            self.commit_failures -= 1
            raise TransientError("commit failed")
        for key, value in offsets.items():
            assert value >= self.committed.get(key, 0)
            self.committed[key] = value

    def lags(self) -> Mapping[tuple[str, int], int]:
        return {}


class ListSink:
    """Collects outputs; acks immediately unless `hold` is set; `fail_sends` first sends fail."""

    def __init__(self) -> None:
        self.scores: list[ScoreRecord | dict[str, Any]] = []
        self.dead: list[dict[str, Any]] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.fail_sends = 0
        self.sends = 0

    async def send(
        self, scores: Sequence[Output], dead_letters: Sequence[Output]
    ) -> Awaitable[None]:
        self.sends += 1
        if self.fail_sends:
            self.fail_sends -= 1
            raise TransientError("broker down")
        self.scores.extend(orjson.loads(v) for _, v in scores)
        self.dead.extend(orjson.loads(v) for _, v in dead_letters)
        return self.hold.wait()


class RecordingMetrics:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> None:
            self.calls.append((name, kwargs or args))

        return record

    def named(self, name: str) -> list[Any]:
        return [c for n, c in self.calls if n == name]


class RecordingTraining:
    def __init__(self) -> None:
        self.offers: list[tuple[list[str], Any, Any, Any]] = []

    def offer(self, sites: Sequence[str], values: Any, ts: Any, normal: Any) -> None:
        self.offers.append((list(sites), values, ts, normal))


__all__ = ["DeadLetter"]
