"""Robust standardization: (x − median) / max(IQR / 1.349, floor), per site.

IQR/1.349 is the standard deviation for Gaussian data. The floor (`scale_floor`,
in data units) keeps constant or nearly constant sensors — common in server
telemetry such as SMD — from turning tiny deviations into huge values.

Statistics are kept per site (sites with at least `MIN_SITE_RECORDS` training
records) plus pooled over all sites. A site's scale is shrunk toward the pooled
one in log space with weight n / (n + `SHRINK_RECORDS`) on its own: the IQR of a
short window of a new site (a few hundred records) is often far narrower than
its long-run range, and trusting it fully turned normal later variation into
large deviations (few-shot experiment, docs/model.md "Quality decisions").
A site without its own statistics (too few records, or unknown to the model)
is standardized with the pooled ones.
Per-site statistics put every site's normal operating range on the same
standardized scale, so a deviation counts by how unusual it is *for that site*;
pooled statistics let a site with wide ranges inflate every other site's scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

IQR_TO_SD = 1.349
MIN_SITE_RECORDS = 50  # fewer training records: the site uses the pooled statistics
SHRINK_RECORDS = 500.0  # pseudo-count pulling a site's log scale toward the pooled one

Stats = tuple[tuple[float, ...], tuple[float, ...]]  # (center (D,), scale (D,))


def _stats(x: npt.NDArray[np.float64], floor: float) -> Stats:
    q25, med, q75 = np.quantile(x, [0.25, 0.5, 0.75], axis=0)
    scale = np.maximum((q75 - q25) / IQR_TO_SD, floor)
    return tuple(float(v) for v in med), tuple(float(v) for v in scale)


def _check(center: tuple[float, ...], scale: tuple[float, ...]) -> None:
    if len(center) != len(scale) or not all(np.isfinite(center)):
        raise ValueError("scaler center/scale mismatch or non-finite")
    if not all(np.isfinite(scale)) or min(scale, default=1.0) <= 0:
        raise ValueError("scaler scale must be finite and positive")


@dataclass(frozen=True, slots=True)
class RobustScaler:
    center: tuple[float, ...]  # (D,) pooled
    scale: tuple[float, ...]  # (D,) pooled, every entry >= the floor used in `fit`
    sites: Mapping[str, Stats] = field(default_factory=dict)  # per-site (center, scale)
    _table: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] = field(
        init=False, repr=False, compare=False
    )
    _row: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sites", MappingProxyType(dict(self.sites)))
        names = sorted(self.sites)
        centers = [self.center, *(self.sites[s][0] for s in names)]
        scales = [self.scale, *(self.sites[s][1] for s in names)]
        # row 0: pooled; row i: names[i - 1]
        table = (np.asarray(centers, dtype=np.float64), np.asarray(scales, dtype=np.float64))
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_row", {s: i + 1 for i, s in enumerate(names)})

    @classmethod
    def fit(
        cls,
        x: npt.NDArray[np.floating[Any]],
        floor: float,
        sites: Sequence[str] | None = None,
        *,
        min_site_records: int = MIN_SITE_RECORDS,
    ) -> RobustScaler:
        """x: (N, D) values (rows with NaN/inf ignored); sites: N names (None: pooled only)."""
        x = np.asarray(x, dtype=np.float64)
        finite = np.isfinite(x).all(axis=1)
        if not finite.any():
            raise ValueError("no finite rows to fit the scaler on")
        center, scale = _stats(x[finite], floor)
        per_site: dict[str, Stats] = {}
        if sites is not None:
            names = np.asarray(list(sites), dtype=object)
            if len(names) != len(x):
                raise ValueError("x and sites differ in length")
            for s in sorted(set(names[finite].tolist())):
                rows = x[finite & (names == s)]
                if len(rows) >= min_site_records:
                    c, v = _stats(rows, floor)
                    w = len(rows) / (len(rows) + SHRINK_RECORDS)
                    shrunk = np.exp(w * np.log(v) + (1 - w) * np.log(scale))
                    per_site[str(s)] = (c, tuple(float(a) for a in shrunk))
        return cls(center, scale, per_site)

    def with_sites(self, other: RobustScaler) -> RobustScaler:
        """This scaler plus `other`'s per-site statistics for sites this one lacks."""
        extra = {s: v for s, v in other.sites.items() if s not in self.sites}
        return RobustScaler(self.center, self.scale, {**self.sites, **extra})

    def _rows(self, n: int, sites: Sequence[str] | None) -> npt.NDArray[np.int64]:
        if sites is None or not self.sites:
            return np.zeros(n, dtype=np.int64)
        if len(sites) != n:
            raise ValueError("values and sites differ in length")
        get = self._row.get
        return np.fromiter((get(s, 0) for s in sites), dtype=np.int64, count=n)

    def transform(
        self, x: npt.NDArray[np.floating[Any]], sites: Sequence[str] | None = None
    ) -> npt.NDArray[np.float32]:
        """x: (B, D), sites: B names (None: pooled statistics) -> standardized (B, D) float32."""
        x64 = np.asarray(x, dtype=np.float64)
        rows = self._rows(len(x64), sites)
        centers, scales = self._table
        if not rows.any():
            out: npt.NDArray[np.float32] = ((x64 - centers[0]) / scales[0]).astype(np.float32)
        else:
            out = ((x64 - centers[rows]) / scales[rows]).astype(np.float32)
        return out

    @property
    def log_scale_sum(self) -> float:
        """Σ_d log scale_d (pooled): add to a standardized-space score for raw-unit nats."""
        return float(np.log(np.asarray(self.scale)).sum())

    def log_scale_sums(self, sites: Sequence[str]) -> npt.NDArray[np.float64]:
        """(B,) Σ_d log scale_d of the statistics each row is standardized with."""
        per_row: npt.NDArray[np.float64] = np.log(self._table[1]).sum(axis=1)
        return per_row[self._rows(len(sites), sites)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "center": list(self.center),
            "scale": list(self.scale),
            "sites": {s: {"center": list(c), "scale": list(v)} for s, (c, v) in self.sites.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RobustScaler:
        """Strict: keys center, scale and (format 2) sites; every vector of one length."""
        unknown = set(d) - {"center", "scale", "sites"}
        if unknown:
            raise ValueError(f"unknown scaler keys: {sorted(unknown)}")
        center = tuple(float(v) for v in d["center"])
        scale = tuple(float(v) for v in d["scale"])
        _check(center, scale)
        per_site: dict[str, Stats] = {}
        for s, st in dict(d.get("sites", {})).items():
            c, v = tuple(float(a) for a in st["center"]), tuple(float(a) for a in st["scale"])
            _check(c, v)
            if len(c) != len(center):
                raise ValueError(f"scaler of site {s!r} has {len(c)} sensors, not {len(center)}")
            per_site[str(s)] = (c, v)
        return cls(center, scale, per_site)
