"""`outputs.stack_values`: the decoders' packed values and plain tuples stack alike."""

from __future__ import annotations

import numpy as np
import pytest

from streamvae.outputs import stack_values
from streamvae.records import DecoderSpec, SensorRecord, decode_records, packed


def _records(values: np.ndarray, pack: bool) -> list[SensorRecord]:
    rows = values.tolist()
    return [SensorRecord("s", 1.0, packed(r) if pack else tuple(r)) for r in rows]


@pytest.mark.parametrize("d", [1, 2, 38])
def test_packed_and_tuples_give_the_same_matrix(d: int) -> None:
    rng = np.random.default_rng(d)
    values = rng.normal(size=(50, d)) * 10.0 ** rng.integers(-30, 30, size=(50, d))
    fast = stack_values(_records(values, pack=True))
    plain = stack_values(_records(values, pack=False))
    assert fast.dtype == np.float32
    assert fast.shape == (50, d)
    np.testing.assert_array_equal(fast, plain)
    np.testing.assert_array_equal(fast, values.astype(np.float32))


def test_a_mixed_batch_and_an_empty_one() -> None:
    values = np.arange(12.0).reshape(4, 3)
    mixed = _records(values[:2], pack=True) + _records(values[2:], pack=False)
    np.testing.assert_array_equal(stack_values(mixed), values.astype(np.float32))
    assert stack_values([]).shape == (0, 0)


def test_beyond_float32_is_inf_without_a_warning() -> None:
    with np.errstate(all="raise"):
        out = stack_values([SensorRecord("s", 1.0, packed([1e39, -1e39, 1.0]))])
    assert out.tolist() == [[np.inf, -np.inf, 1.0]]


def test_decoded_records_hold_packed_values() -> None:
    spec = DecoderSpec(features=("a", "b"))
    fast, slow = decode_records(
        [
            (b'{"site":"s","ts":1.0,"values":[1.5,2.5]}', None),
            (b'{"site":"s","ts":"2024-01-01T00:00:00Z","values":{"a":1,"b":2}}', None),
        ],
        spec,
    )
    for record, expected in ((fast, (1.5, 2.5)), (slow, (1.0, 2.0))):
        assert isinstance(record, SensorRecord)
        assert tuple(record.values) == expected
        assert getattr(record.values, "typecode", None) == "d"
