"""Training throughput: the Ray Train worker loop vs the plain loop, same model and batch, one run.

    python benchmarks/bench_train.py --data data/pines --series 256 --epochs 3            # CPU
    python benchmarks/bench_train.py --data data/pines --device cuda --batch 1024 \\
        --precision bf16 --compile --epochs 8                                               # GPU
    ... --compile --compile-mode reduce-overhead     # CUDA graphs: one launch per step's kernels

Both loops run the same ``run_epoch``/``train_step``; series/s is the steady state (median of the
epochs after the first, which pays for compilation and warm-up). The Ray run also reports its
start-up + teardown overhead: the wall time of ``fit`` minus the time spent in epochs.
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--preset", default="paper")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode (train.compile_mode)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--series", type=int, default=0, help="cap on training series (0 = all)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads in both loops")
    p.add_argument("--modes", default="plain,ray-stream,ray-cache")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)

    import torch

    from crnn.config import load_config
    from crnn.runtime import init_ray
    from crnn.shards import read_numpy
    from crnn.storage import write_json
    from crnn.loop import fit_plain
    from crnn.rundir import epoch_summary, read_metrics_csv
    from crnn.train import fit

    gpu = a.device.startswith("cuda")
    cfg = load_config(a.preset, overrides={
        "data.path": a.data, "data.max_train_series": a.series, "data.max_val_series": 64,
        "train.epochs": a.epochs, "train.batch_size": a.batch, "train.precision": a.precision,
        "train.compile": a.compile, "train.compile_mode": a.compile_mode, "train.use_gpu": gpu,
        "train.torch_threads": a.threads, "train.checkpoint_every": 0})
    results = {"device": torch.cuda.get_device_name() if gpu else f"cpu x{os.cpu_count()}",
               "batch": a.batch, "precision": a.precision, "compile": a.compile, "preset": a.preset,
               "compile_mode": a.compile_mode}
    modes = a.modes.split(",")
    if "plain" in modes:
        frames = read_numpy(a.data, split="train", columns=["frames"])["frames"]
        if a.series:
            frames = frames[: a.series]
        t0 = time.perf_counter()
        _, hist = fit_plain(cfg, frames, None, device=a.device)
        results["plain"] = {"series_per_s": epoch_summary(hist)["steady_series_per_s"],
                            "wall_s": time.perf_counter() - t0,
                            "epochs": [round(h["train_series_per_s"], 1) for h in hist]}
        print("plain", json.dumps(results["plain"]), flush=True)
    if any(m.startswith("ray") for m in modes):
        init_ray(num_cpus=None if gpu else 2, log_to_driver=False)
    for mode in [m for m in modes if m.startswith("ray")]:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            fit(cfg, out, cache=(mode == "ray-cache"))
            wall = time.perf_counter() - t0
            rows = read_metrics_csv(os.path.join(out, "metrics.csv"))
        summ = epoch_summary(rows)
        results[mode] = {"series_per_s": summ["steady_series_per_s"], "wall_s": wall,
                         "overhead_s": wall - summ["epochs_s"],
                         "epochs": [round(float(r["train_series_per_s"]), 1) for r in rows]}
        print(mode, json.dumps(results[mode]), flush=True)
    if "plain" in results:
        for mode in [m for m in results if m.startswith("ray")]:
            results[mode]["ratio_vs_plain"] = results[mode]["series_per_s"] / results["plain"]["series_per_s"]
            print(f"{mode}: {results[mode]['series_per_s']:.1f} series/s = "
                  f"{results[mode]['ratio_vs_plain']:.2f}x plain ({results['plain']['series_per_s']:.1f})")
    if a.json:
        write_json(a.json, results)
    return results


if __name__ == "__main__":
    main()
