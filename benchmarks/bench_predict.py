"""Offline forecasting throughput: jobs/predict.py's pipeline vs the direct model call (no assertions).

Publishes --num-series random series as Parquet shards (speed does not depend on the pixels), then
times, in one run: (1) ``crnn.predict.predict_dataset`` end to end (Ray Data read -> map_batches on
an actor pool -> Parquet write, atomic publish; actor start-up included) and (2) the same series
through ``crnn.inference.forecast_uint8`` in this process at the same batch size, with the same torch
threads (CPU) or device (GPU).

    python benchmarks/bench_predict.py                          # paper-size CRNN, random weights, CPU
    python benchmarks/bench_predict.py --num-series 8192 --num-gpus 1 --batch-size 1024
    python benchmarks/bench_predict.py --model runs/x/model --data data/pines
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def make_data(path: str, n: int, shard_size: int, h: int, w: int, c: int, ages=(10, 15, 20, 25, 30)) -> str:
    import ray.data

    from crnn.shards import base_card, publish, split_counts, split_for_index, write_ray_dataset

    def batch(b: dict) -> dict:
        idx = b["id"]
        rng = np.random.default_rng(int(idx[0]))
        k = len(idx)
        return {"series_id": np.array([f"rand-{i:06d}" for i in idx], dtype=object),
                "seed": idx.astype(np.int64), "split": np.array([split_for_index(int(i)) for i in idx], dtype=object),
                "ages": np.tile(np.asarray(ages, np.int32), (k, 1)),
                "frames": rng.integers(0, 256, (k, len(ages), h, w, c), dtype=np.uint8),
                "height": np.full(k, h, np.int32), "width": np.full(k, w, np.int32), "channels": np.full(k, c, np.int32)}

    ds = ray.data.range(n, override_num_blocks=max(1, -(-n // shard_size))).map_batches(batch, batch_size=None)
    card = base_card(num_series=n, ages=ages, height=h, width=w, channels=c, splits=split_counts(n),
                     source="bench_predict random frames")
    publish(lambda d: write_ray_dataset(ds, d), path, card)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory (default: a random-weight model of --size)")
    ap.add_argument("--size", choices=("paper", "quick"), default="paper")
    ap.add_argument("--data", help="dataset directory (default: --num-series random series)")
    ap.add_argument("--num-series", type=int, default=1024)
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--horizon", type=int, default=None, help="rollout steps (default: window forecast)")
    ap.add_argument("--concurrency", type=int, default=1, help="forecasting actors")
    ap.add_argument("--num-cpus", type=float, default=None, help="CPUs per actor (default: all CPUs / actors)")
    ap.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per actor")
    a = ap.parse_args()

    import ray

    from crnn.inference import forecast_uint8, load_model, pick_device, setup_torch
    from crnn.predict import predict_dataset
    from crnn.shards import read_card, read_numpy

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_serve import make_model

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    cpus = os.cpu_count() or 1
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    tmp = tempfile.mkdtemp(prefix="bench-predict-")
    try:
        model_path = a.model or make_model(a.size, os.path.join(tmp, "model"))
        device = pick_device("auto", a.num_gpus)
        per_cpu = a.num_cpus if a.num_cpus is not None else max(1.0, (cpus - 1) // a.concurrency)
        threads = max(1, int(per_cpu))
        data = a.data or make_data(os.path.join(tmp, "data"), a.num_series, a.shard_size, 32, 16, 3)
        n = read_card(data)["num_series"]
        print(f"load average {os.getloadavg()[0]:.1f}; {cpus} CPUs; device {device}"
              f"{' ' + torch.cuda.get_device_name() if device == 'cuda' else ''}; model {model_path}; "
              f"{n} series; batch {a.batch_size}; horizon {a.horizon}")

        t0 = time.perf_counter()
        predict_dataset(model_path, data, os.path.join(tmp, "out"), horizon=a.horizon, batch_size=a.batch_size,
                        concurrency=a.concurrency, num_cpus=per_cpu, num_gpus=a.num_gpus)
        t_job = time.perf_counter() - t0
        print(f"predict_dataset ({a.concurrency} actor(s), {per_cpu:g} CPUs / {a.num_gpus:g} GPUs each): "
              f"{t_job:.2f} s, {n / t_job:.0f} series/s (read + forecast + write + publish, actor start-up included)")

        frames = read_numpy(data, columns=["frames"])["frames"]
        setup_torch(device, threads)  # as each predict_dataset actor does
        model, cfg, _ = load_model(model_path, device)
        k = cfg.data.in_frames
        forecast_uint8(model, frames[:a.batch_size, :k], k, a.horizon, device)  # warm-up
        t0 = time.perf_counter()
        for i in range(0, n, a.batch_size):
            forecast_uint8(model, frames[i:i + a.batch_size, :k], k, a.horizon, device)
        t_direct = time.perf_counter() - t0
        print(f"direct forecast_uint8 in-process ({threads} torch threads, {device}): {t_direct:.2f} s, "
              f"{n / t_direct:.0f} series/s")
        print(f"job / direct throughput: {t_direct / t_job:.2f}x; load average {os.getloadavg()[0]:.1f}")
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
