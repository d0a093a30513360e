"""PredRNN forecaster (Wang, Long, Wang, Gao, Yu, "PredRNN: Recurrent Neural Networks for
Predictive Learning using Spatiotemporal LSTMs", NeurIPS 2017).

A stack of spatiotemporal LSTM (ST-LSTM) cells. Beside each layer's temporal memory C (a ConvLSTM
cell's, carried from step t - 1 within the layer) a *spatiotemporal memory* M zigzags through the
whole stack: up the layers within a step, and from the top layer at step t - 1 to the bottom layer
at step t. The paper's Eq. 4 (``*`` a 2-D convolution, "same" padding; ``o`` elementwise)::

    g_t  = tanh(W_xg * X_t + W_hg * H^k_{t-1} + b_g)       (temporal memory, as ConvLSTM)
    i_t  = sigma(W_xi * X_t + W_hi * H^k_{t-1} + b_i)
    f_t  = sigma(W_xf * X_t + W_hf * H^k_{t-1} + b_f)
    C^k_t = f_t o C^k_{t-1} + i_t o g_t
    g'_t = tanh(W'_xg * X_t + W_mg * M^{k-1}_t + b'_g)     (spatiotemporal memory, from the layer
    i'_t = sigma(W'_xi * X_t + W_mi * M^{k-1}_t + b'_i)     below; the bottom layer reads the top
    f'_t = sigma(W'_xf * X_t + W_mf * M^{k-1}_t + b'_f)     layer's M of step t - 1)
    M^k_t = f'_t o M^{k-1}_t + i'_t o g'_t
    o_t  = sigma(W_xo * X_t + W_ho * H^k_{t-1} + W_co * [C^k_t, M^k_t] + b_o)
    H^k_t = o_t o tanh(W_1x1 * [C^k_t, M^k_t])

As in this project's ConvLSTM (and OpenSTL's PredRNN): frames enter as space-to-depth patches
(``PixelUnshuffle(patch)``), the forget biases start at 1, no peepholes beyond the paper's W_co, and
one stack reads frame t and emits the forecast of frame t + 1 at every step (causal; the next-frame
form every family here shares); the output is the last frame plus a predicted change (``residual``).
Not here: PredRNN-v2's memory-decoupling loss and reverse scheduled sampling (TPAMI 2022) -- the
window's frames are always observed, so there is nothing to sample. ``norm``: GroupNorm after the
input, hidden and memory convolutions (OpenSTL's ``layer_norm`` option, with groups; 4 per gate).

Why it is here: on this project's pines it learns more per training step than the ConvLSTM (12 %
lower age-30 MSE at equal steps, for 2.2x the time per step; BENCHMARKS.md, "Why the best model is
still far above the floor", part 6) -- the zigzag memory
lets the top layer's picture of the tree reach the bottom layer at the next frame.

    x (B, T, C, H, W) -> per step t: unshuffle -> L ST-LSTM cells (M zigzags) -> 1x1 conv -> shuffle
                      -> y_t = x_t + change_t   (residual=True)  or  change_t itself
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from crnn.models.base import PatchRecurrentForecaster, check_patch_stack


@dataclass
class PredRNNConfig:
    """``model.predrnn.*``: the PredRNN family's fields (used when ``model.kind=predrnn``)."""

    # Hidden channels of each stacked ST-LSTM layer, bottom first; all equal (M flows through every
    # layer, so every layer's M has the same channels).
    hidden: tuple[int, ...] = (64, 64, 64)
    # Square kernel of every convolution but the 1x1 that mixes [C, M] (odd; "same" padding).
    kernel_size: int = 3
    # Space-to-depth factor p: the cells run at (H/p, W/p) on C*p^2 channels (H, W divisible by p).
    patch: int = 2
    # Output = last seen frame + predicted change (True) or the predicted frame itself.
    residual: bool = True
    # GroupNorm after the X, H and M convolutions (4 groups per gate; hidden a multiple of 4).
    norm: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.hidden, list):
            self.hidden = tuple(self.hidden)

    def validate(self, height: int, width: int) -> None:
        s = "model.predrnn"
        check_patch_stack(s, self, height, width, ("residual", "norm"))
        if len(set(self.hidden)) != 1:
            raise ValueError(f"{s}.hidden={list(self.hidden)}: expected equal channels in every layer "
                             f"(the spatiotemporal memory flows through all of them)")
        if self.norm and self.hidden[0] % 4:
            raise ValueError(f"{s}.hidden={list(self.hidden)}: with norm=true the channels must be a "
                             f"multiple of 4 (4 normalisation groups per gate)")


class SpatioTemporalLSTMCell(nn.Module):
    """One ST-LSTM layer (Wang et al. 2017, Eq. 4): (X, (H, C), M) -> ((H', C'), M').

    X (B, in, h, w); H, C, M (B, hidden, h, w). Gate order: conv_x -> i, f, g, i', f', g', o;
    conv_h -> i, f, g, o; conv_m -> i', f', g'. Forget biases (f, f') start at 1. ``norm``: GroupNorm
    (4 groups per gate) after conv_x (its bias added after the norm), conv_h and conv_m.
    """

    def __init__(self, in_channels: int, hidden: int, kernel_size: int, norm: bool = False) -> None:
        super().__init__()
        self.hidden, pad = hidden, kernel_size // 2
        self.conv_x = nn.Conv2d(in_channels, 7 * hidden, kernel_size, padding=pad)
        self.conv_h = nn.Conv2d(hidden, 4 * hidden, kernel_size, padding=pad, bias=False)
        self.conv_m = nn.Conv2d(hidden, 3 * hidden, kernel_size, padding=pad, bias=False)
        self.conv_o = nn.Conv2d(2 * hidden, hidden, kernel_size, padding=pad, bias=False)
        self.conv_cm = nn.Conv2d(2 * hidden, hidden, 1, bias=False)
        with torch.no_grad():
            self.conv_x.bias.zero_()
            self.conv_x.bias[hidden:2 * hidden].fill_(1.0)        # f
            self.conv_x.bias[4 * hidden:5 * hidden].fill_(1.0)    # f'
        self.norm = norm
        if norm:
            self.norm_x = nn.GroupNorm(28, 7 * hidden, affine=False)   # conv_x's bias is the shift
            self.norm_h = nn.GroupNorm(16, 4 * hidden)
            self.norm_m = nn.GroupNorm(12, 3 * hidden)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], m: torch.Tensor):
        h, c = state
        zx, zh, zm = self.conv_x(x), self.conv_h(h), self.conv_m(m)
        if self.norm:
            zx = self.norm_x(zx) + self.conv_x.bias[None, :, None, None]
            zh, zm = self.norm_h(zh), self.norm_m(zm)
        xi, xf, xg, xi2, xf2, xg2, xo = zx.chunk(7, dim=1)
        hi, hf, hg, ho = zh.chunk(4, dim=1)
        mi, mf, mg = zm.chunk(3, dim=1)
        c = torch.sigmoid(xf + hf) * c + torch.sigmoid(xi + hi) * torch.tanh(xg + hg)
        m = torch.sigmoid(xf2 + mf) * m + torch.sigmoid(xi2 + mi) * torch.tanh(xg2 + mg)
        cm = torch.cat([c, m], dim=1)
        h = torch.sigmoid(xo + ho + self.conv_o(cm)) * torch.tanh(self.conv_cm(cm))
        return (h, c), m


class PredRNN(PatchRecurrentForecaster):
    """Stacked ST-LSTM next-frame forecaster: (B, T, C, H, W) -> (B, T, C, H, W), causal.

    Raises ValueError for a bad config (naming the field) or an input of another shape.
    """

    def __init__(self, cfg) -> None:  # cfg: crnn.model.ModelConfig with kind="predrnn"
        pc: PredRNNConfig = cfg.predrnn
        super().__init__(cfg, "predrnn",
                         lambda c_in, hid: SpatioTemporalLSTMCell(c_in, hid, pc.kernel_size, norm=pc.norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches, states = self.to_patches(x)
        memory = torch.zeros_like(states[0][0])  # M: zigzags through the stack (all layers equal width)
        outs = []
        for step in range(x.shape[1]):  # T is small (4)
            inp = patches[:, step]
            for k, cell in enumerate(self.cells):
                states[k], memory = cell(inp, states[k], memory)
                inp = states[k][0]
            outs.append(self.head(inp))  # (B, C p^2, h, w)
        return self.to_frames(x, outs)
