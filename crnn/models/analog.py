"""Analog forecasting: the training-free nearest-neighbour baseline.

Lorenz's method of analogues (Lorenz, "Atmospheric predictability as revealed by naturally
occurring analogues", J. Atmos. Sci. 1969; used since as the no-learning bar in weather and
video forecasting): find the series in a bank of past series whose history looks most like this
one, and let their futures say what happens next. Here, for output step t of a query series x:

    d_i   = || x[:, :t+1] - bank_i[:, :t+1] ||_2               (all frames seen so far, pixel L2)
    N     = the k bank series with the smallest d_i
    y_t   = clamp(x_t + mean_{i in N} (bank_i[t+1] - bank_i[t]), 0, 1)   (change="delta", default)
          = mean_{i in N} bank_i[t+1]                                       (change="frame")

The bank must be on the query's age grid (frame j of a bank series has the age of frame j of the
query); the bank's T_bank >= T + 1 frames. It is the honest bar for "did the network learn more
than lookup": a model that cannot beat it has memorised its training set at best.
"""

from __future__ import annotations

import numpy as np
import torch

from crnn.models.base import Forecaster, check_input

CHANGES = ("delta", "frame")


class AnalogForecaster(Forecaster):
    """k-nearest-neighbour analog forecast from a bank of series (no parameters).

    ``bank``: uint8 (N, T_bank, H, W, C) (the shard layout) -- e.g. a dataset's train split.
    ``forward``: float (B, T, C, H, W) in [0, 1] with T <= T_bank - 1 -> (B, T, C, H, W).
    Raises ValueError for an empty bank, k < 1 or > N, an unknown ``change``, or an input whose
    frame size or length the bank cannot answer.
    """

    def __init__(self, bank: np.ndarray, k: int = 8, change: str = "delta", chunk: int = 256) -> None:
        super().__init__()
        bank = np.asarray(bank)
        if bank.ndim != 5 or bank.shape[0] == 0 or bank.shape[1] < 2:
            raise ValueError(f"analog: bank must be (N >= 1, T >= 2, H, W, C) frames, got shape {bank.shape}")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= bank.shape[0]:
            raise ValueError(f"analog: k={k!r} must be an int in [1, {bank.shape[0]}] (the bank's size)")
        if change not in CHANGES:
            raise ValueError(f"analog: change={change!r}: expected one of {CHANGES}")
        self.k, self.change, self.chunk = k, change, chunk
        # (N, T, H, W, C) uint8 -> (N, T, C*H*W) float32 in [0, 1]; a buffer so .to(device) moves it
        b = torch.as_tensor(bank).permute(0, 1, 4, 2, 3).float().div_(255.0)
        self.frame_shape = tuple(b.shape[2:])
        self.register_buffer("bank", b.flatten(2), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.frame_shape)
        b, t = x.shape[:2]
        if t > self.bank.shape[1] - 1:
            raise ValueError(f"analog: {t} input frames, but the bank's series have {self.bank.shape[1]} "
                             f"(need one more than the inputs, for the future)")
        q = x.flatten(2).float()                          # (B, T, D)
        out = torch.empty_like(q)
        sq_bank = self.bank.pow(2).sum(-1)                # (N, T_bank): ||bank frame||^2
        sq_q = q.pow(2).sum(-1)                           # (B, T)
        for i in range(0, b, self.chunk):
            qi = q[i:i + self.chunk]
            # squared distance per frame, ||a||^2 + ||b||^2 - 2 a.b: (B', T, N)
            dots = torch.einsum("btd,ntd->btn", qi, self.bank[:, :t])
            d2 = sq_q[i:i + self.chunk, :, None] + sq_bank[None, :, :t].transpose(1, 2) - 2 * dots
            hist = d2.clamp_min(0).cumsum(1)              # distance over frames 0..t: (B', T, N)
            idx = hist.topk(self.k, dim=2, largest=False).indices  # (B', T, k)
            steps = torch.arange(t, device=x.device)
            nxt = self.bank[idx, steps[None, :, None] + 1]  # (B', T, k, D): the neighbours' next frames
            if self.change == "delta":
                now = self.bank[idx, steps[None, :, None]]  # their frames at step t
                out[i:i + self.chunk] = (qi + (nxt - now).mean(2)).clamp(0, 1)
            else:
                out[i:i + self.chunk] = nxt.mean(2)
        return out.view_as(x).to(x.dtype)
