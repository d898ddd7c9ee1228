"""Turn one scored batch into output records. Pure: no I/O, no clock (times are arguments).

`build_scores` applies the serving rules: severity = score / threshold, anomaly only for
sites the model knows (`known`), unknown sites get `status="warming"` and no anomaly flag,
contributions keep the `top` largest sensors (0 = all). Rows whose score is not finite are
returned as rejections (`scoring_failed`) instead of scores: never a silent NaN or zero.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson

from streamvae.detector import ScoredBatch
from streamvae.records import (
    MAX_SEVERITY,
    Reason,
    Rejection,
    ScoreRecord,
    SensorRecord,
    SiteStatus,
    encode_score,
    round6,
)


@dataclass(frozen=True, slots=True)
class ScoredRows:
    """What a batch produced, column by column (B scored rows, input order), plus the
    rejections (`scoring_failed`). Score records are rendered from the columns:
    `encode_scores` writes their JSON directly, `score_records()` builds the objects
    (for callers that want them; the daemon does not)."""

    items: list[SensorRecord]  # the scored input records
    rejections: list[Rejection]
    sites: list[str]
    values: npt.NDArray[np.float32]  # (B, D)
    ts: npt.NDArray[np.float64]  # (B,)
    scores: npt.NDArray[np.float64]  # (B,)
    thresholds: npt.NDArray[np.float64]  # (B,)
    anomalies: npt.NDArray[np.bool_]  # (B,)
    severities: npt.NDArray[np.float64]  # (B,)
    statuses: list[SiteStatus]
    contributions: npt.NDArray[np.float32]  # (B, D) in `features` order
    features: tuple[str, ...]
    model_version: str
    scored_at: float
    top: int  # contributions reported per record: the `top` largest (0 = all)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def all_contributions(self) -> bool:
        return self.top <= 0 or self.top >= len(self.features)

    def score_records(self) -> list[ScoreRecord]:
        """The rows as `ScoreRecord` objects (contributions as dicts, `top` applied)."""
        return [
            ScoreRecord(
                site=r.site,
                ts=r.ts,
                score=s,
                threshold=t,
                anomaly=a,
                severity=v,
                contributions=c,
                model_version=self.model_version,
                status=st,
                position=r.position,
                scored_at=self.scored_at,
            )
            for r, s, t, a, v, c, st in zip(
                self.items,
                self.scores.tolist(),
                self.thresholds.tolist(),
                self.anomalies.tolist(),
                self.severities.tolist(),
                _contributions(self.contributions, self.features, self.top),
                self.statuses,
                strict=True,
            )
        ]


def stack_values(records: Sequence[SensorRecord]) -> npt.NDArray[np.float32]:
    """(B, D) float32 matrix of the records' values.

    The decoders' packed values (`records.packed`) are joined as bytes and cast once:
    0.19 µs per 38-sensor record against 1.2 µs for converting tuples of floats (timeit,
    1000-record batches), and the conversion runs in the scoring thread while holding
    the GIL that the event loop needs. Anything else goes through `np.array`."""
    if not records:
        return np.zeros((0, 0), dtype=np.float32)
    values = [r.values for r in records]
    width = len(values[0])
    if all(type(v) is array and v.typecode == "d" and len(v) == width for v in values):
        flat = np.frombuffer(b"".join(values), dtype=np.float64)  # type: ignore[arg-type]
        with np.errstate(over="ignore"):  # beyond float32: inf, as np.array gives
            return flat.reshape(len(values), width).astype(np.float32)
    return np.array(values, dtype=np.float32)


def record_payload(record: SensorRecord, features: Sequence[str] | None) -> bytes:
    """A JSON rendering of a decoded record (for dead letters of records that decoded);
    `values` as a list in feature order when the feature names are not known."""
    values: dict[str, float] | list[float] = (
        dict(zip(features, record.values, strict=False)) if features else list(record.values)
    )
    return orjson.dumps({"site": record.site, "ts": record.ts, "values": values})


def _contributions(
    contrib: npt.NDArray[np.float32], features: Sequence[str], top: int
) -> list[dict[str, float]]:
    rows: list[list[float]] = contrib.astype(np.float64).tolist()
    if top <= 0 or top >= len(features):
        return [dict(zip(features, row, strict=True)) for row in rows]
    order: list[list[int]] = np.argsort(-contrib, axis=1, kind="stable")[:, :top].tolist()
    return [{features[j]: row[j] for j in idx} for row, idx in zip(rows, order, strict=True)]


def build_scores(
    records: Sequence[SensorRecord],
    values: npt.NDArray[np.float32],
    scored: ScoredBatch,
    *,
    features: Sequence[str],
    model_version: str,
    top: int,
    scored_at: float,
) -> ScoredRows:
    """Score records for `records` (B rows; `values` (B, D) their stacked values)."""
    scores = np.asarray(scored.scores, dtype=np.float64)
    thresholds = np.asarray(scored.thresholds, dtype=np.float64)
    known = np.asarray(scored.known, dtype=np.bool_)
    ok = np.isfinite(scores) & np.isfinite(thresholds)
    rejections = [
        Rejection(
            Reason.SCORING_FAILED,
            "model returned a non-finite score",
            record_payload(records[i], features),
            records[i].position,
            records[i].site,
        )
        for i in np.flatnonzero(~ok).tolist()
    ]
    if not ok.all():
        keep = np.flatnonzero(ok)
        records = [records[i] for i in keep.tolist()]
        values, scores, thresholds, known = (
            values[keep],
            scores[keep],
            thresholds[keep],
            known[keep],
        )
        contrib = np.asarray(scored.contributions)[keep]
    else:
        contrib = np.asarray(scored.contributions)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        severities = np.where(thresholds > 0, scores / thresholds, 0.0)
    severities = np.clip(np.nan_to_num(severities, nan=0.0), -MAX_SEVERITY, MAX_SEVERITY)
    anomalies = known & (scores > thresholds)
    statuses: list[SiteStatus] = ["active" if k else "warming" for k in known.tolist()]
    return ScoredRows(
        items=list(records),
        rejections=rejections,
        sites=[r.site for r in records],
        values=values,
        ts=np.array([r.ts for r in records], dtype=np.float64),
        scores=scores,
        thresholds=thresholds,
        anomalies=anomalies,
        severities=severities,
        statuses=statuses,
        contributions=np.asarray(contrib, dtype=np.float32),
        features=tuple(features),
        model_version=model_version,
        scored_at=scored_at,
        top=top,
    )


def encode_scores(rows: ScoredRows) -> list[bytes]:
    """`records.encode_score(r)` for every record of `rows.score_records()`, byte for byte
    (tested on random values incl. non-finite and huge ones), at a fraction of the cost.

    Why: profiling the daemon (bench/throughput.py, py-spy; docs/performance.md) showed
    building `ScoreRecord` objects and contribution dicts and encoding them with orjson as
    the largest Python cost per record (~20 µs of ~75 µs CPU, 38 sensors). Here the
    numbers of the whole batch (ts, score, threshold, severity and the D contributions)
    are rounded in numpy with the formula `records` uses (`floor(v * 10**k + 0.5) / 10**k`:
    identical IEEE results) and formatted by one `orjson.dumps` of a (B, 4 + D) array
    (orjson's numpy writer gives the digits it gives Python floats); each record is then
    one `bytes % tuple` into a template holding the constant parts (keys, model version,
    scored_at). Rows with a non-finite number take `encode_score`, and so does the
    `top`-k form (a different set of keys per record).
    """
    if not rows.all_contributions or not rows.features or len(rows) == 0:
        return [encode_score(r) for r in rows.score_records()]
    with np.errstate(over="ignore", invalid="ignore"):
        head = [
            rows.ts,
            *(_rounded(a, 1e6) for a in (rows.scores, rows.thresholds, rows.severities)),
        ]
        table = np.concatenate(
            [np.stack(head, axis=1), _rounded(rows.contributions.astype(np.float64), 1e5)], axis=1
        )
        fast = np.isfinite(table).all(axis=1)
    table[~fast] = 0.0
    text = orjson.dumps(table, option=orjson.OPT_SERIALIZE_NUMPY)
    lines = text[2:-2].split(b"],[")  # "[[a,b],[c,d]]" -> ["a,b", "c,d"]
    with_pos, without_pos = _templates(rows)
    # JSON spellings of the few distinct strings of a batch (arguments of `%b`: no escaping)
    sites = {site: orjson.dumps(site) for site in set(rows.sites)}
    states = {status: orjson.dumps(status) for status in set(rows.statuses)}
    used = {item.position.topic for item in rows.items if item.position is not None}
    topics = {topic: orjson.dumps(topic) for topic in used}
    flags = (b"false", b"true")
    out: list[bytes] = []
    slow: list[int] = []
    for i, (item, line, ok, anomaly, status) in enumerate(
        zip(rows.items, lines, fast.tolist(), rows.anomalies.tolist(), rows.statuses, strict=True)
    ):
        if not ok:
            slow.append(i)
            out.append(b"")
            continue
        nums = line.split(b",")
        site, state, pos = sites[item.site], states[status], item.position
        if pos is None:
            out.append(
                without_pos
                % (site, nums[0], nums[1], nums[2], flags[anomaly], nums[3], state, *nums[4:])
            )
            continue
        out.append(
            with_pos
            % (
                site,
                nums[0],
                nums[1],
                nums[2],
                flags[anomaly],
                nums[3],
                state,
                topics[pos.topic],
                pos.partition,
                pos.offset,
                *nums[4:],
            )
        )
    if slow:
        records = rows.score_records()
        for i in slow:
            out[i] = encode_score(records[i])
    return out


def _rounded(a: npt.NDArray[np.float64], scale: float) -> npt.NDArray[np.float64]:
    """`records.round6` (scale 1e6) / the contributions' 5-decimal rounding (1e5), in numpy:
    the same IEEE operations, so the same doubles."""
    return np.floor(a * scale + 0.5) / scale


def _templates(rows: ScoredRows) -> tuple[bytes, bytes]:
    """`bytes %` templates of one score record, with and without a position: the
    constant parts (keys, model version, scored_at) spelled in; literal `%` escaped."""

    def lit(value: object) -> bytes:
        return orjson.dumps(value).replace(b"%", b"%%")

    scored_at = lit(round6(rows.scored_at))
    contributions = b",".join(lit(name) + b":%b" for name in rows.features)
    head = b'{"site":%b,"ts":%b,"score":%b,"threshold":%b,"anomaly":%b,"severity":%b,"status":%b'
    head += b',"model_version":' + lit(rows.model_version) + b',"position":'
    tail = b',"scored_at":' + scored_at + b',"contributions":{' + contributions + b"}}"
    return (
        head + b'{"topic":%b,"partition":%d,"offset":%d}' + tail,
        head + b"null" + tail,
    )
