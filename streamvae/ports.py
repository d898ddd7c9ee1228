"""The pipeline's ports: what it needs from the outside world, as small Protocols.

Sources and sinks (Kafka in streamvae.kafka, files in streamvae.replay), the model view
(streamvae.swap), the serving metrics (streamvae.metrics) and the training sink (the
retrainer) implement these; `streamvae.pipeline` re-exports them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from streamvae.detector import ScoredBatch
from streamvae.outputs import ScoredRows
from streamvae.records import DeadLetter, Rejection, ScoreRecord, SensorRecord, SourcePosition

Fetched = tuple[bytes, SourcePosition]  # payload and where it came from
Output = tuple[bytes | None, bytes]  # key, value
Item = SensorRecord | Rejection


class Source(Protocol):
    """Where records come from (Kafka consumer, file)."""

    @property
    def exhausted(self) -> bool:
        """True once no record will ever come again (end of a file)."""

    async def fetch(self, max_records: int, timeout_s: float) -> Sequence[Fetched]:
        """Up to `max_records` payloads; [] after `timeout_s` without any."""

    def pause(self) -> None: ...
    def resume(self) -> None: ...

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Record progress. Raises `TransientError` when it should be retried."""

    def lags(self) -> Mapping[tuple[str, int], int]:
        """Records behind the end, per (topic, partition)."""


class Sink(Protocol):
    """Where outputs go (Kafka producer, file)."""

    async def send(
        self, scores: Sequence[Output], dead_letters: Sequence[Output]
    ) -> Awaitable[None]:
        """Hand outputs over; the returned awaitable completes once all are acknowledged
        (and raises if any was not: the caller sends them again)."""


class Scorer(Protocol):
    """What the pipeline needs of a detector (see streamvae.detector)."""

    @property
    def version(self) -> str: ...
    @property
    def features(self) -> tuple[str, ...]: ...
    def score(self, values: npt.NDArray[np.float32], sites: Sequence[str]) -> ScoredBatch: ...


class ModelView(Protocol):
    """The model serving right now (swapped between batches by streamvae.swap)."""

    @property
    def current(self) -> Scorer | None: ...
    @property
    def features(self) -> tuple[str, ...] | None: ...


class PipelineMetrics(Protocol):
    """The serving instruments (streamvae.metrics.ServingMetrics implements it)."""

    def batch(
        self,
        *,
        consumed: int,
        scored: int,
        dead_letters: Mapping[str, int],
        scoring_seconds: float,
        lags_s: Sequence[float],
        sites: Sequence[str],
        anomalies: Sequence[bool],
        severities: Sequence[float],
        statuses: Sequence[str],
    ) -> None: ...
    def set_consumer_lag(self, lags: Mapping[tuple[str, int], int]) -> None: ...
    def set_in_flight(self, records: int) -> None: ...
    def set_paused(self, paused: bool) -> None: ...
    def set_model(self, version: str, created_at: float) -> None: ...
    def model_rejected(self, reason: str) -> None: ...
    def set_ready(self, ready: bool) -> None: ...
    def set_site_statuses(self, counts: Mapping[str, int]) -> None: ...


class TrainingSink(Protocol):
    """Receives scored records for retraining (the retrainer's buffer). Cheap; on the loop."""

    def offer(
        self,
        sites: Sequence[str],
        values: npt.NDArray[np.float32],
        ts: npt.NDArray[np.float64],
        normal: npt.NDArray[np.bool_],
    ) -> None: ...


class NullMetrics:
    """Metrics that record nothing (tests, file replay without an HTTP endpoint)."""

    def batch(self, **_: Any) -> None:
        return None

    def set_consumer_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        return None

    def set_in_flight(self, records: int) -> None:
        return None

    def set_paused(self, paused: bool) -> None:
        return None

    def set_model(self, version: str, created_at: float) -> None:
        return None

    def model_rejected(self, reason: str) -> None:
        return None

    def set_ready(self, ready: bool) -> None:
        return None

    def set_site_statuses(self, counts: Mapping[str, int]) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Codec:
    """Record (de)serialisation, injected so the pipeline stays format-agnostic."""

    decode: Callable[[bytes, SourcePosition], Item]
    encode_score: Callable[[ScoreRecord], bytes]
    encode_dead_letter: Callable[[DeadLetter], bytes]
    # optional batch form of `encode_score` (same bytes for each of rows.records, faster:
    # streamvae.outputs.encode_scores for the JSON codec)
    encode_scores: Callable[[ScoredRows], list[bytes]] | None = None
    # optional batch form of `decode` (the same items for one fetch, faster:
    # streamvae.records.decode_records for the JSON codec)
    decode_batch: Callable[[Sequence[Fetched]], list[Item]] | None = None
