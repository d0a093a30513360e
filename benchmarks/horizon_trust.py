"""How far can autoregressive rollout be trusted? Simulated pines, ages 10..50.

    python benchmarks/horizon_trust.py [N_SERIES=900] [EPOCHS=25] [OUT.json]

Train on ages 10..30 only (like the served model: in_frames=4 -> next frames), then roll out from
ages 10..25 to 30, 35, 40 on held-out series and compare per-age MSE (0-255) with persistence
(repeat age 25) and per-pixel linear extrapolation (rolled out the same way).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from crnn.config import load_config  # noqa: E402
from crnn.generate import generate_rows  # noqa: E402
from crnn.inference import to_uint8  # noqa: E402
from crnn.loop import fit_plain  # noqa: E402
from crnn.model import ModelConfig, build_model, rollout  # noqa: E402
from crnn.shards import torch_frames  # noqa: E402
from crnn.storage import write_json  # noqa: E402

AGES = (10, 15, 20, 25, 30, 35, 40, 45, 50)
VARIANTS = {
    "paper-style (non-residual, small)": dict(),
    "residual (strong preset, small)": {"model.residual": True, "model.conv_activation": "relu",
                                        "model.recurrent_activation": "sigmoid", "model.dropout": 0.1,
                                        "model.recurrent_dropout": 0.0, "train.optimizer": "adamw", "train.lr": 2e-3,
                                        "train.schedule": "cosine", "train.warmup_epochs": 1, "train.grad_clip": 1.0},
}


def mse_per_age(pred: torch.Tensor, truth: np.ndarray) -> list[float]:
    """pred float (B, K, C, H, W) in [0, 1], truth uint8 (B, K, H, W, C) -> MSE on 0-255 per k, the
    forecast converted to uint8 first, as predict and Serve deliver it."""
    p = to_uint8(pred.numpy()).astype(np.float64)
    return [float(((p[:, k] - truth[:, k].astype(np.float64)) ** 2).mean()) for k in range(truth.shape[1])]


def main(argv: list[str]) -> dict[str, list[float]]:
    n = int(argv[0]) if argv else 900
    epochs = int(argv[1]) if len(argv) > 1 else 25
    torch.set_num_threads(1)
    t0 = time.time()
    rows = generate_rows(range(n), base_seed=123, ages=AGES, height=32, width=16)
    frames = np.stack([r["frames"] for r in rows])
    split = np.array([r["split"] for r in rows])
    tr, va, te = frames[split == "train"], frames[split == "val"], frames[split == "test"]
    print(f"simulated {n} series in {time.time() - t0:.0f}s: train {len(tr)} val {len(va)} test {len(te)}", flush=True)

    x = torch_frames(te[:, :4])
    truth = te[:, 4:9]
    res = {}
    with torch.inference_mode():
        for kind in ("persistence", "linear"):
            res[kind] = mse_per_age(rollout(build_model(ModelConfig(kind=kind)), x, 5), truth)
    for name, extra in VARIANTS.items():
        cfg = load_config(overrides={"model.conv_filters": [16, 32], "model.lstm_units": 128, "train.epochs": epochs,
                                     "train.batch_size": 32, **extra})
        t1 = time.time()
        model, hist = fit_plain(cfg, tr[:, :5], va[:, :5])
        model.eval()
        with torch.inference_mode():
            res[name] = mse_per_age(rollout(model, x, 5), truth)
            # one step from real frames 15..30 -> 35 (no fed-back forecast), for reference
            one35 = mse_per_age(rollout(model, torch_frames(te[:, 1:5]), 1), te[:, 5:6])[0]
            one40 = mse_per_age(rollout(model, torch_frames(te[:, 2:6]), 1), te[:, 6:7])[0]
        res[name + " one-step from real frames (35, 40)"] = [one35, one40]
        print(f"{name}: trained {epochs} epochs in {time.time() - t1:.0f}s, val_mse_255 {hist[-1]['val_mse_255']:.1f}",
              flush=True)
    print("MSE (0-255 pixels) on", len(te), "held-out series; rollout from ages 10..25, forecast ages 30, 35, 40, 45, 50")
    for k, v in res.items():
        print(f"  {k:55s} " + "  ".join(f"{a:8.1f}" for a in v))
    if len(argv) > 2:
        write_json(argv[2], res)
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
