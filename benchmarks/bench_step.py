"""Training-step throughput of a preset's model under optimizer and precision variants, side by side.

    python benchmarks/bench_step.py [--batch 16] [--steps 60] [--device cpu] [--compile] [--bf16]
    python benchmarks/bench_step.py --preset demo --batch 4 --muon            # Muon's cost per step
    python benchmarks/bench_step.py --preset convlstm-cpu --batch 8 --muon --compile \
        model.convlstm.hidden=64,64,64,64

Measures ``crnn.loop.train_step`` (forward, MSE, backward, optimizer step) on random data with
a preset's model (``--preset``, default ``paper``; config overrides after the options), for torch's
Adam (AdamW when the preset uses AdamW or Muon) as a per-parameter loop (torch's CPU default), the multi-tensor
``foreach`` path, and the ``fused`` kernel that ``crnn.loop.make_optimizer`` uses; with ``--muon``
also ``train.optimizer=muon`` (``crnn.optim.MuonAdamW``: its Newton-Schulz orthogonalisation is the
extra cost). The precision is the preset's (``train.precision``).
With ``--bf16`` the fused variant also runs under bf16 autocast (``train.precision=bf16``; fast on
CPUs with AVX512-BF16 or AMX, slow on those without). The variants take turns (``--rounds``) so a
noisy machine affects them alike; the ratio to the loop variant is the number to read.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile + fused Adam")
    p.add_argument("--bf16", action="store_true", help="also time fused Adam under bf16 autocast")
    p.add_argument("--muon", action="store_true", help="also time train.optimizer=muon")
    p.add_argument("--preset", default="paper", help="the model and precision of this preset (default paper)")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. model.convlstm.hidden=64,64,64,64")
    a = p.parse_args(argv)

    import torch

    from crnn.config import load_config, parse_overrides
    from crnn.model import build_model
    from crnn.loop import make_optimizer, train_step

    if a.threads:
        torch.set_num_threads(a.threads)
    overrides = parse_overrides(a.overrides)
    cfg = load_config(a.preset, overrides=overrides)
    dev = torch.device(a.device)
    x = torch.rand(a.batch, cfg.data.in_frames + 1, cfg.model.channels, cfg.model.height, cfg.model.width, device=dev)
    torch.manual_seed(0)
    model = build_model(cfg.model).to(dev).train()
    lr = cfg.train.lr  # the baselines: the preset's Adam, or AdamW (for adamw and muon presets)
    adam = torch.optim.Adam if cfg.train.optimizer in ("adam", "nadam") else torch.optim.AdamW
    fused_cfg = load_config(a.preset, overrides={**overrides, "train.optimizer": adam.__name__.lower()})
    variants = {  # name: (model, optimizer, config of the step)
        "loop": (model, adam(model.parameters(), lr=lr, foreach=False), cfg),
        "foreach": (model, adam(model.parameters(), lr=lr, foreach=True), cfg),
        "fused (make_optimizer)": (model, make_optimizer(model, fused_cfg), cfg),
    }
    if a.compile:
        variants["compiled + fused"] = (torch.compile(model), make_optimizer(model, fused_cfg), cfg)
    if a.bf16:
        variants["fused + bf16 autocast"] = (model, make_optimizer(model, fused_cfg),
                                             load_config(a.preset, overrides={**overrides, "train.precision": "bf16"}))
    if a.muon:
        muon_cfg = load_config(a.preset, overrides={**overrides, "train.optimizer": "muon"})
        variants["muon (MuonAdamW)"] = (model, make_optimizer(model, muon_cfg), cfg)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for m, opt, c in variants.values():  # warm-up (and compilation)
        for _ in range(5):
            train_step(m, opt, None, x, c)
    sync()
    rates = {k: [] for k in variants}
    for _ in range(a.rounds):
        for name, (m, opt, c) in variants.items():
            t = time.perf_counter()
            for _ in range(a.steps):
                train_step(m, opt, None, x, c)
            sync()
            rates[name].append(a.steps * a.batch / (time.perf_counter() - t))
    base = statistics.median(rates["loop"])
    print(f"{a.preset} model ({cfg.model.kind}, {cfg.train.precision}), batch {a.batch}, {a.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {a.rounds} rounds x {a.steps} steps")
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"  {name:24s} {med:8.1f} series/s  {med / base:5.2f}x")


if __name__ == "__main__":
    main()
