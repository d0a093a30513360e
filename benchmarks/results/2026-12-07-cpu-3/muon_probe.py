"""Probe (BENCHMARKS.md, "Why the best model...", part 13): torch.optim.Muon (on 2-D views of the kernels)
+ AdamW for the rest vs AdamW alone, the convlstm-cpu recipe in the plain loop (crnn.loop.fit_plain), one
thread, on data/pines; the test split's MSE per forecast age (0-255, rounded to uint8). Run from the
repository root, two at a time:

    python benchmarks/results/2026-12-07-cpu-3/muon_probe.py adamw 3          # AdamW 2e-3
    python benchmarks/results/2026-12-07-cpu-3/muon_probe.py muon-rms 3       # Muon, lr 2e-3 (match_rms_adamw)
    python benchmarks/results/2026-12-07-cpu-3/muon_probe.py muon-rms 3 4e-3  # Muon's lr 4e-3, AdamW's 2e-3
    python benchmarks/results/2026-12-07-cpu-3/muon_probe.py muon 3 0.02      # Muon's own lr scale, 0.02

The class below is the prototype of crnn.optim.MuonAdamW (which train.optimizer=muon now builds).
"""
import sys, time, json, torch, numpy as np
ROOT = __import__("os").path.abspath(__file__).rsplit("/benchmarks/", 1)[0]
sys.path.insert(0, ROOT)
import crnn.loop as loop
from crnn.config import load_config
from crnn.shards import read_numpy

variant, epochs, lr_muon = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
hidden = sys.argv[4] if len(sys.argv) > 4 else "64,64,64"
torch.set_num_threads(1)

class MuonAdamW(torch.optim.Optimizer):
    def __init__(self, model, lr, lr_muon, adjust):
        mats = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
        rest = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
        self.pairs = [(p, p.detach().view(p.shape[0], -1)) for p in mats]
        self.muon = torch.optim.Muon([v for _, v in self.pairs], lr=lr_muon, weight_decay=0.0, adjust_lr_fn=adjust)
        self.adamw = torch.optim.AdamW(rest, lr=lr, weight_decay=0.0, fused=True)
        super().__init__([{"params": mats}, {"params": rest}], {"lr": lr})
        self.param_groups = self.muon.param_groups + self.adamw.param_groups
    def step(self, closure=None):
        for p, v in self.pairs:
            v.grad = None if p.grad is None else p.grad.view(v.shape)
        self.muon.step(); self.adamw.step()
    def zero_grad(self, set_to_none=True):
        for p, v in self.pairs: p.grad = None; v.grad = None
        self.adamw.zero_grad(set_to_none)

orig = loop.make_optimizer
if variant.startswith("muon"):
    adjust = "match_rms_adamw" if variant == "muon-rms" else "original"
    loop.make_optimizer = lambda model, cfg: MuonAdamW(model, cfg.train.lr, lr_muon if lr_muon else cfg.train.lr, adjust)

cfg = load_config("convlstm-cpu", overrides={"train.epochs": epochs, "model.convlstm.hidden": [int(h) for h in hidden.split(",")],
                                             "train.torch_threads": 1})
tr = read_numpy(ROOT + "/data/pines", split="train")["frames"]
va = read_numpy(ROOT + "/data/pines", split="val")["frames"]
te = read_numpy(ROOT + "/data/pines", split="test")["frames"]
t0 = time.time()
model, hist = loop.fit_plain(cfg, tr, va, epoch_callback=lambda r: print(variant, r["epoch"], round(r["train_loss"]*255**2,2), round(r.get("val_mse_255", 0),2), round(r["epoch_s"]), flush=True))
fit_s = time.time() - t0
model.eval()
x = torch.from_numpy(te).permute(0, 1, 4, 2, 3).float().div_(255.0)
err = torch.zeros(4, dtype=torch.float64)
with torch.no_grad():
    for i in range(0, len(x), 128):
        b = x[i:i+128]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred = model(b[:, :4])
        q = torch.round(pred.float().clamp(0, 1) * 255); y = torch.round(b[:, 1:5] * 255)
        err += ((q - y) ** 2).mean((2, 3, 4)).sum(0).double()
res = {"variant": variant, "lr_muon": lr_muon, "epochs": epochs, "hidden": hidden, "fit_s": round(fit_s), "test_mse_by_age": [round(float(v), 2) for v in err / len(x)],
       "val": [round(h.get("val_mse_255", 0), 2) for h in hist]}
print(json.dumps(res), flush=True)
