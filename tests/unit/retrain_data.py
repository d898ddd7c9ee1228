"""Small synthetic multi-site data for the retraining tests.

Every site shares a 2-d latent structure, x = z·A + b_site + ε (4 sensors), with a
site-specific offset and noise level; anomalies add a large spike to one sensor.
"""

from __future__ import annotations

import zlib

import numpy as np

FEATURES = ("f0", "f1", "f2", "f3")
_A = np.array([[1.0, 0.5, -0.5, 0.2], [0.0, 1.0, 0.8, -1.0]])


class SyntheticSites:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    @staticmethod
    def _site_params(site: str) -> tuple[np.ndarray, float]:
        r = np.random.default_rng(zlib.crc32(site.encode()))
        return r.normal(0.0, 2.0, size=4), float(r.uniform(0.1, 0.3))

    def normal(self, site: str, n: int) -> np.ndarray:
        """(n, 4) float32 normal records of `site`."""
        offset, noise = self._site_params(site)
        z = self.rng.normal(size=(n, 2))
        x = z @ _A + offset + self.rng.normal(0.0, noise, size=(n, 4))
        return x.astype(np.float32)

    def anomalies(self, site: str, n: int) -> np.ndarray:
        """(n, 4) records of `site` with one sensor pushed far out."""
        x = self.normal(site, n)
        col = self.rng.integers(0, 4, size=n)
        sign = self.rng.choice([-1.0, 1.0], size=n)
        x[np.arange(n), col] += sign * 10.0
        return x

    def normal_mix(self, sites: list[str], per_site: int) -> tuple[np.ndarray, list[str]]:
        """Interleaved normal records: (len(sites)·per_site, 4) and their site names."""
        values = np.concatenate([self.normal(s, per_site) for s in sites])
        names = [s for s in sites for _ in range(per_site)]
        order = self.rng.permutation(len(names))
        return values[order], [names[i] for i in order]
