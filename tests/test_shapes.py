"""The moving-shapes simulator (crnn/shapes.py) and generating it as a dataset (--scene shapes)."""

import hashlib
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT
from crnn import shapes

# sha256 of make_series(123)[1].tobytes() for GENERATOR_VERSION "shapes-1".
# If this changes on purpose, bump shapes.GENERATOR_VERSION and update the hash.
GOLDEN_123 = "c7592e43beab5603c3ada230404d5d74fd4f3b9f24f2a86bf83f820d0ed2451c"


def _background(params):
    return np.uint8(round(params["background_lightness"] * 255))


# --- determinism -------------------------------------------------------------
def test_same_seed_same_bytes_and_golden_hash():
    p1, a = shapes.make_series(7)
    p2, b = shapes.make_series(7)
    assert p1 == p2 and a.tobytes() == b.tobytes()
    assert shapes.simulate_series(p1, 7).tobytes() == a.tobytes()
    assert shapes.GENERATOR_VERSION == "shapes-1"
    assert hashlib.sha256(shapes.make_series(123)[1].tobytes()).hexdigest() == GOLDEN_123


def test_different_seeds_differ():
    assert shapes.make_series(1)[1].tobytes() != shapes.make_series(2)[1].tobytes()
    p = shapes.default_params()
    assert shapes.simulate_series(p, 1).tobytes() != shapes.simulate_series(p, 2).tobytes()


def test_snapshot_does_not_depend_on_other_requested_ages():
    full = shapes.simulate_series({}, 5, ages=(10, 12.5, 20, 33.3, 50))
    part = shapes.simulate_series({}, 5, ages=(12.5, 50))
    assert np.array_equal(part, full[[1, 4]])


# --- shapes and dtypes -------------------------------------------------------
@pytest.mark.parametrize("h,w", [(32, 16), (64, 64), (17, 9), (16, 48)])
def test_shape_dtype_and_real_ages(h, w):
    params, x = shapes.make_series(3, ages=(0, 10.5, 27.25, 50, 100), height=h, width=w)
    assert x.shape == (5, h, w, 3) and x.dtype == np.uint8
    assert list(params) == list(shapes.PARAM_NAMES)
    assert (x != _background(params)).any(axis=-1).any(axis=(1, 2)).all()   # never blank


def test_default_interface_matches_pine():
    from crnn import pine

    _, x = shapes.make_series(0)
    assert x.shape == pine.make_series(0)[1].shape == (5, 32, 16, 3)
    assert shapes.DEFAULT_AGES == pine.DEFAULT_AGES


# --- scenes are meaningful ---------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_coloured_antialiased_shapes_on_plain_background(seed):
    params, x = shapes.make_series(seed)
    bg = _background(params)
    for frame in x:
        is_bg = (frame == bg).all(axis=-1)
        assert 0.3 < is_bg.mean() < 0.995                        # mostly background, some shapes
        colours = {tuple(c) for c in frame[~is_bg]}
        saturated = [c for c in colours if max(c) - min(c) > 40]
        assert saturated                                           # coloured, not grey
        assert len(colours) > int(params["num_shapes"])            # edge pixels blend (anti-aliasing)


@pytest.mark.parametrize("seed", range(6))
def test_frames_change_between_ages(seed):
    _, x = shapes.make_series(seed)
    d = np.abs(np.diff(x.astype(np.int32), axis=0))
    changed = (d.max(axis=-1) > 10).sum(axis=(1, 2))           # pixels that visibly change
    assert (changed >= 3).all(), changed                        # persistence is never perfect


def test_motion_and_growth_partly_predictable():
    # constant-velocity / constant-growth extrapolation from ages 20, 25 to 30 beats persistence
    # for most shapes, but is not exact (random walks)
    err_c, disp_c, err_r, disp_r = [], [], [], []
    for seed in range(40):
        st = shapes.shape_states(shapes.sample_params(seed), seed, (20, 25, 30))
        c, r = st["centre"], np.log(st["radius"])
        err_c += list(np.linalg.norm(c[2] - (2 * c[1] - c[0]), axis=-1))
        disp_c += list(np.linalg.norm(c[2] - c[1], axis=-1))
        err_r += list(np.abs(r[2] - (2 * r[1] - r[0])))
        disp_r += list(np.abs(r[2] - r[1]))
    err_c, disp_c, err_r, disp_r = map(np.asarray, (err_c, disp_c, err_r, disp_r))
    assert np.median(err_c) < 0.6 * np.median(disp_c)
    assert np.median(err_r) < 0.8 * np.median(disp_r)
    assert (err_c > 1e-4).mean() > 0.9 and (err_r > 1e-4).mean() > 0.9
    assert np.median(disp_c) > 0.5 / 32                        # moves > half a pixel in 5 years


def test_states_follow_the_parameters():
    base = shapes.default_params()
    slow = shapes.shape_states(dict(base, speed=0.003), 4, (20, 40))
    fast = shapes.shape_states(dict(base, speed=0.015), 4, (20, 40))
    assert np.array_equal(slow["centre"][0], fast["centre"][0])   # same place at the reference age
    move = [np.linalg.norm(s["centre"][1] - s["centre"][0], axis=-1).sum() for s in (slow, fast)]
    assert move[1] > 2 * move[0]
    grow = shapes.shape_states(dict(base, growth_rate=0.025), 4, (20, 40))["radius"]
    shrink = shapes.shape_states(dict(base, growth_rate=-0.01), 4, (20, 40))["radius"]
    assert (grow[1] > grow[0]).all() and (shrink[1] / shrink[0] < grow[1] / grow[0]).all()
    # centres stay in the frame (they bounce off the edges); 0.5 = width / height
    far = shapes.shape_states(dict(base, speed=0.015), 9, np.linspace(0, 100, 41), aspect=0.5)
    assert (far["centre"][..., 0] >= 0).all() and (far["centre"][..., 0] <= 0.5).all()
    assert (far["centre"][..., 1] >= 0).all() and (far["centre"][..., 1] <= 1).all()
    assert len(shapes.shape_states(dict(base, num_shapes=2), 4, (20,))["kind"]) == 2


# --- parameters and errors ---------------------------------------------------
def test_param_specs_and_sampling():
    assert shapes.PARAM_NAMES == tuple(s.name for s in shapes.PARAMS)
    assert not set(shapes.PARAM_NAMES) & set(__import__("crnn.pine").pine.PARAM_NAMES)
    for s in shapes.PARAMS:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", s.name) and s.low < s.high and s.low <= s.default <= s.high
    seen = set()
    for seed in range(40):
        p = shapes.sample_params(seed)
        assert shapes.validate_params(p) == p
        assert float(p["num_shapes"]).is_integer()
        seen.add(p["speed"])
    assert len(seen) == 40 and shapes.sample_params(5) == shapes.sample_params(5)


@pytest.mark.parametrize("params,match", [
    ({"colour": 1}, "colour"), ({"speed": 1.0}, r"speed.*1\.0"), ({"num_shapes": 2.5}, "num_shapes"),
    ({"size": float("nan")}, "size"), ({"size": "big"}, "size"), ({"num_shapes": True}, "num_shapes"),
])
def test_bad_params(params, match):
    with pytest.raises(ValueError, match=match):
        shapes.simulate_series(params, 0)


@pytest.mark.parametrize("ages,bad", [
    ((15, 10), "10"), ((-1, 5), "-1"), ((10, 101), "101"), ((10, float("nan")), "nan"),
    (("ten",), "ten"), ((True,), "True"), ((), "empty"), ("10,20", "10,20"), ((5, 5.0), "5.0"),
])
def test_bad_ages(ages, bad):
    with pytest.raises(ValueError, match=re.escape(bad)):
        shapes.simulate_series({}, 0, ages=ages)


def test_bad_sizes():
    for kw, name in ((dict(height=0), "height"), (dict(width=2.0), "width"), (dict(supersample=True), "supersample")):
        with pytest.raises(ValueError, match=name):
            shapes.simulate_series({}, 0, **kw)


# --- generating a dataset ----------------------------------------------------
def test_generate_rejects_unknown_scene(tmp_path):
    from crnn.generate import generate, generate_rows

    with pytest.raises(ValueError, match="'trees'.*pines.*shapes"):
        generate(str(tmp_path / "x"), num_series=2, scene="trees")          # before any Ray work
    with pytest.raises(ValueError, match="trees"):
        generate_rows([0], base_seed=0, ages=(10, 15), height=8, width=8, scene="trees")


@pytest.mark.ray  # the generate job, with its embedded Ray, in a subprocess
def test_generate_job_scene_shapes_round_trip(tmp_path):
    from crnn.generate import generate_rows
    from crnn.shards import read_card, read_numpy, split_for_index

    n, seed = 24, 3
    out = str(tmp_path / "shapes")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "jobs", "generate.py"), "--scene", "shapes",
                        "--num-series", str(n), "--seed", str(seed), "--shard-size", "16",
                        "--out", out, "--num-cpus", "2"],
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0"))
    assert r.returncode == 0, r.stderr[-3000:]
    card = read_card(out)
    assert card["scene"] == "shapes" and card["generator_version"] == shapes.GENERATOR_VERSION
    assert card["mirror_axis"] == (card["width"] - 1) / 2                # the image centre
    assert [p["name"] for p in card["params"]] == list(shapes.PARAM_NAMES)
    assert all(name in card["columns"] for name in shapes.PARAM_NAMES)
    assert card["splits"] == {"train": 21, "val": 1, "test": 2}           # test 9, 19; val 4
    data = read_numpy(out)
    rows = generate_rows(range(n), base_seed=seed, ages=shapes.DEFAULT_AGES, height=32, width=16,
                         scene="shapes")
    pos = {sid: i for i, sid in enumerate(data["series_id"])}
    assert sorted(pos) == [f"shapes-{i:06d}" for i in range(n)] == [r["series_id"] for r in rows]
    for idx, row in enumerate(rows):
        i = pos[row["series_id"]]
        np.testing.assert_array_equal(data["frames"][i], row["frames"])
        np.testing.assert_array_equal(row["frames"], shapes.make_series(row["seed"])[1])
        assert data["split"][i] == split_for_index(idx) and int(data["seed"][i]) == row["seed"]
        for name in shapes.PARAM_NAMES:
            assert data[name][i] == row["params"][name], name
    assert "height_growth_rate" not in data                          # no pine columns


def test_scene_baselines_benchmark():
    from benchmarks import scene_baselines
    from crnn.generate import generate_rows

    res = scene_baselines.baselines("shapes", 2)
    assert sorted(res["persistence"]) == [15, 20, 25, 30] and sorted(res["linear"]) == [20, 25, 30]
    x = np.stack([r["frames"] for r in generate_rows([9, 19], base_seed=0, ages=shapes.DEFAULT_AGES,
                                                      height=32, width=16, scene="shapes")]).astype(float)
    assert res["persistence"][30] == pytest.approx(((x[:, 4] - x[:, 3]) ** 2).mean())
    assert all(v > 0 for per in res.values() for v in per.values())
    with pytest.raises(ValueError, match="trees"):
        scene_baselines.baselines("trees", 2)
