"""How far can autoregressive rollout be trusted? Simulated pines, ages 10..50.

    python benchmarks/horizon_trust.py [N_SERIES=900] [EPOCHS=25] [OUT.json]

Train on ages 10..30 only (like the served model: in_frames=4 -> next frames), then roll out from
ages 10..25 to 30, 35, 40 on held-out series and compare per-age MSE (0-255) with persistence
(repeat age 25) and per-pixel linear extrapolation (rolled out the same way).
"""
import sys, time
sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.abspath(__file__))))
import numpy as np, torch
from crnn.config import load_config
from crnn.generate import generate_rows
from crnn.model import ModelConfig, build_model, rollout
from crnn.shards import torch_frames
from crnn.storage import write_json
from crnn.loop import fit_plain

AGES = (10, 15, 20, 25, 30, 35, 40, 45, 50)
N = int(sys.argv[1]) if len(sys.argv) > 1 else 900
EPOCHS = int(sys.argv[2]) if len(sys.argv) > 2 else 25
torch.set_num_threads(1)
t0 = time.time()
rows = generate_rows(range(N), base_seed=123, ages=AGES, height=32, width=16)
frames = np.stack([r["frames"] for r in rows])
split = np.array([r["split"] for r in rows])
tr, va, te = frames[split == "train"], frames[split == "val"], frames[split == "test"]
print(f"simulated {N} series in {time.time()-t0:.0f}s: train {len(tr)} val {len(va)} test {len(te)}", flush=True)

def mse_per_age(pred_u, truth):  # pred float [0,1] (B,K,C,H,W); truth uint8 (B,K,H,W,C)
    p = np.rint(pred_u.numpy().astype(np.float64) * 255.0).clip(0, 255).transpose(0, 1, 3, 4, 2)
    return [float(((p[:, k] - truth[:, k].astype(np.float64)) ** 2).mean()) for k in range(truth.shape[1])]

x = torch_frames(te[:, :4])
truth = te[:, 4:9]
res = {}
with torch.inference_mode():
    for kind in ("persistence", "linear"):
        m = build_model(ModelConfig(kind=kind))
        res[kind] = mse_per_age(rollout(m, x, 5), truth)
variants = {
    "paper-style (non-residual, small)": dict(),
    "residual (strong preset, small)": {"model.residual": True, "model.conv_activation": "relu",
        "model.recurrent_activation": "sigmoid", "model.dropout": 0.1, "model.recurrent_dropout": 0.0,
        "train.optimizer": "adamw", "train.lr": 2e-3, "train.schedule": "cosine", "train.warmup_epochs": 1,
        "train.grad_clip": 1.0},
}
for name, extra in variants.items():
    cfg = load_config(overrides={"model.conv_filters": [16, 32], "model.lstm_units": 128, "train.epochs": EPOCHS,
                                 "train.batch_size": 32, **extra})
    t1 = time.time()
    model, hist = fit_plain(cfg, tr[:, :5], va[:, :5])
    model.eval()
    with torch.inference_mode():
        roll = mse_per_age(rollout(model, x, 5), truth)
        # one step from real frames 15..30 -> 35 (no fed-back forecast), for reference
        one35 = mse_per_age(rollout(model, torch_frames(te[:, 1:5]), 1), te[:, 5:6])[0]
        one40 = mse_per_age(rollout(model, torch_frames(te[:, 2:6]), 1), te[:, 6:7])[0]
    res[name] = roll
    res[name + " one-step from real frames (35, 40)"] = [one35, one40]
    print(f"{name}: trained {EPOCHS} epochs in {time.time()-t1:.0f}s, val_mse_255 {hist[-1]['val_mse_255']:.1f}", flush=True)
print("MSE (0-255 pixels) on", len(te), "held-out series; rollout from ages 10..25, forecast ages 30, 35, 40, 45, 50")
for k, v in res.items():
    print(f"  {k:55s} " + "  ".join(f"{a:8.1f}" for a in v))
if len(sys.argv) > 3:
    write_json(sys.argv[3], res)
