"""What a serving worker process tells the daemon that started it (streamvae.workers).

A worker consumes and scores like the daemon itself, but the daemon owns the metrics
endpoint and the retrainer, so a worker reports, every flush, one `Update`: its gauges
(in flight, consumer lag, paused, ready), the figures of every batch it scored (the
arguments of `PipelineMetrics.batch`, so the daemon's counters and histograms add up
exactly as if it had scored them) and the scored records offered for training.

Wire format, no pickle: `u32 length` + `u32 header length` + a JSON header + the raw
bytes of the arrays it describes (dtype from a fixed list, shape), in header order.
Pure: no I/O here.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

__all__ = ["BatchFigures", "Offer", "Update", "decode_update", "encode_update", "read_length"]

_U32 = struct.Struct(">I")
LENGTH_BYTES = _U32.size
MAX_FRAME_BYTES = 1 << 30
# dtypes an array may have on the wire (anything else is refused when decoding)
_DTYPES: dict[str, np.dtype[Any]] = {
    "f4": np.dtype("<f4"),
    "f8": np.dtype("<f8"),
    "b1": np.dtype("bool"),
}


@dataclass(frozen=True, slots=True)
class BatchFigures:
    """The arguments of one `PipelineMetrics.batch` call."""

    consumed: int
    scored: int
    dead_letters: Mapping[str, int]
    scoring_seconds: float
    lags_s: npt.NDArray[np.float64]
    sites: Sequence[str]
    anomalies: npt.NDArray[np.bool_]
    severities: npt.NDArray[np.float64]
    statuses: Sequence[str]

    def as_kwargs(self) -> dict[str, Any]:
        return {
            "consumed": self.consumed,
            "scored": self.scored,
            "dead_letters": self.dead_letters,
            "scoring_seconds": self.scoring_seconds,
            "lags_s": self.lags_s,
            "sites": self.sites,
            "anomalies": self.anomalies,
            "severities": self.severities,
            "statuses": self.statuses,
        }


@dataclass(frozen=True, slots=True)
class Offer:
    """The arguments of one `TrainingSink.offer` call."""

    sites: Sequence[str]
    values: npt.NDArray[np.float32]
    ts: npt.NDArray[np.float64]
    normal: npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Update:
    """One worker's report since its previous one."""

    ready: bool = False
    started: bool = False  # it has a model (or may buffer) and connects now
    in_flight: int = 0
    paused: bool = False
    lags: Mapping[tuple[str, int], int] = field(default_factory=dict)
    batches: Sequence[BatchFigures] = ()
    offers: Sequence[Offer] = ()


def _array_spec(a: npt.NDArray[Any], blobs: list[bytes]) -> list[Any]:
    for code, dtype in _DTYPES.items():
        if a.dtype == dtype:
            blobs.append(np.ascontiguousarray(a).tobytes())
            return [code, list(a.shape)]
    raise TypeError(f"no wire form for dtype {a.dtype}")


def encode_update(update: Update) -> bytes:
    """The whole frame, length prefix included."""
    blobs: list[bytes] = []
    batches = [
        {
            "consumed": b.consumed,
            "scored": b.scored,
            "dead_letters": dict(b.dead_letters),
            "scoring_seconds": b.scoring_seconds,
            "sites": list(b.sites),
            "statuses": list(b.statuses),
            "lags_s": _array_spec(np.asarray(b.lags_s, dtype=np.float64), blobs),
            "anomalies": _array_spec(np.asarray(b.anomalies, dtype=np.bool_), blobs),
            "severities": _array_spec(np.asarray(b.severities, dtype=np.float64), blobs),
        }
        for b in update.batches
    ]
    offers = [
        {
            "sites": list(o.sites),
            "values": _array_spec(np.asarray(o.values, dtype=np.float32), blobs),
            "ts": _array_spec(np.asarray(o.ts, dtype=np.float64), blobs),
            "normal": _array_spec(np.asarray(o.normal, dtype=np.bool_), blobs),
        }
        for o in update.offers
    ]
    header = orjson.dumps(
        {
            "ready": update.ready,
            "started": update.started,
            "in_flight": update.in_flight,
            "paused": update.paused,
            "lags": [[t, p, n] for (t, p), n in update.lags.items()],
            "batches": batches,
            "offers": offers,
        }
    )
    body = b"".join([_U32.pack(len(header)), header, *blobs])
    return _U32.pack(len(body)) + body


def read_length(prefix: bytes) -> int:
    """The body length a frame's first `LENGTH_BYTES` announce; ValueError if absurd."""
    n = int(_U32.unpack(prefix)[0])
    if not LENGTH_BYTES <= n <= MAX_FRAME_BYTES:
        raise ValueError(f"worker frame of {n} bytes")
    return n


class _Reader:
    def __init__(self, body: bytes, start: int) -> None:
        self._body, self._at = memoryview(body), start

    def array(self, spec: Any) -> npt.NDArray[Any]:
        code, shape = spec
        dtype = _DTYPES[code]  # KeyError: refused
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise ValueError(f"bad array shape {shape!r}")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        size = count * dtype.itemsize
        if self._at + size > len(self._body):
            raise ValueError("worker frame shorter than its header says")
        a: npt.NDArray[Any] = np.frombuffer(self._body[self._at : self._at + size], dtype=dtype)
        self._at += size
        return a.reshape(shape).copy()  # own memory: the frame's buffer is not kept alive

    def done(self) -> None:
        if self._at != len(self._body):
            raise ValueError("worker frame longer than its header says")


def decode_update(body: bytes) -> Update:
    """A frame's body (without the length prefix) → Update; ValueError (or KeyError,
    TypeError) when it is malformed: the worker is then treated as broken."""
    (n,) = _U32.unpack_from(body)
    header = orjson.loads(bytes(body[LENGTH_BYTES : LENGTH_BYTES + n]))
    reader = _Reader(body, LENGTH_BYTES + n)
    batches = [
        BatchFigures(
            consumed=int(b["consumed"]),
            scored=int(b["scored"]),
            dead_letters={str(k): int(v) for k, v in b["dead_letters"].items()},
            scoring_seconds=float(b["scoring_seconds"]),
            lags_s=reader.array(b["lags_s"]),
            anomalies=reader.array(b["anomalies"]),
            severities=reader.array(b["severities"]),
            sites=[str(s) for s in b["sites"]],
            statuses=[str(s) for s in b["statuses"]],
        )
        for b in header["batches"]
    ]
    offers = [
        Offer(
            sites=[str(s) for s in o["sites"]],
            values=reader.array(o["values"]),
            ts=reader.array(o["ts"]),
            normal=reader.array(o["normal"]),
        )
        for o in header["offers"]
    ]
    reader.done()
    return Update(
        ready=bool(header["ready"]),
        started=bool(header["started"]),
        in_flight=int(header["in_flight"]),
        paused=bool(header["paused"]),
        lags={(str(t), int(p)): int(lag) for t, p, lag in header["lags"]},
        batches=batches,
        offers=offers,
    )
