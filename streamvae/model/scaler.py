"""Robust standardization: (x − median) / max(IQR / 1.349, floor).

IQR/1.349 is the standard deviation for Gaussian data. The floor (`scale_floor`,
in data units) keeps constant or nearly constant sensors — common in server
telemetry such as SMD — from turning tiny deviations into huge values. Pooled
over all sites: site offsets are the model's job (site conditioning).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

IQR_TO_SD = 1.349


@dataclass(frozen=True, slots=True)
class RobustScaler:
    center: tuple[float, ...]  # (D,)
    scale: tuple[float, ...]  # (D,), every entry >= the floor used in `fit`

    @classmethod
    def fit(cls, x: npt.NDArray[np.floating[Any]], floor: float) -> RobustScaler:
        """x: (N, D) finite values (rows with NaN/inf are ignored)."""
        x = np.asarray(x, dtype=np.float64)
        x = x[np.isfinite(x).all(axis=1)]
        if x.shape[0] == 0:
            raise ValueError("no finite rows to fit the scaler on")
        q25, med, q75 = np.quantile(x, [0.25, 0.5, 0.75], axis=0)
        scale = np.maximum((q75 - q25) / IQR_TO_SD, floor)
        return cls(tuple(float(v) for v in med), tuple(float(v) for v in scale))

    def transform(self, x: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
        """x: (B, D) -> standardized (B, D) float32."""
        c = np.asarray(self.center, dtype=np.float64)
        s = np.asarray(self.scale, dtype=np.float64)
        return ((np.asarray(x, dtype=np.float64) - c) / s).astype(np.float32)

    @property
    def log_scale_sum(self) -> float:
        """Σ_d log scale_d: add to a standardized-space score to get raw-unit nats."""
        return float(np.log(np.asarray(self.scale)).sum())

    def to_dict(self) -> dict[str, list[float]]:
        return {"center": list(self.center), "scale": list(self.scale)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RobustScaler:
        center = tuple(float(v) for v in d["center"])
        scale = tuple(float(v) for v in d["scale"])
        if len(center) != len(scale) or not all(np.isfinite(center)):
            raise ValueError("scaler center/scale mismatch or non-finite")
        if not all(np.isfinite(scale)) or min(scale, default=1.0) <= 0:
            raise ValueError("scaler scale must be finite and positive")
        return cls(center, scale)
