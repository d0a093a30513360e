"""The interface every forecaster shares, and helpers that causal window models need."""

from __future__ import annotations

import torch
from torch import nn

#: Number of frames the paper's model sees (ages 10, 15, 20, 25).
DEFAULT_WINDOW = 4


class Forecaster(nn.Module):
    """Common interface: forward((B, T, C, H, W)) -> (B, T, C, H, W) next-frame forecasts.

    ``Forecaster(cfg, section)`` (a family's constructor calls it first): checks the family's typed
    config ``cfg.<section>`` against the image size (``validate``: ValueError naming the field) and
    records ``shape`` = (C, H, W) and the section's ``residual``. Without ``cfg``: a plain module.
    """

    def __init__(self, cfg=None, section: str | None = None) -> None:
        super().__init__()
        if cfg is not None:
            self.shape = (cfg.channels, cfg.height, cfg.width)
        if section is not None:
            sub = getattr(cfg, section)
            sub.validate(cfg.height, cfg.width)
            self.residual = sub.residual

    def rollout(self, x: torch.Tensor, horizon: int, window: int = DEFAULT_WINDOW) -> torch.Tensor:
        """See :func:`crnn.model.rollout`."""
        from crnn.model import rollout

        return rollout(self, x, horizon, window)


class PatchRecurrentForecaster(Forecaster):
    """The frame the recurrent families (ConvLSTM, PredRNN) share: frames enter as space-to-depth
    patches (``PixelUnshuffle(patch)``: (C, H, W) -> (C p^2, H/p, W/p)), a stack of recurrent cells
    runs at (H/p, W/p), a 1x1 convolution (``head``) maps the top state back to C p^2 channels and
    ``PixelShuffle`` back to a frame; residual heads start at zero (persistence). The subclass's
    ``forward`` runs its cells over the steps. ``make_cell(in_channels, hidden)`` builds one layer
    of ``cfg.<section>.hidden``; ``head_in``: the head's input channels (default the top layer's).
    """

    def __init__(self, cfg, section: str, make_cell, head_in: int | None = None) -> None:
        super().__init__(cfg, section)
        sub = getattr(cfg, section)
        p = sub.patch
        self.unshuffle, self.shuffle = nn.PixelUnshuffle(p), nn.PixelShuffle(p)
        in_ch = cfg.channels * p * p
        cells, prev = [], in_ch
        for hid in sub.hidden:
            cells.append(make_cell(prev, hid))
            prev = hid
        self.cells = nn.ModuleList(cells)
        self.head = nn.Conv2d(head_in or prev, in_ch, 1)  # (B, head_in, h, w) -> (B, C p^2, h, w)
        if self.residual:  # start as persistence: the change is learned from zero
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def to_patches(self, x: torch.Tensor):
        """(B, T, C, H, W) -> patches (B, T, C p^2, h, w) and zero (H, C) states, one per cell."""
        check_input(x, self.shape)
        b, t = x.shape[:2]
        patches = self.unshuffle(x.flatten(0, 1)).unflatten(0, (b, t))
        hh, ww = patches.shape[-2:]
        return patches, [(patches.new_zeros(b, cell.hidden, hh, ww),) * 2 for cell in self.cells]

    def to_frames(self, x: torch.Tensor, outs: list[torch.Tensor]) -> torch.Tensor:
        """The head's outputs per step (B, C p^2, h, w) -> forecasts (B, T, C, H, W)."""
        b, t = x.shape[:2]
        out = self.shuffle(torch.stack(outs, 1).flatten(0, 1)).unflatten(0, (b, t))
        return x + out if self.residual else out


def check_input(x: torch.Tensor, shape: tuple[int, int, int] | None = None) -> None:
    """Raise ValueError unless ``x`` is (B, T, C, H, W) (with (C, H, W) == ``shape`` when given)."""
    if x.dim() != 5 or (shape is not None and tuple(x.shape[2:]) != tuple(shape)):
        want = "(B, T, C, H, W)" if shape is None else f"(B, T, {shape[0]}, {shape[1]}, {shape[2]})"
        raise ValueError(f"expected input of shape {want}, got {tuple(x.shape)}")


def causal_windows(z: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For every step t, the ``window`` most recent items up to t, left-padded with zeros.

    ``z``: (B, T, ...) -> windows (B, T, window, ...) with ``windows[:, t, -1] == z[:, t]`` and
    ``windows[:, t, j] == z[:, t - window + 1 + j]`` (zeros where that index is < 0), plus
    ``valid`` (T, window) float: 1 where the slot holds a real item, 0 where it is padding.
    This is how a model that reads a whole window (SimVP) stays causal: output t sees only
    inputs 0..t.
    """
    b, t = z.shape[:2]
    pad = z.new_zeros((b, window - 1, *z.shape[2:]))
    zp = torch.cat([pad, z], dim=1)  # (B, window - 1 + T, ...)
    idx = torch.arange(t, device=z.device)[:, None] + torch.arange(window, device=z.device)[None, :]
    valid = (idx >= window - 1).to(z.dtype)  # (T, window)
    return zp[:, idx], valid  # (B, T, window, ...)


def check_positive_int(section: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{section}.{name}={value!r}: expected a positive int")


def check_patch_stack(section: str, sub, height: int, width: int, flags: tuple[str, ...]) -> None:
    """The fields every ``PatchRecurrentForecaster`` config has, checked for an image of
    ``height`` x ``width``: ``hidden`` (non-empty positive ints), ``kernel_size`` (odd), ``patch``
    (divides both sides) and the bool ``flags``. ValueError naming ``<section>.<field>``."""
    if not isinstance(sub.hidden, tuple) or not sub.hidden:
        raise ValueError(f"{section}.hidden={sub.hidden!r}: expected a non-empty list of positive ints")
    for i, h in enumerate(sub.hidden):
        check_positive_int(section, f"hidden[{i}]", h)
    check_positive_int(section, "kernel_size", sub.kernel_size)
    if sub.kernel_size % 2 == 0:
        raise ValueError(f"{section}.kernel_size={sub.kernel_size}: expected an odd size ('same' padding)")
    check_positive_int(section, "patch", sub.patch)
    if height % sub.patch or width % sub.patch:
        raise ValueError(f"{section}.patch={sub.patch}: image {height}x{width} is not divisible by it")
    for name in flags:
        if not isinstance(getattr(sub, name), bool):
            raise ValueError(f"{section}.{name}={getattr(sub, name)!r}: expected a bool")
