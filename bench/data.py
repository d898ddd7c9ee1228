"""Loaders for the evaluation data sets (SMD and the five tabular tables).

Everything here is plain numpy; no model code. Layout of the data folder is
described in its README (`../shared/data/README.md` from the repository root).

SMD: one `.npz` per machine with `train (T, 38)`, `test (T', 38)`,
`test_label (T',)` and `interpretation_label` lines `start-end:d1,d2,...`
(0-based start inclusive, end exclusive -- checked against `test_label` --,
1-based sensor indices).

Tabular: `X (n, d)`, `y (n,)`; split and standardized as in Takahashi et al.
(IJCAI 2018): SMTP 10 % train / 10 % validation / 80 % test, the others
50 % / 10 % / 40 %, features standardized with the training split's mean and
standard deviation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

DEFAULT_DATA = Path("../shared/data")
TABULAR = ("smtp", "aloi", "thyroid", "breast_cancer", "satellite")
TABULAR_NAMES = {
    "smtp": "SMTP",
    "aloi": "Aloi",
    "thyroid": "Thyroid",
    "breast_cancer": "Cancer",
    "satellite": "Satellite",
}
# (train, validation) fractions; the rest is test
TABULAR_SPLITS = {"smtp": (0.1, 0.1)}
DEFAULT_SPLIT = (0.5, 0.1)


@dataclass(frozen=True)
class Segment:
    """One labelled anomaly segment: test rows `[start, end)` and blamed sensors (0-based)."""

    start: int
    end: int
    sensors: tuple[int, ...]


@dataclass(frozen=True)
class Machine:
    """One SMD machine ("site")."""

    name: str
    train: F32  # (T, 38) in [0, 1]
    test: F32  # (T', 38)
    test_label: npt.NDArray[np.int8]  # (T',)
    segments: tuple[Segment, ...]


def parse_interpretation(lines: npt.NDArray[np.str_] | list[str]) -> tuple[Segment, ...]:
    """Parse `start-end:d1,d2,...` lines; sensors become 0-based."""
    out = []
    for line in lines:
        span, sensors = str(line).split(":")
        start, end = (int(v) for v in span.split("-"))
        out.append(Segment(start, end, tuple(int(s) - 1 for s in sensors.split(",") if s)))
    return tuple(out)


def smd_machines(data: Path) -> list[str]:
    """Machine names in the SMD folder, sorted."""
    return sorted(p.stem for p in (data / "smd").glob("*.npz"))


def load_machine(data: Path, name: str) -> Machine:
    with np.load(data / "smd" / f"{name}.npz") as z:
        return Machine(
            name=name,
            train=np.ascontiguousarray(z["train"], dtype=np.float32),
            test=np.ascontiguousarray(z["test"], dtype=np.float32),
            test_label=np.asarray(z["test_label"], dtype=np.int8),
            segments=parse_interpretation(z["interpretation_label"]),
        )


def load_smd(data: Path, names: list[str] | None = None) -> list[Machine]:
    return [load_machine(data, n) for n in (names or smd_machines(data))]


def subsample(x: F32, stride: int, cap: int | None = None) -> F32:
    """Every `stride`-th row (keeps time order and coverage), then at most `cap` rows."""
    out = x[::stride]
    if cap is not None and len(out) > cap:
        idx = np.linspace(0, len(out) - 1, cap).round().astype(np.int64)
        out = out[idx]
    return np.ascontiguousarray(out)


@dataclass(frozen=True)
class TabularSplit:
    """A standardized tabular data set; all arrays float32 `(n_split, d)`."""

    name: str
    train: F32
    valid: F32
    test: F32
    mean: F32  # (d,)
    std: F32  # (d,)


def load_tabular(data: Path, name: str, seed: int) -> TabularSplit:
    """Random split (seeded) and standardization with training statistics.

    All rows are used (normal and anomalous), as in the density-estimation
    experiment of the paper. Features with zero training spread keep scale 1.
    """
    with np.load(data / "tabular" / f"{name}.npz") as z:
        x = np.asarray(z["X"], dtype=np.float64)
    f_train, f_valid = TABULAR_SPLITS.get(name, DEFAULT_SPLIT)
    perm = np.random.default_rng(seed).permutation(len(x))
    n_train = round(f_train * len(x))
    n_valid = round(f_valid * len(x))
    tr, va, te = np.split(x[perm], [n_train, n_train + n_valid])
    mean = tr.mean(axis=0)
    std = tr.std(axis=0)
    std[std < 1e-12] = 1.0

    def z_(a: npt.NDArray[np.float64]) -> F32:
        return np.ascontiguousarray((a - mean) / std, dtype=np.float32)

    return TabularSplit(
        name, z_(tr), z_(va), z_(te), mean.astype(np.float32), std.astype(np.float32)
    )
