"""ConvLSTM forecaster (Shi et al., "Convolutional LSTM Network: A Machine Learning Approach for
Precipitation Nowcasting", NeurIPS 2015).

The LSTM's matrix products become convolutions (the paper's Eq. 3), so the states are feature
maps and the parameter count does not depend on the image size::

    i_t = sigma(W_xi * X_t + W_hi * H_{t-1} + b_i)        * = 2-D convolution ("same" padding)
    f_t = sigma(W_xf * X_t + W_hf * H_{t-1} + b_f)
    C_t = f_t o C_{t-1} + i_t o tanh(W_xc * X_t + W_hc * H_{t-1} + b_c)
    o_t = sigma(W_xo * X_t + W_ho * H_{t-1} + b_o)
    H_t = o_t o tanh(C_t)

Differences from the paper, as in OpenSTL's ConvLSTM: no peephole terms (``W_c o C``: their
weights are per pixel, so they would grow with the image size), and frames enter as
space-to-depth patches (``PixelUnshuffle(patch)``, (C, H, W) -> (C p^2, H/p, W/p)) instead of
through a separate encoder network. Shi's encoder-forecaster copies the encoder's states into a
forecaster; here one stack of cells reads frame t and emits the forecast of frame t + 1 at every
step (the next-frame form every model of this project shares), which keeps it causal::

    x (B, T, C, H, W) -> per step t: unshuffle -> L ConvLSTM cells -> 1x1 conv -> shuffle
                      -> y_t = x_t + change_t   (residual=True)  or  change_t itself

Three options beyond the paper (all off by default, as models saved before them were built):
``norm`` group-normalises each cell's gates and cell state (Ba et al., "Layer Normalization", 2016,
Sec. 3.1), ``skip`` adds residual connections between layers and lets the 1x1 head read every
layer, ``axial`` adds attention along each column and row after every cell (Ho et al. 2019; see
:class:`AxialAttention`). ``norm`` and ``skip`` together lower the age-30 MSE by 7.7 % at the same
training steps on the pines, for ~8 % more time per step (BENCHMARKS.md, "Why the best model is still far above the floor", part 6).
With ``norm``, a group whose values are all equal (a blank, uniform frame and zero state, with the
freshly initialised weights) is divided by sqrt(eps): training from scratch on series that begin
with blank frames can see huge gradients in its first steps (clipped by ``train.grad_clip``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from crnn.models.base import PatchRecurrentForecaster, check_patch_stack


@dataclass
class ConvLSTMConfig:
    """``model.convlstm.*``: the ConvLSTM family's fields (used when ``model.kind=convlstm``)."""

    # Hidden channels of each stacked ConvLSTM layer, bottom first.
    hidden: tuple[int, ...] = (64, 64)
    # Square kernel of the input-to-state and state-to-state convolutions (odd; "same" padding).
    kernel_size: int = 3
    # Space-to-depth factor p: the cells run at (H/p, W/p) on C*p^2 channels (H, W divisible by p).
    patch: int = 2
    # Output = last seen frame + predicted change (True) or the predicted frame itself.
    residual: bool = True
    # Group-normalise each cell's gate pre-activations and its cell state before the output tanh
    # (the layer-normalised LSTM of Ba et al. 2016, Sec. 3.1, with GroupNorm; 4 groups per gate).
    # False: the cell of Shi et al. as it was (and as models saved before this field were built).
    norm: bool = False
    # Skip connections: a layer's input is added to its hidden state where the widths match (a
    # residual stack, He et al. 2016), and the head reads every layer's hidden state (concatenated),
    # not the top layer's only. With norm: 7.7 % lower age-30 MSE at the same steps for ~8 % more
    # time per step (BENCHMARKS.md, "Why the best model is still far above the floor", part 6).
    skip: bool = False
    # Axial attention after each cell: self-attention along the feature map's columns, then along its
    # rows (Ho et al., "Axial Attention in Multidimensional Transformers", 2019; 4 heads, pre-norm,
    # sinusoids of the normalised coordinate, zero-initialised output: it starts as the identity), so
    # every position sees its whole column -- the tree top and the crown base -- at every step. Per
    # step 4.8 % lower age-30 MSE on fresh trees for 2.2-2.5x the time per step on a CPU (BENCHMARKS.md,
    # "Why the best model is still far above the floor", part 8): a run for a GPU. Hidden sizes must
    # be multiples of 4. False: the cells as they were (and as saved models were built).
    axial: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.hidden, list):
            self.hidden = tuple(self.hidden)

    def validate(self, height: int, width: int) -> None:
        s = "model.convlstm"
        check_patch_stack(s, self, height, width, ("residual", "norm", "skip", "axial"))
        if self.norm and any(h % 4 for h in self.hidden):
            raise ValueError(f"{s}.hidden={list(self.hidden)}: with norm=true each layer's channels must be "
                             f"a multiple of 4 (4 normalisation groups)")
        if self.axial and any(h % 4 for h in self.hidden):
            raise ValueError(f"{s}.hidden={list(self.hidden)}: with axial=true each layer's channels must be "
                             f"a multiple of 4 (4 attention heads, sin/cos pairs)")


class ConvLSTMCell(nn.Module):
    """One ConvLSTM layer (Shi et al. 2015, Eq. 3, without peepholes): (X_t, (H, C)) -> (H', C').

    X_t (B, in, h, w); H, C (B, hidden, h, w). Gates from one convolution over [X_t, H_{t-1}]
    (B, in + hidden, h, w) -> (B, 4 hidden, h, w), order i, f, g, o; forget bias starts at 1.
    ``norm``: GroupNorm (4 groups per gate) of the gate pre-activations and of C before the output
    tanh (Ba et al., "Layer Normalization", 2016, Sec. 3.1); the forget bias then sits in the gate
    norm's shift. ``hidden`` must then be a multiple of 4.
    """

    def __init__(self, in_channels: int, hidden: int, kernel_size: int, norm: bool = False) -> None:
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel_size, padding=kernel_size // 2)
        self.gate_norm = nn.GroupNorm(16, 4 * hidden) if norm else None
        self.cell_norm = nn.GroupNorm(4, hidden) if norm else None
        with torch.no_grad():
            self.conv.bias.zero_()
            self.conv.bias[hidden:2 * hidden].fill_(1.0)
            if norm:
                self.gate_norm.bias[hidden:2 * hidden].fill_(1.0)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        h, c = state
        z = self.conv(torch.cat([x, h], dim=1))  # (B, 4 hidden, h, w)
        if self.gate_norm is not None:
            z = self.gate_norm(z)
        i, f, g, o = z.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c if self.cell_norm is None else self.cell_norm(c))
        return h, c


class AxialAttention(nn.Module):
    """Self-attention along one axis of a feature map (Ho et al. 2019): (B, C, h, w) -> same shape,
    ``x + out(attn(norm(x) + pos, norm(x) + pos, norm(x)))`` over each column (``axis="h"``) or each
    row (``"w"``). ``pos``: sin/cos of the coordinate scaled to [-1, 1] at C/2 frequencies from pi
    to 64 pi (geometric), so the block has no per-size parameters. The output projection starts at
    zero: the block starts as the identity. C must be even and divisible by ``heads``."""

    def __init__(self, channels: int, axis: str, heads: int = 4) -> None:
        super().__init__()
        if axis not in ("h", "w") or channels % 2 or channels % heads:
            raise ValueError(f"axial attention: axis {axis!r} (h or w), channels {channels} (even, "
                             f"divisible by heads={heads})")
        self.axis = axis
        self.norm = nn.LayerNorm(channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("freq", math.pi * torch.logspace(0, 6, channels // 2, base=2.0), persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = h.shape
        seq = (h.permute(0, 3, 2, 1).reshape(b * ww, hh, c) if self.axis == "h"
               else h.permute(0, 2, 3, 1).reshape(b * hh, ww, c))               # (B*, L, C)
        L = seq.shape[1]
        coord = torch.linspace(-1, 1, L, device=h.device, dtype=torch.float32)[:, None] * self.freq[None]
        pos = torch.cat([coord.sin(), coord.cos()], -1).to(seq.dtype)[None]    # (1, L, C)
        n = self.norm(seq)
        y = self.out(self.attn(n + pos, n + pos, n, need_weights=False)[0])
        y = y.reshape(b, ww, hh, c).permute(0, 3, 2, 1) if self.axis == "h" else y.reshape(b, hh, ww, c).permute(0, 3, 1, 2)
        return h + y


class ConvLSTMForecaster(PatchRecurrentForecaster):
    """Stacked ConvLSTM next-frame forecaster: (B, T, C, H, W) -> (B, T, C, H, W), causal.

    Raises ValueError for a bad config (naming the field) or an input of another shape.
    """

    def __init__(self, cfg) -> None:  # cfg: crnn.model.ModelConfig with kind="convlstm"
        cc: ConvLSTMConfig = cfg.convlstm
        super().__init__(cfg, "convlstm", lambda c_in, hid: ConvLSTMCell(c_in, hid, cc.kernel_size, norm=cc.norm),
                         head_in=sum(cc.hidden) if cc.skip else None)  # skip: the head reads every layer
        self.skip = cc.skip
        # axial: after each cell, attention along the columns, then the rows (starts as the identity)
        self.axial = nn.ModuleList(nn.Sequential(AxialAttention(h, "h"), AxialAttention(h, "w"))
                                   for h in cc.hidden) if cc.axial else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches, states = self.to_patches(x)
        outs = []
        for step in range(x.shape[1]):  # T is small (4)
            inp, hs = patches[:, step], []
            for k, cell in enumerate(self.cells):
                h, c = cell(inp, states[k])
                if self.skip and k and h.shape[1] == inp.shape[1]:
                    h = h + inp  # residual between layers of equal width (also what recurs)
                if self.axial is not None:
                    h = self.axial[k](h)  # every position sees its column and row (also what recurs)
                states[k] = (h, c)
                inp = h
                hs.append(h)
            outs.append(self.head(torch.cat(hs, 1) if self.skip else inp))  # (B, C p^2, h, w)
        return self.to_frames(x, outs)
