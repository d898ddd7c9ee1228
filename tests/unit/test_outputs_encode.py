"""`outputs.encode_scores` (the batch JSON encoder the daemon uses) must give exactly the
bytes of `records.encode_score` for every record, whatever the values."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from streamvae.detector import ScoredBatch
from streamvae.outputs import ScoredRows, build_scores, encode_scores, stack_values
from streamvae.records import SensorRecord, SourcePosition, encode_score


def _rows(seed: int, top: int, d: int = 38, where: str = "some") -> ScoredRows:
    rng = np.random.default_rng(seed)
    b = int(rng.integers(1, 40))
    features = tuple(f'm{i}"é\\' if i % 5 == 0 else f"m{i:02d}" for i in range(d))
    records = [
        SensorRecord(
            f"site-{i % 3}",
            float(rng.uniform(0, 2e9)),
            tuple(rng.random(d).tolist()),
            SourcePosition("in", i % 2, i)
            if where == "all" or (where == "some" and i % 4)
            else None,
        )
        for i in range(b)
    ]
    magnitude = 10.0 ** rng.integers(-9, 14, size=(b, d))
    contrib = (rng.normal(size=(b, d)) * magnitude).astype(np.float32)
    if seed % 3 == 0:
        contrib[0, 0] = np.inf
    if seed % 4 == 0:
        contrib[-1, -1] = np.nan
    scores = rng.normal(size=b) * 10.0 ** rng.integers(-8, 12, size=b)
    if seed % 5 == 0:
        scores[0] = 1e303  # x * 1e6 overflows: the per-record path
    thresholds = np.full(b, 5.0) if seed % 2 else rng.uniform(-1, 1e7, size=b)
    scored = ScoredBatch(scores, contrib, thresholds, rng.random(b) > 0.3)
    return build_scores(
        records,
        stack_values(records),
        scored,
        features=features,
        model_version="v1",
        top=top,
        scored_at=1.7e9 + float(rng.random()),
    )


@pytest.mark.parametrize("where", ["some", "all", "none"])  # rows with a position
@pytest.mark.parametrize("top", [0, 3])
@pytest.mark.parametrize("seed", range(24))
def test_batch_encoding_equals_per_record_encoding(seed: int, top: int, where: str) -> None:
    # every row with a position (the Kafka path), none (files, replay) and a mix: one
    # template per record, so each form is checked against `encode_score`
    rows = _rows(seed, top, where=where)
    expected = [encode_score(r) for r in rows.score_records()]
    assert encode_scores(rows) == expected


def test_batch_encoding_is_json_with_contributions_last() -> None:
    rows = _rows(1, 0, d=4)
    first = orjson.loads(encode_scores(rows)[0])
    assert list(first)[-1] == "contributions"
    assert len(first["contributions"]) == 4
