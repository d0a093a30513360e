"""What keeps the ConvLSTM's age-30 error far above the floor? Probes, side by side, one recipe.

    python benchmarks/convlstm_probes.py --data data/pines --probes base,oracle,coord,global \
        --epochs 10 --json runs/probes.json        # ~10 min per probe on this 2-core CPU
    python benchmarks/convlstm_probes.py --data data/pines20k --probes base --train-series 1600
        # a learning curve: the base model on the first N training series (the same 384 test trees)
    python benchmarks/convlstm_probes.py --data data/pines --probes base,norm+skip,st --batch-size 8

Each probe trains the ConvLSTM of the ``convlstm-fast`` preset (3 x 64 channels, patch 2, residual;
AdamW 2e-3 -- with weight decay 0.01, the preset has none --, the preset's warm-up epoch then cosine
(``crnn.loop.make_scheduler``), batch 32, gradient clip 1, bf16 autocast) on the
dataset's training split and reports the test split's MSE per forecast age (0-255 pixels, the
forecast rounded to uint8 as delivered), with one change each:

* ``base``: none (reproduces ``convlstm-fast``'s row: ``jobs/train.py`` trains the same model;
  ``--kernel-size`` and ``--patch`` change the cells' kernel and space-to-depth factor, as
  ``model.convlstm.kernel_size`` / ``patch`` do);
* ``oracle``: the tree's 23 simulator parameters (scaled to [0, 1] by their prior ranges,
  ``crnn.pine.PARAMS``) enter every step as constant input channels. If the error came from not
  knowing the tree, this would remove it;
* ``coord``: two coordinate channels (row and column in [-1, 1]; Liu et al., "An intriguing failing
  of convolutional neural networks and the CoordConv solution", NeurIPS 2018): a convolution does
  not know where in the picture it is, and the crown base sits at a fraction of the tree's height;
* ``global``: after each cell, the mean- and max-pooled hidden state goes through a 2-layer MLP
  (zero-initialised output) and is added to the hidden state at every pixel (a global-context
  block in the spirit of squeeze-and-excitation, Hu et al., CVPR 2018): every pixel sees the whole
  tree at once, not only its receptive field;
* ``axial``: after each cell, self-attention along the image's columns, then along its rows (axial
  attention, Ho et al., "Axial Attention in Multidimensional Transformers", 2019; 4 heads, pre-norm,
  sinusoids of the normalised coordinate added to queries and keys, zero-initialised output): every
  pixel sees its whole column -- the tree's top and its crown base -- and its whole row;
* ``diff``: the change since the previous frame (zeros at the first) enters beside each frame;
* ``skip``: residual connections between layers of equal width, and the head reads every layer's
  hidden state (``model.convlstm.skip``);
* ``norm``: group-normalised gates and cell state (``model.convlstm.norm``; Ba et al. 2016);
* ``refine``: a 3-layer full-resolution convolution corrects the forecast from [frame, forecast]
  (the cells run at half resolution);
* ``composite``: the head predicts, per pixel, a colour ``c`` (sigmoid) and an amount ``a`` (linear,
  zero at the start) and the forecast is ``x + a (c - x)``: a move of the last frame's colour towards
  a predicted one, as a dying branch turns grey or a shed one becomes backdrop (a compositing head,
  in the spirit of the masks of Finn et al., "Unsupervised Learning for Physical Interaction through
  Video Prediction", NeurIPS 2016) instead of an additive change;
* ``st``: PredRNN's spatiotemporal LSTM cells (``crnn.models.predrnn``; Wang et al., NeurIPS 2017):
  a second memory zigzags through the stack (with ``norm``: the family's ``model.predrnn.norm``).

Probes combine with ``+`` (``norm+skip`` is what ``model.convlstm.norm=true skip=true`` builds, the
``convlstm-cpu`` preset's cell; ``st`` is the ``predrnn`` family).

Options that change the recipe for every probe: ``--batch-size`` and ``--lr`` (the preset's 32 and
2e-3), ``--hidden`` (the cells' channels, e.g. 128,128,128
or 64,64,64,64,64,64), ``--step-weights`` (the loss weight of each forecast step, normalised to mean
1; e.g. 0,0,0,1 trains on the last forecast age only), ``--ema`` (also score exponential moving
averages of the weights, ``torch.optim.swa_utils`` with ``get_ema_multi_avg_fn``, one per decay) and
``--augment hflip`` (``train.augment``: mirrored training series, about the dataset's axis).

Why a plain loop and not ``jobs/train.py``: the probes change what the model sees (parameters,
coordinates), which the family configs deliberately do not expose (a served model gets frames
only); the training split of the default dataset fits in memory, as in ``crnn.loop.fit_plain``.
Any regular dataset (T frames per series: the model sees T - 1 and forecasts T - 1, as the family
does); the oracle probe needs the pine parameter columns. Without Ray. The command line refuses
(naming the problem, before loading frames) an unknown probe, an irregular dataset, a dataset without
a training or test split or (for oracle) without the parameter columns, and bad numbers.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn  # noqa: E402

from crnn import pine  # noqa: E402
from crnn.config import load_config  # noqa: E402
from crnn.loop import augment as augment_batch, make_scheduler  # noqa: E402
from crnn.mirror import mirror_axis as card_mirror_axis  # noqa: E402
from crnn.models.convlstm import AxialAttention, ConvLSTMCell  # noqa: E402
from crnn.models.predrnn import SpatioTemporalLSTMCell  # noqa: E402
from crnn.shards import read_card, read_numpy, require_regular  # noqa: E402
from crnn.storage import write_json  # noqa: E402

PROBES = ("base", "oracle", "coord", "global", "axial", "diff", "skip", "norm", "refine", "st", "composite")
_LOW = np.array([p.low for p in pine.PARAMS], np.float64)
_HIGH = np.array([p.high for p in pine.PARAMS], np.float64)


class ProbeConvLSTM(nn.Module):
    """The ``convlstm`` family's forecaster (crnn/models/convlstm.py) with a probe's extra input or
    block: (B, T, C, H, W) frames in [0, 1] and (B, 23) scaled parameters (used by ``oracle`` only)
    -> (B, T, C, H, W), step t the forecast of frame t + 1. Raises ValueError for an unknown probe.

    Its step loop repeats ``ConvLSTMForecaster.forward`` with two hooks (extra input channels, blocks
    after each cell) that the served family deliberately lacks; with the same weights the ``base``
    probe's output equals the family's (tests/test_convlstm_probes.py)."""

    def __init__(self, probe: str, hidden=(64, 64, 64), patch: int = 2, channels: int = 3,
                 num_params: int = len(pine.PARAMS), kernel_size: int = 3) -> None:
        super().__init__()
        parts = set(probe.split("+"))
        if not parts <= set(PROBES):
            raise ValueError(f"probe {probe!r}: expected one of {', '.join(PROBES)}, or several joined by +")
        if "norm" in parts and any(h % 4 for h in hidden):
            raise ValueError(f"the norm probe normalises 4 groups per gate: hidden sizes {hidden} must be multiples of 4")
        self.probe, self.parts = probe, parts
        self.unshuffle, self.shuffle = nn.PixelUnshuffle(patch), nn.PixelShuffle(patch)
        c_in = channels * patch * patch
        prev = c_in + sum({"oracle": num_params, "coord": 2, "diff": c_in}.get(q, 0) for q in parts)
        if "st" in parts and len(set(hidden)) != 1:
            raise ValueError(f"the st probe's memory flows through every layer: equal hidden sizes, not {hidden}")
        if "st" in parts:
            def cell_type(*a):
                return SpatioTemporalLSTMCell(*a, norm="norm" in parts)
        else:
            def cell_type(*a):
                return ConvLSTMCell(*a, norm="norm" in parts)
        self.cells = nn.ModuleList()
        for h in hidden:
            self.cells.append(cell_type(prev, h, kernel_size))
            prev = h
        if "skip" in parts:
            prev = sum(hidden)                    # the head reads every layer's hidden state
        # composite: per pixel a colour and an amount of the move towards it (C + 1 channels per pixel)
        self.head = nn.Conv2d(prev, c_in + patch * patch if "composite" in parts else c_in, 1)
        nn.init.zeros_(self.head.weight)          # residual: starts as persistence
        nn.init.zeros_(self.head.bias)
        self.context = None
        if "global" in parts:
            self.context = nn.ModuleList(nn.Sequential(nn.Linear(2 * h, h), nn.SiLU(), nn.Linear(h, h))
                                         for h in hidden)
            for block in self.context:           # starts as the base model
                nn.init.zeros_(block[-1].weight)
                nn.init.zeros_(block[-1].bias)
        self.axial = None
        if "axial" in parts:
            self.axial = nn.ModuleList(nn.Sequential(AxialAttention(h, "h"), AxialAttention(h, "w")) for h in hidden)
        self.refine = None
        if "refine" in parts:                    # full resolution: [x_t, first forecast] -> correction
            self.refine = nn.Sequential(nn.Conv2d(2 * channels, 32, 3, padding=1), nn.SiLU(),
                                        nn.Conv2d(32, 32, 3, padding=1), nn.SiLU(),
                                        nn.Conv2d(32, channels, 3, padding=1))
            nn.init.zeros_(self.refine[-1].weight)
            nn.init.zeros_(self.refine[-1].bias)

    def forward(self, x: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        b, t = x.shape[:2]
        patches = self.unshuffle(x.flatten(0, 1)).unflatten(0, (b, t))
        hh, ww = patches.shape[-2:]
        states = [(patches.new_zeros(b, cell.hidden, hh, ww),) * 2 for cell in self.cells]
        extras = []
        if "oracle" in self.parts:
            if params is None:
                raise ValueError("the oracle probe needs the parameters")
            extras.append(params[:, :, None, None].to(patches.dtype).expand(-1, -1, hh, ww))
        if "coord" in self.parts:
            yy = torch.linspace(-1, 1, hh, dtype=patches.dtype).view(1, 1, hh, 1).expand(b, 1, hh, ww)
            xx = torch.linspace(-1, 1, ww, dtype=patches.dtype).view(1, 1, 1, ww).expand(b, 1, hh, ww)
            extras += [yy, xx]
        extra = torch.cat(extras, 1) if extras else None
        outs = []
        memory = patches.new_zeros(b, self.cells[0].hidden, hh, ww) if "st" in self.parts else None
        for step in range(t):
            inp = patches[:, step]
            if "diff" in self.parts:             # the change since the last frame (0 at the first)
                inp = torch.cat([inp, inp - patches[:, step - 1] if step else torch.zeros_like(inp)], 1)
            if extra is not None:
                inp = torch.cat([inp, extra], 1)
            hs = []
            for k, cell in enumerate(self.cells):
                if memory is not None:           # PredRNN's zigzag: M from the layer below (or the top at t-1)
                    (h, c), memory = cell(inp, states[k], memory)
                else:
                    h, c = cell(inp, states[k])
                if "skip" in self.parts and k and h.shape[1] == inp.shape[1]:
                    h = h + inp                  # residual between layers of equal width
                if self.context is not None:
                    g = self.context[k](torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1))
                    h = h + g[:, :, None, None]
                if self.axial is not None:
                    h = self.axial[k](h)
                states[k] = (h, c)
                inp = h
                hs.append(h)
            outs.append(self.head(torch.cat(hs, 1) if "skip" in self.parts else inp))
        out = self.shuffle(torch.stack(outs, 1).flatten(0, 1)).unflatten(0, (b, t))
        if "composite" in self.parts:            # x + a (colour - x): zero a (the head's init) = persistence
            colour, amount = torch.sigmoid(out[:, :, :-1]), out[:, :, -1:]
            out = amount * (colour - x)
        if self.refine is not None:
            first = (x + out).flatten(0, 1)
            out = out + self.refine(torch.cat([x.flatten(0, 1), first], 1)).unflatten(0, (b, t))
        return x + out


def load_split(data: str, split: str, with_params: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames float (N, T, C, H, W) in [0, 1], parameters float (N, 23) scaled to [0, 1]; zeros
    without ``with_params``: a dataset without the pine parameter columns, probes other than oracle)."""
    d = read_numpy(data, split=split)
    frames = torch.from_numpy(d["frames"]).permute(0, 1, 4, 2, 3).float().div_(255.0)
    if not with_params:
        return frames, torch.zeros(len(frames), len(pine.PARAMS))
    params = np.stack([d[n] for n in pine.PARAM_NAMES], 1)
    return frames, torch.from_numpy(((params - _LOW) / (_HIGH - _LOW)).astype(np.float32))


@torch.no_grad()
def test_mse(model: ProbeConvLSTM, frames: torch.Tensor, params: torch.Tensor, in_frames: int) -> list[float]:
    """MSE per forecast age on 0-255 pixels, the forecast clamped and rounded to uint8 first."""
    model.eval()
    err = torch.zeros(in_frames, dtype=torch.float64)
    for i in range(0, len(frames), 256):
        x = frames[i:i + 256]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred = model(x[:, :in_frames], params[i:i + 256])
        q = torch.round(pred.float().clamp(0, 1) * 255)
        y = torch.round(x[:, 1:in_frames + 1] * 255)
        err += ((q - y) ** 2).mean((2, 3, 4)).sum(0).double()
    model.train()
    return [float(v) for v in err / len(frames)]


def train_probe(probe: str, train: tuple, test: tuple, epochs: int, seed: int = 0, in_frames: int = 4,
                batch_size: int = 32, lr: float = 2e-3, log=print, step_weights=None, ema=(),
                augment: str = "none", mirror_axis: float | None = None, **model_kw) -> dict:
    """Train one probe with the ``convlstm-fast`` recipe; returns {probe, epochs, seed, test_mse (per
    forecast age), train_mse_255 (last epoch, weighted as trained), seconds, and with ``ema`` the
    test MSE of each moving average: ema_test_mse {decay: [...]}}. ``step_weights``: one loss weight
    per forecast step (normalised to mean 1; None: all 1). ``augment``: ``train.augment``'s kinds
    (``crnn.loop.augment``: ``hflip`` mirrors a training series about ``mirror_axis`` with probability
    1/2). ValueError for weights of another length, negative or all zero, or a decay outside (0, 1)."""
    w = torch.ones(in_frames) if step_weights is None else torch.as_tensor(step_weights, dtype=torch.float32)
    if w.shape != (in_frames,) or (w < 0).any() or not w.sum() > 0:
        raise ValueError(f"step_weights {step_weights}: expected {in_frames} non-negative numbers, not all 0")
    w = w / w.mean()
    if any(not 0 < d < 1 for d in ema):
        raise ValueError(f"ema decays {list(ema)}: expected numbers in (0, 1)")
    torch.manual_seed(seed)
    frames, params = train
    model = ProbeConvLSTM(probe, **model_kw)
    averages = {float(d): AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(float(d))) for d in ema}
    cfg = load_config("convlstm-fast", overrides={"train.epochs": epochs, "train.lr": lr,
                                                  "train.batch_size": batch_size})
    # AdamW with torch's default weight decay (0.01; the preset's is 0.0): what the figures in
    # BENCHMARKS.md were measured with. Warm-up + cosine and the clip are the preset's (crnn.loop).
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = make_scheduler(opt, cfg, math.ceil(len(frames) / batch_size))
    t0, loss_sum = time.perf_counter(), 0.0
    for epoch in range(epochs):
        perm, loss_sum = torch.randperm(len(frames)), 0.0
        for i in range(0, len(frames), batch_size):
            idx = perm[i:i + batch_size]
            x = augment_batch(frames[idx], augment, mirror_axis)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                pred = model(x[:, :in_frames], params[idx])
            loss = (((pred.float() - x[:, 1:in_frames + 1]) ** 2).mean((2, 3, 4)) * w).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            opt.step()
            sched.step()
            for avg in averages.values():
                avg.update_parameters(model)
            loss_sum += float(loss.detach()) * len(idx)
        log(f"{probe}: epoch {epoch} train MSE {loss_sum / len(frames) * 255**2:.1f} "
            f"({time.perf_counter() - t0:.0f} s)")
    res = {"probe": probe, "epochs": epochs, "seed": seed,
           "test_mse": test_mse(model, *test, in_frames),
           "train_mse_255": loss_sum / len(frames) * 255**2, "seconds": time.perf_counter() - t0}
    if averages:
        res["ema_test_mse"] = {str(d): test_mse(avg.module, *test, in_frames) for d, avg in averages.items()}
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a regular pine dataset (jobs/generate.py)")
    p.add_argument("--probes", default=",".join(PROBES), help=f"comma-separated, of {', '.join(PROBES)}; several joined by + combine (norm+skip)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--train-series", type=int, default=None, metavar="N",
                   help="train on the first N series of the training split only (a learning curve)")
    p.add_argument("--kernel-size", type=int, default=3, help="the cells' kernel (odd; the family's default 3)")
    p.add_argument("--patch", type=int, default=2, help="space-to-depth factor (the family's default 2)")
    p.add_argument("--hidden", default="64,64,64", help="the cells' channels, bottom first (the preset's 64,64,64)")
    p.add_argument("--step-weights", default=None, metavar="W,W,..",
                   help="loss weight of each forecast step (default all 1; 0,0,0,1: the last age only)")
    p.add_argument("--augment", default="none", choices=("none", "hflip"),
                   help="train.augment for every probe: hflip mirrors training series about the dataset's axis")
    p.add_argument("--ema", default="", metavar="D,D,..",
                   help="also score moving averages of the weights with these decays (e.g. 0.99,0.995)")
    p.add_argument("--batch-size", type=int, default=32, help="series per step (the preset's 32)")
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW's peak learning rate (the preset's 2e-3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--json", default=None, metavar="PATH")
    a = p.parse_args(argv)
    probes = [s.strip() for s in a.probes.split(",") if s.strip()]
    bad = [s for s in probes if not set(s.split("+")) <= set(PROBES)]
    parts = {q for s in probes for q in s.split("+")}
    if bad or not probes:
        p.error(f"--probes {a.probes!r}: unknown {bad}; expected some of {', '.join(PROBES)}")
    if a.epochs < 1:
        p.error(f"--epochs {a.epochs}: expected >= 1")
    if a.kernel_size < 1 or a.kernel_size % 2 == 0 or a.patch < 1:
        p.error(f"--kernel-size {a.kernel_size} must be odd and >= 1, --patch {a.patch} >= 1")
    if a.train_series is not None and a.train_series < 1:
        p.error(f"--train-series {a.train_series}: expected >= 1")
    if a.threads < 1:
        p.error(f"--threads {a.threads}: expected >= 1")
    if a.batch_size < 1 or not a.lr > 0:
        p.error(f"--batch-size {a.batch_size} must be >= 1 and --lr {a.lr} > 0")
    try:
        hidden = tuple(int(v) for v in a.hidden.split(","))
        weights = None if a.step_weights is None else [float(v) for v in a.step_weights.split(",")]
        decays = [float(v) for v in a.ema.split(",") if v.strip()]
    except ValueError:
        p.error(f"--hidden {a.hidden!r}, --step-weights {a.step_weights!r}, --ema {a.ema!r}: expected "
                f"comma-separated numbers")
    if not hidden or min(hidden) < 1 or ({"axial", "norm"} & parts and any(h % 4 for h in hidden)):
        p.error(f"--hidden {a.hidden!r}: expected positive channel counts (multiples of 4 for the axial and "
                f"norm probes)")
    if weights is not None and (any(v < 0 for v in weights) or not sum(weights) > 0):
        p.error(f"--step-weights {a.step_weights!r}: expected non-negative numbers, not all 0")
    if any(not 0 < d < 1 for d in decays):
        p.error(f"--ema {a.ema!r}: expected decays in (0, 1)")
    try:
        card = read_card(a.data)
        require_regular(card, a.data, "a probe")
    except (ValueError, OSError) as e:
        p.error(str(e))
    ages = list(card.get("ages") or [])
    if len(ages) < 2:
        p.error(f"{a.data}: {len(ages)} frame(s) per series; a probe needs at least 2 (inputs and a target)")
    in_frames = len(ages) - 1                   # the family's next-frame form: sees T-1, forecasts T-1
    if weights is not None and len(weights) != in_frames:
        p.error(f"--step-weights {a.step_weights!r}: {a.data} has {in_frames} forecast steps per series")
    columns = card.get("columns") or {}
    missing = [n for n in pine.PARAM_NAMES if n not in columns]
    if "st" in parts and len(set(hidden)) != 1:
        p.error(f"--hidden {a.hidden!r}: the st probe's memory flows through every layer; expected equal sizes")
    if "oracle" in parts and missing:
        p.error(f"{a.data}: the oracle probe needs a pine dataset with the simulator's parameter "
                f"columns (missing {missing[:3]}{'...' if len(missing) > 3 else ''})")
    counts = {str(k): int(v) for k, v in (card.get("splits") or {}).items()}
    for split in ("train", "test"):
        if not counts.get(split):
            p.error(f"{a.data}: no {split} series (splits: {counts})")
    if a.train_series is not None and a.train_series > counts["train"]:
        p.error(f"--train-series {a.train_series}: the training split has {counts['train']} series")
    height, width = int(card.get("height", 0)), int(card.get("width", 0))
    if height % a.patch or width % a.patch:
        p.error(f"--patch {a.patch}: the {height}x{width} frames are not divisible by it")
    torch.set_num_threads(a.threads)
    axis = card_mirror_axis(card)                # the axis train.augment=hflip mirrors about
    with_params = not missing
    train = load_split(a.data, "train", with_params)
    test = load_split(a.data, "test", with_params)
    if a.train_series is not None:
        train = (train[0][:a.train_series], train[1][:a.train_series])
    rows = [{**train_probe(probe, train, test, a.epochs, a.seed, in_frames, batch_size=a.batch_size, lr=a.lr,
                           step_weights=weights, ema=decays, kernel_size=a.kernel_size, patch=a.patch,
                           hidden=hidden, augment=a.augment, mirror_axis=axis),
             "train_series": len(train[0]), "kernel_size": a.kernel_size, "patch": a.patch,
             "hidden": list(hidden), "step_weights": weights, "batch_size": a.batch_size, "lr": a.lr,
             "augment": a.augment, **({"mirror_axis": axis} if a.augment != "none" else {})}
            for probe in probes]
    ages = ages[1:]                             # the forecast ages
    for r in rows:
        print(json.dumps({**r, "ages": ages}))
    w = max(8, *(len(r["probe"]) + 1 for r in rows))
    print(f"{'probe':{w}s}" + "".join(f"{'age ' + str(g):>10s}" for g in ages))
    for r in rows:
        print(f"{r['probe']:{w}s}" + "".join(f"{v:10.2f}" for v in r["test_mse"]))
        for d, mse in r.get("ema_test_mse", {}).items():
            print(f"{'  ema ' + d:{w}s}" + "".join(f"{v:10.2f}" for v in mse))
    if a.json:
        write_json(a.json, {"data": a.data, "ages": ages, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
