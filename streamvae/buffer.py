"""Training buffer: a bounded, per-site sample of recent normal records. Pure core.

The scoring pipeline offers every scored batch (`TrainingBuffer.offer`, once per
batch, on the event loop, vectorised); records flagged anomalous are dropped,
records of warming sites arrive with `normal=True`.

Sampling, per site: a reservoir (Algorithm R) whose "seen" counter saturates at
`recency_factor × cap`. Until a site has `cap` records every record is kept;
after that each new record replaces a uniformly chosen slot with probability
`cap / min(seen, recency_factor × cap)`, so the sample stays uniform over roughly
the last `recency_factor × cap` records of that site (recent, but not only the
newest burst).

Fairness, across sites: each site holds at most `per_site_cap` records. When the
sum would exceed `total_cap`, a water level `L` is computed (the largest integer
with `sum(min(size_s, L)) <= total_cap`) and every site above it is trimmed to
`L` by random eviction: the largest sites shrink first, small (new) sites keep
everything. Sites then grow only up to `min(per_site_cap, L)`.

Held-out split, per site: every stored record carries a uniform key drawn when
it entered; records with `key < holdout_fraction` form the held-out slice used by
the validation gate, the rest are training data. The split is deterministic
given the seeded RNG and survives persistence (`export` / `from_state`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

Part = Literal["all", "train", "holdout"]


@dataclass(frozen=True, slots=True)
class BufferSpec:
    """Buffer bounds. `dim` is the number of features D."""

    dim: int
    per_site_cap: int = 5000
    total_cap: int = 200_000
    holdout_fraction: float = 0.2
    recency_factor: float = 4.0

    def __post_init__(self) -> None:
        if self.dim <= 0 or self.per_site_cap <= 0 or self.total_cap <= 0:
            raise ValueError("dim, per_site_cap and total_cap must be positive")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError("holdout_fraction must be in [0, 1)")
        if self.recency_factor < 1.0:
            raise ValueError("recency_factor must be >= 1")


class Sample(NamedTuple):
    """Records taken out of the buffer, grouped by site (sites in sorted order)."""

    values: F32  # (N, D)
    sites: tuple[str, ...]  # (N,)
    ts: F64  # (N,)


@dataclass(frozen=True, slots=True)
class BufferState:
    """Everything needed to rebuild a buffer (what `streamvae.state` persists).

    `site_index[i]` indexes `sites`; `seen[s]` is the reservoir counter of site s.
    """

    dim: int
    sites: tuple[str, ...]  # (S,)
    seen: I64  # (S,)
    site_index: I64  # (N,)
    values: F32  # (N, D)
    ts: F64  # (N,)
    keys: F64  # (N,) uniform in [0, 1): holdout when < holdout_fraction
    level: int  # water level of the total cap; -1 = none


class _Site:
    """Storage of one site: the first `size` rows of the arrays are live."""

    __slots__ = ("keys", "seen", "size", "ts", "values")

    def __init__(self, dim: int, capacity: int) -> None:
        self.values: F32 = np.empty((capacity, dim), dtype=np.float32)
        self.ts: F64 = np.empty(capacity, dtype=np.float64)
        self.keys: F64 = np.empty(capacity, dtype=np.float64)
        self.size = 0
        self.seen = 0

    def reserve(self, needed: int) -> None:
        if needed <= len(self.ts):
            return
        capacity = max(needed, 2 * len(self.ts), 16)
        for name in ("values", "ts", "keys"):
            old = getattr(self, name)
            new = np.empty((capacity, *old.shape[1:]), dtype=old.dtype)
            new[: self.size] = old[: self.size]
            setattr(self, name, new)

    def remove(self, rows: I64) -> None:
        """Evict `rows` (distinct indices < size), filling the holes from the tail."""
        if len(rows) == 0:
            return
        new_size = self.size - len(rows)
        holes = np.sort(rows[rows < new_size])
        tail = np.setdiff1d(np.arange(new_size, self.size), rows, assume_unique=True)
        self.values[holes] = self.values[tail]
        self.ts[holes] = self.ts[tail]
        self.keys[holes] = self.keys[tail]
        self.size = new_size


def water_level(sizes: Sequence[int] | I64, total_cap: int) -> int:
    """Largest L with sum(min(size, L)) <= total_cap (max(sizes) when nothing to cut)."""
    s = np.sort(np.asarray(sizes, dtype=np.int64))
    if s.size == 0 or int(s.sum()) <= total_cap:
        return int(s[-1]) if s.size else 0
    prefix = np.concatenate(([0], np.cumsum(s)))
    n = len(s)
    for i in range(n):
        m = n - i
        if int(prefix[i]) + m * int(s[i]) > total_cap:
            return (total_cap - int(prefix[i])) // m
    return int(s[-1])  # pragma: no cover  (unreachable: the sum exceeds the cap)


class TrainingBuffer:
    """Bounded per-site sample of normal records; implements the pipeline's TrainingSink."""

    def __init__(self, spec: BufferSpec, rng: np.random.Generator) -> None:
        self.spec = spec
        self._rng = rng
        self._sites: dict[str, _Site] = {}
        self._level: int | None = None
        self.version = 0  # bumped on every change (cheap "dirty" check for persistence)

    # -- the TrainingSink protocol ------------------------------------------------
    def offer(
        self,
        sites: Sequence[str],
        values: npt.ArrayLike,
        ts: npt.ArrayLike,
        normal: npt.ArrayLike,
    ) -> None:
        """Add the normal rows of one scored batch.

        sites: (B,), values: (B, D), ts: (B,), normal: (B,) bool. Rows with
        normal=False or non-finite values are ignored.
        """
        vals = np.asarray(values, dtype=np.float32)
        keep = np.asarray(normal, dtype=bool)
        if vals.ndim != 2 or vals.shape[1] != self.spec.dim:
            raise ValueError(f"values must be (B, {self.spec.dim}), got {vals.shape}")
        if len(keep) != len(vals) or len(sites) != len(vals):
            raise ValueError("sites, values, ts and normal must have the same length")
        keep = keep & np.isfinite(vals).all(axis=1)
        idx = np.flatnonzero(keep)
        if idx.size == 0:
            return
        vals = vals[idx]
        times = np.asarray(ts, dtype=np.float64)[idx]
        names = np.asarray(sites, dtype=object)[idx]
        uniq, inverse = np.unique(names, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
        for j, name in enumerate(uniq):
            rows = order[bounds[j] : bounds[j + 1]]
            self._add(str(name), vals[rows], times[rows])
        self._enforce_total_cap()
        self.version += 1

    # -- queries ------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Records held per site."""
        return {name: s.size for name, s in self._sites.items() if s.size}

    def holdout_counts(self) -> dict[str, int]:
        """Held-out records per site."""
        f = self.spec.holdout_fraction
        return {n: int((s.keys[: s.size] < f).sum()) for n, s in self._sites.items() if s.size}

    def seen(self, site: str) -> int:
        """Normal records offered for `site` (saturating reservoir counter)."""
        s = self._sites.get(site)
        return s.seen if s else 0

    def __len__(self) -> int:
        return sum(s.size for s in self._sites.values())

    def snapshot(self, part: Part = "train", sites: Sequence[str] | None = None) -> Sample:
        """Copy of the stored records: the training part (default), the held-out part
        or all, optionally limited to `sites`. Grouped by site, sites sorted."""
        f = self.spec.holdout_fraction
        wanted = sorted(self._sites) if sites is None else sorted(set(sites) & set(self._sites))
        vals: list[F32] = []
        times: list[F64] = []
        names: list[str] = []
        for name in wanted:
            s = self._sites[name]
            keys = s.keys[: s.size]
            mask = (
                np.ones(s.size, dtype=bool)
                if part == "all"
                else (keys < f if part == "holdout" else keys >= f)
            )
            vals.append(s.values[: s.size][mask])
            times.append(s.ts[: s.size][mask])
            names.extend([name] * int(mask.sum()))
        if not vals:
            return Sample(np.empty((0, self.spec.dim), np.float32), (), np.empty(0, np.float64))
        return Sample(np.concatenate(vals), tuple(names), np.concatenate(times))

    def holdout(self) -> Sample:
        """The per-site held-out slice for the validation gate."""
        return self.snapshot("holdout")

    # -- maintenance --------------------------------------------------------------
    def drop_site(self, site: str) -> None:
        """Forget a site's records (operator action; retired sites are kept by default)."""
        if self._sites.pop(site, None) is not None:
            self._level = None
            self.version += 1

    def export(self) -> BufferState:
        """A copy of the whole state, for persistence."""
        names = sorted(n for n, s in self._sites.items() if s.size)
        sample_vals, sample_ts, sample_keys, index = [], [], [], []
        for i, name in enumerate(names):
            s = self._sites[name]
            sample_vals.append(s.values[: s.size])
            sample_ts.append(s.ts[: s.size])
            sample_keys.append(s.keys[: s.size])
            index.append(np.full(s.size, i, dtype=np.int64))
        dim = self.spec.dim
        return BufferState(
            dim=dim,
            sites=tuple(names),
            seen=np.array([self._sites[n].seen for n in names], dtype=np.int64),
            site_index=np.concatenate(index) if index else np.empty(0, np.int64),
            values=np.concatenate(sample_vals) if names else np.empty((0, dim), np.float32),
            ts=np.concatenate(sample_ts) if names else np.empty(0, np.float64),
            keys=np.concatenate(sample_keys) if names else np.empty(0, np.float64),
            level=-1 if self._level is None else self._level,
        )

    @classmethod
    def from_state(
        cls, state: BufferState, spec: BufferSpec, rng: np.random.Generator
    ) -> TrainingBuffer:
        """Rebuild a buffer; records beyond the (possibly smaller) caps are evicted."""
        if state.dim != spec.dim:
            raise ValueError(f"buffer has {state.dim} features, expected {spec.dim}")
        buf = cls(spec, rng)
        for i, name in enumerate(state.sites):
            rows = np.flatnonzero(state.site_index == i)
            site = _Site(spec.dim, len(rows))
            site.values[: len(rows)] = state.values[rows]
            site.ts[: len(rows)] = state.ts[rows]
            site.keys[: len(rows)] = state.keys[rows]
            site.size = len(rows)
            site.seen = max(int(state.seen[i]), len(rows))
            buf._sites[name] = site
            buf._trim(site, spec.per_site_cap)
        buf._level = None if state.level < 0 else state.level
        buf._enforce_total_cap()
        return buf

    # -- internals ----------------------------------------------------------------
    def _site_cap(self) -> int:
        cap = self.spec.per_site_cap
        return cap if self._level is None else max(1, min(cap, self._level))

    def _add(self, name: str, vals: F32, times: F64) -> None:
        site = self._sites.get(name)
        if site is None:
            site = self._sites[name] = _Site(self.spec.dim, min(len(vals), self._site_cap()))
        cap = self._site_cap()
        k = len(vals)
        keys = self._rng.random(k)
        n_app = min(max(0, cap - site.size), k)
        if n_app:
            site.reserve(site.size + n_app)
            end = site.size + n_app
            site.values[site.size : end] = vals[:n_app]
            site.ts[site.size : end] = times[:n_app]
            site.keys[site.size : end] = keys[:n_app]
            site.size = end
        rest = k - n_app
        if rest and site.size:
            horizon = max(cap, math.ceil(self.spec.recency_factor * cap))
            seen0 = site.seen + n_app
            positions = np.minimum(seen0 + np.arange(rest, dtype=np.int64), horizon)
            slots = self._rng.integers(0, positions + 1)
            hit = np.flatnonzero(slots < site.size)
            if hit.size:
                # Several rows may land on one slot: the last one wins (as sequentially).
                rev_slots = slots[hit][::-1]
                _, first = np.unique(rev_slots, return_index=True)
                dst = rev_slots[first]
                src = hit[::-1][first] + n_app
                site.values[dst] = vals[src]
                site.ts[dst] = times[src]
                site.keys[dst] = keys[src]
        site.seen += k

    def _trim(self, site: _Site, cap: int) -> None:
        excess = site.size - cap
        if excess > 0:
            rows = self._rng.choice(site.size, size=excess, replace=False).astype(np.int64)
            site.remove(rows)

    def _enforce_total_cap(self) -> None:
        sizes = [s.size for s in self._sites.values()]
        if sum(sizes) <= self.spec.total_cap:
            return
        level = water_level(sizes, self.spec.total_cap)
        self._level = level if self._level is None else min(self._level, level)
        for site in self._sites.values():
            self._trim(site, level)


def counts_by_site(sites: Sequence[str]) -> Mapping[str, int]:
    """Number of rows per site name (small helper for callers and tests)."""
    uniq, n = np.unique(np.asarray(sites, dtype=object), return_counts=True)
    return {str(u): int(c) for u, c in zip(uniq, n, strict=True)}
