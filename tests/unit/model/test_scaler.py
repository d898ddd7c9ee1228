"""Per-site robust standardization: own statistics, pooled fallback, strict round trip."""

from __future__ import annotations

import numpy as np
import pytest

from streamvae.model.scaler import MIN_SITE_RECORDS, RobustScaler


@pytest.fixture
def scaler() -> RobustScaler:
    rng = np.random.default_rng(0)
    a = rng.normal(10.0, 2.0, size=(400, 2))
    b = rng.normal(-5.0, 0.5, size=(400, 2))
    few = rng.normal(100.0, 1.0, size=(MIN_SITE_RECORDS - 1, 2))
    x = np.concatenate([a, b, few])
    sites = ["a"] * 400 + ["b"] * 400 + ["few"] * len(few)
    return RobustScaler.fit(x, 0.01, sites)


def test_each_site_standardized_with_its_own_statistics(scaler: RobustScaler) -> None:
    assert sorted(scaler.sites) == ["a", "b"]
    x = np.array([[10.0, 10.0], [-5.0, -5.0]])
    out = scaler.transform(x, ["a", "b"])
    np.testing.assert_allclose(out, 0.0, atol=0.3)  # own centers
    pooled = np.asarray(scaler.scale)
    assert (np.asarray(scaler.sites["a"][1]) < pooled).all()
    assert (np.asarray(scaler.sites["b"][1]) < np.asarray(scaler.sites["a"][1])).all()


@pytest.mark.parametrize("site", ["few", "never-seen"])
def test_small_and_unknown_sites_use_pooled_statistics(scaler: RobustScaler, site: str) -> None:
    x = np.array([[3.0, 4.0]])
    np.testing.assert_array_equal(scaler.transform(x, [site]), scaler.transform(x))
    assert scaler.log_scale_sums([site])[0] == pytest.approx(scaler.log_scale_sum)


def test_floor_and_round_trip(scaler: RobustScaler) -> None:
    const = RobustScaler.fit(np.ones((100, 3)), 0.05, ["s"] * 100)  # pooled = site
    assert const.sites["s"][1] == pytest.approx((0.05, 0.05, 0.05))
    back = RobustScaler.from_dict(scaler.to_dict())
    assert back == scaler
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(back.transform(x, ["a", "b"]), scaler.transform(x, ["a", "b"]))


def test_pooled_only_dict_still_loads() -> None:
    """Format-1 artifacts stored only the pooled statistics."""
    s = RobustScaler.from_dict({"center": [0.0, 1.0], "scale": [1.0, 2.0]})
    assert not s.sites


@pytest.mark.parametrize(
    "bad",
    [
        {"center": [0.0], "scale": [1.0], "extra": 1},
        {"center": [0.0], "scale": [1.0], "sites": {"a": {"center": [0.0, 1.0], "scale": [1, 1]}}},
        {"center": [0.0], "scale": [1.0], "sites": {"a": {"center": [0.0], "scale": [0.0]}}},
    ],
)
def test_strict_loading(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="scaler"):
        RobustScaler.from_dict(bad)
