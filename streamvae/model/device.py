"""Device selection: the only module that asks whether CUDA exists."""

from __future__ import annotations

import torch

from streamvae.errors import ConfigError


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
