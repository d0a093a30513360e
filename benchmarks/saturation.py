"""Why a CRNN is stuck: saturated units and input-independent forecasts, per model directory.

    python benchmarks/saturation.py --data data/pines runs/cpu-paper/model runs/cpu-paper-95/model

For each model (a model directory or a Ray Train checkpoint directory) on up to --n validation
series, in eval mode, prints:

* gates: the share of LSTM gate pre-activations (input i, forget f, output o) where the gate's
  gradient is zero -- outside [-2.5, 2.5] for hard-sigmoid (Keras: clip(0.2x + 0.5, 0, 1)) -- and
  the gate's mean value;
* tanh: the share of conv and LSTM-cell tanh outputs with |y| > 0.99 (gradient < 0.02);
* spread: how much the forecasts differ between series, relative to how much the true frames do
  (std over series, averaged over pixels); near 0 means the model draws the same picture for every
  tree, whatever it was shown;
* the MSE (pixels 0-255) at the last forecast age.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("models", nargs="+")
    a = p.parse_args(argv)

    import torch

    from crnn.inference import load_model
    from crnn.model import CRNN
    from crnn.shards import read_numpy, torch_frames
    from crnn.loop import split_io

    frames = read_numpy(a.data, split=a.split)["frames"][: a.n]
    x = torch_frames(frames)
    for path in a.models:
        model, cfg, _ = load_model(path)
        if not isinstance(model, CRNN):
            print(f"{path}: not a CRNN")
            continue
        inputs, targets = split_io(x, cfg.data.in_frames)
        lstm = model.lstm
        steps: list = []  # (z, c) per step, from the layer's own forward (eval mode: no dropout)
        conv_tanh = []
        hooks = [lstm.register_forward_pre_hook(lambda mod, args: (args[0], steps))]
        for m in model.encoder:
            if isinstance(m, torch.nn.Tanh):
                hooks.append(m.register_forward_hook(lambda mod, i, o: conv_tanh.append(o)))
        with torch.no_grad():
            pred = model(inputs).clamp(0, 1)
        for h in hooks:
            h.remove()
        z = torch.cat([z for z, _ in steps])
        zi, zf, zc, zo = z.chunk(4, dim=1)
        hard = cfg.model.recurrent_activation == "hard_sigmoid"

        def dead(g):
            return float((g.abs() > 2.5).float().mean()) if hard else float("nan")

        gates = " ".join(f"{n}: {dead(g):.0%} dead, mean {float(lstm._rec_act(g).mean()):.2f};"
                         for n, g in (("i", zi), ("f", zf), ("o", zo)))
        sat = [float((t.abs() > 0.99).float().mean()) for t in conv_tanh]
        cell = float((lstm._act(torch.cat([c for _, c in steps])).abs() > 0.99).float().mean())
        spread = float(pred[:, -1].std(0).mean() / targets[:, -1].std(0).mean())
        mse = float(((pred[:, -1] - targets[:, -1]) * 255).pow(2).mean())
        print(f"{path}\n  gates ({cfg.model.recurrent_activation}) {gates}\n"
              f"  tanh saturated: conv {', '.join(f'{s:.0%}' for s in sat) or '-'}; LSTM cell {cell:.0%}\n"
              f"  spread of forecasts across series / of true frames: {spread:.2f}\n"
              f"  MSE at the last age ({len(frames)} {a.split} series): {mse:.1f}")


if __name__ == "__main__":
    main()
