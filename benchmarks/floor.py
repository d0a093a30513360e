"""The pine simulator's irreducible forecast error (the "floor"), per forecast age.

    python benchmarks/floor.py --num-series 150 --futures 8                 # one-step floors
    python benchmarks/floor.py --num-series 150 --futures 8 --fork-age 25   # re-draw after 25
    python benchmarks/floor.py --num-series 20 --futures 4 --json           # JSON on stdout
    python benchmarks/floor.py --num-series 60 --futures 6 --fork-age 25 --hidden   # frames only

What is measured. A forecaster of the frame at age ``a`` sees the frames up to the preceding
input age ``f`` (the model's step t sees frames up to t). Whatever happens in the simulator after
``f`` -- leader and cambium jitter of later years, new whorls, new segments, new second-order
shoots -- is random and cannot be known from the past. For each tree we keep its parameters and
every random event up to ``f`` and re-draw only the events after ``f`` (``pine.simulate_series(...,
fork_age=f, future_seed=k)``, k = 0..K-1), checking that the frames at ages <= f are byte-identical
across the K futures and to the ordinary series. The floor at ``a`` is then

    floor(a) = mean over trees, pixels and channels of the per-pixel variance across the K futures

on the 0-255 pixel scale. The variance of the futures around their mean is the expected squared
error of the best possible forecast (the conditional mean), so ``floor`` is the MSE (0-255, as
``crnn.metrics.frame_metrics``) below which no forecaster can go on average, *even one that knew
the parameters and all hidden traits of the tree*; a model that sees only frames has more to infer,
so this is a lower bound. Two estimators are reported: ``var_ddof0`` (divide by K, biased low by
(K-1)/K) and ``var_unbiased`` (divide by K-1, = var_ddof0 * K/(K-1)) -- the unbiased one is the
floor estimate. ``sum01`` restates it in the convention common in the video-prediction literature:
the squared error summed over the C*H*W values of one frame on the [0, 1] scale
(= floor / 255**2 * C*H*W).

Default mode: every forecast age ``ages[t]`` (t >= 1) with its own fork age ``ages[t-1]`` (the
one-step floors of a model that is fed the true past). ``--fork-age F``: one fork at F and the floor
at every age after F (the floor of a multi-step rollout from the frames up to F).

``--hidden``: the frames-only floor. A model sees frames, not the tree's parameters or when each
living branch will die; ``hidden_futures`` re-draws those from their posterior given the frames up
to the fork (a Gibbs sampler whose proposals are kept only if those frames stay byte-identical)
before re-drawing the future. It is higher than the floor given the past and still a lower bound
(what the frames pin down stays fixed; consecutive futures share the chain's memory).

Two reference columns on the same trees: ``persistence`` (MSE of repeating the frame at the fork
age, where the fork age is an output age) and ``mean_vs_actual`` (MSE of the mean of the K futures
against the tree's actual frame, the test target; expected ~ floor * (1 + 1/K), a check that the
futures are drawn like the actual one).

Trees: the first ``--num-series`` test-split series of the dataset made with ``--base-seed`` (0 =
the default dataset, ``crnn.shards.series_seed`` and ``split_for_index``), so the floor belongs to the
test trees that models are scored on.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from crnn import pine  # noqa: E402
from crnn.shards import PAPER_TEST_SERIES, series_seed, split_for_index  # noqa: E402
from crnn.storage import write_json  # noqa: E402


def test_trees(num_series: int, base_seed: int = 0) -> list[tuple[int, int]]:
    """(series index, simulator seed) of the first ``num_series`` test series of a dataset.

    Raises ValueError if ``num_series`` is not in [1, PAPER_TEST_SERIES] (a dataset has at most
    384 test series: index < 3840 and index % 10 == 9).
    """
    if not 1 <= num_series <= PAPER_TEST_SERIES:
        raise ValueError(f"num_series={num_series} must be in [1, {PAPER_TEST_SERIES}] "
                         "(the test split holds at most that many series)")
    out, idx = [], 0
    while len(out) < num_series:
        if split_for_index(idx) == "test":
            out.append((idx, series_seed(base_seed, idx)))
        idx += 1
    return out


def futures(params: dict, seed: int, ages, fork_age: int, k: int, height: int = 32,
            width: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """K futures of one tree re-drawn after ``fork_age``: uint8 (K, T, H, W, 3), and the actual
    series uint8 (T, H, W, 3) at ``ages``.

    Raises RuntimeError if a frame at an age <= fork_age differs between futures or from the actual
    series (the fork would not keep the past); ValueError for bad arguments (from pine).
    """
    if k < 2:
        raise ValueError(f"futures k={k} must be >= 2 to measure a variance")
    actual = pine.simulate_series(params, seed, ages=ages, height=height, width=width)
    fut = np.stack([pine.simulate_series(params, seed, ages=ages, height=height, width=width,
                                         fork_age=fork_age, future_seed=j) for j in range(k)])
    past = np.asarray(ages) <= fork_age
    if fut[:, past].tobytes() != np.broadcast_to(actual[past], fut[:, past].shape).tobytes():
        raise RuntimeError(f"seed {seed}: frames at ages <= fork_age={fork_age} differ across "
                           "futures; the fork changed the past")
    return fut, actual


# The per-branch random numbers that decide *when* a living branch dies (its lifespan jitter and its
# crown-base jitter, crnn/pine.py): a frame shows whether a branch is alive, never how long it has left.
HIDDEN_BRANCH_TRAITS = ("life", "cb")


def hidden_futures(params: dict, seed: int, ages, fork_age: int, k: int, sweeps: int = 1,
                   chain_seed: int = 0, height: int = 32,
                   width: int = 16) -> tuple[np.ndarray, np.ndarray, dict]:
    """K futures of one tree given only its frames up to ``fork_age``: uint8 (K, T, H, W, 3), the
    actual series (T, H, W, 3) at ``ages``, and acceptance counts ``{"param": [accepted, proposed],
    "branch": [...], <each parameter name>: [...]}``.

    ``futures`` keeps everything up to the fork; a forecaster that sees only frames does not know the
    tree's parameters or the hidden traits of its branches, and must average over what the frames
    leave open. Each future here first re-draws those from their posterior given the frames, by a
    Gibbs sampler over blocks (each parameter; the ``HIDDEN_BRANCH_TRAITS`` pair of each branch of a
    whorl formed by ``fork_age``), proposing a block from its prior (pine.PARAM_SPACE, uniform numbers)
    and accepting iff the frames at ages <= fork_age stay byte-identical (the likelihood is that
    indicator, so the Metropolis ratio is 1 or 0). The chain starts at the tree itself, an exact
    draw from that posterior, so every state is one too (no burn-in); ``sweeps`` passes over the
    blocks (random order) separate consecutive futures. Then the events after the fork are re-drawn
    (``pine.fork_events``, stream ``j``) as in ``futures``. Blocks the frames pin down (most visible
    parameters: any change moves some pixel) never move; the other random numbers of the past are not
    proposed at all, though some leave the frames unchanged and matter later (e.g. a year's cambium
    jitter); and consecutive futures share the chain's memory: the variance across these futures is a
    *lower* estimate of the frames-only floor. ``fork_age`` must be one of ``ages``.

    Raises RuntimeError if a future's frames at ages <= fork_age differ from the actual series;
    ValueError for bad arguments.
    """
    if k < 2:
        raise ValueError(f"futures k={k} must be >= 2 to measure a variance")
    _check_sweeps(sweeps)
    _check_hidden_fork(tuple(ages), fork_age)
    p = pine.validate_params(params)
    events = pine.tree_events(seed)
    actual = pine.render_series(p, events, ages, height, width)
    past = np.asarray(ages) <= fork_age
    past_ages = tuple(a for a, keep in zip(ages, past) if keep)
    last = (past_ages[-1],)
    target_last = actual[past][-1].tobytes()
    target = actual[past].tobytes()

    def same_past(q, e) -> bool:                 # the newest past frame first: most proposals stop there
        if pine.render_series(q, e, last, height, width).tobytes() != target_last:
            return False
        return pine.render_series(q, e, past_ages, height, width).tobytes() == target

    rng = np.random.default_rng([int(seed), 7, int(chain_seed)])
    whorls = np.nonzero(pine.event_years()["life"][:, 0] <= fork_age)[0]
    slots = events["life"].shape[1]
    blocks = [("param", name) for name in pine.PARAM_NAMES]
    blocks += [("branch", int(w), j) for w in whorls for j in range(slots)]
    stats = {"param": [0, 0], "branch": [0, 0], **{name: [0, 0] for name in pine.PARAM_NAMES}}
    out = []
    for j in range(k):
        for _ in range(sweeps):
            for b in rng.permutation(len(blocks)):
                kind, *key = blocks[b]
                q, e = p, events
                if kind == "param":
                    value = pine.PARAM_SPACE.from_uniform(key[0], rng.random())
                    if value == p[key[0]]:
                        continue                 # the same value (an integer parameter): nothing to try
                    q = {**p, key[0]: value}
                else:
                    w, slot = key
                    if not pine.branch_present(p, events)[w, slot]:
                        continue                 # an absent branch: invisible and without a future
                    e = dict(events)
                    for name in HIDDEN_BRANCH_TRAITS:
                        e[name] = events[name].copy()
                        e[name][w, slot] = rng.random()
                counts = [stats[kind]] + ([stats[key[0]]] if kind == "param" else [])
                ok = same_past(q, e)
                for c in counts:
                    c[0] += ok
                    c[1] += 1
                if ok:
                    p, events = q, e
        frames = pine.render_series(p, pine.fork_events(events, seed, fork_age, j), ages, height, width)
        if frames[past].tobytes() != target:
            raise RuntimeError(f"seed {seed}: a frames-only future changed the frames at ages <= "
                               f"fork_age={fork_age}")
        out.append(frames)
    return np.stack(out), actual, stats


def _check_sweeps(sweeps) -> None:
    if isinstance(sweeps, bool) or not isinstance(sweeps, (int, np.integer)) or sweeps < 1:
        raise ValueError(f"sweeps={sweeps!r} must be an integer >= 1")


def _check_hidden_fork(ages: tuple[int, ...], fork_age: int) -> None:
    """The frames-only floor conditions on the frames up to the fork: the fork age must be an age with a
    frame (else the years between the last frame and the fork would be neither seen nor re-drawn)."""
    if fork_age not in ages:
        raise ValueError(f"fork_age={fork_age} is not one of the ages {list(ages)}: the frames-only floor "
                         "(--hidden) conditions on the frames up to the fork, so the fork must be a frame's age")


def _check_ages(ages) -> tuple[int, ...]:
    ages = pine._check_ages(ages)
    if len(ages) < 2:
        raise ValueError(f"ages {ages} need at least two ages (an input and a forecast)")
    return ages


def plan(ages, fork_age: int | None = None) -> list[tuple[int, int]]:
    """(forecast age, fork age) pairs: one-step (fork = preceding age) or every age after fork_age.

    Raises ValueError for bad ages, a fork age outside [1, MAX_AGE - 1] or with no age after it.
    """
    ages = _check_ages(ages)
    if fork_age is None:
        return [(ages[t], ages[t - 1]) for t in range(1, len(ages))]
    if isinstance(fork_age, bool) or not isinstance(fork_age, (int, np.integer)) \
            or not 1 <= fork_age < pine.MAX_AGE:
        raise ValueError(f"fork_age={fork_age!r} must be an integer in [1, {pine.MAX_AGE - 1}]")
    after = [a for a in ages if a > fork_age]
    if not after:
        raise ValueError(f"fork_age={fork_age} leaves no forecast age among {ages}")
    return [(a, int(fork_age)) for a in after]


def measure_floor(num_series: int, k: int, ages=pine.DEFAULT_AGES, fork_age: int | None = None,
                  base_seed: int = 0, height: int = 32, width: int = 16, hidden: bool = False,
                  sweeps: int = 1) -> list[dict]:
    """The floor per forecast age, one dict per (forecast age, fork age) of ``plan``.

    ``hidden=False``: given the past (``futures``: parameters and every random event up to the fork
    kept). ``hidden=True``: given the frames only (``hidden_futures``, ``sweeps`` Gibbs sweeps between
    futures); the rows then also carry ``accept_param``, ``accept_branch`` and ``accept_by_param``
    (share of proposals that change a value and are accepted: how much of the tree the frames
    leave open).

    Keys: forecast_age, fork_age (years); var_ddof0, var_unbiased (mean per-pixel variance across
    the K futures, 0-255 pixels squared; the unbiased one is the floor estimate); sem (standard error
    of var_unbiased over trees); sum01 (var_unbiased / 255**2 * 3*H*W, per-frame summed squared
    error on [0, 1]); persistence (MSE of the fork-age frame as forecast, None if the fork age is
    not in ``ages``); mean_vs_actual (MSE of the mean of the futures against the actual frame);
    frac_trees_varying (share of trees whose forecast frame differs between futures).
    """
    pairs = plan(ages, fork_age)
    ages = _check_ages(ages)
    if hidden:
        _check_sweeps(sweeps)
        for _, fork in pairs:
            _check_hidden_fork(ages, fork)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"futures={k!r} must be an integer >= 2")
    trees = test_trees(num_series, base_seed)
    per = {pair: {"var": [], "pers": [], "mva": [], "vary": []} for pair in pairs}
    for fork in sorted({f for _, f in pairs}):
        targets = [a for a, f in pairs if f == fork]
        sub = tuple(a for a in ages if a <= max(targets))          # past ages + forecast ages
        for _, seed in trees:
            params = pine.sample_params(seed)
            if hidden:
                fut, actual, stats = hidden_futures(params, seed, sub, fork, k, sweeps, 0, height, width)
                for kind, (acc_n, prop_n) in stats.items():
                    for a in targets:
                        per[(a, fork)].setdefault(kind, [0, 0])
                        per[(a, fork)][kind][0] += acc_n
                        per[(a, fork)][kind][1] += prop_n
            else:
                fut, actual = futures(params, seed, sub, fork, k, height, width)
            for a in targets:
                ti = sub.index(a)
                x = fut[:, ti].astype(np.float64)                  # (K, H, W, 3)
                y = actual[ti].astype(np.float64)
                acc = per[(a, fork)]
                acc["var"].append(float(x.var(axis=0).mean()))
                acc["mva"].append(float(((x.mean(axis=0) - y) ** 2).mean()))
                acc["vary"].append(bool((fut[:, ti] != fut[:1, ti]).any()))
                if fork in sub:
                    prev = actual[sub.index(fork)].astype(np.float64)
                    acc["pers"].append(float(((prev - y) ** 2).mean()))
    values = 3 * height * width
    out = []
    for a, f in pairs:
        acc = per[(a, f)]
        v0 = np.asarray(acc["var"])
        vu = v0 * k / (k - 1)
        out.append({
            "forecast_age": a, "fork_age": f,
            "var_ddof0": float(v0.mean()), "var_unbiased": float(vu.mean()),
            "sem": float(vu.std(ddof=1) / np.sqrt(len(vu))) if len(vu) > 1 else float("nan"),
            "sum01": float(vu.mean() / 255.0**2 * values),
            "persistence": float(np.mean(acc["pers"])) if acc["pers"] else None,
            "mean_vs_actual": float(np.mean(acc["mva"])),
            "frac_trees_varying": float(np.mean(acc["vary"])),
        })
        if hidden:
            rate = {kind: acc[kind][0] / acc[kind][1] if acc.get(kind, [0, 0])[1] else None
                    for kind in ("param", "branch", *pine.PARAM_NAMES)}
            out[-1]["accept_param"], out[-1]["accept_branch"] = rate["param"], rate["branch"]
            out[-1]["accept_by_param"] = {n: rate[n] for n in pine.PARAM_NAMES}
    return out


def _share(v) -> str:
    return "-" if v is None else f"{v:.3f}"       # None: nothing of that kind was proposed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-series", type=int, default=150, help="test trees (<= 384)")
    p.add_argument("--futures", type=int, default=8, help="futures K re-drawn per tree and fork (>= 2)")
    p.add_argument("--fork-age", type=int, default=None,
                   help="one fork at this age, floors at every later age (default: one-step floors)")
    p.add_argument("--hidden", action="store_true",
                   help="the frames-only floor: also re-draw the parameters and branch traits the "
                        "frames up to the fork do not show, from their posterior (hidden_futures)")
    p.add_argument("--sweeps", type=int, default=1,
                   help="with --hidden: Gibbs sweeps over the hidden blocks between futures (>= 1)")
    p.add_argument("--ages", default="10,15,20,25,30", help="comma-separated ages")
    p.add_argument("--base-seed", type=int, default=0, help="dataset seed (0 = the default dataset)")
    p.add_argument("--height", type=int, default=32)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                   help="write the results as JSON to PATH (no PATH: print JSON instead of the table)")
    a = p.parse_args(argv)
    try:
        ages = tuple(int(x) for x in a.ages.split(","))
    except ValueError:
        p.error(f"--ages must be comma-separated integers, got {a.ages!r}")
    if a.sweeps != 1 and not a.hidden:
        p.error(f"--sweeps {a.sweeps} applies to --hidden only")
    t0 = time.perf_counter()
    try:
        rows = measure_floor(a.num_series, a.futures, ages, a.fork_age, a.base_seed, a.height, a.width,
                             hidden=a.hidden, sweeps=a.sweeps)
    except ValueError as e:
        p.error(str(e))
    dt = time.perf_counter() - t0
    res = {
        "num_series": a.num_series, "futures": a.futures, "ages": list(ages), "fork_age": a.fork_age,
        "base_seed": a.base_seed, "height": a.height, "width": a.width,
        "given": "frames" if a.hidden else "past", "sweeps": a.sweeps if a.hidden else None,
        "generator_version": pine.GENERATOR_VERSION, "seconds": round(dt, 1),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "metric": "var_unbiased: mean over trees, pixels, channels of the per-pixel variance across "
                  "futures (ddof=1), 0-255 pixels^2 = expected MSE of the best forecast; "
                  "var_ddof0 divides by K; sum01 = var_unbiased/255^2*C*H*W (per frame, [0,1])",
        "floors": rows,
    }
    if a.json == "-":
        print(json.dumps(res, indent=1))
        return 0
    if a.json:
        write_json(a.json, res)
    given = (f"given the frames only ({a.sweeps} Gibbs sweep(s) between futures)" if a.hidden
             else "given the past (parameters and every event up to the fork)")
    print(f"floor of pine {pine.GENERATOR_VERSION} {given}: {a.num_series} test trees (base seed "
          f"{a.base_seed}), {a.futures} futures each, {a.height}x{a.width} RGB, {dt:.0f} s")
    print("MSE in 0-255 pixels^2 (mean over pixels and channels, as crnn.metrics); floor = unbiased "
          "(K-1) per-pixel variance across futures; sum01 = floor/255^2 * 3*H*W (per frame, [0,1])")
    head = ("age", "fork", "floor", "+-sem", "ddof0", "sum01", "persist.", "mean-vs-actual", "varying")
    print("  ".join(f"{h:>8s}" for h in head))
    for r in rows:
        pers = f"{r['persistence']:8.2f}" if r["persistence"] is not None else f"{'-':>8s}"
        print(f"{r['forecast_age']:8d}  {r['fork_age']:8d}  {r['var_unbiased']:8.3f}  {r['sem']:8.3f}  "
              f"{r['var_ddof0']:8.3f}  {r['sum01']:8.4f}  {pers}  {r['mean_vs_actual']:14.3f}  "
              f"{r['frac_trees_varying']:8.2f}"
              + (f"  accepted: params {_share(r['accept_param'])}, branch traits {_share(r['accept_branch'])}"
                 if a.hidden else ""))
    if a.hidden:
        for r in rows:
            open_ = sorted(((v, n) for n, v in r["accept_by_param"].items() if v), reverse=True)
            print(f"fork {r['fork_age']}, age {r['forecast_age']}: parameters the frames leave open "
                  "(share of prior proposals accepted): "
                  + (", ".join(f"{n} {v:.2f}" for v, n in open_) or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
