"""Throughput of crnn.pine.make_series (pure measurement, no assertions).

Prints series/s on one core and with N worker processes (multiprocessing,
default 2), and the projected wall time for the paper-sized data set of
3847 series x 5 images at the default 32x16 resolution.

    python benchmarks/bench_generate.py [--n 400] [--procs 2] [--height 32 --width 16]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from crnn import pine  # noqa: E402

PAPER_SERIES = 3847


def _work(args):
    start, stop, height, width = args
    for seed in range(start, stop):
        pine.make_series(seed, height=height, width=width)
    return stop - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="series per measurement")
    ap.add_argument("--procs", type=int, default=2, help="worker processes for the parallel run")
    ap.add_argument("--height", type=int, default=32)
    ap.add_argument("--width", type=int, default=16)
    a = ap.parse_args()
    print(f"generator {pine.GENERATOR_VERSION}, {a.height}x{a.width}, ages {pine.DEFAULT_AGES}, "
          f"{os.cpu_count()} CPUs visible")

    _work((10_000, 10_010, a.height, a.width))      # warm-up (imports, caches)
    t0 = time.perf_counter()
    _work((0, a.n, a.height, a.width))
    dt1 = time.perf_counter() - t0
    r1 = a.n / dt1
    print(f"1 process : {r1:8.1f} series/s ({1000 * dt1 / a.n:.2f} ms/series); "
          f"projected {PAPER_SERIES} series: {PAPER_SERIES / r1:6.1f} s")

    p = max(1, a.procs)
    n = a.n * p
    chunks = [(i * n // (4 * p), (i + 1) * n // (4 * p), a.height, a.width) for i in range(4 * p)]
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(p) as pool:
        pool.map(_work, [(20_000 + i, 20_002 + i, a.height, a.width) for i in range(p)])  # warm
        t0 = time.perf_counter()
        done = sum(pool.map(_work, chunks, chunksize=1))
        dtp = time.perf_counter() - t0
    rp = done / dtp
    print(f"{p} processes: {rp:8.1f} series/s; projected {PAPER_SERIES} series: "
          f"{PAPER_SERIES / rp:6.1f} s")


if __name__ == "__main__":
    main()
