"""Alternative futures of a pine (pine.simulate_series fork_age/future_seed) and benchmarks/floor.py."""

import numpy as np
import pytest

from benchmarks import floor
from crnn import pine
from crnn.shards import series_seed, split_for_index

AGES = tuple(range(5, 51, 5))


@pytest.mark.parametrize("seed", [3, 11, 29])
@pytest.mark.parametrize("fork_age", [1, 10, 17, 25, 40])
def test_fork_keeps_past_bytes_and_changes_future(seed, fork_age):
    p = pine.sample_params(seed)
    actual = pine.simulate_series(p, seed, ages=AGES)
    a = pine.simulate_series(p, seed, ages=AGES, fork_age=fork_age, future_seed=0)
    b = pine.simulate_series(p, seed, ages=AGES, fork_age=fork_age, future_seed=1)
    past = np.asarray(AGES) <= fork_age
    assert a[past].tobytes() == actual[past].tobytes() == b[past].tobytes()
    # the last frame (age 50) has years of re-drawn growth: it differs between futures
    assert not np.array_equal(a[-1], b[-1])
    assert not np.array_equal(a[-1], actual[-1])


def test_fork_is_deterministic_and_fork_after_last_age_is_the_series():
    p = pine.sample_params(8)
    a = pine.simulate_series(p, 8, fork_age=20, future_seed=5)
    assert a.tobytes() == pine.simulate_series(p, 8, fork_age=20, future_seed=5).tobytes()
    # fork after every requested age: nothing visible is re-drawn
    assert pine.simulate_series(p, 8, fork_age=30, future_seed=5).tobytes() == \
        pine.simulate_series(p, 8).tobytes()
    assert pine.simulate_series(p, 8, fork_age=None).tobytes() == pine.simulate_series(p, 8).tobytes()


def test_first_future_frame_varies_for_most_trees():
    # one-step: fork at 25, frame at 30 -- the case the floor is about
    differ = 0
    for seed in range(8):
        p = pine.sample_params(seed)
        x = [pine.simulate_series(p, seed, ages=(25, 30), fork_age=25, future_seed=j) for j in range(2)]
        assert x[0][0].tobytes() == x[1][0].tobytes()
        differ += not np.array_equal(x[0][1], x[1][1])
    assert differ >= 6


@pytest.mark.parametrize("kw,match", [
    (dict(fork_age=0), "fork_age=0"), (dict(fork_age=pine.MAX_AGE), f"fork_age={pine.MAX_AGE}"),
    (dict(fork_age=12.5), "fork_age=12.5"), (dict(fork_age=True), "fork_age=True"),
    (dict(fork_age="20"), "fork_age='20'"), (dict(fork_age=20, future_seed=-1), "future_seed=-1"),
    (dict(fork_age=20, future_seed=1.0), "future_seed=1.0"), (dict(future_seed=3), "needs fork_age"),
])
def test_bad_fork_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        pine.simulate_series({}, 0, **kw)


# --- benchmarks/floor.py -----------------------------------------------------
def test_test_trees_are_the_default_test_split():
    trees = floor.test_trees(5)
    assert [i for i, _ in trees] == [9, 19, 29, 39, 49]
    assert all(split_for_index(i) == "test" and s == series_seed(0, i) for i, s in trees)
    with pytest.raises(ValueError, match="num_series=385"):
        floor.test_trees(385)
    with pytest.raises(ValueError, match="num_series=0"):
        floor.test_trees(0)


def test_plan():
    assert floor.plan(pine.DEFAULT_AGES) == [(15, 10), (20, 15), (25, 20), (30, 25)]
    assert floor.plan(pine.DEFAULT_AGES, fork_age=20) == [(25, 20), (30, 20)]
    assert floor.plan((10, 30), fork_age=12) == [(30, 12)]
    with pytest.raises(ValueError, match="no forecast age"):
        floor.plan(pine.DEFAULT_AGES, fork_age=30)
    with pytest.raises(ValueError, match="fork_age=0"):
        floor.plan(pine.DEFAULT_AGES, fork_age=0)
    with pytest.raises(ValueError, match="at least two ages"):
        floor.plan((10,))


def test_measure_floor_small_run():
    k = 3
    rows = floor.measure_floor(3, k)
    assert [(r["forecast_age"], r["fork_age"]) for r in rows] == [(15, 10), (20, 15), (25, 20), (30, 25)]
    for r in rows:
        for key in ("var_ddof0", "var_unbiased", "sum01", "persistence", "mean_vs_actual", "sem"):
            assert np.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["var_unbiased"] == pytest.approx(r["var_ddof0"] * k / (k - 1))
        assert r["sum01"] == pytest.approx(r["var_unbiased"] / 255**2 * 3 * 32 * 16)
        assert 0 < r["frac_trees_varying"] <= 1
        # the futures are close to each other compared to the change over five years
        assert r["var_unbiased"] < r["persistence"]


def test_measure_floor_value_matches_direct_variance():
    (_, seed), = floor.test_trees(1)
    p = pine.sample_params(seed)
    x = np.stack([pine.simulate_series(p, seed, ages=(20, 25), fork_age=20, future_seed=j)[1]
                  for j in range(4)]).astype(np.float64)
    want = x.var(axis=0, ddof=1).mean()
    (row,) = floor.measure_floor(1, 4, ages=(20, 25))
    assert row["var_unbiased"] == pytest.approx(want, rel=1e-12)
    assert row["persistence"] is not None and row["fork_age"] == 20
    (row,) = floor.measure_floor(1, 4, ages=(20, 25), fork_age=22)
    assert row["persistence"] is None               # fork age 22 is not an output age


def test_futures_guard_detects_a_changed_past(monkeypatch):
    real = pine.simulate_series

    def leaky(params, seed, ages, height, width, fork_age=None, future_seed=0):
        x = real(params, seed, ages=ages, height=height, width=width, fork_age=fork_age,
                 future_seed=future_seed)
        if fork_age is not None and future_seed == 1:
            x[0, 0, 0] ^= 1                              # one byte of the past
        return x

    monkeypatch.setattr(pine, "simulate_series", leaky)
    with pytest.raises(RuntimeError, match="changed the past"):
        floor.futures(pine.default_params(), 0, (10, 15), 10, 2)


def test_cli_json(capsys):
    import json

    assert floor.main(["--num-series", "2", "--futures", "2", "--fork-age", "25", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["futures"] == 2 and res["fork_age"] == 25
    assert [r["forecast_age"] for r in res["floors"]] == [30]
    with pytest.raises(SystemExit):
        floor.main(["--num-series", "2", "--futures", "1"])
    assert "futures=1" in capsys.readouterr().err
