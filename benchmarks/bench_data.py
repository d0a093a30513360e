"""Where training data should come from: pre-generated shards streamed by Ray Data, or series
simulated on the fly. Measures, in one run on this machine:

* ``simulate``: ``crnn.pine.make_series`` series/s in one process (what an on-the-fly pipeline
  would pay for every series of every epoch);
* ``stream``: Ray Data reading the shards (``crnn.shards.read_ray(...).iter_batches``) series/s,
  what a Ray Train worker gets from pre-generated shards;
* ``numpy``: the same split read into memory with pyarrow (``read_numpy``), no Ray.

    python benchmarks/bench_data.py --data data/pines20k [--simulate 100] [--num-cpus 2]

The generation cost of shards is paid once (``benchmarks/bench_generate.py``); on the fly it is paid
every epoch. Compare each with the training rates in BENCHMARKS.md (``benchmarks/zoo.py cost``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a generated dataset (jobs/generate.py --out)")
    p.add_argument("--split", default="train")
    p.add_argument("--simulate", type=int, default=100, help="series to simulate for the on-the-fly rate")
    p.add_argument("--num-cpus", type=int, default=2)
    a = p.parse_args(argv)

    from crnn import pine
    from crnn.shards import read_card, read_numpy, read_ray

    card = read_card(a.data)
    t0 = time.perf_counter()
    for i in range(a.simulate):
        pine.make_series(10_000_000 + i, ages=tuple(card["ages"]), height=card["height"], width=card["width"])
    sim = a.simulate / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    n_np = len(read_numpy(a.data, split=a.split, columns=["frames"])["frames"])
    np_rate = n_np / (time.perf_counter() - t0)

    from crnn.runtime import init_ray

    init_ray(num_cpus=a.num_cpus, log_to_driver=False)
    import ray

    try:
        ds = read_ray(a.data, split=a.split, columns=["frames"])
        t0 = time.perf_counter()
        n = sum(len(b["frames"]) for b in ds.iter_batches(batch_size=256, batch_format="numpy"))
        stream = n / (time.perf_counter() - t0)
    finally:
        ray.shutdown()
    print(f"dataset {a.data}: split {a.split!r}, {card['height']}x{card['width']}, {len(card['ages'])} frames")
    print(f"simulate on the fly (1 process): {sim:9.0f} series/s")
    print(f"Ray Data stream of the shards:   {stream:9.0f} series/s  ({stream / sim:.0f}x)  [{n} series, "
          f"{a.num_cpus} CPUs, Ray start-up excluded]")
    print(f"pyarrow read_numpy (no Ray):     {np_rate:9.0f} series/s  ({np_rate / sim:.0f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
