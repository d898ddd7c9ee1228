"""Device selection and host↔device transfers: the only module that asks whether CUDA exists.

Everything else is device-agnostic: it calls `resolve_device`, `score_chunk` and
`HostStaging.to_device` and never branches on the device type itself.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from streamvae.errors import ConfigError

#: Records per scoring forward pass. On the CPU a chunk of 8192 keeps the (K, chunk, D)
#: intermediates in cache-friendly sizes; a GPU needs far larger launches to be busy
#: (K·65536·38 float32 ≈ 80 MB per intermediate at K = 8, well within any GPU).
CPU_SCORE_CHUNK = 8192
GPU_SCORE_CHUNK = 65_536


def resolve_device(name: str) -> torch.device:
    """Map "auto" | "cpu" | "cuda" (or "cuda:N") to a `torch.device`.

    "auto" picks CUDA when available, else CPU. An explicit "cuda" without a GPU
    raises `ConfigError` rather than silently running on the CPU.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available")
        return torch.device(name)
    raise ConfigError(f"unknown device {name!r}: expected auto, cpu or cuda")


def limit_threads(threads: int) -> None:
    """Torch intra-op threads for this process (0 = leave torch's default, one per core).

    The daemon scores in one worker thread while its event loop decodes and encodes on
    another core. Measured on the 2-core bench machine (bench/throughput.py, shared with
    other jobs): with torch's default of 2 OpenMP threads, scoring a 1024-record batch took
    ~8x the CPU time of 1 thread (1.1k vs 9-12k records/s wall, 354 vs 32-37 µs CPU per
    record), because the OpenMP team spins against the event loop and other processes.
    """
    if threads > 0:
        torch.set_num_threads(threads)


def score_chunk(device: torch.device) -> int:
    """Records per scoring forward pass on `device`."""
    return GPU_SCORE_CHUNK if device.type == "cuda" else CPU_SCORE_CHUNK


class HostStaging:
    """Host → device copies. On the CPU: `torch.from_numpy` (no copy at all). On CUDA: the
    array is copied into a reused page-locked (pinned) buffer and sent with
    `non_blocking=True`: a DMA that overlaps the kernels queued after it instead of a
    pageable copy through a bounce buffer. One buffer per dtype, grown on demand; before a
    buffer is overwritten, the event recorded after its previous copy is waited for. A lock
    makes concurrent callers (serving thread, retrain gate) safe."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._pinned = device.type == "cuda"
        self._buffers: dict[torch.dtype, torch.Tensor] = {}
        self._copied: dict[torch.dtype, Any] = {}  # dtype -> torch.cuda.Event
        self._lock = threading.Lock()

    def to_device(self, array: npt.NDArray[Any]) -> torch.Tensor:
        """A (possibly non-contiguous) array as a tensor on the device; same shape/dtype."""
        host = torch.from_numpy(np.ascontiguousarray(array))
        if not self._pinned:
            return host
        with self._lock:
            previous = self._copied.get(host.dtype)
            if previous is not None:
                previous.synchronize()  # the last copy out of this buffer has finished
            buf = self._buffers.get(host.dtype)
            if buf is None or buf.numel() < host.numel():
                buf = torch.empty(max(host.numel(), 1 << 20), dtype=host.dtype).pin_memory()
                self._buffers[host.dtype] = buf
            staged = buf[: host.numel()].view(host.shape)
            staged.copy_(host)
            out = staged.to(self.device, non_blocking=True)
            event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            event.record(torch.cuda.current_stream(self.device))
            self._copied[host.dtype] = event
        return out
