"""Record formats: sensor input, score output, dead letters. Pure: no I/O.

Input, one JSON object per Kafka message or JSONL line::

    {"site": "plant-7", "ts": 1732200000.5, "values": {"temp": 21.3, "rpm": 1500.0}}

`ts` is epoch seconds or an ISO-8601 string with a zone (`"2026-11-20T10:00:00Z"`);
`values` is an object keyed by feature name or a list in the configured feature
order. A CSV row with header `site,ts,<feature…>` is the same record.

Decoding never raises: it returns a `SensorRecord` or a `Rejection` with a stable
`Reason` code. The reason codes are a public contract (dead-letter consumers and
alerts key on them); docs/records.md lists them with examples.

Speed (decode is on the hot path; timeit, CPU time, Python 3.11, CI machine):
`decode_record` of a 38-feature record takes about 4.6 µs with `values` as an
object (1.8 µs of it is `orjson.loads`) and 2.9 µs as a list; `decode_records`
(what the daemon calls on each fetch) 10–20 % less; `encode_score` with 38
contributions about 6.4 µs; `decode_csv_row` about 9 µs.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import logging
import math
import operator
import struct
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal, NamedTuple

import orjson

log = logging.getLogger(__name__)

SiteStatus = Literal["active", "warming"]

#: Timestamps outside [MIN_TS, MAX_TS] (1970-01-01 .. 2200-01-01 UTC) are rejected.
MIN_TS = 0.0
MAX_TS = 7_258_118_400.0
#: Severity is clipped to ±MAX_SEVERITY so it stays finite.
MAX_SEVERITY = 1e9
#: Dead letters carry at most this many bytes of the original payload by default.
DEAD_LETTER_MAX_PAYLOAD = 65_536
_DETAIL_NAME_CHARS = 64
_MAX_TS_TEXT = 64


class Reason(enum.StrEnum):
    """Why a record could not be scored. Stable codes."""

    INVALID_JSON = "invalid_json"  # not UTF-8 JSON (for CSV: not a UTF-8 CSV line)
    NOT_OBJECT = "not_object"  # JSON, but not an object
    MISSING_FIELD = "missing_field"  # site, ts or values absent
    BAD_TYPE = "bad_type"  # a field has the wrong JSON type
    BAD_SITE = "bad_site"  # empty, too long, or control characters
    BAD_TIMESTAMP = "bad_timestamp"  # unparsable, no zone, non-finite or out of range
    NON_FINITE = "non_finite"  # a value is NaN/inf (or a number too large for float64)
    WRONG_LENGTH = "wrong_length"  # values list length != number of features
    MISSING_FEATURE = "missing_feature"  # values object lacks a configured feature
    UNKNOWN_FEATURE = "unknown_feature"  # values object has an unconfigured feature
    TOO_LARGE = "too_large"  # message larger than the configured limit
    SCORING_FAILED = "scoring_failed"  # the model could not score it (never expected)
    NO_MODEL = "no_model"  # valid, buffered for the first training before any model existed


class SourcePosition(NamedTuple):
    """Where a record came from: Kafka (topic, partition, offset) or a file (path, 0, line).

    A NamedTuple, not a frozen dataclass, like `SensorRecord`: one of each is built per
    input record on the daemon's hot path, and a NamedTuple is built in C (0.3 vs 0.65 µs)."""

    topic: str
    partition: int
    offset: int


class SensorRecord(NamedTuple):
    """A decoded, validated input record. `values` follow the configured feature order.
    (Immutable; a NamedTuple for construction speed: see `SourcePosition`.)

    The decoders give `values` as a packed `array('d')` (`packed`): a record waiting in
    flight then holds ~0.6 KB of Python objects instead of ~1.4 KB with a tuple of 38
    float objects (0.9 against 1.8 KB of the daemon's RSS), and a batch stacks with one
    `bytes.join` (`outputs.stack_values`), for ~0.45 µs more per record in the decoder
    (docs/performance.md, item 18). Any sequence of floats is accepted (tests and the
    simulator build tuples); compare with `tuple(values)`."""

    site: str
    ts: float  # epoch seconds, UTC
    values: Sequence[float]  # (D,) finite
    position: SourcePosition | None = None


def packed(values: Iterable[float]) -> array[float]:
    """Values as the decoders hold them: a float64 `array` (see `SensorRecord`)."""
    return array("d", values)


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

    `score` is -log p(x|s) (nats, in standardized units); `threshold` is the
    calibrated threshold that applied (the site's own, or the fallback);
    `anomaly` is `score > threshold` for active sites; `severity` is
    `severity_of(score, threshold)`: `score / threshold`, finite, 0 when the
    threshold is not a positive number. `contributions` maps each sensor to its
    share of the score (see streamvae/model/scoring.py). Warming sites (too
    little data for a site threshold) have `anomaly = False` and
    `status = "warming"`. `position` is the input's (topic, partition, offset),
    so duplicates after a crash are recognisable.
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
    payload: bytes  # the original bytes (or their first bytes when `truncated`)
    position: SourcePosition | None = None
    rejected_at: float = 0.0
    site: str | None = None
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class DecoderSpec:
    """What the decoder accepts. Plain data, built from config at the composition root."""

    features: tuple[str, ...]
    unknown_feature: Literal["reject", "ignore"] = "reject"
    max_message_bytes: int = 1_048_576
    max_site_length: int = 128
    feature_index: dict[str, int] = field(init=False, repr=False, compare=False)
    #: values object -> (D,) sequence of its values in feature order (KeyError if one lacks)
    getter: Callable[[Mapping[str, Any]], Sequence[Any]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        index = {n: i for i, n in enumerate(self.features)}
        if len(index) != len(self.features):
            raise ValueError("DecoderSpec.features has duplicate names")
        object.__setattr__(self, "feature_index", index)
        names = self.features
        getter: Callable[[Mapping[str, Any]], Sequence[Any]]
        if len(names) == 1:
            getter = lambda mapping: (mapping[names[0]],)  # noqa: E731
        elif names:
            getter = operator.itemgetter(*names)
        else:
            getter = lambda mapping: ()  # noqa: E731
        object.__setattr__(self, "getter", getter)


class _Reject(Exception):  # noqa: N818 - internal control flow, never escapes this module
    __slots__ = ("detail", "reason")

    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        self.detail = detail


def _name(key: object) -> str:
    """A short printable rendering of a user-supplied name for `detail` texts."""
    text = key if isinstance(key, str) else str(type(key).__name__)
    if len(text) > _DETAIL_NAME_CHARS:
        text = text[:_DETAIL_NAME_CHARS] + "…"
    return repr(text)


def _jtype(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _check_site(site: object, spec: DecoderSpec) -> str:
    if type(site) is not str:
        raise _Reject(Reason.BAD_TYPE, f"site must be a string, not {_jtype(site)}")
    if not site:
        raise _Reject(Reason.BAD_SITE, "site is empty")
    if len(site) > spec.max_site_length:
        raise _Reject(Reason.BAD_SITE, f"site longer than {spec.max_site_length} characters")
    if not site.isprintable():
        raise _Reject(Reason.BAD_SITE, "site contains control or non-printable characters")
    return site


def _ts_text(text: str) -> float:
    if len(text) > _MAX_TS_TEXT:
        raise _Reject(Reason.BAD_TIMESTAMP, "ts string too long")
    try:
        return float(text)  # epoch seconds written as text (CSV)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise _Reject(Reason.BAD_TIMESTAMP, f"ts is not ISO-8601: {_name(text)}") from None
    if when.tzinfo is None:
        raise _Reject(Reason.BAD_TIMESTAMP, "ts has no time zone (add Z or +hh:mm)")
    try:
        return when.timestamp()
    except (OverflowError, ValueError, OSError):
        raise _Reject(Reason.BAD_TIMESTAMP, "ts out of range") from None


def _check_ts(ts: object) -> float:
    if type(ts) is float or type(ts) is int:
        try:
            value = float(ts)
        except OverflowError:
            raise _Reject(Reason.BAD_TIMESTAMP, "ts out of range") from None
    elif type(ts) is str:
        value = _ts_text(ts)
    else:
        raise _Reject(
            Reason.BAD_TYPE, f"ts must be a number or an ISO-8601 string, not {_jtype(ts)}"
        )
    if not MIN_TS <= value <= MAX_TS:  # also catches NaN
        hint = " (milliseconds? ts is in seconds)" if 1e11 < value < 1e14 else ""
        raise _Reject(Reason.BAD_TIMESTAMP, f"ts out of range 1970..2200: {value!r}{hint}")
    return value


_FLOAT_ONLY = frozenset({float})
_NUMBER_TYPES = frozenset({float, int})


def _as_floats(items: Sequence[Any], names: Sequence[str]) -> tuple[float, ...]:
    """(D,) JSON numbers -> floats. Fast path in C: a finite sum means every item is a
    finite number (a TypeError or non-finite sum sends us to the item-by-item check)."""
    try:
        total = sum(items)
        if total - total == 0.0:
            kinds = set(map(type, items))
            if kinds <= _FLOAT_ONLY:
                return tuple(items)
            if kinds <= _NUMBER_TYPES:  # no bool: bool is not a number here
                return tuple(map(float, items))
    except (TypeError, OverflowError):
        pass
    return _as_floats_slow(items, names)


def _as_floats_slow(items: Sequence[Any], names: Sequence[str]) -> tuple[float, ...]:
    out: list[float] = []
    append = out.append
    for value in items:
        if type(value) is float:
            if value - value != 0.0:  # NaN or ±inf
                break
            append(value)
        elif type(value) is int:
            try:
                append(float(value))
            except OverflowError:
                break
        else:
            break
    else:
        return tuple(out)
    i = len(out)
    value = items[i]
    if type(value) is float or type(value) is int:
        raise _Reject(Reason.NON_FINITE, f"value of {_name(names[i])} is not finite")
    raise _Reject(
        Reason.BAD_TYPE, f"value of {_name(names[i])} must be a number, not {_jtype(value)}"
    )


_MISSING = object()


def _check_values(values: object, spec: DecoderSpec) -> tuple[float, ...]:
    features = spec.features
    if type(values) is dict:
        if len(values) == len(features):
            try:  # the common case: exactly the configured features
                return _as_floats(spec.getter(values), features)
            except KeyError:
                pass
        items = [values.get(name, _MISSING) for name in features]
        if len(values) != len(features) or any(item is _MISSING for item in items):
            for name, item in zip(features, items, strict=True):
                if item is _MISSING:
                    raise _Reject(Reason.MISSING_FEATURE, f"values lacks feature {_name(name)}")
            if spec.unknown_feature == "reject":
                index = spec.feature_index
                extra = [k for k in values if k not in index]
                raise _Reject(
                    Reason.UNKNOWN_FEATURE,
                    f"values has {len(extra)} unknown feature(s), e.g. {_name(extra[0])}",
                )
        return _as_floats(items, features)
    if type(values) is list:
        if len(values) != len(features):
            raise _Reject(
                Reason.WRONG_LENGTH, f"values has {len(values)} items, expected {len(features)}"
            )
        return _as_floats(values, features)
    raise _Reject(Reason.BAD_TYPE, f"values must be an object or an array, not {_jtype(values)}")


def _loads(payload: bytes) -> Any:
    """orjson; on failure, the stdlib (which reads NaN, Infinity, 1e400) so that such
    records are reported as non-finite rather than as invalid JSON."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _Reject(Reason.INVALID_JSON, "not valid UTF-8 JSON") from None


def _field(obj: dict[str, Any], key: str) -> Any:
    try:
        return obj[key]
    except KeyError:
        raise _Reject(Reason.MISSING_FIELD, f"missing field {key!r}") from None


def decode_record(
    payload: bytes, spec: DecoderSpec, position: SourcePosition | None = None
) -> SensorRecord | Rejection:
    """Decode one JSON message. Never raises."""
    site: str | None = None
    try:
        if len(payload) > spec.max_message_bytes:
            raise _Reject(
                Reason.TOO_LARGE, f"{len(payload)} bytes > limit {spec.max_message_bytes}"
            )
        obj = _loads(payload)
        if type(obj) is not dict:
            raise _Reject(Reason.NOT_OBJECT, f"expected a JSON object, got {_jtype(obj)}")
        site = _check_site(_field(obj, "site"), spec)
        ts = _check_ts(_field(obj, "ts"))
        values = _check_values(_field(obj, "values"), spec)
    except _Reject as rej:
        return Rejection(rej.reason, rej.detail, bytes(payload), position, site)
    except Exception as exc:  # never expected; decoding must not stop a loop
        log.exception("decoder bug on a %d-byte payload", len(payload))
        detail = f"decoder error: {type(exc).__name__}"
        return Rejection(Reason.INVALID_JSON, detail, bytes(payload), position, site)
    return SensorRecord(site, ts, packed(values), position)


@lru_cache(maxsize=16)
def _packer(width: int) -> Callable[..., bytes]:
    return struct.Struct(f"{width}d").pack


def decode_records(
    messages: Iterable[tuple[bytes, SourcePosition | None]], spec: DecoderSpec
) -> list[SensorRecord | Rejection]:
    """`[decode_record(payload, spec, position) for payload, position in messages]`, the
    same results (tested on the decoder's tables of good and bad records and on random
    JSON), in 80–90 % of the time for the common record (38 sensors, best of 60 runs of
    1024 records on 2026-12-02: 4.96 against 5.65 µs as a list, 7.76 against 8.77 µs as
    an object; `orjson.loads` alone 2.1 and 3.8 µs).

    Why: `decode_record` was the second-largest cost of the daemon's event loop (py-spy,
    docs/performance.md), and of its ~4.6 µs per 38-sensor record only ~1.8 µs is
    `orjson.loads`; most of the rest is the calls of its checks (`_check_site`, `_field`,
    `_check_ts`, `_check_values`, `_as_floats`: a Python call each) and a per-value type
    set. Here the common record (size within the limit, a printable site, a float `ts` in
    range, exactly the configured features as finite floats) is checked inline, one loop
    for the whole fetch, the value types counted with `operator.countOf` (no set built);
    anything else, including every rejection, goes to `decode_record` itself, so there is
    one definition of what is valid and what each reason means."""
    loads, count_of, float_ = orjson.loads, operator.countOf, float
    width, max_bytes, max_site = len(spec.features), spec.max_message_bytes, spec.max_site_length
    getter, pack = spec.getter, _packer(width)
    out: list[SensorRecord | Rejection] = []
    append = out.append
    for payload, position in messages:
        try:
            if len(payload) <= max_bytes:
                obj = loads(payload)
                site, ts, values = obj["site"], obj["ts"], obj["values"]
                if type(values) is dict and len(values) == width:
                    values = getter(values)
                if (
                    type(site) is str
                    and 0 < len(site) <= max_site
                    and site.isprintable()
                    and type(ts) is float_
                    and MIN_TS <= ts <= MAX_TS
                    and type(values) in (list, tuple)
                    and len(values) == width
                ):
                    total = sum(values)
                    if total - total == 0.0 and count_of(map(type, values), float_) == width:
                        append(SensorRecord(site, ts, array("d", pack(*values)), position))
                        continue
        except Exception:  # anything unusual: decode_record says what it is
            pass
        append(decode_record(payload, spec, position))
    return out


@lru_cache(maxsize=64)
def _csv_layout(header: tuple[str, ...], spec: DecoderSpec) -> tuple[int, int, tuple[int, ...]]:
    """Column indices of (site, ts, features in spec order) for a header; raises _Reject."""
    columns: dict[str, int] = {}
    for i, column in enumerate(header):
        name = column.strip()
        if name in columns:
            raise _Reject(Reason.BAD_TYPE, f"CSV header repeats column {_name(name)}")
        columns[name] = i
    for required in ("site", "ts"):
        if required not in columns:
            raise _Reject(Reason.MISSING_FIELD, f"CSV header lacks column {required!r}")
    for name in spec.features:
        if name not in columns:
            raise _Reject(Reason.MISSING_FEATURE, f"CSV header lacks feature {_name(name)}")
    if spec.unknown_feature == "reject":
        extra = [n for n in columns if n not in spec.feature_index and n not in ("site", "ts")]
        if extra:
            raise _Reject(
                Reason.UNKNOWN_FEATURE, f"CSV header has unknown feature {_name(extra[0])}"
            )
    return columns["site"], columns["ts"], tuple(columns[n] for n in spec.features)


def _csv_float(text: str, name: str) -> float:
    if not text.strip():
        raise _Reject(Reason.MISSING_FEATURE, f"empty value for {_name(name)}")
    try:
        value = float(text)
    except ValueError:
        raise _Reject(Reason.BAD_TYPE, f"value of {_name(name)} is not a number") from None
    if not math.isfinite(value):
        raise _Reject(Reason.NON_FINITE, f"value of {_name(name)} is not finite")
    return value


def _csv_values(row: Sequence[str], cols: Sequence[int], names: Sequence[str]) -> tuple[float, ...]:
    try:  # fast path: every cell a finite number
        values = tuple([float(row[c]) for c in cols])
        total = sum(values)
        if total - total == 0.0:
            return values
    except ValueError:
        pass
    return tuple(_csv_float(row[c], n) for c, n in zip(cols, names, strict=True))


def decode_csv_row(
    row: Sequence[str],
    header: Sequence[str],
    spec: DecoderSpec,
    position: SourcePosition | None = None,
    *,
    raw: bytes | None = None,
) -> SensorRecord | Rejection:
    """Decode one CSV row given its header `site,ts,<feature…>`. Never raises.

    The header may order the features freely. `raw` is the original line, kept in
    a rejection (default: the row joined with commas).
    """
    site: str | None = None
    try:
        site_col, ts_col, cols = _csv_layout(tuple(header), spec)
        if len(row) != len(header):
            raise _Reject(
                Reason.WRONG_LENGTH, f"row has {len(row)} columns, header has {len(header)}"
            )
        site = _check_site(row[site_col], spec)
        ts_text = row[ts_col]
        if not ts_text.strip():
            raise _Reject(Reason.MISSING_FIELD, "empty ts")
        ts = _check_ts(ts_text)
        values = _csv_values(row, cols, spec.features)
    except _Reject as rej:
        payload = raw if raw is not None else ",".join(row).encode("utf-8", "replace")
        return Rejection(rej.reason, rej.detail, payload, position, site)
    except Exception as exc:  # never expected
        log.exception("CSV decoder bug")
        payload = raw if raw is not None else b""
        detail = f"decoder error: {type(exc).__name__}"
        return Rejection(Reason.INVALID_JSON, detail, payload, position, site)
    return SensorRecord(site, ts, packed(values), position)


def severity_of(score: float, threshold: float) -> float:
    """`score / threshold`, finite: 0 when the threshold is not a positive finite number
    or the score is NaN; clipped to ±MAX_SEVERITY."""
    if not (0.0 < threshold < math.inf) or math.isnan(score):
        return 0.0
    return min(max(score / threshold, -MAX_SEVERITY), MAX_SEVERITY)


def _position_json(position: SourcePosition | None) -> dict[str, Any] | None:
    if position is None:
        return None
    return {"topic": position.topic, "partition": position.partition, "offset": position.offset}


def _position_of(obj: object) -> SourcePosition | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ValueError("position must be an object or null")
    return SourcePosition(str(obj["topic"]), int(obj["partition"]), int(obj["offset"]))


def _float_of(obj: object) -> float:
    """JSON number -> float; null (how a non-finite number is written) -> NaN."""
    if obj is None:
        return math.nan
    if isinstance(obj, bool) or not isinstance(obj, int | float):
        raise ValueError(f"expected a number, got {_jtype(obj)}")
    return float(obj)


def _round(x: float, digits: int) -> float | None:
    # NaN/±inf have no JSON spelling: written as null so the output is NaN-free.
    # float() also accepts numpy scalars, which orjson would refuse.
    return round(float(x), digits) if x - x == 0.0 else None


def round6(x: float) -> float | None:
    """A score-like number to 6 decimals as `floor(x * 1e6 + 0.5) / 1e6` (IEEE operations
    that numpy performs identically: `outputs.encode_scores` rounds whole batches with it);
    null (None) when not finite, since NaN/±inf have no JSON spelling."""
    if x - x != 0.0:
        return None
    try:
        return math.floor(float(x) * 1e6 + 0.5) / 1e6
    except OverflowError:  # |x| > ~1e302: already far coarser than 6 decimals
        return round(float(x), 6)


def _finite(x: float) -> float | None:
    return float(x) if x - x == 0.0 else None


def _round_contributions(contributions: Mapping[str, float]) -> dict[str, float | None]:
    """To 5 decimals. `floor(v * 1e5 + 0.5) / 1e5` is 3x faster than `round(v, 5)`
    and gives the same shortest repr; non-finite or huge values take the slow path."""
    floor = math.floor
    try:
        return {k: floor(v * 1e5 + 0.5) / 1e5 for k, v in contributions.items()}
    except (OverflowError, ValueError):
        return {k: _round(v, 5) for k, v in contributions.items()}


def score_json(record: ScoreRecord) -> dict[str, Any]:
    """The JSON object of a score record. Scores to 6 decimals, contributions to 5."""
    return {
        "site": record.site,
        "ts": _finite(record.ts),
        "score": round6(record.score),
        "threshold": round6(record.threshold),
        "anomaly": record.anomaly,
        "severity": round6(record.severity),
        "status": record.status,
        "model_version": record.model_version,
        "position": _position_json(record.position),
        "scored_at": round6(record.scored_at),
        "contributions": _round_contributions(record.contributions),
    }


def encode_score(record: ScoreRecord) -> bytes:
    """One score record as a compact JSON object (UTF-8, no newline)."""
    return orjson.dumps(score_json(record))


def encode_scores(records: Iterable[ScoreRecord]) -> list[bytes]:
    """`encode_score` over a batch."""
    dumps = orjson.dumps
    return [dumps(score_json(r)) for r in records]


def decode_score(payload: bytes) -> ScoreRecord:
    """Parse a score record written by `encode_score`. Raises ValueError if malformed."""
    try:
        obj = orjson.loads(payload)
        status = obj["status"]
        if status not in ("active", "warming"):
            raise ValueError(f"bad status {status!r}")
        contributions = obj["contributions"]
        if not isinstance(contributions, dict):
            raise ValueError("contributions must be an object")
        return ScoreRecord(
            site=str(obj["site"]),
            ts=_float_of(obj["ts"]),
            score=_float_of(obj["score"]),
            threshold=_float_of(obj["threshold"]),
            anomaly=bool(obj["anomaly"]),
            severity=_float_of(obj["severity"]),
            contributions={str(k): _float_of(v) for k, v in contributions.items()},
            model_version=str(obj["model_version"]),
            status=status,
            position=_position_of(obj.get("position")),
            scored_at=_float_of(obj.get("scored_at", 0.0)),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a score record: {exc!r}") from exc


def dead_letter_of(rejection: Rejection, rejected_at: float = 0.0) -> DeadLetter:
    """The dead letter for a rejection."""
    return DeadLetter(
        reason=rejection.reason,
        detail=rejection.detail,
        payload=rejection.payload,
        position=rejection.position,
        rejected_at=rejected_at,
        site=rejection.site,
    )


def encode_dead_letter(
    letter: DeadLetter, *, max_payload_bytes: int | None = DEAD_LETTER_MAX_PAYLOAD
) -> bytes:
    """A dead letter as a JSON object. The payload goes in `payload` as text when it
    is valid UTF-8, else base64 in `payload_b64`; payloads longer than
    `max_payload_bytes` (None = no limit) are cut, with `truncated: true`."""
    payload = letter.payload
    truncated = letter.truncated
    try:
        payload.decode("utf-8")
        is_text = True
    except UnicodeDecodeError:
        is_text = False
    if max_payload_bytes is not None and len(payload) > max_payload_bytes:
        payload, truncated = payload[:max_payload_bytes], True
    obj: dict[str, Any] = {
        "reason": str(letter.reason),
        "detail": letter.detail,
        "site": letter.site,
        "position": _position_json(letter.position),
        "rejected_at": _round(letter.rejected_at, 6),
        "payload_bytes": len(letter.payload),
        "truncated": truncated,
    }
    if is_text:
        # a cut may split the last character: `ignore` drops only that partial one
        obj["payload"] = payload.decode("utf-8", "ignore")
    else:
        obj["payload_b64"] = base64.b64encode(payload).decode("ascii")
    return orjson.dumps(obj)


def decode_dead_letter(payload: bytes) -> DeadLetter:
    """Parse a dead letter written by `encode_dead_letter`. Raises ValueError if malformed."""
    try:
        obj = orjson.loads(payload)
        if "payload" in obj:
            original = str(obj["payload"]).encode("utf-8")
        else:
            original = base64.b64decode(obj["payload_b64"], validate=True)
        site = obj.get("site")
        return DeadLetter(
            reason=Reason(obj["reason"]),
            detail=str(obj["detail"]),
            payload=original,
            position=_position_of(obj.get("position")),
            rejected_at=_float_of(obj.get("rejected_at", 0.0)),
            site=None if site is None else str(site),
            truncated=bool(obj.get("truncated", False)),
        )
    except (KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise ValueError(f"not a dead letter: {exc!r}") from exc
