"""BENCHMARKS.md part 13: one convlstm-cpu training step (4 x 64 cells, step weights 1,1,1,2, batch 8),
eager vs torch.compile, bf16 and fp32, on random frames. Run from the repository root:

    python benchmarks/results/2026-12-07-cpu-3/compile_step.py 1 eager-bf16,eager-fp32
    python benchmarks/results/2026-12-07-cpu-3/compile_step.py 1 compile-bf16,compile-fp32
"""
import sys, time, torch, os
sys.path.insert(0, os.path.abspath(__file__).rsplit("/benchmarks/", 1)[0])
from crnn.config import load_config
from crnn.model import build_model
from crnn.loop import make_optimizer, train_step
threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
torch.set_num_threads(threads)
ov = {"model.convlstm.hidden": [64,64,64,64], "train.step_weights": [1,1,1,2]}
def run(name, precision, comp, mode=None, steps=60):
    cfg = load_config("convlstm-cpu", overrides={**ov, "train.precision": precision})
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    opt = make_optimizer(model, cfg)
    m = torch.compile(model, mode=mode) if comp else model
    x = torch.rand(cfg.train.batch_size, 5, 3, cfg.model.height, cfg.model.width)
    t0 = time.perf_counter()
    for _ in range(3): train_step(m, opt, None, x, cfg)
    warm = time.perf_counter() - t0
    ts = []
    for r in range(3):
        t0 = time.perf_counter()
        for _ in range(steps): train_step(m, opt, None, x, cfg)
        ts.append((time.perf_counter() - t0) / steps)
    print(f"{name:28s} warm {warm:6.1f}s  step {min(ts)*1e3:7.1f} ms  series/s {cfg.train.batch_size/min(ts):6.1f}", flush=True)
which = sys.argv[2].split(",") if len(sys.argv) > 2 else ["eager-bf16","eager-fp32","compile-bf16","compile-fp32"]
for w in which:
    kind, prec = w.split("-")
    run(w, prec, kind == "compile")
