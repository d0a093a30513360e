"""Simulator parameter spaces: the one implementation of defaults, uniform sampling and validation
that every scene (``crnn.pine``, ``crnn.shapes``) shares."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ParamSpec:
    name: str
    low: float
    high: float
    default: float
    unit: str
    doc: str


class ParamSpace:
    """The parameters of one scene (``scene`` names it in errors); ``int_params`` take integer values."""

    def __init__(self, scene: str, params: tuple[ParamSpec, ...], int_params: frozenset[str]) -> None:
        self.scene, self.params, self.int_params = scene, params, int_params
        self.names = tuple(p.name for p in params)
        self._spec = {p.name: p for p in params}

    def defaults(self) -> dict[str, float]:
        return {p.name: float(p.default) for p in self.params}

    def sample(self, seed: int) -> dict[str, float]:
        """Uniform sample of every parameter in [low, high]; deterministic from ``seed``
        (``np.random.default_rng([seed, 0])``, one draw per parameter in order)."""
        u = np.random.default_rng([int(seed), 0]).random(len(self.params))
        return {p.name: self.from_uniform(p.name, ui) for p, ui in zip(self.params, u)}

    def from_uniform(self, name: str, u: float) -> float:
        """The value of parameter ``name`` that the uniform number ``u`` in [0, 1) maps to under
        this space's prior (``sample`` applies it to every parameter; integer parameters are rounded).
        Raises KeyError naming an unknown parameter, ValueError for ``u`` outside [0, 1)."""
        if name not in self._spec:
            raise KeyError(f"unknown {self.scene} parameter {name!r}")
        if not 0.0 <= float(u) < 1.0:
            raise ValueError(f"{self.scene} parameter {name}: u={u!r} must be in [0, 1)")
        p = self._spec[name]
        v = p.low + float(u) * (p.high - p.low)
        return float(round(v)) if name in self.int_params else float(v)

    def validate(self, params: dict | None) -> dict[str, float]:
        """A complete, ordered parameter dict (defaults for missing keys). Raises ValueError naming
        any unknown key, non-numeric / non-finite / out-of-range value (a relative 1e-9 of the range
        is tolerated and clamped) or non-integral value of an integer parameter."""
        params = {} if params is None else dict(params)
        unknown = [k for k in params if k not in self._spec]
        if unknown:
            raise ValueError(f"unknown {self.scene} parameter(s) {sorted(map(str, unknown))}; "
                             f"known: {list(self.names)}")
        out = {}
        for p in self.params:
            v = params.get(p.name, p.default)
            try:
                if isinstance(v, (bool, np.bool_)):
                    raise TypeError
                f = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"{self.scene} parameter {p.name!r}={v!r} is not a number") from None
            tol = 1e-9 * (p.high - p.low)
            if not math.isfinite(f) or f < p.low - tol or f > p.high + tol:
                raise ValueError(f"{self.scene} parameter {p.name!r}={v!r} out of range "
                                 f"[{p.low}, {p.high}] {p.unit}")
            f = min(max(f, float(p.low)), float(p.high))
            if p.name in self.int_params and f != round(f):
                raise ValueError(f"{self.scene} parameter {p.name!r}={v!r} must be an integer")
            out[p.name] = f
        return out
