"""Generate simulated pine series as parallel Ray Data tasks and publish them as Parquet shards."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from crnn import pine
from crnn.shards import (
    base_card, publish, rows_to_batch, series_seed, split_counts, split_for_index, write_ray_dataset,
)


def series_id(index: int) -> str:
    return f"pine-{int(index):06d}"


def generate_rows(indices: Sequence[int], *, base_seed: int, ages: Sequence[int], height: int,
                  width: int) -> list[dict]:
    """Simulate the series ``indices`` of the dataset made with ``base_seed`` (one dict each)."""
    rows = []
    for idx in indices:
        seed = series_seed(base_seed, int(idx))
        params, frames = pine.make_series(seed, ages=tuple(ages), height=height, width=width)
        rows.append({
            "series_id": series_id(idx), "seed": seed, "split": split_for_index(int(idx)),
            "ages": list(ages), "frames": frames, "params": params,
        })
    return rows


def _generate_batch(batch: dict[str, np.ndarray], *, num_series: int, shard_size: int,
                    **kw) -> dict[str, np.ndarray]:
    # Ray Data map_batches: {"id": shard numbers} -> one row per series of those shards
    # (frames (B, T, H, W, C) uint8).
    indices = [i for k in batch["id"].tolist()
               for i in range(k * shard_size, min((k + 1) * shard_size, num_series))]
    return rows_to_batch(generate_rows(indices, **kw), pine.PARAM_NAMES)


def check_generate(num_series: int, shard_size: int, ages: Sequence[int], height: int, width: int) -> None:
    """ValueError for arguments :func:`generate` cannot use (no Ray: jobs call it before starting Ray)."""
    if num_series < 1:
        raise ValueError(f"num_series must be >= 1, got {num_series}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    # Validate sizes and ages up front (one tiny series) rather than inside a remote task.
    pine.simulate_series(pine.default_params(), 0, ages=tuple(int(a) for a in ages), height=height, width=width)


def generate(out: str, num_series: int = 3847, seed: int = 0, ages: Sequence[int] = pine.DEFAULT_AGES,
             height: int = 32, width: int = 16, shard_size: int = 256,
             overwrite: bool = False) -> dict:
    """Simulate ``num_series`` series and publish them at ``out``; returns the dataset card.

    Needs a running Ray (``crnn.runtime.init_ray``). Each Ray Data block is one shard of
    ``shard_size`` consecutive series, generated and written by one task.
    """
    ages = tuple(int(a) for a in ages)
    check_generate(num_series, shard_size, ages, height, width)

    import ray.data

    num_shards = math.ceil(num_series / shard_size)
    # One block per shard: ray.data.range(num_series) would cut blocks of num_series // num_shards
    # rows plus a small remainder block, not shard_size.
    ds = ray.data.range(num_shards, override_num_blocks=num_shards).map_batches(
        _generate_batch, batch_size=None,
        fn_kwargs=dict(num_series=num_series, shard_size=shard_size, base_seed=seed, ages=ages,
                       height=height, width=width),
    )
    card = base_card(
        num_series=num_series, ages=ages, height=height, width=width,
        splits=split_counts(num_series), source=f"simulator {pine.GENERATOR_VERSION}",
        params=[{"name": p.name, "low": p.low, "high": p.high, "default": p.default,
                 "unit": p.unit, "doc": p.doc} for p in pine.PARAMS],
        generator_version=pine.GENERATOR_VERSION, base_seed=int(seed),
        split_rule="index<3840 and index%10==9 -> test; else index%20==4 -> val; else train",
    )
    publish(lambda d: write_ray_dataset(ds, d), out, card, overwrite=overwrite)
    from crnn.shards import read_card

    return read_card(out)
