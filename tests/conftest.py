"""Fixtures shared by every suite. Suite-specific fixtures live in tests/<suite>/conftest.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

REPO_ROOT = Path(__file__).resolve().parent.parent

# Subprocesses (`python -m streamvae …`) must import this checkout.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
)


@pytest.fixture(autouse=True, scope="session")
def _torch_threads() -> None:
    """Two cores on CI: keep torch from oversubscribing them."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh Prometheus registry per test (never the global one)."""
    from prometheus_client import CollectorRegistry

    return CollectorRegistry()


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
