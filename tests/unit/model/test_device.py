"""Device helper: chunk sizes and host→device staging (CPU here; the CUDA branch of
HostStaging runs only where a GPU is present)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamvae.errors import ConfigError
from streamvae.model.device import (
    CPU_SCORE_CHUNK,
    GPU_SCORE_CHUNK,
    HostStaging,
    resolve_device,
    score_chunk,
)


def test_score_chunk_is_larger_on_a_gpu() -> None:
    assert score_chunk(torch.device("cpu")) == CPU_SCORE_CHUNK
    assert score_chunk(torch.device("cuda", 0)) == GPU_SCORE_CHUNK > CPU_SCORE_CHUNK


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_staging_keeps_values_shape_and_dtype(dtype: type) -> None:
    array = np.arange(24, dtype=dtype).reshape(6, 4)[::2]  # not contiguous
    out = HostStaging(torch.device("cpu")).to_device(array)
    assert out.device.type == "cpu"
    assert out.dtype == torch.from_numpy(array.copy()).dtype
    np.testing.assert_array_equal(out.numpy(), array)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_staging_to_cuda_round_trips() -> None:
    staging = HostStaging(resolve_device("cuda"))
    first = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    a = staging.to_device(first)
    b = staging.to_device(first * 2)  # reuses the pinned buffer
    np.testing.assert_array_equal(a.cpu().numpy(), first)
    np.testing.assert_array_equal(b.cpu().numpy(), first * 2)


def test_unknown_device_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        resolve_device("tpu")
