"""The model zoo table: every forecaster family's cost, and its quality beside the baselines and
the simulator's floor.

    # cost: parameters, FLOPs per series, training and inference series/s, per family and size
    python benchmarks/zoo.py cost --sizes 32x16,64x64 [--presets paper,strong,convlstm,predrnn,simvp] [--json O]
    # quality: per-age MSE/MAE/SSIM of evaluated models (jobs/evaluate.py or train --evaluate
    # metrics.json files), the baselines of the first one, and the floor (benchmarks/floor.py --json)
    python benchmarks/zoo.py quality --eval simvp=runs/simvp/eval/metrics.json ... --floor floor.json

Cost: each preset's model at each size (``model.height/width`` overridden; the paper CRNN's
Flatten->LSTM grows with the pixel count, the convolutional families do not). FLOPs are torch's
``FlopCounterMode`` count (``crnn.model.count_flops``: forward, and forward + backward for a
training step). Training series/s: AdamW steps on random batches (batch 32, fp32), and inference
series/s (batch 256, ``inference_mode``), all models timed in interleaved rounds so a noisy shared
machine slows them alike; the median round is reported. Compare ratios within one run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from crnn.config import load_config  # noqa: E402
from crnn.loop import autocast as loop_autocast  # noqa: E402
from crnn.model import build_model, count_flops, count_parameters  # noqa: E402
from crnn.storage import write_json  # noqa: E402

DEFAULT_PRESETS = ("paper", "strong", "convlstm", "predrnn", "simvp")


def _parse_sizes(text: str) -> list[tuple[int, int]]:
    try:
        out = [tuple(int(v) for v in s.lower().split("x")) for s in text.split(",")]
    except ValueError:
        raise ValueError(f"--sizes: expected HxW[,HxW...], got {text!r}") from None
    if any(len(s) != 2 or min(s) < 1 for s in out):
        raise ValueError(f"--sizes: expected HxW[,HxW...] with positive sizes, got {text!r}")
    return out


def _time(fn, steps: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` (CUDA: synchronised before and after, kernels are asynchronous)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - t0) / steps


def measure_cost(presets, sizes, rounds: int = 3, steps: int = 3, batch: int = 32, infer_batch: int = 256,
                 threads: int = 0, device: str = "cpu", precision: str = "fp32") -> list[dict]:
    """Per preset and size: params, FLOPs, training and inference series/s (median of ``rounds``
    interleaved rounds) and, on CUDA, peak device memory of a training step and of inference (bytes).
    ``precision="bf16"`` runs both under bf16 autocast, as ``train.precision=bf16`` does."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    autocast = functools.partial(loop_autocast, dev, precision)  # as train.precision does
    entries = []
    for preset in presets:
        for h, w in sizes:
            cfg = load_config(preset, overrides={"model.height": h, "model.width": w})
            model = build_model(cfg.model)
            entries.append({"preset": preset, "kind": cfg.model.kind, "size": f"{h}x{w}", "cfg": cfg,
                            "model": model, "params": count_parameters(model),
                            "flops_fwd": count_flops(cfg.model), "flops_train": count_flops(cfg.model, backward=True),
                            "train_s": [], "infer_s": [], "train_peak": 0, "infer_peak": 0})
    for _ in range(rounds):
        for e in entries:
            m, c = e["model"].to(dev), e["cfg"].model
            x = torch.rand(batch, 4, c.channels, c.height, c.width, device=dev)
            y = torch.rand_like(x)
            opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
            m.train()

            def step():
                with autocast():
                    loss = torch.nn.functional.mse_loss(m(x).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            if cuda:
                torch.cuda.reset_peak_memory_stats(dev)
            step()  # warm-up
            e["train_s"].append(_time(step, steps, dev) / batch)
            if cuda:
                e["train_peak"] = max(e["train_peak"], torch.cuda.max_memory_allocated(dev))
            opt = None  # its state freed: the next model's peak is its own
            xi = torch.rand(infer_batch, 4, c.channels, c.height, c.width, device=dev)
            m.eval()
            with torch.inference_mode(), autocast():
                m(xi[:8])
                if cuda:
                    torch.cuda.reset_peak_memory_stats(dev)
                e["infer_s"].append(_time(lambda: m(xi), max(1, steps // 3), dev) / infer_batch)
            if cuda:
                e["infer_peak"] = max(e["infer_peak"], torch.cuda.max_memory_allocated(dev))
            e["model"] = m.cpu()  # one model on the device at a time: peaks are each model's own
            if cuda:
                torch.cuda.empty_cache()
    rows = []
    for e in entries:
        rows.append({k: e[k] for k in ("preset", "kind", "size", "params", "flops_fwd", "flops_train")}
                    | {"train_series_per_s": 1 / statistics.median(e["train_s"]),
                       "infer_series_per_s": 1 / statistics.median(e["infer_s"]),
                       "device": device, "precision": precision, "batch": batch, "infer_batch": infer_batch}
                    | ({"train_peak_mib": e["train_peak"] / 2**20, "infer_peak_mib": e["infer_peak"] / 2**20}
                       if cuda else {}))
    return rows


def format_cost(rows: list[dict]) -> str:
    peak = any("train_peak_mib" in r for r in rows)
    lines = ["| preset | family | size | params | GFLOP/series fwd | GFLOP/series train | train series/s | "
             "inference series/s |" + (" peak MiB train / inference |" if peak else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|" if peak else "")]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['kind']} | {r['size']} | {r['params']:,} | {r['flops_fwd'] / 1e9:.3f} | "
                     f"{r['flops_train'] / 1e9:.3f} | {r['train_series_per_s']:.0f} | {r['infer_series_per_s']:.0f} |"
                     + (f" {r.get('train_peak_mib', 0):.0f} / {r.get('infer_peak_mib', 0):.0f} |" if peak else ""))
    return "\n".join(lines)


def quality_table(evals: dict[str, dict], floor: dict | None = None) -> str:
    """Markdown: per forecast age MSE / MAE / SSIM of each evaluated model, then the baselines of the
    first evaluation (the same test split), then the floor."""
    first = next(iter(evals.values()))
    ages = [str(a) for a in first["ages"]]
    rows: list[tuple[str, dict]] = [(name, ev["results"]["model"]) for name, ev in evals.items()]
    rows += [(b, first["results"][b]) for b in first["results"] if b != "model"]
    head = "| forecaster | " + " | ".join(f"age {a} MSE / MAE / SSIM" for a in ages) + " | age-30 MSE (field: sum over frame, [0,1]) |"
    lines = [head, "|---" * (len(ages) + 2) + "|"]
    for name, res in rows:
        cells = [f"{res[a]['mse']:.1f} / {res[a]['mae']:.2f} / " + ("n/a" if res[a].get("ssim") is None  # frames
                 else f"{res[a]['ssim']:.3f}") for a in ages]                                  # under SSIM's window
        last = res[ages[-1]]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {last.get('mse_frame01', float('nan')):.3f} |")
    if floor:
        by_age = {str(r["forecast_age"]): r for r in floor["floors"]}
        cells = [f"{by_age[a]['var_unbiased']:.2f} / – / –" if a in by_age else "–" for a in ages]
        tail = by_age.get(ages[-1], {}).get("sum01")
        lines.append("| simulator floor (benchmarks/floor.py) | " + " | ".join(cells)
                     + (f" | {tail:.3f} |" if tail is not None else " | – |"))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cost", help="parameters, FLOPs, training/inference series/s")
    c.add_argument("--presets", default=",".join(DEFAULT_PRESETS))
    c.add_argument("--sizes", default="32x16,64x64")
    c.add_argument("--rounds", type=int, default=3)
    c.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    c.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    c.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    c.add_argument("--batch", type=int, default=32, help="training batch (series)")
    c.add_argument("--infer-batch", type=int, default=256, help="inference batch (series)")
    c.add_argument("--steps", type=int, default=3, help="timed training steps per round")
    c.add_argument("--json", help="also write the rows here")
    q = sub.add_parser("quality", help="per-age quality table from evaluation metrics.json files")
    q.add_argument("--eval", action="append", required=True, metavar="NAME=METRICS_JSON")
    q.add_argument("--floor", help="benchmarks/floor.py --json output")
    a = p.parse_args(argv)
    if a.cmd == "cost":
        try:
            sizes = _parse_sizes(a.sizes)
            presets = [s for s in a.presets.split(",") if s]
            for s in presets:
                load_config(s)
        except (KeyError, ValueError) as e:
            p.error(str(e.args[0] if isinstance(e, KeyError) else e))
        if a.device.startswith("cuda") and not torch.cuda.is_available():
            p.error(f"--device {a.device}: torch sees no CUDA device")
        rows = measure_cost(presets, sizes, rounds=a.rounds, steps=a.steps, batch=a.batch, infer_batch=a.infer_batch,
                            threads=a.threads, device=a.device, precision=a.precision)
        where = torch.cuda.get_device_name(a.device) if a.device.startswith("cuda") else f"{torch.get_num_threads()} threads"
        print(f"# {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {a.device} ({where}), "
              f"{a.precision}, batch {a.batch} / inference {a.infer_batch}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        print(format_cost(rows))
        if a.json:
            write_json(a.json, rows)
        return 0
    evals = {}
    for item in a.eval:
        name, sep, path = item.partition("=")
        if not sep or not os.path.exists(path):
            p.error(f"--eval {item!r}: expected NAME=path/to/metrics.json (an existing file)")
        with open(path) as f:
            evals[name] = json.load(f)
    floor = None
    if a.floor:
        with open(a.floor) as f:
            floor = json.load(f)
    print(quality_table(evals, floor))
    return 0


if __name__ == "__main__":
    sys.exit(main())
