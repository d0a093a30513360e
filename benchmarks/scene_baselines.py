"""Persistence and linear-extrapolation MSE per forecast age on a scene's test series (no Ray).

    python benchmarks/scene_baselines.py --scene shapes --num-series 384
    python benchmarks/scene_baselines.py --scene pines --num-series 384

The test series are the first ``--num-series`` test-split series of the dataset made with
``--base-seed`` (0 = the default dataset of ``jobs/generate.py``), simulated with
``crnn.generate.generate_rows``, so the numbers are those of ``jobs/evaluate.py``'s baselines on
that dataset. MSE on 0-255 pixels (mean over pixels and channels). Persistence forecasts the frame
at age t from the frame at t-1; linear extrapolation uses 2 x(t-1) - x(t-2) (clipped to 0..255) and
starts at the third age.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from crnn.generate import SCENES, generate_rows  # noqa: E402
from crnn.shards import PAPER_TEST_SERIES, split_for_index  # noqa: E402


def baselines(scene: str, num_series: int, base_seed: int = 0, ages=(10, 15, 20, 25, 30)) -> dict:
    """{"persistence": {age: mse}, "linear": {age: mse}} on the first num_series test series.

    Raises ValueError for an unknown scene or num_series outside [1, PAPER_TEST_SERIES].
    """
    if not 1 <= num_series <= PAPER_TEST_SERIES:
        raise ValueError(f"num_series={num_series} must be in [1, {PAPER_TEST_SERIES}]")
    idx = [i for i in range(10 * PAPER_TEST_SERIES) if split_for_index(i) == "test"][:num_series]
    rows = generate_rows(idx, base_seed=base_seed, ages=ages, height=32, width=16, scene=scene)
    x = np.stack([r["frames"] for r in rows]).astype(np.float64)          # (N, T, H, W, 3)
    pers = {ages[t]: float(((x[:, t] - x[:, t - 1]) ** 2).mean()) for t in range(1, len(ages))}
    lin = {ages[t]: float(((np.clip(2 * x[:, t - 1] - x[:, t - 2], 0, 255) - x[:, t]) ** 2).mean())
           for t in range(2, len(ages))}
    return {"persistence": pers, "linear": lin}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scene", choices=sorted(SCENES), default="shapes")
    p.add_argument("--num-series", type=int, default=384)
    p.add_argument("--base-seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        res = baselines(a.scene, a.num_series, a.base_seed)
    except ValueError as e:
        p.error(str(e))
    print(f"{a.scene}: {a.num_series} test series (base seed {a.base_seed}), MSE 0-255 per forecast age")
    for name, per in res.items():
        print(f"  {name:12s} " + "  ".join(f"{age}: {v:7.1f}" for age, v in per.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
