"""Hot swap: follow the model store's promoted version and switch between batches.

`ModelHolder.current` is the detector serving right now. `watch()` polls
`store.current()`; when the promoted version changes it loads and validates the new
detector in a worker thread (never on the event loop), then switches by assigning one
attribute. The pipeline reads `current` once per batch, so a batch is scored by exactly
one version and every output names it. A version that fails to load or validate is
rejected (logged, `metrics.model_rejected(reason)`) and not retried; the current model
keeps serving. Until a first model loads, `current` is None and `ready` is unset: the
daemon reports not-ready and does not consume (no silent zeros).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from streamvae.detector import ScoredBatch
from streamvae.errors import ArtifactError, StoreError
from streamvae.pipeline import PipelineMetrics

log = logging.getLogger(__name__)


class Servable(Protocol):
    """A loaded detector (streamvae.detector.Detector)."""

    @property
    def version(self) -> str: ...
    @property
    def features(self) -> tuple[str, ...]: ...
    @property
    def created_at(self) -> float: ...
    def score(self, values: npt.NDArray[np.float32], sites: Sequence[str]) -> ScoredBatch: ...


class StoreView(Protocol):
    """The part of `streamvae.artifacts.ModelStore` the daemon reads."""

    def current(self) -> str | None: ...
    def load(self, version: str | None = None, device: str = "cpu") -> Servable: ...


class ModelHolder:
    """Holds the serving detector; `watch()` swaps it when the store promotes another."""

    def __init__(
        self,
        store: StoreView,
        metrics: PipelineMetrics,
        *,
        device: str = "cpu",
        features: Sequence[str] | None = None,
        poll_interval_s: float = 5.0,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._device = device
        self._features = tuple(features) if features else None
        self._poll_interval_s = poll_interval_s
        self._rejected: set[str] = set()
        self.current: Servable | None = None
        self.ready = asyncio.Event()

    @property
    def features(self) -> tuple[str, ...] | None:
        """The feature order every served model must have (fixed by config or first model)."""
        return self._features

    def _load_and_validate(self, version: str) -> Servable:
        """Worker thread: load `version`, check it fits, score one probe row."""
        detector = self._store.load(version, device=self._device)
        if self._features is not None and tuple(detector.features) != self._features:
            raise ArtifactError(
                f"features {list(detector.features)} differ from the served {list(self._features)}"
            )
        probe = np.zeros((1, len(detector.features)), dtype=np.float32)
        scored = detector.score(probe, ["__probe__"])
        if not np.all(np.isfinite(scored.scores)):
            raise ArtifactError("probe score is not finite")
        return detector

    async def refresh(self) -> bool:
        """One poll of the store. True when a new version was switched in.

        Raises `StoreError` if the store cannot be read (fatal at start-up; `watch`
        logs it and keeps serving).
        """
        version = await asyncio.to_thread(self._store.current)
        serving = self.current.version if self.current is not None else None
        if version is None or version == serving or version in self._rejected:
            return False
        try:
            detector = await asyncio.to_thread(self._load_and_validate, version)
        except (ArtifactError, ValueError, RuntimeError, OSError) as exc:
            reason = "incompatible" if "features" in str(exc) else "invalid_artifact"
            self._rejected.add(version)
            self._metrics.model_rejected(reason)
            log.error(
                "model %s rejected (%s: %s); still serving %s",
                version,
                type(exc).__name__,
                exc,
                serving or "nothing",
            )
            return False
        if self._features is None:
            self._features = tuple(detector.features)
        self.current = detector  # the swap: one assignment, read once per batch
        self._metrics.set_model(detector.version, float(detector.created_at))
        self.ready.set()
        log.info("serving model %s (was %s)", detector.version, serving or "none")
        return True

    async def watch(self, stop: asyncio.Event) -> None:
        """Poll every `poll_interval_s` until `stop` is set."""
        while not stop.is_set():
            try:
                await self.refresh()
            except StoreError as exc:
                log.warning("model store unreadable (%s); keeping the current model", exc)
            try:
                async with asyncio.timeout(self._poll_interval_s):
                    await stop.wait()
            except TimeoutError:
                pass
