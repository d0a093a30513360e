"""Coloured shapes that move, grow and spin: a second, non-pine image-series simulator.

A check that forecasters are not pine-specific (issue #13): nothing in the models or their
recipes was tuned for it. Same interface as ``crnn.pine``: ``make_series(seed, ages, height,
width) -> (params, frames)`` with frames uint8 (T, height, width, 3), deterministic per seed, and
``PARAMS`` / ``PARAM_NAMES`` / ``sample_params`` / ``validate_params`` (one float64 shard column
per parameter, like the pine's).

Scene
-----
A plain background (grey of ``background_lightness``) with ``num_shapes`` opaque shapes, drawn in a
fixed order (later ones occlude earlier ones). Shape ``i`` has a kind (ellipse, rectangle or
equilateral triangle, uniform), its own colour (random hue, saturation 0.45-1, value 0.25-0.75, so
it stands out from the light background), an aspect ratio (0.5-1) and a start angle. Lengths are in
units of the image height ("h"); the frame is ``width / height`` h wide and 1 h tall, square pixels.
With ``s = age - REFERENCE_AGE`` (years; ``REFERENCE_AGE`` = 20):

* centre ``c_i(s) = fold(c_i0 + v_i * s + position_noise * W_i(s))``: constant velocity (direction
  uniform, speed ``speed`` x U(0.5, 1.5) h/yr) plus a random walk; ``fold`` reflects the centre
  into the frame (the shapes bounce off the edges);
* size (half-extent) ``r_i(s) = size x U(0.6, 1.4) x exp(g_i * s + size_noise * V_i(s))`` with
  ``g_i = growth_rate + U(-0.01, 0.01)`` 1/yr;
* angle ``theta_i(s) = theta_i0 + omega_i * s``, ``omega_i = +-rotation_speed x U(0.5, 1.5)`` deg/yr.

``W_i`` (2-D) and ``V_i`` are random walks on the integer years 0..MAX_AGE, zero at
``REFERENCE_AGE``, with independent unit-variance increments (uniform on [-sqrt 3, sqrt 3]), and
linearly interpolated between years, so a snapshot at any real age in [0, MAX_AGE] does not depend on
the other requested ages. The future is partly predictable (constant velocity, growth and spin)
and partly not (the walks; after a few years a bounce), and never standing still (persistence is
not a perfect forecast).

Rendering: every pixel is ``supersample`` x ``supersample`` point samples at sub-pixel centres,
each coloured by the topmost shape containing it (inside tests in the shape's rotated frame),
block-averaged (anti-aliasing) and rounded. Transcendental results are quantised to 2**-24 (as in
``crnn.pine``) so the bytes do not depend on the machine's libm.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np

from crnn.params import ParamSpace, ParamSpec

GENERATOR_VERSION = "shapes-1"

DEFAULT_AGES = (10, 15, 20, 25, 30)
MAX_AGE = 100.0                 # oldest age that can be rendered (years)
REFERENCE_AGE = 20.0            # age at which positions and sizes are drawn (years)
KINDS = ("ellipse", "rectangle", "triangle")
_MAX_SHAPES = 6

PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("num_shapes", 2, _MAX_SHAPES, 4, "count", "shapes in the scene (integer)"),
    ParamSpec("size", 0.05, 0.12, 0.08, "h",
              "mean half-extent of a shape at the reference age, in image heights"),
    ParamSpec("speed", 0.003, 0.015, 0.008, "h/yr", "mean speed of the shapes, image heights per year"),
    ParamSpec("growth_rate", -0.01, 0.025, 0.01, "1/yr", "mean exponential growth rate of shape size"),
    ParamSpec("rotation_speed", 0.0, 8.0, 3.0, "deg/yr", "mean absolute spin of the shapes"),
    ParamSpec("position_noise", 0.001, 0.006, 0.003, "h/sqrt(yr)",
              "random-walk step of the centres (per axis, one year)"),
    ParamSpec("size_noise", 0.005, 0.02, 0.01, "1/sqrt(yr)", "random-walk step of log size (one year)"),
    ParamSpec("background_lightness", 0.78, 0.95, 0.88, "1", "grey level of the background (0..1)"),
)
PARAM_NAMES: tuple[str, ...] = tuple(p.name for p in PARAMS)
INT_PARAMS: frozenset[str] = frozenset({"num_shapes"})
_SPACE = ParamSpace("shapes", PARAMS, INT_PARAMS)
_GRID = int(MAX_AGE) + 1        # random-walk knots at years 0..MAX_AGE


def mirror_axis(width: int) -> float:
    """The scene's axis of left-right symmetry in pixel-column coordinates (``crnn.mirror``): the image
    centre (start positions and directions are uniform, walls reflect at both edges)."""
    return (width - 1) / 2


def default_params() -> dict[str, float]:
    return _SPACE.defaults()


def sample_params(seed: int) -> dict[str, float]:
    """Uniform sample of every parameter in [low, high]; deterministic from seed."""
    return _SPACE.sample(seed)


def validate_params(params: dict | None) -> dict[str, float]:
    """Complete, ordered parameter dict (defaults for missing keys).

    Raises ValueError naming an unknown key, a non-numeric / non-finite / out-of-range value or a
    non-integral value of an integer parameter.
    """
    return _SPACE.validate(params)


def check_ages(ages) -> tuple[float, ...]:
    """Ages as floats; raises ValueError unless a non-empty, strictly ascending sequence of
    finite real numbers in [0, MAX_AGE]."""
    if isinstance(ages, (str, bytes)):
        raise ValueError(f"ages must be a sequence of numbers, got {ages!r}")
    try:
        ages = tuple(ages)
    except TypeError:
        raise ValueError(f"ages must be a sequence of numbers, got {ages!r}") from None
    if not ages:
        raise ValueError("ages must not be empty")
    out: list[float] = []
    for a in ages:
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, float, np.integer, np.floating)):
            raise ValueError(f"age {a!r} is not a number")
        f = float(a)
        if not math.isfinite(f) or not 0.0 <= f <= MAX_AGE:
            raise ValueError(f"age {a!r} is outside [0, {MAX_AGE:g}]")
        if out and f <= out[-1]:
            raise ValueError(f"ages must be strictly ascending: age {a!r} follows {out[-1]:g}")
        out.append(f)
    return tuple(out)


def _q(x, bits: int = 24):
    s = float(1 << bits)
    return np.round(np.asarray(x, dtype=np.float64) * s) / s


def _walk(u: np.ndarray) -> np.ndarray:
    """Random walk on years 0..MAX_AGE, zero at REFERENCE_AGE, from uniforms u (..., _GRID)."""
    step = (2.0 * u - 1.0) * math.sqrt(3.0)            # unit variance
    ref = int(REFERENCE_AGE)
    fwd = np.cumsum(step[..., ref + 1:], axis=-1)       # years ref+1 .. MAX_AGE
    bwd = np.cumsum(step[..., :ref][..., ::-1], axis=-1)[..., ::-1]   # years 0 .. ref-1
    zero = np.zeros(u.shape[:-1] + (1,))
    return np.concatenate([-bwd, zero, fwd], axis=-1)


def _draw(p: dict, seed: int, aspect: float) -> dict:
    """The per-shape random draws of a scene (fixed order and shapes for any parameters)."""
    n = _MAX_SHAPES
    rng = np.random.default_rng([int(seed), 1])
    u = rng.random((n, 14))                             # one column per attribute, never reused
    walk = _walk(rng.random((n, 3, _GRID)))             # x, y, log-size walks
    k = int(p["num_shapes"])
    speed = p["speed"] * (0.5 + u[:, 3])
    heading = 2 * np.pi * u[:, 2]
    colours = np.array([colorsys.hsv_to_rgb(h, 0.45 + 0.55 * s, 0.25 + 0.5 * v)
                        for h, s, v in u[:, 9:12]])
    return dict(
        kind=np.minimum((u[:, 0] * len(KINDS)).astype(np.int64), len(KINDS) - 1)[:k],
        c0=np.stack([u[:, 1] * aspect, u[:, 4]], axis=1)[:k],         # x (right), y (down), h
        v=(np.stack([_q(np.cos(heading)), _q(np.sin(heading))], axis=1) * speed[:, None])[:k],
        r0=(p["size"] * (0.6 + 0.8 * u[:, 5]))[:k],
        g=(p["growth_rate"] + 0.02 * (u[:, 6] - 0.5))[:k],
        aspect=(0.5 + 0.5 * u[:, 7])[:k],
        theta0=(360.0 * u[:, 8])[:k],
        omega=(p["rotation_speed"] * (0.5 + u[:, 12]) * np.where(u[:, 13] < 0.5, -1.0, 1.0))[:k],
        colour=colours[:k],
        walk=walk[:k],
    )


def _fold(x: np.ndarray, hi: float) -> np.ndarray:
    """Reflect x into [0, hi] (a ball bouncing off both walls)."""
    y = np.mod(x, 2.0 * hi)
    return np.where(y > hi, 2.0 * hi - y, y)


def shape_states(params: dict, seed: int, ages, aspect: float = 0.5) -> dict[str, np.ndarray]:
    """Centres (T, N, 2) [x right, y down] and half-extents (T, N) in image heights, angles (T, N)
    in degrees of the N shapes at each age, for a frame ``aspect`` = width / height h wide.

    Raises ValueError for bad parameters or ages.
    """
    p = validate_params(params)
    ages = np.asarray(check_ages(ages))
    d = _draw(p, seed, aspect)
    s = ages - REFERENCE_AGE
    grid = np.arange(_GRID, dtype=np.float64)
    w = np.stack([[np.interp(ages, grid, d["walk"][i, j]) for j in range(3)]
                  for i in range(len(d["kind"]))], axis=0)            # (N, 3, T)
    w = w.transpose(2, 0, 1)                                            # (T, N, 3)
    raw = d["c0"][None] + d["v"][None] * s[:, None, None] + p["position_noise"] * w[..., :2]
    centre = np.stack([_fold(raw[..., 0], aspect), _fold(raw[..., 1], 1.0)], axis=-1)
    radius = d["r0"][None] * _q(np.exp(d["g"][None] * s[:, None] + p["size_noise"] * w[..., 2]))
    angle = d["theta0"][None] + d["omega"][None] * s[:, None]
    return dict(centre=centre, radius=radius, angle=angle, kind=d["kind"], aspect=d["aspect"],
                colour=d["colour"])


def simulate_series(params: dict, seed: int, ages=DEFAULT_AGES, height: int = 32, width: int = 16,
                    supersample: int = 4) -> np.ndarray:
    """Render the scene of ``(params, seed)`` at each age -> uint8 (T, height, width, 3).

    ``ages``: ascending real ages in [0, MAX_AGE] (years); height/width/supersample: positive
    ints. Raises ValueError for bad parameters, ages or sizes.
    """
    p = validate_params(params)
    ages = check_ages(ages)
    for name, v in (("height", height), ("width", width), ("supersample", supersample)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}={v!r} must be a positive integer")
    height, width, ss = int(height), int(width), int(supersample)
    aspect = width / height
    st = shape_states(p, seed, ages, aspect)
    # sub-pixel sample centres in image heights
    ys = (np.arange(height * ss) + 0.5) / (height * ss)
    xs = (np.arange(width * ss) + 0.5) / (height * ss)
    X, Y = xs[None, :], ys[:, None]
    bg = np.full(3, p["background_lightness"])
    out = np.empty((len(ages), height, width, 3), np.uint8)
    for t in range(len(ages)):
        img = np.broadcast_to(bg, (height * ss, width * ss, 3)).copy()
        for i, kind in enumerate(st["kind"]):
            a = st["radius"][t, i]
            b = a * st["aspect"][i]
            th = np.deg2rad(st["angle"][t, i])
            c, s = float(_q(np.cos(th))), float(_q(np.sin(th)))
            dx, dy = X - st["centre"][t, i, 0], Y - st["centre"][t, i, 1]
            uu = (dx * c + dy * s) / a
            vv = (-dx * s + dy * c) / b
            if KINDS[kind] == "ellipse":
                m = uu * uu + vv * vv <= 1.0
            elif KINDS[kind] == "rectangle":
                m = (np.abs(uu) <= 0.85) & (np.abs(vv) <= 0.85)        # about the ellipse's area
            else:                                                        # circumradius 1.5
                m = (vv <= 0.75) & (vv >= -1.5 + math.sqrt(3.0) * np.abs(uu))
            img[m] = st["colour"][i]
        img = img.reshape(height, ss, width, ss, 3).mean(axis=(1, 3))
        out[t] = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    return out


def make_series(seed: int, ages=DEFAULT_AGES, height: int = 32,
                width: int = 16) -> tuple[dict[str, float], np.ndarray]:
    """sample_params(seed), then simulate_series(params, seed, ...)."""
    params = sample_params(seed)
    return params, simulate_series(params, seed, ages=ages, height=height, width=width)
