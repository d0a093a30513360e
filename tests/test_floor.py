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


# --- the frames-only floor (hidden_futures) ------------------------------------
def test_render_series_from_events_is_simulate_series():
    for seed, fork in ((4, None), (4, (20, 3)), (17, (12, 0))):
        p = pine.sample_params(seed)
        ev = pine.tree_events(seed)
        want = pine.simulate_series(p, seed, ages=AGES, **({} if fork is None else
                                                           dict(fork_age=fork[0], future_seed=fork[1])))
        got = pine.render_series(p, ev if fork is None else pine.fork_events(ev, seed, *fork), AGES)
        assert got.tobytes() == want.tobytes()
        assert pine.tree_events(seed, fork)["inc"].tobytes() == \
            (ev if fork is None else pine.fork_events(ev, seed, *fork))["inc"].tobytes()


def test_render_series_names_bad_events():
    ev = pine.tree_events(1)
    with pytest.raises(ValueError, match=r"events\['life'\] must have shape \(50, 7\), got nothing"):
        pine.render_series({}, {k: v for k, v in ev.items() if k != "life"})
    with pytest.raises(ValueError, match=r"events\['psi'\] must have shape \(4096,\), got \(10,\)"):
        pine.render_series({}, {**ev, "psi": np.zeros(10)})
    with pytest.raises(ValueError, match="age 0"):
        pine.render_series({}, ev, ages=(0, 5))
    bad_life = ev["life"].copy()
    for value in (np.nan, 1.0, -0.1):                    # uniform numbers live in [0, 1)
        bad_life[3, 2] = value
        with pytest.raises(ValueError, match=r"events\['life'\] must be a float array of uniform"):
            pine.render_series({}, {**ev, "life": bad_life})
    with pytest.raises(ValueError, match=r"events\['h'\] must be a float array"):
        pine.render_series({}, {**ev, "h": ev["h"].tolist()})


def test_param_from_uniform_is_the_prior_of_sample_params():
    u = np.random.default_rng([9, 0]).random(len(pine.PARAMS))
    got = {n: pine.PARAM_SPACE.from_uniform(n, ui) for n, ui in zip(pine.PARAM_NAMES, u)}
    assert got == pine.sample_params(9)
    assert pine.PARAM_SPACE.from_uniform("branches_per_whorl", 0.99) == 7.0
    with pytest.raises(KeyError, match="unknown pine parameter 'nope'"):
        pine.PARAM_SPACE.from_uniform("nope", 0.5)
    for u in (1.0, 2.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match="branches_per_whorl: u="):
            pine.PARAM_SPACE.from_uniform("branches_per_whorl", u)


def test_branch_present_follows_whorl_size_and_failed_buds():
    ev = pine.tree_events(2)
    pres = pine.branch_present({"branches_per_whorl": 4}, ev)
    assert pres.shape == (pine.MAX_AGE, 7) and not pres[:, 4:].any()
    assert (pres[:, :4] == (ev["miss"][:, :4] >= 0.12)).all()


def test_hidden_futures_keep_the_frames_and_redraw_what_they_do_not_show():
    (_, seed), = floor.test_trees(1)
    p = pine.sample_params(seed)
    ages = (10, 15, 20, 25, 30)
    fut, actual, stats = floor.hidden_futures(p, seed, ages, 25, 3)
    assert fut.shape == (3, 5, 32, 16, 3) and fut.dtype == np.uint8
    assert actual.tobytes() == pine.simulate_series(p, seed, ages=ages).tobytes()
    # the frames up to the fork are the tree's own, byte for byte; the age-30 frames differ
    assert fut[:, :4].tobytes() == np.broadcast_to(actual[:4], (3, 4, 32, 16, 3)).tobytes()
    assert not (fut[:, 4] == fut[:1, 4]).all()
    # every parameter was proposed once per sweep (an integer one: unless it drew its own value),
    # and every present branch of a whorl formed by 25
    assert all(stats[n][1] == 3 for n in pine.PARAM_NAMES if n not in pine.INT_PARAMS)
    assert all(stats[n][1] <= 3 for n in pine.INT_PARAMS)
    assert len(pine.PARAMS) * 3 - 3 <= stats["param"][1] <= 3 * len(pine.PARAMS)
    assert 0 < stats["branch"][1] <= 3 * 24 * 7
    # colours show in every frame: never re-drawn; when living branches die: mostly open
    assert stats["needle_hue"][0] == 0 and stats["bark_hue"][0] == 0
    assert stats["branch"][0] > stats["branch"][1] // 2


def test_hidden_futures_guard_and_arguments(monkeypatch):
    p = pine.default_params()
    with pytest.raises(ValueError, match="futures k=1"):
        floor.hidden_futures(p, 0, (10, 15), 10, 1)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=f"sweeps={bad!r}"):
            floor.hidden_futures(p, 0, (10, 15), 10, 2, sweeps=bad)
    real = pine.fork_events

    def leaky(events, seed, fork_age, future_seed):
        out = real(events, seed, fork_age, future_seed)
        out["h"] = out["h"].copy()
        out["h"][2] = 1.0 - out["h"][2]                  # the leader's jitter of year 3: the past
        return out

    monkeypatch.setattr(pine, "fork_events", leaky)
    with pytest.raises(RuntimeError, match="changed the frames at ages <= fork_age=10"):
        floor.hidden_futures(p, 0, (10, 15), 10, 2)


def test_cli_hidden_json(capsys):
    import json

    assert floor.main(["--num-series", "1", "--futures", "2", "--fork-age", "25", "--hidden",
                       "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    (row,) = res["floors"]
    assert res["given"] == "frames" and res["sweeps"] == 1
    assert 0 <= row["accept_param"] < 1 and 0 < row["accept_branch"] <= 1
    assert set(row["accept_by_param"]) == set(pine.PARAM_NAMES)
    assert row["var_unbiased"] > 0
    with pytest.raises(SystemExit):
        floor.main(["--num-series", "1", "--futures", "2", "--hidden", "--sweeps", "0"])
    assert "sweeps=0" in capsys.readouterr().err


@pytest.mark.parametrize("kw,match", [
    (dict(ages=(10, 15), fork_age=12), r"fork_age=12 is not one of the ages \[10, 15\]"),
    (dict(ages=(10, 15), fork_age=5), "fork_age=5 is not one of the ages"),
])
def test_hidden_floor_needs_a_frame_at_the_fork(kw, match):
    with pytest.raises(ValueError, match=match):
        floor.hidden_futures(pine.default_params(), 0, kw["ages"], kw["fork_age"], 2)
    with pytest.raises(ValueError, match=match):
        floor.measure_floor(1, 2, ages=kw["ages"], fork_age=kw["fork_age"], hidden=True)


def test_cli_hidden_without_branch_proposals_and_sweeps_without_hidden(capsys):
    # ages 1 and 2: no whorl has formed by the fork, so no branch trait is proposed ("-")
    assert floor.main(["--num-series", "1", "--futures", "2", "--ages", "1,2", "--hidden"]) == 0
    assert "branch traits -" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        floor.main(["--num-series", "1", "--futures", "2", "--sweeps", "3"])
    assert "--sweeps 3 applies to --hidden only" in capsys.readouterr().err
