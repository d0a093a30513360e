"""Recipes side by side on one machine: the paper's, fast ones, and the strong variant.

    python benchmarks/recipes.py --data data/pines --out runs/recipes --device cuda \\
        --runs strong-fast,paper-warmup,fast,fast-b128,fast-b64,strong,paper [--json summary.json]
    python benchmarks/recipes.py --data data/pines --out runs/recipes-cpu --device cpu \\
        --runs strong-fast,strong-fast-s1,paper-warmup train.torch_threads=2

Each run is a real Ray Train ``fit`` (one worker; on the GPU with ``--device cuda``) followed by
``evaluate`` on the test split. Per run it records the wall time of ``fit`` (start-up, epochs,
validation, checkpoints, teardown), the time spent in training epochs, the test metrics at age 30,
and persistence's. When the reference run (``--reference``, the paper recipe with one warm-up epoch:
the published recipe does not train on our data, README "Results") is among the runs, each other
run gets a time-to-quality verdict: whether its age-30 test MSE reached the reference's, and its
training-epoch time (and ``fit`` wall time) as a fraction of the reference's. The goal is <= 1/20.
The summary is rewritten after every run; ``--resume`` keeps the runs already in it (a second
call finishes what a first, cut short, left).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RUNS = {
    "paper": ("paper", {}),
    # the paper's recipe kills its hard-sigmoid LSTM gates in the first epoch on our data (README,
    # Results); one epoch of linear warm-up is the smallest change that trains: the reference
    # quality for time-to-quality
    "paper-warmup": ("paper", {"train.warmup_epochs": 1}),
    "fast": ("fast", {}),
    # larger LRs kill the hard-sigmoid gates (README, Results): the batch changes, the LR stays 1e-3
    "fast-b512": ("fast", {"train.batch_size": 512, "train.warmup_epochs": 8, "train.epochs": 60}),
    "fast-b128": ("fast", {"train.batch_size": 128, "train.warmup_epochs": 2, "train.epochs": 40}),
    "fast-b64": ("fast", {"train.batch_size": 64, "train.warmup_epochs": 1, "train.epochs": 40}),
    "strong": ("strong", {}),
    # time to quality: bf16, 10 epochs (crnn.config PRESETS); a second seed shows it is not luck
    "strong-fast": ("strong-fast", {}),
    "strong-fast-s1": ("strong-fast", {"train.seed": 1}),
    # the forecaster families (crnn/models/), 10 epochs in bf16 like strong-fast: the same budget
    "convlstm-fast": ("convlstm-fast", {"train.precision": "bf16"}),
    "simvp-fast": ("simvp-fast", {"train.precision": "bf16"}),
    "predrnn-fast": ("predrnn-fast", {"train.precision": "bf16"}),
    # the CPU recipes (batch 8, bf16, 10 epochs; BENCHMARKS.md, "Why the best model ...", parts 5-6)
    "convlstm-cpu": ("convlstm-cpu", {}),
    "convlstm-cpu-e5": ("convlstm-cpu", {"train.epochs": 5}),   # about strong-fast's wall time on a CPU
    "predrnn-cpu": ("predrnn-cpu", {}),
    # the same budget as convlstm-cpu-e5, spent otherwise (BENCHMARKS.md, "Why the best model ...",
    # part 7): narrower cells for more epochs, a larger learning rate, a shorter warm-up
    "convlstm-cpu-h32-e10": ("convlstm-cpu", {"model.convlstm.hidden": [32, 32, 32]}),
    "convlstm-cpu-h32-e10-lr4": ("convlstm-cpu", {"model.convlstm.hidden": [32, 32, 32], "train.lr": 4e-3}),
    "convlstm-cpu-h48-e7": ("convlstm-cpu", {"model.convlstm.hidden": [48, 48, 48], "train.epochs": 7}),
    "convlstm-cpu-e5-lr4": ("convlstm-cpu", {"train.epochs": 5, "train.lr": 4e-3}),
    "convlstm-cpu-e5-w02": ("convlstm-cpu", {"train.epochs": 5, "train.warmup_epochs": 0.2}),
    # mirrored training series (train.augment=hflip; part 7, measured again about the pines' trunk
    # column in part 8): against over-fitting 3,270 trees
    "convlstm-cpu-hflip": ("convlstm-cpu", {"train.augment": "hflip"}),
    "convlstm-cpu-e5-hflip": ("convlstm-cpu", {"train.epochs": 5, "train.augment": "hflip"}),
    # twice the loss weight on the last forecast step (train.step_weights; part 9), and with lr 4e-3
    "convlstm-cpu-e5-sw": ("convlstm-cpu", {"train.epochs": 5, "train.step_weights": [1, 1, 1, 2]}),
    "convlstm-cpu-e5-lr4-sw": ("convlstm-cpu", {"train.epochs": 5, "train.lr": 4e-3,
                                                "train.step_weights": [1, 1, 1, 2]}),
    # Muon on the cells' kernels (train.optimizer=muon, crnn/optim.py; part 13): its orthogonalisation
    # costs ~20 % of a step here, so 4 epochs are about the AdamW 5-epoch budget
    "convlstm-cpu-e5-muon": ("convlstm-cpu", {"train.epochs": 5, "train.optimizer": "muon"}),
    "convlstm-cpu-e4-muon": ("convlstm-cpu", {"train.epochs": 4, "train.optimizer": "muon"}),
    "convlstm-cpu-e4-muon-sw": ("convlstm-cpu", {"train.epochs": 4, "train.optimizer": "muon",
                                                 "train.step_weights": [1, 1, 1, 2]}),
    "convlstm-cpu-e4-muon-lr4": ("convlstm-cpu", {"train.epochs": 4, "train.optimizer": "muon", "train.lr": 4e-3}),
    "convlstm-cpu-h32-e8-muon-lr4": ("convlstm-cpu", {"model.convlstm.hidden": [32, 32, 32], "train.epochs": 8,
                                                      "train.optimizer": "muon", "train.lr": 4e-3}),
    # Muon with a fifth of an epoch of warm-up (part 14; AdamW lost 3 % with it in part 7)
    "convlstm-cpu-e4-muon-lr4-w02": ("convlstm-cpu", {"train.epochs": 4, "train.optimizer": "muon", "train.lr": 4e-3,
                                                      "train.warmup_epochs": 0.2}),
    # Muon at batch 16 (part 14): its orthogonalisation is a cost per step, so twice the batch halves it
    # per series (bench_step.py: 104 series/s against 79 at batch 8 with Muon); 5 epochs ~ the budget
    "convlstm-cpu-b16-e5-muon-lr4": ("convlstm-cpu", {"train.batch_size": 16, "train.epochs": 5,
                                                      "train.optimizer": "muon", "train.lr": 4e-3}),
    "convlstm-cpu-b16-e5-muon-lr6": ("convlstm-cpu", {"train.batch_size": 16, "train.epochs": 5,
                                                      "train.optimizer": "muon", "train.lr": 6e-3}),
    # time-aware SimVP (crnn/models/timevp.py) on the regular grid: the same budget as simvp-fast
    "timevp-fast": ("timevp-fast", {"train.precision": "bf16"}),
    "strong-b256": ("strong", {"train.precision": "bf16", "train.batch_size": 256, "train.lr": 3e-3,
                               "train.epochs": 40}),
}


def time_to_quality(summary: dict, reference: str) -> dict:
    """Per run: did its age-30 test MSE reach the reference run's, and at what fraction of its time."""
    ref = summary.get(reference)
    if ref is None:
        return {}
    out = {}
    for name, r in summary.items():
        if name == reference:
            continue
        out[name] = {
            "reached": r["test"]["mse"] <= ref["test"]["mse"],
            "test_mse": r["test"]["mse"], "reference_test_mse": ref["test"]["mse"],
            "train_time_ratio": round(r["train_epochs_s"] / ref["train_epochs_s"], 4),
            "wall_time_ratio": round(r["wall_s"] / ref["wall_s"], 4),
        }
        out[name]["goal_met"] = out[name]["reached"] and out[name]["train_time_ratio"] <= 1 / 20
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--runs", default="strong-fast,paper-warmup,fast,fast-b128,fast-b64,strong,paper")
    p.add_argument("--reference", default="paper-warmup", help="run whose test MSE is the quality bar")
    p.add_argument("--json")
    p.add_argument("--resume", action="store_true",
                   help="keep the runs already in --json (skip them; they still count for the verdicts)")
    p.add_argument("overrides", nargs="*", help="applied to every run (e.g. train.epochs=1 for a smoke test)")
    a = p.parse_args(argv)
    names = a.runs.split(",")
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        p.error(f"unknown run(s) {unknown}; choose from {sorted(RUNS)}")

    from crnn.config import apply, load_config, parse_overrides
    from crnn.evaluate import evaluate
    from crnn.runtime import init_ray
    from crnn.storage import write_json
    from crnn.rundir import epoch_summary, read_metrics_csv
    from crnn.train import fit

    summary = {}
    if a.resume and a.json and os.path.exists(a.json):
        with open(a.json) as f:
            summary = {k: v for k, v in json.load(f).items() if k != "time_to_quality"}
    todo = [n for n in names if n not in summary]
    for name in names:
        if name not in todo:
            print(f"skip {name}: already in {a.json}", flush=True)
    gpu = a.device.startswith("cuda")
    if todo:
        init_ray(log_to_driver=False)
    for name in todo:
        preset, ov = RUNS[name]
        cfg = apply(load_config(preset, overrides=ov),
                    {"data.path": a.data, "train.use_gpu": gpu, **parse_overrides(a.overrides)})
        out = os.path.join(a.out, name)
        t0 = time.perf_counter()
        fit(cfg, out)
        wall = time.perf_counter() - t0
        rows = read_metrics_csv(os.path.join(out, "metrics.csv"))
        res = evaluate(os.path.join(out, "model"), a.data, out=os.path.join(out, "eval"), device=a.device)
        age = str(res["headline_age"])
        summ = epoch_summary(rows)
        train_s = summ["epochs_s"]
        best = min(rows, key=lambda r: float(r["val_loss"]))
        summary[name] = {
            "preset": preset, "overrides": ov, "epochs": len(rows), "best_epoch": int(best["epoch"]),
            "batch_size": cfg.train.batch_size, "lr": cfg.train.lr, "precision": cfg.train.precision,
            "wall_s": round(wall, 1), "train_epochs_s": round(train_s, 1),
            "overhead_s": round(wall - train_s, 1),
            "steady_series_per_s": round(summ["steady_series_per_s"], 1),
            "test": {k: res["results"]["model"][age][k] for k in ("mae", "mse", "psnr", "ssim", "snr")},
            "persistence": {k: res["results"]["persistence"][age][k] for k in ("mae", "mse", "ssim")},
            "linear_mse": res["results"]["linear"][age]["mse"],
            "mse_per_age": {k: v["mse"] for k, v in res["results"]["model"].items()},
            "val_curve": [round(float(r["val_mse_255"]), 1) for r in rows],
        }
        print(name, json.dumps(summary[name]), flush=True)
        if a.json:  # atomically (crnn.storage): a timeout's interrupt never leaves half a file
            write_json(a.json, {**summary, "time_to_quality": time_to_quality(summary, a.reference)})
    ttq = time_to_quality(summary, a.reference)
    for name, v in ttq.items():
        print(f"time-to-quality {name}: test MSE {v['test_mse']:.2f} vs {a.reference} {v['reference_test_mse']:.2f}"
              f" ({'reached' if v['reached'] else 'NOT reached'}), training time x{v['train_time_ratio']:.3f},"
              f" wall x{v['wall_time_ratio']:.3f}, goal (<= 1/20) {'met' if v['goal_met'] else 'NOT met'}", flush=True)
    return {**summary, "time_to_quality": ttq}


if __name__ == "__main__":
    main()
