"""Record formats: sensor input, score output, dead letters. Pure: no I/O.

Input, one JSON object per Kafka message or JSONL line::

    {"site": "plant-7", "ts": 1732200000.5, "values": {"temp": 21.3, "rpm": 1500.0}}

`ts` is epoch seconds or an ISO-8601 string with a zone (`"2026-11-20T10:00:00Z"`);
`values` is an object keyed by feature name or a list in the configured feature
order. A CSV row with header `site,ts,<feature…>` is the same record.

Decoding never raises: it returns a `SensorRecord` or a `Rejection` with a stable
`Reason` code. The reason codes are a public contract (dead-letter consumers and
alerts key on them).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

SiteStatus = Literal["active", "warming"]


class Reason(enum.StrEnum):
    """Why a record could not be scored. Stable codes."""

    INVALID_JSON = "invalid_json"  # not UTF-8 JSON
    NOT_OBJECT = "not_object"  # JSON, but not an object
    MISSING_FIELD = "missing_field"  # site, ts or values absent
    BAD_TYPE = "bad_type"  # a field has the wrong JSON type
    BAD_SITE = "bad_site"  # empty, too long, or control characters
    BAD_TIMESTAMP = "bad_timestamp"  # unparsable or out of range
    NON_FINITE = "non_finite"  # NaN/inf (or a number too large for float64)
    WRONG_LENGTH = "wrong_length"  # values list length != number of features
    MISSING_FEATURE = "missing_feature"  # values object lacks a configured feature
    UNKNOWN_FEATURE = "unknown_feature"  # values object has an unconfigured feature
    TOO_LARGE = "too_large"  # message larger than the configured limit
    SCORING_FAILED = "scoring_failed"  # the model could not score it (never expected)


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where a record came from: Kafka (topic, partition, offset) or a file (path, line)."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class SensorRecord:
    """A decoded, validated input record. `values` follow the configured feature order."""

    site: str
    ts: float  # epoch seconds, UTC
    values: tuple[float, ...]
    position: SourcePosition | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that cannot be scored, and why."""

    reason: Reason
    detail: str
    payload: bytes
    position: SourcePosition | None = None
    site: str | None = None  # when it could be read, for per-site metrics


@dataclass(frozen=True, slots=True)
class ScoreRecord:
    """One output per scored input record.

    `score` is -log p(x|s) (nats, standardized units); `severity = score / threshold`
    (a NaN-free float; 0 when the threshold is not positive... see `severity_of`);
    `contributions` maps each sensor to its share of the score (they sum to `score`
    up to the prior/latent term; see streamvae/model/scoring.py). Warming sites have
    `anomaly = False` and `status = "warming"`.
    """

    site: str
    ts: float
    score: float
    threshold: float
    anomaly: bool
    severity: float
    contributions: dict[str, float]
    model_version: str
    status: SiteStatus
    position: SourcePosition | None = None
    scored_at: float = 0.0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected record as written to the dead-letter topic."""

    reason: Reason
    detail: str
    payload: bytes
    position: SourcePosition | None = None
    rejected_at: float = 0.0


@dataclass(frozen=True, slots=True)
class DecoderSpec:
    """What the decoder accepts. Plain data, built from config at the composition root."""

    features: tuple[str, ...]
    unknown_feature: Literal["reject", "ignore"] = "reject"
    max_message_bytes: int = 1_048_576
    max_site_length: int = 128
    feature_index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_index", {n: i for i, n in enumerate(self.features)})


def decode_record(
    payload: bytes, spec: DecoderSpec, position: SourcePosition | None = None
) -> SensorRecord | Rejection:
    """Decode one JSON message. Never raises."""
    raise NotImplementedError


def decode_csv_row(
    row: Sequence[str],
    header: Sequence[str],
    spec: DecoderSpec,
    position: SourcePosition | None = None,
) -> SensorRecord | Rejection:
    """Decode one CSV row given its header `site,ts,<feature…>`. Never raises."""
    raise NotImplementedError


def encode_score(record: ScoreRecord) -> bytes:
    raise NotImplementedError


def decode_score(payload: bytes) -> ScoreRecord:
    raise NotImplementedError


def encode_dead_letter(letter: DeadLetter) -> bytes:
    raise NotImplementedError


def decode_dead_letter(payload: bytes) -> DeadLetter:
    raise NotImplementedError
