"""Training buffer: a bounded, per-site sample of recent normal records. Pure core.

The scoring pipeline offers every scored batch (`TrainingBuffer.offer`, once per
batch, on the event loop); records flagged anomalous are dropped, records of
warming sites arrive with `normal=True`. `offer` is vectorised over the whole
batch (no per-site Python loop): rows are appended to one pool, and the pool is
pruned back to its bounds only when it overflows or is read (amortised).

Sampling, per site: a time-decayed reservoir. The n-th normal record of a site
gets the priority `n / τ + G` (G a standard Gumbel draw, τ = `recency_factor ×
per_site_cap` records); a site keeps its `cap` records of highest priority. This
is weighted sampling without replacement with weights `exp(n / τ)`
(Efraimidis–Spirakis): a random sample in which a record's weight halves every
`τ·ln 2` newer records — recent, but not only the newest burst.

Fairness, across sites: each site holds at most `per_site_cap` records. When the
sum exceeds `total_cap`, a water level `L` is computed (the largest integer
with `sum(min(size_s, L)) <= total_cap`) and every site above it keeps its `L`
records of highest priority: the largest sites shrink first, small (new) sites
keep everything. Shrinking a priority sample keeps it a priority sample.

Held-out split, per site: every record also carries a uniform key drawn when it
entered; records with `key < holdout_fraction` form the held-out slice used by
the validation gate, the rest are training data. The split is deterministic
given the seeded RNG and survives persistence (`export` / `from_state`).
"""

from __future__ import annotations

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

    `site_index[i]` indexes `sites`; `seen[s]` counts the normal records offered
    for site s (the reservoir's clock).
    """

    dim: int
    sites: tuple[str, ...]  # (S,)
    seen: I64  # (S,)
    site_index: I64  # (N,)
    values: F32  # (N, D)
    ts: F64  # (N,)
    keys: F64  # (N,) uniform in [0, 1): holdout when < holdout_fraction
    priority: F64  # (N,) reservoir priority (higher = kept)


def water_level(sizes: Sequence[int] | I64, total_cap: int) -> int:
    """Largest L with sum(min(size, L)) <= total_cap (max(sizes) when nothing to cut)."""
    s = np.sort(np.asarray(sizes, dtype=np.int64))
    if s.size == 0 or int(s.sum()) <= total_cap:
        return int(s[-1]) if s.size else 0
    prefix = np.concatenate(([0], np.cumsum(s)))
    m = len(s) - np.arange(len(s))  # sites with size >= s[i]
    over = np.flatnonzero(prefix[:-1] + m * s > total_cap)[0]
    return int((total_cap - int(prefix[over])) // int(m[over]))


class TrainingBuffer:
    """Bounded per-site sample of normal records; implements the pipeline's TrainingSink."""

    def __init__(self, spec: BufferSpec, rng: np.random.Generator) -> None:
        self.spec = spec
        self._rng = rng
        self._names: list[str] = []
        self._ids: dict[str, int] = {}
        self._seen = np.zeros(0, dtype=np.int64)
        # Rows beyond the caps are tolerated up to `_limit`, then pruned (amortised).
        self._limit = spec.total_cap + max(1024, spec.total_cap // 8)
        self._n = 0
        self._values = np.empty((0, spec.dim), dtype=np.float32)
        self._site = np.empty(0, dtype=np.int64)
        self._ts = np.empty(0, dtype=np.float64)
        self._keys = np.empty(0, dtype=np.float64)
        self._prio = np.empty(0, dtype=np.float64)
        self._dirty = False
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
        keep = np.array(normal, dtype=bool)  # a copy: the caller's array stays untouched
        if vals.ndim != 2 or vals.shape[1] != self.spec.dim:
            raise ValueError(f"values must be (B, {self.spec.dim}), got {vals.shape}")
        if len(keep) != len(vals) or len(sites) != len(vals):
            raise ValueError("sites, values, ts and normal must have the same length")
        keep &= np.isfinite(vals).all(axis=1)
        idx = np.flatnonzero(keep)
        if idx.size == 0:
            return
        ids = self._site_ids([sites[i] for i in idx.tolist()])
        k = len(idx)
        # Arrival number of each row within its site: seen + rank in this batch.
        order = np.argsort(ids, kind="stable")
        counts = np.bincount(ids, minlength=len(self._names))
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        rank = np.empty(k, dtype=np.int64)
        rank[order] = np.arange(k) - starts[ids[order]]
        arrival = self._seen[ids] + rank
        self._seen += counts
        tau = self.spec.recency_factor * self.spec.per_site_cap
        prio = arrival / tau + self._rng.gumbel(size=k)
        if self._n + k > self._limit:
            self._prune()
        self._grow(self._n + k)
        end = self._n + k
        self._values[self._n : end] = vals[idx]
        self._site[self._n : end] = ids
        self._ts[self._n : end] = np.asarray(ts, dtype=np.float64)[idx]
        self._keys[self._n : end] = self._rng.random(k)
        self._prio[self._n : end] = prio
        self._n = end
        self._dirty = True
        self.version += 1

    # -- queries ------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Records held per site."""
        self._prune()
        n = np.bincount(self._site[: self._n], minlength=len(self._names))
        return {self._names[i]: int(c) for i, c in enumerate(n.tolist()) if c}

    def holdout_counts(self) -> dict[str, int]:
        """Held-out records per site."""
        self._prune()
        held = self._keys[: self._n] < self.spec.holdout_fraction
        n = np.bincount(self._site[: self._n][held], minlength=len(self._names))
        return {self._names[i]: int(c) for i, c in enumerate(n.tolist()) if c}

    def seen(self, site: str) -> int:
        """Normal records ever offered for `site`."""
        i = self._ids.get(site)
        return 0 if i is None else int(self._seen[i])

    def __len__(self) -> int:
        self._prune()
        return self._n

    def snapshot(self, part: Part = "train", sites: Sequence[str] | None = None) -> Sample:
        """Copy of the stored records: the training part (default), the held-out part
        or all, optionally limited to `sites`. Grouped by site, sites sorted by name."""
        self._prune()
        n, f = self._n, self.spec.holdout_fraction
        mask = np.ones(n, dtype=bool)
        if part == "holdout":
            mask = self._keys[:n] < f
        elif part == "train":
            mask = self._keys[:n] >= f
        if sites is not None:
            wanted = [self._ids[s] for s in set(sites) if s in self._ids]
            mask &= np.isin(self._site[:n], wanted)
        rows = np.flatnonzero(mask)
        name_rank = np.argsort(np.argsort(np.array(self._names, dtype=object)))
        rows = rows[np.argsort(name_rank[self._site[rows]], kind="stable")]
        names = tuple(self._names[i] for i in self._site[rows].tolist())
        return Sample(self._values[rows], names, self._ts[rows])

    def holdout(self) -> Sample:
        """The per-site held-out slice for the validation gate."""
        return self.snapshot("holdout")

    # -- maintenance --------------------------------------------------------------
    def drop_site(self, site: str) -> None:
        """Forget a site's records (operator action; retired sites are kept by default)."""
        i = self._ids.get(site)
        if i is not None:
            self._compact(self._site[: self._n] != i)
            self.version += 1

    def export(self) -> BufferState:
        """A copy of the whole state, for persistence (sites renumbered, present ones only)."""
        self._prune()
        n = self._n
        present = np.unique(self._site[:n])
        remap = np.full(len(self._names), -1, dtype=np.int64)
        remap[present] = np.arange(len(present))
        return BufferState(
            dim=self.spec.dim,
            sites=tuple(self._names[i] for i in present.tolist()),
            seen=self._seen[present].copy(),
            site_index=remap[self._site[:n]],
            values=self._values[:n].copy(),
            ts=self._ts[:n].copy(),
            keys=self._keys[:n].copy(),
            priority=self._prio[:n].copy(),
        )

    @classmethod
    def from_state(
        cls, state: BufferState, spec: BufferSpec, rng: np.random.Generator
    ) -> TrainingBuffer:
        """Rebuild a buffer; records beyond the (possibly smaller) caps are evicted."""
        if state.dim != spec.dim:
            raise ValueError(f"buffer has {state.dim} features, expected {spec.dim}")
        buf = cls(spec, rng)
        buf._site_ids(list(state.sites))
        buf._seen[:] = state.seen
        n = len(state.ts)
        buf._grow(n)
        buf._values[:n] = state.values
        buf._site[:n] = state.site_index
        buf._ts[:n] = state.ts
        buf._keys[:n] = state.keys
        buf._prio[:n] = state.priority
        buf._n = n
        buf._dirty = True
        buf._prune()
        return buf

    # -- internals ----------------------------------------------------------------
    def _site_ids(self, names: list[str]) -> I64:
        ids = self._ids
        out = np.empty(len(names), dtype=np.int64)
        for j, name in enumerate(names):
            i = ids.get(name)
            if i is None:
                i = ids[name] = len(self._names)
                self._names.append(name)
            out[j] = i
        if len(self._seen) < len(self._names):
            grown = np.zeros(len(self._names), dtype=np.int64)
            grown[: len(self._seen)] = self._seen
            self._seen = grown
        return out

    def _prune(self) -> None:
        """Back to the bounds: per-site cap, then the total cap's water level."""
        if not self._dirty:
            return
        self._dirty = False
        n = self._n
        site = self._site[:n]
        sizes = np.bincount(site, minlength=len(self._names))
        per_site = self.spec.per_site_cap
        cap = min(per_site, water_level(np.minimum(sizes, per_site), self.spec.total_cap))
        over = np.flatnonzero(sizes > cap)
        if over.size == 0:
            return
        # Group the rows by site (stable sort), then drop each over-full site's
        # lowest-priority rows with a partial sort of its own segment only.
        key = site.astype(np.int16) if len(sizes) < 2**15 else site
        order = np.argsort(key, kind="stable")
        ends = np.cumsum(sizes)
        keep = np.ones(n, dtype=bool)
        prio = self._prio[:n]
        for s in over.tolist():
            rows = order[ends[s] - sizes[s] : ends[s]]
            drop = int(sizes[s]) - cap
            keep[rows[np.argpartition(prio[rows], drop)[:drop]]] = False
        self._compact(keep)

    def _compact(self, keep: npt.NDArray[np.bool_]) -> None:
        """Keep the rows where `keep` (n,) is True: kept rows from the tail fill the
        holes at the front, so the cost is the number of rows dropped, not n."""
        m = int(keep.sum())
        holes = np.flatnonzero(~keep[:m])
        movers = np.flatnonzero(keep[m:]) + m
        for arr in (self._values, self._site, self._ts, self._keys, self._prio):
            arr[holes] = arr[movers]
        self._n = m

    def _grow(self, needed: int) -> None:
        """Allocated rows >= needed (doubling, up to the prune limit when possible)."""
        have = len(self._site)
        if needed <= have:
            return
        size = max(needed, min(2 * have, self._limit), 1024)
        for name in ("_values", "_site", "_ts", "_keys", "_prio"):
            old = getattr(self, name)
            new = np.empty((size, *old.shape[1:]), dtype=old.dtype)
            new[: self._n] = old[: self._n]
            setattr(self, name, new)


def counts_by_site(sites: Sequence[str]) -> Mapping[str, int]:
    """Number of rows per site name (small helper for callers and tests)."""
    uniq, n = np.unique(np.asarray(sites, dtype=object), return_counts=True)
    return {str(u): int(c) for u, c in zip(uniq, n, strict=True)}
