"""Throughput of crnn.pine.make_series (pure measurement, no assertions).

Prints series/s on one core and with N worker processes (multiprocessing,
default 2), and the projected wall time for the paper-sized data set of
3847 series x 5 images at the default 32x16 resolution.

    python benchmarks/bench_generate.py [--n 400] [--procs 2] [--height 32 --width 16]

``--e2e`` also runs the real job path, ``crnn.generate.generate`` (Ray Data tasks, Parquet
shards, atomic publish) on an embedded local Ray with ``--procs`` CPUs, for ``--num-series``
(default: the paper's 3847) into a temporary directory, and prints its wall time and series/s
beside the rates above (ratio to one process):

    python benchmarks/bench_generate.py --e2e [--num-series 3847] [--procs 2] [--shard-size 256]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from crnn import pine  # noqa: E402

PAPER_SERIES = 3847


def _work(args):
    start, stop, height, width = args
    for seed in range(start, stop):
        pine.make_series(seed, height=height, width=width)
    return stop - start


def _tree_cpu_seconds(root: int) -> float | None:
    """CPU seconds (user + system, reaped children included) of ``root`` and all its descendants
    (Linux /proc; None elsewhere). An embedded Ray's raylet and workers descend from the driver, so
    this is the job's whole CPU cost, far less sensitive than wall time to other load."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    procs = {}
    try:
        pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        procs[pid] = (int(fields[1]), sum(int(x) for x in fields[11:15]))  # ppid, u+s+cu+cs ticks
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        kids.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += procs.get(pid, (0, 0))[1]
        todo.extend(kids.get(pid, ()))
    return total / tick


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="series per measurement")
    ap.add_argument("--procs", type=int, default=2, help="worker processes for the parallel run")
    ap.add_argument("--height", type=int, default=32)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--e2e", action="store_true",
                    help="also run the real generation job (Ray Data) end to end")
    ap.add_argument("--num-series", type=int, default=PAPER_SERIES, help="series for --e2e")
    ap.add_argument("--shard-size", type=int, default=256, help="series per shard for --e2e")
    ap.add_argument("--repeats", type=int, default=1,
                    help="--e2e runs on the same Ray (the first one includes worker start-up)")
    a = ap.parse_args()
    print(f"generator {pine.GENERATOR_VERSION}, {a.height}x{a.width}, ages {pine.DEFAULT_AGES}, "
          f"{os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.2f} (other work skews rates)")

    _work((10_000, 10_010, a.height, a.width))      # warm-up (imports, caches)
    t0, c0 = time.perf_counter(), time.process_time()
    _work((0, a.n, a.height, a.width))
    dt1, cpu1 = time.perf_counter() - t0, time.process_time() - c0
    r1 = a.n / dt1
    print(f"1 process : {r1:8.1f} series/s ({1000 * dt1 / a.n:.2f} ms/series, "
          f"{1000 * cpu1 / a.n:.2f} CPU-ms/series); projected {PAPER_SERIES} series: "
          f"{PAPER_SERIES / r1:6.1f} s")

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
    if a.e2e:
        _e2e(a, r1, rp, cpu1 / a.n)


def _e2e(a, r1: float, rp: float, cpu_per_series: float) -> None:
    """The job path: embedded Ray, crnn.generate.generate (simulate, write shards, publish)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from crnn.generate import generate
    from crnn.runtime import init_ray
    from crnn.shards import read_card

    p = max(1, a.procs)
    t0 = time.perf_counter()
    # As jobs/generate.py does: an embedded local Ray with p CPUs (unless RAY_ADDRESS is set).
    ray = init_ray(num_cpus=p, include_dashboard=False, log_to_driver=False)
    t_init = time.perf_counter() - t0
    print(f"ray.init (embedded, {p} CPUs): {t_init:.1f} s")
    tmp = tempfile.mkdtemp(prefix="bench-generate-")
    out = os.path.join(tmp, "pines")
    try:
        for i in range(max(1, a.repeats)):
            c0, t0 = _tree_cpu_seconds(os.getpid()), time.perf_counter()
            card = generate(out, num_series=a.num_series, seed=0, height=a.height, width=a.width,
                            shard_size=a.shard_size, overwrite=True)
            dt, c1 = time.perf_counter() - t0, _tree_cpu_seconds(os.getpid())
            assert card["num_series"] == read_card(out)["num_series"] == a.num_series
            size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
            re = a.num_series / dt
            print(f"e2e generate #{i + 1} ({'cold' if i == 0 else 'warm'} workers): {a.num_series} series "
                  f"in {len(card['shards'])} shards ({size / 2**20:.1f} MiB) in {dt:6.1f} s = "
                  f"{re:7.1f} series/s; x{re / r1:.2f} of 1 process, {100 * re / rp:.0f}% of the "
                  f"{p}-process pool; with ray.init {dt + t_init:.1f} s")
            if c0 is not None and c1 is not None:
                cpu = c1 - c0
                print(f"    CPU: {cpu:.1f} CPU-s = {1000 * cpu / a.num_series:.2f} CPU-ms/series "
                      f"(make_series alone {1000 * cpu_per_series:.2f}); idle-machine bound "
                      f"{cpu / p:.1f} s on {p} CPUs")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        ray.shutdown()


if __name__ == "__main__":
    main()
