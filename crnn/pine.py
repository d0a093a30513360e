"""Parametric stochastic pine (conifer) growth simulator and side-view renderer.

Open replacement for the L-studio pine model used by Zhang & Li ("Prediction of
Future Appearances via Convolutional Recurrent Neural Networks Based on Image
Time Series"). One individual tree is grown year by year from a parameter
vector (``PARAMS``) and a seed; snapshots of it are rendered at the requested
ages into small RGB images (default 32 rows x 16 columns, like the paper).

Biology (monopodial pine, all lengths in metres unless noted)
-------------------------------------------------------------
* Trunk: the leader adds ``dh(y)`` metres in year ``y``: ``height_growth_rate``
  times a juvenile ramp, an exponential decline with age
  (``height_growth_shrinkage``) and the general vigour decline
  (``growth_shrinkage_rate``), with +-10 % yearly jitter.
* Trunk diameter: each year the cambium adds ``dd(y)`` to the diameter of
  every trunk part that exists (``diameter_growth_rate``,
  ``diameter_growth_shrinkage``), so the trunk tapers towards the top.
* At the end of year ``k`` a whorl of ``branches_per_whorl`` laterals forms at
  the leader tip (height ``H[k]``), rotated by ``phyllotaxis_angle`` against
  the previous whorl; branches are occasionally missing.
* A lateral grows one annual segment per year: ``lateral_growth_ratio`` times
  that year's leader increment, shrinking by ``branch_shrinkage`` per year of
  branch age; its total reach is capped by ``crown_diameter``. It leaves the
  trunk at ``branch_angle`` and droops by ``branch_slope`` degrees per metre.
* Each lateral node carries a pair of second-order shoots whose length is
  ``second_level_branch_shrinkage`` times the distal parent length; the
  inner ones are shed with age (bare inner branches).
* Needles (green) cover the shoots younger than ``needle_retention`` years at
  ``needle_slope`` to the shoot, ``needle_length`` long, ``needle_density``
  sets foliage opacity.
* Self-pruning: the crown base sits at ``(1 - live_crown_ratio)`` of the tree
  height (+-10 % per branch); a branch dies once it is below the crown base
  and at least ``branch_lifespan`` (+-20 %) years old, stays as a grey bare
  snag for ``dead_branch_persistence`` years and is then shed, so the crown
  base rises with age.

Rendering
---------
3-D geometry (x right, y depth away from the viewer, z up; trunk base at the
origin) is projected orthographically to the x-z plane. Every image of every
series uses the same world frame: ``SCENE_HEIGHT_M`` metres from the ground
(bottom edge) to the top edge, square pixels, trunk at the horizontal centre
(the centre of output column ``width // 2``). Trees taller than the frame
(extreme parameters beyond age ~30) are clipped at the top. Ages up to
``MAX_AGE`` can be simulated.
Wood and needles are sampled as points along all segments at once (numpy) and
splatted bilinearly with area-coverage weights onto a ``supersample``-times
finer canvas; coverage is composited over ``BACKGROUND`` and block-averaged.

Determinism: only +, -, *, /, sqrt, floor/round (IEEE exact) act on values
after every transcendental result (sin, cos, exp, pow) has been quantised to
a power-of-two grid, and accumulation order is fixed (np.bincount is a
sequential loop), so the bytes are reproducible across runs and machines.
"""

from __future__ import annotations

import math

import numpy as np

from crnn.params import ParamSpace, ParamSpec  # noqa: F401  (ParamSpec: part of this module's API)

GENERATOR_VERSION = "pine-1"

DEFAULT_AGES = (10, 15, 20, 25, 30)
MAX_AGE = 50                    # oldest age that can be simulated (years)
SCENE_HEIGHT_M = 18.0           # world metres from the bottom to the top image edge
BACKGROUND = (236, 240, 244)    # uint8 RGB of the empty sky

# --- fixed model constants (not parameters) ---------------------------------
_SLOTS = 7                      # branch slots per whorl (max branches_per_whorl)
_JUVENILE_YEARS = 2.5           # e-folding time of the seedling growth ramp (yr)
_P_MISSING = 0.12               # probability that a lateral bud fails
_P_SUB_MISSING = 0.2            # probability that a second-order shoot is missing
_AZ_JITTER_DEG = 14.0           # +- azimuth jitter of laterals
_EL_JITTER_DEG = 6.0            # +- insertion-angle jitter of laterals
_SUB_ANGLE_DEG = 55.0           # azimuth of 2nd-order shoots against the parent
_SUB_ANGLE_JITTER_DEG = 15.0
_SUB_DROOP_DEG = 12.0           # 2nd-order shoots point this much lower than the parent
_SUB_LIFE_EXTRA = 5.0           # 2nd-order shoots are shed this many yr after their needles
_MAX_THETA_DEG = 150.0          # droop limit (angle from vertical)
_NEEDLE_POOL = 4096             # pool of random needle azimuths
_NEEDLE_OPACITY = 2.2           # foliage coverage per unit (needle area * density)
_SAMPLE_STEP = 0.75             # point spacing along segments (canvas pixels)
_MIN_TRUNK_WIDTH_PX = 0.8       # minimum drawn trunk width (output pixels)
_MIN_BRANCH_WIDTH_PX = 0.12     # minimum drawn branch width (output pixels)
_DEPTH_SHADE = 0.35             # darkening of the far side of the crown

# Colours (RGB in 0..1); hue parameters interpolate between the anchors.
_NEEDLE_RGB = ((0.08, 0.35, 0.27), (0.15, 0.42, 0.14), (0.30, 0.50, 0.09))
_BARK_RGB = ((0.33, 0.29, 0.25), (0.38, 0.24, 0.14), (0.56, 0.29, 0.13))
_DEAD_RGB = (0.47, 0.44, 0.40)




PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("height_growth_rate", 0.30, 0.65, 0.50, "m/yr",
              "peak annual leader (height) increment"),
    ParamSpec("height_growth_shrinkage", 0.0, 0.03, 0.012, "1/yr",
              "exponential decline of the height increment with tree age"),
    ParamSpec("diameter_growth_rate", 0.4, 1.4, 0.8, "cm/yr",
              "annual trunk diameter increment of a young tree"),
    ParamSpec("diameter_growth_shrinkage", 0.0, 0.05, 0.02, "1/yr",
              "exponential decline of the diameter increment with tree age"),
    ParamSpec("growth_shrinkage_rate", 0.0, 0.02, 0.008, "1/yr",
              "general vigour decline applied to all growth processes"),
    ParamSpec("branches_per_whorl", 3, 7, 5, "count",
              "lateral branches formed in each annual whorl (integer)"),
    ParamSpec("phyllotaxis_angle", 20.0, 180.0, 137.5, "deg",
              "azimuthal rotation of each whorl against the previous one"),
    ParamSpec("branch_angle", 35.0, 85.0, 62.0, "deg",
              "insertion angle between a lateral branch and the trunk"),
    ParamSpec("branch_slope", 0.0, 25.0, 8.0, "deg/m",
              "downward bending (droop) of a branch per metre of its length"),
    ParamSpec("lateral_growth_ratio", 0.40, 1.00, 0.70, "1",
              "annual lateral shoot length relative to that year's leader increment"),
    ParamSpec("branch_shrinkage", 0.02, 0.20, 0.08, "1/yr",
              "relative decline of branch elongation per year of branch age"),
    ParamSpec("second_level_branch_shrinkage", 0.15, 0.60, 0.35, "1",
              "second-order shoot length relative to the distal parent length"),
    ParamSpec("branch_diameter", 0.15, 0.50, 0.30, "1",
              "branch base diameter relative to the trunk diameter at insertion"),
    ParamSpec("crown_diameter", 2.5, 7.5, 5.0, "m",
              "maximum crown diameter (caps lateral branch reach)"),
    ParamSpec("live_crown_ratio", 0.45, 0.90, 0.65, "1",
              "live crown length / tree height; branches below the crown base die"),
    ParamSpec("branch_lifespan", 2.0, 8.0, 5.0, "yr",
              "minimum age before a shaded branch below the crown base dies"),
    ParamSpec("dead_branch_persistence", 0.0, 8.0, 3.0, "yr",
              "years a dead grey branch stays on the trunk before it is shed"),
    ParamSpec("needle_slope", 20.0, 80.0, 45.0, "deg",
              "angle between needles and their shoot"),
    ParamSpec("needle_length", 5.0, 20.0, 10.0, "cm",
              "needle length"),
    ParamSpec("needle_density", 0.4, 1.5, 0.8, "1",
              "relative needle density (foliage opacity)"),
    ParamSpec("needle_retention", 2.0, 6.0, 3.0, "yr",
              "years needles stay on a shoot (foliage on the youngest shoots)"),
    ParamSpec("needle_hue", -1.0, 1.0, 0.0, "1",
              "needle colour: -1 blue-green, 0 green, +1 yellow-green"),
    ParamSpec("bark_hue", -1.0, 1.0, 0.0, "1",
              "bark colour: -1 grey-brown, 0 brown, +1 orange-red"),
)
PARAM_NAMES: tuple[str, ...] = tuple(p.name for p in PARAMS)
INT_PARAMS: frozenset[str] = frozenset({"branches_per_whorl"})
_SPACE = ParamSpace("pine", PARAMS, INT_PARAMS)
PARAM_SPACE = _SPACE            # the prior over PARAMS (uniform; ``sample_params`` draws from it)


def mirror_axis(width: int) -> float:
    """The scene's axis of left-right symmetry in pixel-column coordinates (``crnn.mirror``): the
    trunk, at the centre of column ``width // 2`` (branch azimuths are uniform and the depth shading
    does not depend on the side, so a tree and its mirror image about the trunk are equally likely)."""
    return float(width // 2)


def default_params() -> dict[str, float]:
    return _SPACE.defaults()


def sample_params(seed: int) -> dict[str, float]:
    """Uniform sample of every parameter in [low, high]; deterministic from seed."""
    return _SPACE.sample(seed)


def validate_params(params: dict | None) -> dict[str, float]:
    """Return a complete, ordered parameter dict (defaults for missing keys).

    Raises ValueError naming any unknown key, non-numeric / non-finite /
    out-of-range value, or non-integral value of an integer parameter.
    """
    return _SPACE.validate(params)


def _check_ages(ages) -> tuple[int, ...]:
    try:
        ages = tuple(ages)
    except TypeError:
        raise ValueError(f"ages must be a sequence of positive ints, got {ages!r}") from None
    if not ages:
        raise ValueError("ages must not be empty")
    out, prev = [], 0
    for a in ages:
        ok = isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_))
        if not ok and isinstance(a, (float, np.floating)) and float(a).is_integer():
            ok = True
        if not ok:
            raise ValueError(f"age {a!r} is not an integer")
        a = int(a)
        if a <= 0:
            raise ValueError(f"age {a} is not a positive integer")
        if a > MAX_AGE:
            raise ValueError(f"age {a} exceeds MAX_AGE={MAX_AGE}")
        if a <= prev:
            raise ValueError(f"ages must be strictly ascending: age {a} follows {prev}")
        out.append(a)
        prev = a
    return tuple(out)


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def _q(x, bits: int = 24):
    """Quantise to multiples of 2**-bits (exact; removes libm ulp differences)."""
    s = float(1 << bits)
    return np.round(np.asarray(x, dtype=np.float64) * s) / s


def _lerp3(anchors, t: float) -> np.ndarray:
    lo, mid, hi = (np.array(a, dtype=np.float64) for a in anchors)
    return mid + (hi - mid) * t if t >= 0 else mid + (lo - mid) * (-t)


def _segment_samples(ax, ay, bx, by, step):
    """Sample points along N screen segments.

    Returns idx (M,) segment of each point, t (M,) position in (0, 1),
    ds (N,) screen length per point, plus lx, ly, ln (N,) segment vectors.
    """
    lx = bx - ax
    ly = by - ay
    ln = np.sqrt(lx * lx + ly * ly)
    n = np.maximum(np.ceil(ln / step), 1.0).astype(np.int64)
    idx = np.repeat(np.arange(len(n)), n)
    start = np.cumsum(n) - n
    j = np.arange(len(idx)) - start[idx]
    t = (j + 0.5) / n[idx]
    return idx, t, ln / n, n, lx, ly, ln


# ----------------------------------------------------------------------------
# growth (series level: everything that does not depend on the snapshot age)
# ----------------------------------------------------------------------------
def _draw_events(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """All per-year random numbers (uniform [0, 1)) in their fixed order and shapes."""
    Y, S = MAX_AGE, _SLOTS
    u = {"h": rng.random(Y), "d": rng.random(Y)}                 # by year y (index y-1)
    for name in ("az", "el", "len", "miss", "life", "cb"):      # (Y,S) by whorl w, slot j
        u[name] = rng.random((Y, S))
    u["inc"] = rng.random((Y, S, Y))                             # whorl, slot, segment i-1
    for name in ("sublen", "subaz", "submiss"):                  # whorl, slot, node i-1, side
        u[name] = rng.random((Y, S, Y, 2))
    return u


def event_years() -> dict[str, np.ndarray]:
    """The simulation year each random number of ``_draw_events`` belongs to.

    A number belongs to the first year whose growth it shapes, i.e. the first age
    whose snapshot can show it: the leader/cambium jitter of year y to year y; the
    whorl formed at the end of year k = w + 1 (its slots, angles, length factor,
    lifespan and crown-base jitter) to year k + 1, when its first segment grows and
    it first appears; segment i of that whorl to year k + i; the pair of second-order
    shoots at node i (end of segment i) to year k + i + 1, when they first grow.
    """
    Y, S = MAX_AGE, _SLOTS
    w = np.arange(Y)[:, None, None]
    m = np.arange(Y)[None, None, :]
    year_y = np.arange(1, Y + 1)
    year_whorl = np.broadcast_to(np.arange(Y)[:, None] + 2, (Y, S))
    year_seg = np.broadcast_to(w + m + 2, (Y, S, Y))
    year_sub = np.broadcast_to((w + m + 3)[..., None], (Y, S, Y, 2))
    out = {"h": year_y, "d": year_y, "inc": year_seg}
    out.update({n: year_whorl for n in ("az", "el", "len", "miss", "life", "cb")})
    out.update({n: year_sub for n in ("sublen", "subaz", "submiss")})
    return out


_EVENT_SHAPES = {**{n: y.shape for n, y in event_years().items()}, "psi": (_NEEDLE_POOL,)}


def tree_events(seed: int, fork: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Every random number (uniform in [0, 1)) that grows and renders the tree of ``seed``.

    Keys: those of ``_draw_events`` (shapes by year, or by whorl/slot/segment/side; the year each
    belongs to is ``event_years``) plus ``"psi"`` (the needle texture pool, shared by every
    snapshot). ``fork=(fork_age, future_seed)`` replaces every number belonging to a year after
    ``fork_age`` with one drawn from the independent stream ``default_rng([seed, 2, future_seed])``;
    snapshots at ages <= fork_age are unchanged. ``render_series`` turns parameters and these numbers
    into frames, so a caller can also replace chosen numbers (``benchmarks/floor.py`` re-draws the
    hidden traits of a tree that way).
    """
    rng = np.random.default_rng([int(seed), 1])
    # Fixed draw order and shapes -> same random structure for any parameters.
    u = _draw_events(rng)
    u["psi"] = rng.random(_NEEDLE_POOL)
    return u if fork is None else fork_events(u, seed, *fork)


def fork_events(events: dict[str, np.ndarray], seed: int, fork_age: int,
                future_seed: int) -> dict[str, np.ndarray]:
    """A copy of ``events`` whose numbers of the years after ``fork_age`` (``event_years``) come
    from the stream ``default_rng([seed, 2, future_seed])`` (the ``fork`` of ``tree_events``)."""
    alt = _draw_events(np.random.default_rng([int(seed), 2, int(future_seed)]))
    out = dict(events)
    for name, year in event_years().items():
        out[name] = np.where(year > fork_age, alt[name], events[name])
    return out


def branch_present(params: dict, events: dict[str, np.ndarray]) -> np.ndarray:
    """bool (MAX_AGE, 7): which lateral slot of each whorl (row w: formed at the end of year w + 1)
    grows a branch: one of the first ``branches_per_whorl`` slots whose bud did not fail."""
    slot = np.arange(_SLOTS)[None, :]
    return (slot < int(params["branches_per_whorl"])) & (events["miss"] >= _P_MISSING)


def _grow_events(p: dict, u: dict[str, np.ndarray]) -> dict:
    """Grow a tree from its random numbers ``u`` (``tree_events``) for MAX_AGE years (arrays
    indexed by year/whorl/segment)."""
    Y, S = MAX_AGE, _SLOTS
    u_psi = u["psi"]
    u_h, u_d = u["h"], u["d"]
    u_az, u_el, u_len, u_miss, u_life, u_cb = (u[n] for n in ("az", "el", "len", "miss", "life", "cb"))
    u_inc = u["inc"]
    u_sublen, u_subaz, u_submiss = u["sublen"], u["subaz"], u["submiss"]

    years = np.arange(1, Y + 1, dtype=np.float64)
    vig = np.exp(-p["growth_shrinkage_rate"] * (years - 1))
    ramp = 1.0 - np.exp(-years / _JUVENILE_YEARS)
    # dh[y-1]: leader increment in year y (m); H[y]: height at end of year y.
    dh = _q(p["height_growth_rate"] * np.exp(-p["height_growth_shrinkage"] * (years - 1))
            * vig * ramp * (0.9 + 0.2 * u_h))
    H = np.concatenate([[0.0], np.cumsum(dh)])
    # dd[y-1]: trunk diameter increment in year y (m); Dc[y] cumulative.
    dd = _q(0.01 * p["diameter_growth_rate"]
            * np.exp(-p["diameter_growth_shrinkage"] * (years - 1)) * vig * ramp
            * (0.9 + 0.2 * u_d))
    Dc = np.concatenate([[0.0], np.cumsum(dd)])

    # Whorl w (row) formed at the end of year k = w + 1; slot j (column).
    n = int(p["branches_per_whorl"])
    k = years[:, None]
    slot = np.arange(S)[None, :]
    present = branch_present(p, u)
    phi = np.deg2rad(k * p["phyllotaxis_angle"] + slot * (360.0 / n)
                     + (2 * u_az - 1) * _AZ_JITTER_DEG)
    theta0 = p["branch_angle"] + (2 * u_el - 1) * _EL_JITTER_DEG          # deg from vertical
    # Branch death age (yr): older than its lifespan and below the crown base,
    # i.e. in the first year y with (1 - live_crown_ratio) * H[y] > H[k] (+-10 %).
    cb = 1.0 - p["live_crown_ratio"]
    y_shade = np.searchsorted(cb * H[1:], H[1:, None] * (0.9 + 0.2 * u_cb), side="right") + 1
    life = np.maximum(p["branch_lifespan"] * (0.8 + 0.4 * u_life), y_shade - k)
    # INC[w, j, i-1]: length of the i-th annual segment (grown in year k+i).
    i = np.arange(1, Y + 1)
    yidx = np.arange(Y)[:, None] + i[None, :]                          # year-1 index k+i-1
    dhw = np.where(yidx < Y, dh[np.minimum(yidx, Y - 1)], 0.0)
    decay = (1.0 - p["branch_shrinkage"]) ** (i - 1)
    inc = (p["lateral_growth_ratio"] * dhw[:, None, :] * decay[None, None, :]
           * (0.85 + 0.3 * u_len)[:, :, None] * (0.9 + 0.2 * u_inc))
    # Reach cap from the crown diameter: cumulative length clipped.
    lcap = 0.5 * p["crown_diameter"] / np.maximum(np.sin(np.deg2rad(theta0)), 0.5)
    cum = np.minimum(_q(np.cumsum(inc, axis=2)), _q(lcap)[:, :, None])

    sub_alpha = np.deg2rad(_SUB_ANGLE_DEG + (2 * u_subaz - 1) * _SUB_ANGLE_JITTER_DEG)
    sub_alpha[..., 1] *= -1.0
    psi = 2 * np.pi * u_psi
    return dict(
        H=H, Dc=Dc, present=present, phi=phi, cphi=_q(np.cos(phi)), sphi=_q(np.sin(phi)),
        theta0=theta0, life=life, cum=cum,
        sub_alpha=sub_alpha, sub_len=0.75 + 0.5 * u_sublen,
        sub_present=u_submiss >= _P_SUB_MISSING,
        cpsi=_q(np.cos(psi)), spsi=_q(np.sin(psi)),
    )


# ----------------------------------------------------------------------------
# one snapshot: geometry at age A
# ----------------------------------------------------------------------------
def _geometry(g: dict, p: dict, A: int):
    """World geometry of the tree at age A.

    Returns (wood, shoots): wood = (P0, P1, r0, r1, cat) with P0/P1 (N,3) m,
    radii (N,) m, cat (N,) 1 = live wood, 2 = dead wood; shoots = (P0, P1, wgt)
    needle-bearing shoot segments with foliage weight in [0, 1].
    """
    K = A - 1                                          # whorls k = 1..A-1
    H, Dc = g["H"], g["Dc"]
    lead = max(A - int(math.ceil(p["needle_retention"])), 0)
    sh0 = [np.array([[0.0, 0.0, H[lead]]])]
    sh1 = [np.array([[0.0, 0.0, H[A]]])]
    shw = [np.array([1.0])]
    empty3 = np.zeros((0, 3))
    if K <= 0:
        return (empty3, empty3, np.zeros(0), np.zeros(0), np.zeros(0, np.int64)), \
            (sh0[0], sh1[0], shw[0])

    k = np.arange(1, K + 1, dtype=np.float64)
    a = (A - k)[:, None]                               # branch age (K,1), >= 1
    life = g["life"][:K]
    alive = a <= life
    visible = g["present"][:K] & (a <= life + p["dead_branch_persistence"])
    grow_years = np.where(alive, a, np.floor(life)).astype(np.int64)   # (K,S)
    if not visible.any():
        return (empty3, empty3, np.zeros(0), np.zeros(0), np.zeros(0, np.int64)), \
            (np.concatenate(sh0), np.concatenate(sh1), np.concatenate(shw))
    NS = int(grow_years[visible].max())
    ii = np.arange(1, NS + 1)                          # segment index i
    active = (ii[None, None, :] <= grow_years[:, :, None]) & visible[:, :, None]
    cum = g["cum"][:K, :, :NS]
    s_end = np.where(active, cum, 0.0)
    seg = s_end - np.concatenate([np.zeros((K, _SLOTS, 1)), s_end[:, :, :-1]], axis=2)
    seg = np.maximum(seg, 0.0)
    last = np.clip(grow_years, 1, NS)[:, :, None] - 1
    ltot = np.where(visible, np.take_along_axis(cum, last, axis=2)[..., 0], 0.0)
    s_mid = s_end - 0.5 * seg
    theta = np.deg2rad(np.minimum(g["theta0"][:K, :, None] + p["branch_slope"] * s_mid,
                                  _MAX_THETA_DEG))
    st, ct = _q(np.sin(theta)), _q(np.cos(theta))
    cphi, sphi = g["cphi"][:K, :, None], g["sphi"][:K, :, None]
    d = np.stack([seg * st * cphi, seg * st * sphi, seg * ct], axis=-1)   # (K,S,NS,3)
    P1 = np.cumsum(d, axis=2)
    P1[..., 2] += H[1:K + 1][:, None, None]
    P0 = P1 - d
    # Branch radius: branch_diameter * trunk diameter at the node (frozen at death).
    a_eff = np.where(alive, A, k[:, None] + np.floor(life)).astype(np.int64)
    rb = 0.5 * p["branch_diameter"] * (Dc[a_eff] - Dc[1:K + 1][:, None]) + 0.002
    lsafe = np.maximum(ltot, 1e-9)[:, :, None]
    taper0 = 1.0 - 0.85 * (s_end - seg) / lsafe
    taper1 = 1.0 - 0.85 * s_end / lsafe
    cat_b = np.where(alive, 1, 2)[:, :, None] + np.zeros(NS, np.int64)
    m = active & (seg > 0)
    wood_P0, wood_P1 = [P0[m]], [P1[m]]
    wood_r0, wood_r1 = [(rb[:, :, None] * taper0)[m]], [(rb[:, :, None] * taper1)[m]]
    wood_c = [cat_b[m]]

    # First-order needles on segments younger than needle_retention.
    seg_age = A - k[:, None, None] - ii[None, None, :]                 # years since grown
    nw = np.clip(p["needle_retention"] - seg_age, 0.0, 1.0)
    mn = m & alive[:, :, None] & (nw > 0)
    sh0.append(P0[mn]); sh1.append(P1[mn]); shw.append(np.broadcast_to(nw, mn.shape)[mn])

    # Second-order shoots: pair at node i (end of segment i), i < grow_years.
    if NS >= 2:
        nodes = ii[:-1]                                                # i = 1..NS-1
        node_age = (A - k[:, None, None] - nodes[None, None, :])        # (K,1,NS-1)
        sub_years = grow_years[:, :, None] - nodes[None, None, :]      # growth years of subs
        ok = (active[:, :, 1:] & (sub_years >= 1)
              & (node_age <= p["needle_retention"] + _SUB_LIFE_EXTRA))
        ok = ok[..., None] & g["sub_present"][:K, :, :NS - 1, :]       # (K,S,NS-1,2)
        if ok.any():
            w_, j_, i_, s_ = np.nonzero(ok)
            base = P1[w_, j_, i_]
            slen = (p["second_level_branch_shrinkage"] * (ltot[w_, j_] - s_end[w_, j_, i_])
                    * g["sub_len"][w_, j_, i_, s_])
            th = np.deg2rad(np.minimum(np.rad2deg(theta[w_, j_, i_]) + _SUB_DROOP_DEG,
                                       _MAX_THETA_DEG))
            ph = g["phi"][w_, j_] + g["sub_alpha"][w_, j_, i_, s_]
            sts, cts = _q(np.sin(th)), _q(np.cos(th))
            dsub = np.stack([slen * sts * _q(np.cos(ph)), slen * sts * _q(np.sin(ph)),
                             slen * cts], axis=-1)
            tip = base + dsub
            rsub = 0.35 * rb[w_, j_] * (1.0 - 0.85 * s_end[w_, j_, i_] / lsafe[w_, j_, 0])
            alive_s = alive[w_, j_]
            wood_P0.append(base); wood_P1.append(tip)
            wood_r0.append(rsub); wood_r1.append(0.3 * rsub)
            wood_c.append(np.where(alive_s, 1, 2))
            # Needles on the distal part grown in the last needle_retention years.
            frac = np.clip(p["needle_retention"] / np.maximum(node_age[w_, 0, i_], 1.0), 0, 1)
            sel = alive_s & (slen > 0)
            sh0.append((tip - frac[:, None] * dsub)[sel]); sh1.append(tip[sel])
            shw.append(np.ones(int(sel.sum())))

    wood = (np.concatenate(wood_P0), np.concatenate(wood_P1), np.concatenate(wood_r0),
            np.concatenate(wood_r1), np.concatenate(wood_c))
    shoots = (np.concatenate(sh0), np.concatenate(sh1), np.concatenate(shw))
    return wood, shoots


# ----------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------
class _Canvas:
    """Supersampled coverage accumulators for 3 categories (needle, wood, dead)."""

    def __init__(self, hs: int, ws: int, ss: int, px_m: float):
        self.hs, self.ws, self.px_m = hs, ws, px_m     # px_m: metres per canvas pixel
        # trunk x (canvas px): centre of output column width // 2, so the trunk
        # falls on one output pixel instead of straddling two
        self.cx = (ws // ss // 2 + 0.5) * ss
        self.half_w = 0.5 * ws * px_m                   # half scene width (m), depth scale
        self.idx, self.w, self.ws_shaded = [], [], []

    def to_screen(self, P):
        """World (N,3) -> quantised canvas coords x (right), y (down), depth shade."""
        x = _q(P[:, 0] / self.px_m + self.cx, 8)
        y = _q((SCENE_HEIGHT_M - P[:, 2]) / self.px_m, 8)
        return x, y

    def shade(self, depth):
        return 1.0 - _DEPTH_SHADE * 0.5 * (np.clip(depth / self.half_w, -1.0, 1.0) + 1.0)

    def splat(self, x, y, w, shade, cat):
        """Bilinear splat of points (canvas coords, pixel centres at i + 0.5)."""
        u, v = x - 0.5, y - 0.5
        x0, y0 = np.floor(u), np.floor(v)
        fx, fy = u - x0, v - y0
        x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
        ix = np.concatenate([x0, x0 + 1, x0, x0 + 1])
        iy = np.concatenate([y0, y0, y0 + 1, y0 + 1])
        gx, gy = 1.0 - fx, 1.0 - fy
        ww = np.concatenate([gx * gy, fx * gy, gx * fy, fx * fy]) * np.tile(w, 4)
        ok = (ix >= 0) & (ix < self.ws) & (iy >= 0) & (iy < self.hs) & (ww > 0)
        flat = (np.tile(cat, 4) * self.hs + iy) * self.ws + ix
        self.idx.append(flat[ok])
        self.w.append(ww[ok])
        self.ws_shaded.append((ww * np.tile(shade, 4))[ok])

    def draw_wood(self, P0, P1, r0, r1, cat, min_r):
        if len(P0) == 0:
            return
        ax, ay = self.to_screen(P0)
        bx, by = self.to_screen(P1)
        # visual radius (canvas px); min width keeps thin branches visible
        r0 = _q(np.sqrt((r0 / self.px_m) ** 2 + min_r * min_r), 16)
        r1 = _q(np.sqrt((r1 / self.px_m) ** 2 + min_r * min_r), 16)
        sh = self.shade(_q(0.5 * (P0[:, 1] + P1[:, 1]), 16))
        idx, t, ds, _, lx, ly, ln = _segment_samples(ax, ay, bx, by, _SAMPLE_STEP)
        r = r0[idx] + t * (r1[idx] - r0[idx])
        x = ax[idx] + t * lx[idx]
        y = ay[idx] + t * ly[idx]
        wgt = ds[idx] * 2.0 * r                         # covered area (canvas px^2)
        width = 2.0 * r
        mult = np.maximum(np.ceil(width - 0.5), 1.0).astype(np.int64)
        if (mult > 1).any():                            # thick: parallel strands
            lns = np.where(ln > 0, ln, 1.0)
            nx = np.where(ln > 0, -ly / lns, 1.0)[idx]
            ny = np.where(ln > 0, lx / lns, 0.0)[idx]
            j2 = np.repeat(np.arange(len(mult)), mult)
            start = np.cumsum(mult) - mult
            off = ((np.arange(len(j2)) - start[j2] + 0.5) / mult[j2] - 0.5) * width[j2]
            x = x[j2] + off * nx[j2]
            y = y[j2] + off * ny[j2]
            wgt = wgt[j2] / mult[j2]
            idx = idx[j2]
        self.splat(x, y, wgt, sh[idx], cat[idx])

    def draw_needles(self, P0, P1, wgt, p, cpsi, spsi):
        if len(P0) == 0:
            return
        ax, ay = self.to_screen(P0)
        bx, by = self.to_screen(P1)
        d = P1 - P0
        l3 = np.sqrt((d * d).sum(axis=1))
        ok = l3 > 0
        ax, ay, bx, by, d, l3, wgt, P0 = ax[ok], ay[ok], bx[ok], by[ok], d[ok], l3[ok], wgt[ok], P0[ok]
        u = _q(d / l3[:, None], 24)                     # shoot axis
        hn = np.sqrt(u[:, 0] ** 2 + u[:, 1] ** 2)
        flat = hn < 1e-6
        hns = np.where(flat, 1.0, hn)
        v = np.stack([np.where(flat, 1.0, u[:, 1] / hns), np.where(flat, 0.0, -u[:, 0] / hns),
                      np.zeros(len(u))], axis=1)        # horizontal normal
        w = np.cross(u, v)
        idx, t, _, n, _, _, _ = _segment_samples(ax, ay, bx, by, _SAMPLE_STEP)
        # world length per sample, canvas units (foliage amount follows 3-D length)
        ds3 = (l3 / n / self.px_m)[idx]
        k = np.arange(len(idx)) % _NEEDLE_POOL
        cp, sp = cpsi[k], spsi[k]
        ns = math.radians(p["needle_slope"])
        cn, sn = float(_q(math.cos(ns))), float(_q(math.sin(ns)))
        nl = 0.01 * p["needle_length"] / self.px_m      # needle length (canvas px)
        # needle direction (pair at psi and psi + pi): projected x and z components
        ux, uz = u[idx, 0], u[idx, 2]
        rx = cp * v[idx, 0] + sp * w[idx, 0]
        rz = cp * v[idx, 2] + sp * w[idx, 2]
        x = ax[idx] + t * (bx - ax)[idx]
        y = ay[idx] + t * (by - ay)[idx]
        depth = P0[idx, 1] + t * d[idx, 1]
        pts_x, pts_y = [], []
        for sgn in (1.0, -1.0):
            nx_ = _q(nl * (cn * ux + sgn * sn * rx), 8)
            nz_ = _q(nl * (cn * uz + sgn * sn * rz), 8)
            for f in (0.45, 0.9):
                pts_x.append(x + f * nx_)
                pts_y.append(y - f * nz_)
        pw = (_NEEDLE_OPACITY * p["needle_density"] * 0.5 * nl) * ds3 * wgt[idx]
        sh = self.shade(_q(depth, 16))
        self.splat(np.concatenate(pts_x), np.concatenate(pts_y), np.tile(pw, 4),
                   np.tile(sh, 4), np.zeros(4 * len(idx), np.int64))

    def draw_trunk(self, H, Dc, A, min_r):
        """Analytic trunk coverage: per canvas row, the covered column interval."""
        rows = np.arange(self.hs)
        z = SCENE_HEIGHT_M - (rows + 0.5) * self.px_m   # row centre height (m)
        top = H[A]
        # trunk part at height z was formed in year y = first y with H[y] >= z
        yr = np.clip(np.searchsorted(H[: A + 1], z, side="left"), 1, A)
        diam = Dc[A] - Dc[yr - 1] + 0.004
        r = _q(np.sqrt((0.5 * diam / self.px_m) ** 2 + min_r * min_r), 16)
        # vertical coverage of each row by [0, top]
        ylo = (SCENE_HEIGHT_M - top) / self.px_m
        vc = np.clip(np.minimum(rows + 1.0, self.hs) - np.maximum(rows, _q(ylo, 8)), 0.0, 1.0)
        cols = np.arange(self.ws)
        lo, hi = self.cx - r[:, None], self.cx + r[:, None]
        cov = np.clip(np.minimum(cols + 1.0, hi) - np.maximum(cols, lo), 0.0, 1.0) * vc[:, None]
        rr, cc = np.nonzero(cov)
        self.idx.append((1 * self.hs + rr) * self.ws + cc)
        self.w.append(cov[rr, cc])
        self.ws_shaded.append(cov[rr, cc] * (1.0 - 0.5 * _DEPTH_SHADE))

    def image(self, colours, height, width, ss) -> np.ndarray:
        n = 3 * self.hs * self.ws
        idx = np.concatenate(self.idx)
        wcat = np.bincount(idx, np.concatenate(self.w), minlength=n).reshape(3, self.hs, self.ws)
        scat = np.bincount(idx, np.concatenate(self.ws_shaded), minlength=n).reshape(3, self.hs, self.ws)
        wsum = wcat[0] + wcat[1] + wcat[2]
        alpha = np.minimum(wsum, 1.0)[..., None]
        col = (scat[0][..., None] * colours[0] + scat[1][..., None] * colours[1]
               + scat[2][..., None] * colours[2]) / np.maximum(wsum, 1e-12)[..., None]
        bg = np.asarray(BACKGROUND, np.float64) / 255.0
        img = _q(bg + alpha * (col - bg), 20)            # exact for the block sums below
        img = img.reshape(height, ss, width, ss, 3).sum(axis=(1, 3)) / (ss * ss)
        return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def simulate_series(params: dict, seed: int, ages=DEFAULT_AGES, height: int = 32,
                    width: int = 16, supersample: int = 4, *, fork_age: int | None = None,
                    future_seed: int = 0) -> np.ndarray:
    """Grow one tree once and render it at each age -> uint8 (T, height, width, 3).

    Alternative futures (for the irreducible-error floor, ``benchmarks/floor.py``):
    with ``fork_age`` (an int in [1, MAX_AGE - 1]) every random event of the years
    after ``fork_age`` -- leader and cambium jitter, new whorls, new segments, new
    second-order shoots -- is re-drawn from a stream of its own, numbered
    ``future_seed`` (int >= 0); everything up to ``fork_age`` stays. Snapshots at
    ages <= fork_age are byte-identical to the ``fork_age=None`` series, later ones
    differ for most trees, and different ``future_seed`` give independent futures
    from the same distribution. Latent traits fixed when a whorl formed (e.g. its
    lifespan and length jitter) belong to the past. ``fork_age=None`` (default) is
    the ordinary series.

    Raises ValueError for bad parameters, ages, sizes, ``fork_age`` or ``future_seed``.
    """
    p = validate_params(params)
    ages = _check_ages(ages)
    for name, v in (("height", height), ("width", width), ("supersample", supersample)):
        if not _is_int(v) or v < 1:
            raise ValueError(f"{name}={v!r} must be a positive integer")
    if fork_age is None:
        if future_seed != 0:
            raise ValueError(f"future_seed={future_seed!r} needs fork_age (the last shared age)")
        fork = None
    else:
        if not _is_int(fork_age) or not 1 <= fork_age < MAX_AGE:
            raise ValueError(f"fork_age={fork_age!r} must be an integer in [1, {MAX_AGE - 1}]")
        if not _is_int(future_seed) or future_seed < 0:
            raise ValueError(f"future_seed={future_seed!r} must be a non-negative integer")
        fork = (int(fork_age), int(future_seed))
    return _render(p, tree_events(seed, fork), ages, int(height), int(width), int(supersample))


def render_series(params: dict, events: dict[str, np.ndarray], ages=DEFAULT_AGES, height: int = 32,
                  width: int = 16, supersample: int = 4) -> np.ndarray:
    """Grow the tree of ``params`` from its random numbers ``events`` (``tree_events``, possibly with
    some replaced by other uniform [0, 1) numbers of the same shapes) and render it at each age ->
    uint8 (T, height, width, 3). ``render_series(p, tree_events(seed))`` is
    ``simulate_series(p, seed)``, byte for byte.

    Raises ValueError for bad parameters, ages or sizes, or ``events`` missing a key, with a wrong
    shape or with values that are not floats in [0, 1) (naming it).
    """
    p = validate_params(params)
    ages = _check_ages(ages)
    for name, v in (("height", height), ("width", width), ("supersample", supersample)):
        if not _is_int(v) or v < 1:
            raise ValueError(f"{name}={v!r} must be a positive integer")
    for name, shape in _EVENT_SHAPES.items():
        got = np.shape(events[name]) if name in events else None
        if got != shape:
            raise ValueError(f"events[{name!r}] must have shape {shape}, got "
                             f"{'nothing' if got is None else got}")
        arr = events[name]
        if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f" \
                or not ((arr >= 0.0) & (arr < 1.0)).all():
            raise ValueError(f"events[{name!r}] must be a float array of uniform numbers in [0, 1)")
    return _render(p, events, ages, int(height), int(width), int(supersample))


def _render(p: dict, events: dict, ages: tuple[int, ...], height: int, width: int, ss: int) -> np.ndarray:
    g = _grow_events(p, events)
    hs, ws = height * ss, width * ss
    px_m = SCENE_HEIGHT_M / hs
    colours = (_lerp3(_NEEDLE_RGB, p["needle_hue"]), _lerp3(_BARK_RGB, p["bark_hue"]),
               np.array(_DEAD_RGB))
    out = np.empty((len(ages), height, width, 3), np.uint8)
    for ti, A in enumerate(ages):
        wood, shoots = _geometry(g, p, A)
        cv = _Canvas(hs, ws, ss, px_m)
        cv.draw_trunk(g["H"], g["Dc"], A, 0.5 * _MIN_TRUNK_WIDTH_PX * ss)
        cv.draw_wood(*wood, min_r=0.5 * _MIN_BRANCH_WIDTH_PX * ss)
        cv.draw_needles(*shoots, p, g["cpsi"], g["spsi"])
        out[ti] = cv.image(colours, height, width, ss)
    return out


def make_series(seed: int, ages=DEFAULT_AGES, height: int = 32,
                width: int = 16) -> tuple[dict[str, float], np.ndarray]:
    """sample_params(seed), then simulate_series(params, seed, ...)."""
    params = sample_params(seed)
    return params, simulate_series(params, seed, ages=ages, height=height, width=width)
