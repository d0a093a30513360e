"""Tests for the parametric pine simulator/renderer (crnn/pine.py)."""

import hashlib
import re

import numpy as np
import pytest

from crnn import pine

BG = np.array(pine.BACKGROUND, dtype=np.uint8)
PAPER_NAMES = (
    "height_growth_rate", "diameter_growth_rate", "growth_shrinkage_rate", "needle_slope",
    "branch_angle", "branch_slope", "height_growth_shrinkage", "diameter_growth_shrinkage",
    "branch_shrinkage", "second_level_branch_shrinkage", "branch_diameter", "crown_diameter",
)
# sha256 of make_series(123)[1].tobytes() for GENERATOR_VERSION "pine-1".
# If this changes on purpose, bump pine.GENERATOR_VERSION and update the hash.
GOLDEN_123 = "5e09cbf5930553768ecfd077e4b1ff2f96040ac9032d4e11e22b818fc6a0aab7"


def _tree_mask(frames):
    return (frames != BG).any(axis=-1)                 # (T, H, W) non-background


def _top_rows(frames):
    return [int(np.nonzero(m.any(axis=1))[0].min()) for m in _tree_mask(frames)]


# --- determinism -------------------------------------------------------------
def test_same_seed_identical_bytes():
    p1, a = pine.make_series(7)
    p2, b = pine.make_series(7)
    assert p1 == p2
    assert a.tobytes() == b.tobytes()
    c = pine.simulate_series(p1, 7)
    assert c.tobytes() == a.tobytes()


def test_golden_hash():
    assert pine.GENERATOR_VERSION == "pine-1"
    _, x = pine.make_series(123)
    assert hashlib.sha256(x.tobytes()).hexdigest() == GOLDEN_123


def test_different_seeds_differ():
    assert pine.make_series(1)[1].tobytes() != pine.make_series(2)[1].tobytes()
    p = pine.default_params()
    assert pine.simulate_series(p, 1).tobytes() != pine.simulate_series(p, 2).tobytes()


def test_snapshot_does_not_depend_on_other_requested_ages():
    full = pine.simulate_series({}, 5)
    part = pine.simulate_series({}, 5, ages=(15, 30))
    assert np.array_equal(part, full[[1, 4]])


# --- shapes ------------------------------------------------------------------
def test_default_shape_dtype():
    params, x = pine.make_series(0)
    assert x.shape == (5, 32, 16, 3) and x.dtype == np.uint8
    assert list(params) == list(pine.PARAM_NAMES)


@pytest.mark.parametrize("h,w,ss", [(64, 32, 4), (128, 64, 2), (17, 9, 3), (32, 16, 1)])
def test_other_sizes(h, w, ss):
    x = pine.simulate_series(pine.sample_params(3), 3, height=h, width=w, supersample=ss)
    assert x.shape == (5, h, w, 3) and x.dtype == np.uint8
    assert not (x[-1] == BG).all()


def test_custom_ages():
    _, x = pine.make_series(4, ages=(1, 12, 33, 40), height=64, width=32)
    assert x.shape == (4, 64, 32, 3)
    x = pine.simulate_series({}, 4, ages=[np.int64(20)])
    assert x.shape == (1, 32, 16, 3)


# --- growth ------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_tree_grows(seed):
    _, x = pine.make_series(seed)
    mask = _tree_mask(x)
    cover = mask.sum(axis=(1, 2))
    assert np.all(np.diff(cover) >= 0), cover
    ink = np.abs(x.astype(np.int32) - BG.astype(np.int32)).max(axis=-1).sum(axis=(1, 2))
    assert np.all(np.diff(ink) >= 0), ink
    tops = _top_rows(x)
    assert np.all(np.diff(tops) < 0), tops           # strictly taller, 10 -> 30
    # the trunk stands on the bottom row
    assert mask[:, -1, :].any(axis=1).all()


# --- parameters matter -------------------------------------------------------
def test_branch_angle_changes_image():
    p = pine.default_params()
    a = pine.simulate_series(dict(p, branch_angle=40.0), 11)
    b = pine.simulate_series(dict(p, branch_angle=80.0), 11)
    assert not np.array_equal(a, b)
    assert not np.array_equal(a[-1], b[-1])


def test_crown_diameter_changes_image():
    p = pine.default_params()
    a = pine.simulate_series(dict(p, crown_diameter=2.5), 11)
    b = pine.simulate_series(dict(p, crown_diameter=7.5), 11)
    assert not np.array_equal(a[-1], b[-1])
    # a wider crown limit gives a wider tree silhouette
    wa = _tree_mask(a[-1:])[0].any(axis=0).sum()
    wb = _tree_mask(b[-1:])[0].any(axis=0).sum()
    assert wb >= wa


def test_height_growth_rate_taller():
    p = pine.default_params()
    for seed in (0, 1, 2):
        lo = pine.simulate_series(dict(p, height_growth_rate=0.35), seed)
        hi = pine.simulate_series(dict(p, height_growth_rate=0.6), seed)
        assert all(h < l for h, l in zip(_top_rows(hi), _top_rows(lo)))


# --- parameter specs ---------------------------------------------------------
def test_param_specs():
    assert len(pine.PARAMS) >= 14
    assert pine.PARAM_NAMES == tuple(s.name for s in pine.PARAMS)
    assert len(set(pine.PARAM_NAMES)) == len(pine.PARAM_NAMES)
    for name in PAPER_NAMES:
        assert name in pine.PARAM_NAMES
    for s in pine.PARAMS:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", s.name)
        assert s.low < s.high and s.low <= s.default <= s.high
        assert s.unit and s.doc
    assert pine.default_params() == {s.name: float(s.default) for s in pine.PARAMS}
    assert pine.DEFAULT_AGES == (10, 15, 20, 25, 30)


def test_sample_params_in_range_and_deterministic():
    seen = set()
    for seed in range(60):
        p = pine.sample_params(seed)
        assert list(p) == list(pine.PARAM_NAMES)
        for s in pine.PARAMS:
            assert s.low <= p[s.name] <= s.high
            assert isinstance(p[s.name], float)
        assert float(p["branches_per_whorl"]).is_integer()
        assert pine.validate_params(p) == p
        seen.add(p["branch_angle"])
    assert len(seen) == 60
    assert pine.sample_params(5) == pine.sample_params(5)


def test_validate_params():
    p = pine.validate_params({"branch_angle": 50})
    assert p["branch_angle"] == 50.0 and p["crown_diameter"] == pine.default_params()["crown_diameter"]
    assert pine.validate_params({}) == pine.default_params()
    with pytest.raises(ValueError, match="tree_colour"):
        pine.validate_params({"tree_colour": 1.0})
    with pytest.raises(ValueError, match=r"branch_angle.*200"):
        pine.validate_params({"branch_angle": 200.0})
    with pytest.raises(ValueError, match=r"crown_diameter.*-1"):
        pine.validate_params({"crown_diameter": -1})
    with pytest.raises(ValueError, match="needle_slope"):
        pine.validate_params({"needle_slope": float("nan")})
    with pytest.raises(ValueError, match="needle_slope"):
        pine.validate_params({"needle_slope": "steep"})
    with pytest.raises(ValueError, match=r"branches_per_whorl.*4\.5"):
        pine.validate_params({"branches_per_whorl": 4.5})
    with pytest.raises(ValueError, match="tree_colour"):
        pine.simulate_series({"tree_colour": 1.0}, 0)


@pytest.mark.parametrize("ages,bad", [
    ((15, 10), "10"), ((0, 5), "0"), ((-3,), "-3"), ((10, 10.5), "10.5"),
    ((10, 10), "10"), ((10, 10_000), "10000"), (("ten",), "ten"),
])
def test_bad_ages(ages, bad):
    with pytest.raises(ValueError, match=re.escape(bad)):
        pine.simulate_series({}, 0, ages=ages)


def test_empty_ages_and_bad_size():
    with pytest.raises(ValueError):
        pine.simulate_series({}, 0, ages=())
    with pytest.raises(ValueError, match="height"):
        pine.simulate_series({}, 0, height=0)


# --- appearance --------------------------------------------------------------
@pytest.mark.parametrize("seed", range(8))
def test_not_blank_not_saturated(seed):
    _, x = pine.make_series(seed)
    last = x[-1].astype(np.int32)
    bg_frac = 1.0 - _tree_mask(x[-1:])[0].mean()
    assert 0.30 <= bg_frac <= 0.97, bg_frac
    r, g, b = last[..., 0], last[..., 1], last[..., 2]
    greenish = (g > r + 4) & (g > b)                  # needles
    warm = (r > b + 8) & ~greenish                     # bark (brown .. grey-brown)
    assert greenish.sum() >= 3
    assert warm.sum() >= 3
