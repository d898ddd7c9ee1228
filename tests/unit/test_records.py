from __future__ import annotations

import base64
import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamvae.records import (
    DeadLetter,
    DecoderSpec,
    Reason,
    Rejection,
    ScoreRecord,
    SensorRecord,
    SourcePosition,
    dead_letter_of,
    decode_csv_row,
    decode_dead_letter,
    decode_record,
    decode_records,
    decode_score,
    encode_dead_letter,
    encode_score,
    encode_scores,
    severity_of,
)

SPEC = DecoderSpec(("temp", "rpm"), max_message_bytes=512, max_site_length=16)
IGNORE = DecoderSpec(("temp", "rpm"), unknown_feature="ignore")
POS = SourcePosition("sensors", 3, 42)
GOOD_VALUES = {"temp": 21.5, "rpm": 1500}


def _msg(**fields: object) -> bytes:
    obj: dict[str, object] = {"site": "plant-7", "ts": 1_732_200_000.5, "values": GOOD_VALUES}
    obj.update(fields)
    return orjson.dumps({k: v for k, v in obj.items() if v is not _DROP})


_DROP = object()


ACCEPTED = [
    (_msg(), (21.5, 1500.0)),
    (_msg(values=[21.5, 1500]), (21.5, 1500.0)),
    (_msg(ts="2024-11-21T14:40:00.5Z"), (21.5, 1500.0)),
    (_msg(ts="2024-11-21T16:40:00.5+02:00"), (21.5, 1500.0)),
    (_msg(extra={"ignored": True}), (21.5, 1500.0)),
    (_msg(values={"rpm": 1500, "temp": 21.5}), (21.5, 1500.0)),  # key order is free
    (_msg(values={"temp": -0.0, "rpm": 1e308}), (-0.0, 1e308)),
    (_msg(ts=0), (21.5, 1500.0)),
    (_msg(values=[21.5, 1500.0]), (21.5, 1500.0)),
    (_msg(values={"temp": 1e-300, "rpm": -2.5}), (1e-300, -2.5)),
]


@pytest.mark.parametrize(("payload", "expected"), ACCEPTED)
def test_decode_accepts(payload: bytes, expected: tuple[float, ...]) -> None:
    record = decode_record(payload, SPEC, POS)
    assert isinstance(record, SensorRecord)
    assert record.site == "plant-7"
    assert tuple(record.values) == expected
    assert all(type(v) is float for v in record.values)
    assert record.position == POS


def test_iso_and_epoch_agree() -> None:
    a = decode_record(_msg(ts="2024-11-21T14:40:00.5Z"), SPEC)
    b = decode_record(_msg(ts=1_732_200_000.5), SPEC)
    assert isinstance(a, SensorRecord)
    assert isinstance(b, SensorRecord)
    assert a.ts == b.ts == 1_732_200_000.5


REJECTED = [
    (b"{not json", Reason.INVALID_JSON),
    (b"", Reason.INVALID_JSON),
    (b"\xff\xfe{}", Reason.INVALID_JSON),
    (b'{"site": "a"} trailing', Reason.INVALID_JSON),
    (b"[1, 2]", Reason.NOT_OBJECT),
    (b'"plant-7"', Reason.NOT_OBJECT),
    (b"null", Reason.NOT_OBJECT),
    (_msg(site=_DROP), Reason.MISSING_FIELD),
    (_msg(ts=_DROP), Reason.MISSING_FIELD),
    (_msg(values=_DROP), Reason.MISSING_FIELD),
    (_msg(site=7), Reason.BAD_TYPE),
    (_msg(site=None), Reason.BAD_TYPE),
    (_msg(ts=True), Reason.BAD_TYPE),
    (_msg(ts=None), Reason.BAD_TYPE),
    (_msg(ts=[1]), Reason.BAD_TYPE),
    (_msg(values="1,2"), Reason.BAD_TYPE),
    (_msg(values=None), Reason.BAD_TYPE),
    (_msg(values={"temp": "21.5", "rpm": 1}), Reason.BAD_TYPE),
    (_msg(values={"temp": True, "rpm": 1}), Reason.BAD_TYPE),  # bool is not a number
    (_msg(values=[1.0, None]), Reason.BAD_TYPE),
    (_msg(values=[1.0, [2.0]]), Reason.BAD_TYPE),
    (_msg(site=""), Reason.BAD_SITE),
    (_msg(site="x" * 17), Reason.BAD_SITE),
    (_msg(site="plant\n7"), Reason.BAD_SITE),
    (_msg(site="plant\x007"), Reason.BAD_SITE),
    (_msg(site="plant\u202e7"), Reason.BAD_SITE),
    (_msg(ts="yesterday"), Reason.BAD_TIMESTAMP),
    (_msg(ts="2024-11-21T14:40:00"), Reason.BAD_TIMESTAMP),  # no zone
    (_msg(ts=-1), Reason.BAD_TIMESTAMP),
    (_msg(ts=1_732_200_000_500), Reason.BAD_TIMESTAMP),  # milliseconds
    (_msg(ts="9999-01-01T00:00:00Z"), Reason.BAD_TIMESTAMP),
    (_msg(ts="1" * 80), Reason.BAD_TIMESTAMP),
    (b'{"site": "a", "ts": NaN, "values": [1, 2]}', Reason.BAD_TIMESTAMP),
    (b'{"site": "a", "ts": 1e999, "values": [1, 2]}', Reason.BAD_TIMESTAMP),
    (b'{"site": "a", "ts": 1, "values": [1, NaN]}', Reason.NON_FINITE),
    (b'{"site": "a", "ts": 1, "values": [Infinity, 2]}', Reason.NON_FINITE),
    (b'{"site": "a", "ts": 1, "values": {"temp": -Infinity, "rpm": 2}}', Reason.NON_FINITE),
    (b'{"site": "a", "ts": 1, "values": [1e400, 2]}', Reason.NON_FINITE),
    (b'{"site": "a", "ts": 1, "values": [1, ' + b"9" * 400 + b"]}", Reason.NON_FINITE),
    (_msg(values=[1.0]), Reason.WRONG_LENGTH),
    (_msg(values=[1.0, 2.0, 3.0]), Reason.WRONG_LENGTH),
    (_msg(values=[]), Reason.WRONG_LENGTH),
    (_msg(values={"temp": 1.0}), Reason.MISSING_FEATURE),
    (_msg(values={"temp": 1.0, "other": 2.0}), Reason.MISSING_FEATURE),
    (_msg(values={"temp": 1.0, "rpm": 2.0, "other": 3.0}), Reason.UNKNOWN_FEATURE),
    (b" " * 513, Reason.TOO_LARGE),
    (_msg(site="a", pad="x" * 600), Reason.TOO_LARGE),
    (_msg(values={"temp": 1.0, "rpm": 1e308, "x": 1e308}), Reason.UNKNOWN_FEATURE),
    (_msg(values=[1e308, 1e308, 1.0]), Reason.WRONG_LENGTH),
    (_msg(values={"temp": 1.0, "rpm": False}), Reason.BAD_TYPE),
    (_msg(values=[1.0, True]), Reason.BAD_TYPE),
    (_msg(site="x" * 16, pad="x" * 440), Reason.TOO_LARGE),
]


@pytest.mark.parametrize(("payload", "reason"), REJECTED)
def test_decode_rejects(payload: bytes, reason: Reason) -> None:
    result = decode_record(payload, SPEC, POS)
    assert isinstance(result, Rejection), result
    assert result.reason is reason, result.detail
    assert result.payload == payload
    assert result.position == POS
    assert result.detail


def test_every_input_reason_is_covered() -> None:
    """The table above names every reason code except scoring_failed (the pipeline's)."""
    covered = {
        Reason.INVALID_JSON, Reason.NOT_OBJECT, Reason.MISSING_FIELD, Reason.BAD_TYPE,
        Reason.BAD_SITE, Reason.BAD_TIMESTAMP, Reason.NON_FINITE, Reason.WRONG_LENGTH,
        Reason.MISSING_FEATURE, Reason.UNKNOWN_FEATURE, Reason.TOO_LARGE,
    }  # fmt: skip
    assert covered | {Reason.SCORING_FAILED, Reason.NO_MODEL} == set(Reason)


def test_unknown_feature_ignore() -> None:
    payload = _msg(values={"temp": 1.0, "rpm": 2.0, "other": "x"})
    record = decode_record(payload, IGNORE)
    assert isinstance(record, SensorRecord)
    assert tuple(record.values) == (1.0, 2.0)
    rejected = decode_record(_msg(values={"temp": 1.0, "other": 2.0}), IGNORE)
    assert isinstance(rejected, Rejection)
    assert rejected.reason is Reason.MISSING_FEATURE


def test_rejection_keeps_a_readable_site() -> None:
    result = decode_record(_msg(values=[1.0]), SPEC)
    assert isinstance(result, Rejection)
    assert result.site == "plant-7"
    bad_site = decode_record(_msg(site=""), SPEC)
    assert isinstance(bad_site, Rejection)
    assert bad_site.site is None


@pytest.mark.parametrize("n", [0, 1, 3])
def test_small_feature_sets(n: int) -> None:
    names = tuple(f"f{i}" for i in range(n))
    spec = DecoderSpec(names)
    record = decode_record(_msg(values={k: 1 for k in names}), spec)
    assert isinstance(record, SensorRecord)
    assert tuple(record.values) == (1.0,) * n


def test_duplicate_features_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        DecoderSpec(("a", "a"))


# --- CSV ---------------------------------------------------------------------------

HEADER = ("site", "ts", "rpm", "temp")


@pytest.mark.parametrize(
    ("row", "header", "spec", "reason"),
    [
        (["p", "1", "2", "3"], HEADER, SPEC, None),
        (["p", "2024-11-21T14:40:00Z", "2", "3"], HEADER, SPEC, None),
        (["p", "1", "2", "3", "4"], (*HEADER, "x"), IGNORE, None),
        (["p", "1", "2"], HEADER, SPEC, Reason.WRONG_LENGTH),
        (["", "1", "2", "3"], HEADER, SPEC, Reason.BAD_SITE),
        (["p", "", "2", "3"], HEADER, SPEC, Reason.MISSING_FIELD),
        (["p", "soon", "2", "3"], HEADER, SPEC, Reason.BAD_TIMESTAMP),
        (["p", "1", "", "3"], HEADER, SPEC, Reason.MISSING_FEATURE),
        (["p", "1", "fast", "3"], HEADER, SPEC, Reason.BAD_TYPE),
        (["p", "1", "nan", "3"], HEADER, SPEC, Reason.NON_FINITE),
        (["p", "1", "2", "3", "4"], (*HEADER, "x"), SPEC, Reason.UNKNOWN_FEATURE),
        (["p", "1", "2"], ("site", "ts", "rpm"), SPEC, Reason.MISSING_FEATURE),
        (["p", "2", "3"], ("site", "rpm", "temp"), SPEC, Reason.MISSING_FIELD),
        (["p", "1", "2", "3"], ("site", "ts", "rpm", "rpm"), SPEC, Reason.BAD_TYPE),
    ],
)
def test_decode_csv_row(
    row: list[str], header: tuple[str, ...], spec: DecoderSpec, reason: Reason | None
) -> None:
    result = decode_csv_row(row, header, spec, POS)
    if reason is None:
        assert isinstance(result, SensorRecord), result
        assert result.site == "p"
        assert tuple(result.values) == (3.0, 2.0)  # spec order (temp, rpm), not header order
        assert result.position == POS
    else:
        assert isinstance(result, Rejection)
        assert result.reason is reason, result.detail
        assert result.position == POS


def test_csv_rejection_keeps_raw_line() -> None:
    result = decode_csv_row(["p", "1"], HEADER, SPEC, raw=b"p,1")
    assert isinstance(result, Rejection)
    assert result.payload == b"p,1"


# --- properties ----------------------------------------------------------------------

_VALID_REASONS = set(Reason) - {Reason.SCORING_FAILED, Reason.NO_MODEL}


def _check(result: SensorRecord | Rejection, spec: DecoderSpec) -> None:
    if isinstance(result, SensorRecord):
        assert len(result.values) == len(spec.features)
        assert all(type(v) is float and math.isfinite(v) for v in result.values)
        assert result.site
        assert result.site.isprintable()
        assert math.isfinite(result.ts)
    else:
        assert isinstance(result, Rejection)
        assert result.reason in _VALID_REASONS
        assert isinstance(result.detail, str)
        assert not result.detail.startswith("decoder error"), result.detail  # no hidden bug
        encode_dead_letter(dead_letter_of(result))  # always encodable


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_decode_never_raises_on_bytes(payload: bytes) -> None:
    _check(decode_record(payload, SPEC), SPEC)


_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_record_like = st.fixed_dictionaries(
    {},
    optional={
        "site": st.one_of(st.text(max_size=20), _json),
        "ts": st.one_of(
            st.floats(), st.integers(), st.text(max_size=30), st.datetimes().map(str), _json
        ),
        "values": st.one_of(
            st.dictionaries(st.sampled_from(["temp", "rpm", "x"]), _json_leaf),
            st.lists(_json_leaf, max_size=3),
            _json,
        ),
    },
)


def _dumps(obj: object) -> bytes:
    # the stdlib writes NaN/Infinity, which producers do send
    import json

    return json.dumps(obj).encode("utf-8", "surrogatepass")


@settings(max_examples=300, deadline=None)
@given(st.one_of(_record_like, _json), st.sampled_from([SPEC, IGNORE]))
def test_decode_never_raises_on_json(obj: object, spec: DecoderSpec) -> None:
    _check(decode_record(_dumps(obj), spec), spec)


def test_decode_records_is_decode_record_for_each() -> None:
    """The batch decoder (the daemon's hot path) gives what `decode_record` gives, record
    by record: the same records, the same rejections with the same reasons and details."""
    payloads = [p for p, _ in ACCEPTED] + [p for p, _ in REJECTED]
    for spec in (SPEC, IGNORE, DecoderSpec(("temp",)), DecoderSpec(())):
        messages = [(p, SourcePosition("sensors", i % 3, i)) for i, p in enumerate(payloads)]
        expected = [decode_record(p, spec, pos) for p, pos in messages]
        assert decode_records(messages, spec) == expected
        assert decode_records([(p, None) for p in payloads], spec) == [
            decode_record(p, spec) for p in payloads
        ]
    assert decode_records([], SPEC) == []


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(_record_like, _json), max_size=5),
    st.sampled_from([SPEC, IGNORE, DecoderSpec(("temp",))]),
)
def test_decode_records_matches_on_random_json(objs: list[object], spec: DecoderSpec) -> None:
    messages = [(_dumps(obj), POS) for obj in objs]
    assert decode_records(messages, spec) == [decode_record(p, spec, POS) for p, _ in messages]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(max_size=20),
            st.floats(min_value=-10, max_value=8e9) | st.integers(-10, 8 * 10**9),
            st.lists(
                st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.booleans(),
                min_size=1,
                max_size=3,
            ),
        ),
        max_size=5,
    )
)
def test_decode_records_matches_on_near_valid_records(
    rows: list[tuple[str, float, list[object]]],
) -> None:
    """Records close to valid (the fast path's ground): any site text, ts near and past
    the range, values of every JSON number kind, as a list and as an object."""
    messages = []
    for site, ts, values in rows:
        messages.append((_dumps({"site": site, "ts": ts, "values": values}), POS))
        named = dict(zip(("temp", "rpm", "x"), values, strict=False))
        messages.append((_dumps({"site": site, "ts": ts, "values": named}), POS))
    for spec in (SPEC, IGNORE):
        expected = [decode_record(p, spec, POS) for p, _ in messages]
        assert decode_records(messages, spec) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=12), max_size=6), st.sampled_from([HEADER, ("site", "ts")]))
def test_decode_csv_never_raises(row: list[str], header: tuple[str, ...]) -> None:
    _check(decode_csv_row(row, header, SPEC), SPEC)


# --- score records ---------------------------------------------------------------------


def _score(**fields: object) -> ScoreRecord:
    base: dict[str, object] = {
        "site": "plant-7",
        "ts": 1_732_200_000.5,
        "score": 12.5,
        "threshold": 10.0,
        "anomaly": True,
        "severity": 1.25,
        "contributions": {"temp": 10.25, "rpm": 2.25},
        "model_version": "20261122T015000-ab12",
        "status": "active",
        "position": POS,
        "scored_at": 1_732_200_001.25,
    }
    base.update(fields)
    return ScoreRecord(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "record",
    [
        _score(),
        _score(position=None, status="warming", anomaly=False, contributions={}),
        _score(site="ünïcode-站点"),
    ],
)
def test_score_round_trip(record: ScoreRecord) -> None:
    payload = encode_score(record)
    assert decode_score(payload) == record
    obj = orjson.loads(payload)
    assert obj["position"] == (
        None if record.position is None else {"topic": "sensors", "partition": 3, "offset": 42}
    )
    assert encode_scores([record, record]) == [payload, payload]


def test_score_rounding_and_nan_free() -> None:
    record = _score(
        score=12.123456789,
        contributions={"temp": 0.1234567, "rpm": math.nan, "x": math.inf, "y": 1e300},
    )
    payload = encode_score(record)
    assert b"NaN" not in payload
    assert b"Infinity" not in payload
    obj = orjson.loads(payload)
    assert obj["score"] == 12.123457
    assert obj["contributions"] == {"temp": 0.12346, "rpm": None, "x": None, "y": 1e300}
    back = decode_score(payload)
    assert math.isnan(back.contributions["rpm"])


def test_score_accepts_numpy_scalars() -> None:
    np = pytest.importorskip("numpy")
    record = _score(score=np.float64(3.5), contributions={"temp": np.float32(0.5)})
    assert orjson.loads(encode_score(record))["contributions"] == {"temp": 0.5}


@pytest.mark.parametrize(
    ("score", "threshold", "expected"),
    [
        (5.0, 10.0, 0.5),
        (-5.0, 10.0, -0.5),
        (5.0, 0.0, 0.0),
        (5.0, -1.0, 0.0),
        (5.0, math.nan, 0.0),
        (5.0, math.inf, 0.0),
        (math.nan, 1.0, 0.0),
        (math.inf, 1.0, 1e9),
        (1e300, 1e-300, 1e9),
    ],
)
def test_severity_of(score: float, threshold: float, expected: float) -> None:
    assert severity_of(score, threshold) == expected


@pytest.mark.parametrize("payload", [b"[]", b"{}", b"not json", b'{"status": "bogus"}'])
def test_decode_score_rejects_garbage(payload: bytes) -> None:
    with pytest.raises(ValueError, match=r"."):
        decode_score(payload)


# --- dead letters -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b'{"site": 1}', "ünïcode ✓".encode(), b"\xff\xfe\x00binary", b"", b"\x00\x01 ctl"],
)
def test_dead_letter_round_trip(payload: bytes) -> None:
    letter = DeadLetter(Reason.BAD_SITE, "site is empty", payload, POS, 1.5, site="p")
    encoded = encode_dead_letter(letter)
    assert decode_dead_letter(encoded) == letter
    obj = orjson.loads(encoded)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        assert base64.b64decode(obj["payload_b64"]) == payload
        assert "payload" not in obj
    else:
        assert obj["payload"] == text
        assert "payload_b64" not in obj
    assert obj["reason"] == "bad_site"
    assert obj["position"] == {"topic": "sensors", "partition": 3, "offset": 42}


def test_dead_letter_truncates_on_a_character_boundary() -> None:
    payload = "é".encode() * 10  # 20 bytes, 2 per character
    encoded = encode_dead_letter(DeadLetter(Reason.TOO_LARGE, "big", payload), max_payload_bytes=5)
    obj = orjson.loads(encoded)
    assert obj["payload"] == "éé"
    assert obj["truncated"] is True
    assert obj["payload_bytes"] == 20
    back = decode_dead_letter(encoded)
    assert back.truncated
    assert payload.startswith(back.payload)


def test_dead_letter_of_rejection() -> None:
    rejection = decode_record(_msg(values=[1.0]), SPEC, POS)
    assert isinstance(rejection, Rejection)
    letter = dead_letter_of(rejection, rejected_at=9.0)
    assert letter.reason is Reason.WRONG_LENGTH
    assert letter.site == "plant-7"
    assert decode_dead_letter(encode_dead_letter(letter)) == letter


@pytest.mark.parametrize(
    "payload", [b"{}", b'{"reason": "nope", "detail": "", "payload": ""}', b'{"payload_b64": "!"}']
)
def test_decode_dead_letter_rejects_garbage(payload: bytes) -> None:
    with pytest.raises(ValueError, match=r"."):
        decode_dead_letter(payload)
