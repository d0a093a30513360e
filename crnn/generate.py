"""Generate simulated image series as parallel Ray Data tasks and publish them as Parquet shards.

Scenes (``scene=``): ``"pines"`` (``crnn.pine``, the paper's growing conifers, the default) and
``"shapes"`` (``crnn.shapes``, coloured shapes that move and grow: a check that forecasters are
not pine-specific). Same shard format, seeds and split rule; the card records the scene.

``irregular=IrregularSpec(...)`` (``jobs/generate.py --irregular``) draws each series' own input
and target ages instead of the regular grid and writes the irregular layout (:mod:`crnn.irregular`):
the ages are a function of (seed, series index) only, so a dataset is reproducible.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from crnn import irregular as irr
from crnn import pine, shapes
from crnn.shards import (
    base_card, publish, rows_to_batch, series_seed, split_counts, split_for_index, write_ray_dataset,
)


SCENES = {"pines": pine, "shapes": shapes}            # scene name -> simulator module
_ID_PREFIX = {"pines": "pine", "shapes": "shapes"}


def simulator(scene: str):
    """The simulator module of ``scene``; raises ValueError naming the known scenes."""
    if scene not in SCENES:
        raise ValueError(f"scene {scene!r} is not one of {sorted(SCENES)}")
    return SCENES[scene]


def series_id(index: int, scene: str = "pines") -> str:
    simulator(scene)
    return f"{_ID_PREFIX[scene]}-{int(index):06d}"


def generate_rows(indices: Sequence[int], *, base_seed: int, ages: Sequence[int], height: int,
                  width: int, scene: str = "pines", irregular: irr.IrregularSpec | None = None) -> list[dict]:
    """Simulate the series ``indices`` of the dataset made with ``base_seed`` (one dict each).
    With ``irregular``, each series' ages and ``num_inputs`` come from ``irregular.sample``."""
    sim = simulator(scene)
    rows = []
    for idx in indices:
        seed = series_seed(base_seed, int(idx))
        extra = {}
        if irregular is not None:
            ages, extra["num_inputs"] = irregular.sample(base_seed, int(idx))
            if scene == "pines":
                ages = tuple(int(a) for a in ages)  # pines render whole years (the grid is integers)
        params, frames = sim.make_series(seed, ages=tuple(ages), height=height, width=width)
        rows.append({
            "series_id": series_id(idx, scene), "seed": seed, "split": split_for_index(int(idx)),
            "ages": list(ages), "frames": frames, "params": params, **extra,
        })
    return rows


def _generate_batch(batch: dict[str, np.ndarray], *, num_series: int, shard_size: int,
                    **kw) -> dict[str, np.ndarray]:
    # Ray Data map_batches: {"id": shard numbers} -> one row per series of those shards
    # (frames (B, T, H, W, C) uint8).
    indices = [i for k in batch["id"].tolist()
               for i in range(k * shard_size, min((k + 1) * shard_size, num_series))]
    names = simulator(kw["scene"]).PARAM_NAMES
    if kw.get("irregular") is not None:
        return irr.rows_to_batch(generate_rows(indices, **kw), kw["irregular"].max_frames, names)
    return rows_to_batch(generate_rows(indices, **kw), names)


def check_generate(num_series: int, shard_size: int, ages: Sequence[int], height: int, width: int,
                   scene: str = "pines", irregular: irr.IrregularSpec | None = None) -> None:
    """ValueError for arguments :func:`generate` cannot use (no Ray: jobs call it before starting Ray)."""
    sim = simulator(scene)
    if num_series < 1:
        raise ValueError(f"num_series must be >= 1, got {num_series}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    # Validate sizes and ages up front (one tiny series) rather than inside a remote task.
    if irregular is not None:
        irregular.check(sim.MAX_AGE)
        grid = irregular.grid()
        if scene == "pines" and not all(float(a).is_integer() for a in grid):
            raise ValueError(f"pines render whole years only: the age grid {irregular.age_min:g}..{irregular.age_max:g} "
                             f"step {irregular.age_step:g} has fractional ages (use integer --age-range and --age-step)")
        ages = (grid[0], grid[-1])
        if scene == "pines":
            ages = tuple(int(a) for a in ages)
        sim.simulate_series(sim.default_params(), 0, ages=ages, height=height, width=width)
        return
    sim.simulate_series(sim.default_params(), 0, ages=tuple(int(a) for a in ages), height=height, width=width)


def generate(out: str, num_series: int = 3847, seed: int = 0, ages: Sequence[int] = pine.DEFAULT_AGES,
             height: int = 32, width: int = 16, shard_size: int = 256,
             overwrite: bool = False, scene: str = "pines", irregular: irr.IrregularSpec | None = None) -> dict:
    """Simulate ``num_series`` series and publish them at ``out``; returns the dataset card.

    Needs a running Ray (``crnn.runtime.init_ray``). Each Ray Data block is one shard of
    ``shard_size`` consecutive series, generated and written by one task. ``scene``: "pines"
    (default) or "shapes" (see the module docstring); raises ValueError for another. ``irregular``:
    per-series random input and target ages (:class:`crnn.irregular.IrregularSpec`, ``ages`` is
    then ignored) in the irregular layout; ValueError for options out of range.
    """
    ages = tuple(int(a) for a in ages)
    check_generate(num_series, shard_size, ages, height, width, scene, irregular)
    sim = simulator(scene)

    import ray.data

    num_shards = math.ceil(num_series / shard_size)
    # One block per shard: ray.data.range(num_series) would cut blocks of num_series // num_shards
    # rows plus a small remainder block, not shard_size.
    ds = ray.data.range(num_shards, override_num_blocks=num_shards).map_batches(
        _generate_batch, batch_size=None,
        fn_kwargs=dict(num_series=num_series, shard_size=shard_size, base_seed=seed, ages=ages,
                       height=height, width=width, scene=scene, irregular=irregular),
    )
    card = base_card(
        num_series=num_series, ages=ages, height=height, width=width,
        splits=split_counts(num_series), source=f"simulator {sim.GENERATOR_VERSION}",
        params=[{"name": p.name, "low": p.low, "high": p.high, "default": p.default,
                 "unit": p.unit, "doc": p.doc} for p in sim.PARAMS],
        generator_version=sim.GENERATOR_VERSION, base_seed=int(seed), scene=scene,
        mirror_axis=sim.mirror_axis(width),
        split_rule="index<3840 and index%10==9 -> test; else index%20==4 -> val; else train",
    )
    if irregular is not None:
        grid = irregular.grid()
        card = irr.finish_card({**card, **irr.card_fields(
            max_frames=irregular.max_frames, age_unit="years", age_range=(float(grid[0]), float(grid[-1]))),
            "irregular": {**irregular.card(), "rule": "per series: num_inputs and num_targets uniform, then "
                          "that many distinct ages from the grid, sorted; inputs first", "max_age": float(sim.MAX_AGE)}})
    publish(lambda d: write_ray_dataset(ds, d), out, card, overwrite=overwrite)
    from crnn.shards import read_card

    return read_card(out)
