"""Turn one scored batch into output records. Pure: no I/O, no clock (times are arguments).

`build_scores` applies the serving rules: severity = score / threshold, anomaly only for
sites the model knows (`known`), unknown sites get `status="warming"` and no anomaly flag,
contributions keep the `top` largest sensors (0 = all). Rows whose score is not finite are
returned as rejections (`scoring_failed`) instead of scores: never a silent NaN or zero.
"""

from __future__ import annotations

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
    score_head_json,
)


@dataclass(frozen=True, slots=True)
class ScoredRows:
    """What a batch produced: score records (input order), rejections, and the per-row
    arrays the metrics and the training sink want (all over `records`, length B)."""

    records: list[ScoreRecord]
    rejections: list[Rejection]
    sites: list[str]
    values: npt.NDArray[np.float32]  # (B, D)
    ts: npt.NDArray[np.float64]  # (B,)
    anomalies: npt.NDArray[np.bool_]  # (B,)
    severities: npt.NDArray[np.float64]  # (B,)
    statuses: list[SiteStatus]
    # (B, D) contributions in `features` order when every sensor is reported (top = 0),
    # else None: lets `encode_scores` render them for the whole batch at once
    contributions: npt.NDArray[np.float32] | None = None
    features: tuple[str, ...] = ()


def stack_values(records: Sequence[SensorRecord]) -> npt.NDArray[np.float32]:
    """(B, D) float32 matrix of the records' values, one allocation."""
    if not records:
        return np.zeros((0, 0), dtype=np.float32)
    return np.array([r.values for r in records], dtype=np.float32)


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
    out = [
        ScoreRecord(
            site=r.site,
            ts=r.ts,
            score=s,
            threshold=t,
            anomaly=a,
            severity=v,
            contributions=c,
            model_version=model_version,
            status=st,
            position=r.position,
            scored_at=scored_at,
        )
        for r, s, t, a, v, c, st in zip(
            records,
            scores.tolist(),
            thresholds.tolist(),
            anomalies.tolist(),
            severities.tolist(),
            _contributions(contrib, features, top),
            statuses,
            strict=True,
        )
    ]
    return ScoredRows(
        records=out,
        rejections=rejections,
        sites=[r.site for r in records],
        values=values,
        ts=np.array([r.ts for r in records], dtype=np.float64),
        anomalies=anomalies,
        severities=severities,
        statuses=statuses,
        contributions=contrib if top <= 0 or top >= len(features) else None,
        features=tuple(features),
    )


def encode_scores(rows: ScoredRows) -> list[bytes]:
    """`records.encode_score(r)` for every record of `rows`, byte for byte (tested), in a
    third of the time when all contributions are reported.

    Why: profiling the daemon (bench/throughput.py, py-spy) showed encoding as the largest
    Python cost per record, and most of it was orjson formatting 38 Python floats per
    record plus the per-value rounding loop (~12 µs of ~17 µs CPU per record for
    build + encode, 38 sensors). Here the contributions of the whole batch are rounded
    with the same formula in numpy (`floor(v * 1e5 + 0.5) / 1e5`, identical IEEE
    results) and formatted in one `orjson.dumps` of the (B, D) array (orjson's numpy
    writer gives the same digits as for Python floats), then spliced after the other
    fields. Rows with a non-finite contribution (never expected) take `encode_score`.
    """
    records, contrib, features = rows.records, rows.contributions, rows.features
    if contrib is None or not features or len(records) == 0:
        return [encode_score(r) for r in records]
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = contrib.astype(np.float64) * 1e5 + 0.5
        fast: npt.NDArray[np.bool_] = np.asarray(np.isfinite(scaled).all(axis=1))
        rounded = np.floor(np.where(fast[:, None], scaled, 0.0)) / 1e5
    text = orjson.dumps(rounded, option=orjson.OPT_SERIALIZE_NUMPY)
    lines = text[2:-2].split(b"],[")  # "[[a,b],[c,d]]" -> ["a,b", "c,d"]
    keys = [b"{" + orjson.dumps(features[0]) + b":"]
    keys += [b"," + orjson.dumps(name) + b":" for name in features[1:]]
    join, add, dumps = b"".join, bytes.__add__, orjson.dumps
    out: list[bytes] = []
    for record, line, ok in zip(records, lines, fast.tolist(), strict=True):
        if not ok:
            out.append(encode_score(record))
            continue
        head = dumps(score_head_json(record))
        values = join(map(add, keys, line.split(b",")))
        out.append(head[:-1] + b',"contributions":' + values + b"}}")
    return out
