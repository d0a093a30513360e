"""SimVP forecaster with the gSTA translator.

SimVP (Gao et al., "SimVP: Simpler yet Better Video Prediction", CVPR 2022) is three CNNs: a
per-frame spatial **encoder**, a **translator** that sees the window's latent frames stacked into
channels, and a per-frame **decoder** with a skip connection from the encoder's first layer. The
translator here is gSTA, the gated spatiotemporal attention block of SimVP v2 (Tan et al.,
"SimVP: Towards Simple yet Powerful Spatiotemporal Predictive Learning", 2022/2023; the same
large-kernel attention as TAU, Tan et al., CVPR 2023, Sec. 3): a depthwise 5x5 conv, a depthwise
dilated 7x7 conv (dilation 3; together a 21x21 receptive field) and a 1x1 conv that yields a
value and a sigmoid gate, then a convolutional MLP, each with a residual path and BatchNorm.

Every layer is a convolution, so the parameter count does not depend on the image size.

Made causal for this project's next-frame interface: the encoder runs once per frame; for each
output step t the translator reads the ``window`` most recent latents up to t (left-padded with
zeros, plus one channel per slot saying real/padding -- :func:`crnn.models.base.causal_windows`)
and produces the latent of frame t + 1; the decoder turns it into the change from frame t
(``residual=True``), using frame t's encoder features as its skip input::

    x (B, T, C, H, W) -> encoder -> z (B, T, hid_s, H/4, W/4)      [n_s=4: strides 1, 2, 1, 2]
      -> windows (B*T, window*(hid_s+1), H/4, W/4) -> n_t gSTA blocks (hid_t) -> (B*T, hid_s, H/4, W/4)
      -> decoder (+ skip of frame t) -> (B, T, C, H, W);  y_t = x_t + change_t

So a window of T inputs costs one encoder and one decoder pass per frame plus T translator
passes; the translator runs at 1/16 of the pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from crnn.models.base import Forecaster, causal_windows, check_input, check_positive_int


@dataclass
class SimVPBackbone:
    """The encoder / gSTA translator / decoder fields that SimVP and TimeVP (crnn.models.timevp)
    share; each family's section adds its own."""

    # Encoder/decoder channels (SimVP's hid_S).
    hid_s: int = 32
    # Translator channels (SimVP's hid_T).
    hid_t: int = 128
    # Encoder (and decoder) conv layers (N_S); every second one strides 2: n_s=4 -> 1/4 resolution.
    n_s: int = 4
    # gSTA translator blocks (N_T).
    n_t: int = 4
    # Kernel of the encoder/decoder convs (odd).
    spatio_kernel: int = 3
    # Hidden channels of each translator block's MLP, as a multiple of hid_t.
    mlp_ratio: float = 4.0

    def downsample(self) -> int:
        return 2 ** (self.n_s // 2)

    def validate_backbone(self, s: str, height: int, width: int) -> None:
        """ValueError naming ``<s>.<field>`` for a bad backbone field or an image size the encoder's
        strides do not divide."""
        for name in ("hid_s", "hid_t", "n_s", "spatio_kernel"):
            check_positive_int(s, name, getattr(self, name))
        if self.n_t < 2 or isinstance(self.n_t, bool) or not isinstance(self.n_t, int):
            raise ValueError(f"{s}.n_t={self.n_t!r}: expected an int >= 2 (in and out blocks)")
        if self.spatio_kernel % 2 == 0:
            raise ValueError(f"{s}.spatio_kernel={self.spatio_kernel}: expected an odd size")
        if isinstance(self.mlp_ratio, bool) or not (isinstance(self.mlp_ratio, (int, float)) and self.mlp_ratio > 0):
            raise ValueError(f"{s}.mlp_ratio={self.mlp_ratio!r}: expected a number > 0")
        d = self.downsample()
        if height % d or width % d:
            raise ValueError(f"{s}.n_s={self.n_s}: downsamples by {d}, but the image {height}x{width} "
                             f"is not divisible by {d}")


@dataclass
class SimVPConfig(SimVPBackbone):
    """``model.simvp.*``: the SimVP family's fields (used when ``model.kind=simvp``)."""

    # Stochastic depth of the translator blocks (0 = off).
    drop_path: float = 0.0
    # Latent frames the translator sees per forecast (frames before the first input are padding).
    window: int = 4
    # Output = last seen frame + predicted change (True) or the predicted frame itself.
    residual: bool = True

    def validate(self, height: int, width: int) -> None:
        s = "model.simvp"
        self.validate_backbone(s, height, width)
        check_positive_int(s, "window", self.window)
        if not (isinstance(self.drop_path, (int, float)) and 0 <= self.drop_path < 1):
            raise ValueError(f"{s}.drop_path={self.drop_path!r}: expected a number in [0, 1)")
        if not isinstance(self.residual, bool):
            raise ValueError(f"{s}.residual={self.residual!r}: expected a bool")


# ----------------------------------------------------------------------------- encoder / decoder
class ConvSC(nn.Sequential):
    """SimVP's basic conv: k x k conv (stride 2 to downsample; conv to 4x channels + PixelShuffle to
    upsample) -> GroupNorm(2) -> SiLU. (B, in, H, W) -> (B, out, H', W')."""

    def __init__(self, c_in: int, c_out: int, k: int, down: bool = False, up: bool = False) -> None:
        if up:
            conv = [nn.Conv2d(c_in, 4 * c_out, k, padding=k // 2), nn.PixelShuffle(2)]
        else:
            conv = [nn.Conv2d(c_in, c_out, k, stride=2 if down else 1, padding=k // 2)]
        super().__init__(*conv, nn.GroupNorm(2, c_out), nn.SiLU())


def _strides(n_s: int) -> list[bool]:
    """Which of the n_s encoder layers downsample: 1, 2, 1, 2, ... (False, True, ...)."""
    return [i % 2 == 1 for i in range(n_s)]


class Encoder(nn.Module):
    """(N, C, H, W) -> latent (N, hid_s, H/d, W/d) and the first layer's features (N, hid_s, H, W)."""

    def __init__(self, c_in: int, hid: int, n_s: int, k: int) -> None:
        super().__init__()
        down = _strides(n_s)
        self.layers = nn.ModuleList([ConvSC(c_in if i == 0 else hid, hid, k, down=d) for i, d in enumerate(down)])

    def forward(self, x: torch.Tensor):
        skip = x = self.layers[0](x)
        for layer in self.layers[1:]:
            x = layer(x)
        return x, skip


class Decoder(nn.Module):
    """Latent (N, hid_s, H/d, W/d) + skip (N, hid_s, H, W) -> (N, c_out, H, W); mirrors the encoder."""

    def __init__(self, hid: int, c_out: int, n_s: int, k: int) -> None:
        super().__init__()
        up = list(reversed(_strides(n_s)))
        self.layers = nn.ModuleList([ConvSC(hid, hid, k, up=u) for u in up])
        self.readout = nn.Conv2d(hid, c_out, 1)

    def forward(self, z: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            z = layer(z)
        return self.readout(self.layers[-1](z + skip))


# ----------------------------------------------------------------------------- gSTA translator
class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al., ECCV 2016), identity at eval or p = 0."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class GatedAttention(nn.Module):
    """gSTA's spatial gating unit: depthwise 5x5 -> depthwise 7x7 (dilation 3) -> 1x1 to
    (value, gate); out = value * sigmoid(gate). (N, dim, h, w) -> (N, dim, h, w)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.local = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.dilated = nn.Conv2d(dim, dim, 7, padding=9, dilation=3, groups=dim)
        self.mix = nn.Conv2d(dim, 2 * dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.mix(self.dilated(self.local(x))).chunk(2, dim=1)
        return value * torch.sigmoid(gate)


class GSTABlock(nn.Module):
    """One gSTA block (SimVP v2): x + attn(BN(x)), then x + MLP(BN(x)), with layer scale and
    stochastic depth; attn = 1x1 -> GELU -> gating unit -> 1x1 (+ its own shortcut); MLP = 1x1 ->
    depthwise 3x3 -> GELU -> 1x1. A 1x1 conv maps dim -> out_dim after it when they differ."""

    def __init__(self, dim: int, out_dim: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        hidden = max(1, int(dim * mlp_ratio))
        self.norm1, self.norm2 = nn.BatchNorm2d(dim), nn.BatchNorm2d(dim)
        self.proj_in, self.gate, self.proj_out = nn.Conv2d(dim, dim, 1), GatedAttention(dim), nn.Conv2d(dim, dim, 1)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden),
                                 nn.GELU(), nn.Conv2d(hidden, dim, 1))
        self.scale1 = nn.Parameter(torch.full((dim, 1, 1), 1e-2))
        self.scale2 = nn.Parameter(torch.full((dim, 1, 1), 1e-2))
        self.drop = DropPath(drop_path)
        self.reduce = nn.Conv2d(dim, out_dim, 1) if out_dim != dim else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        y = self.proj_out(self.gate(nn.functional.gelu(self.proj_in(y)))) + y
        x = x + self.drop(self.scale1 * y)
        x = x + self.drop(self.scale2 * self.mlp(self.norm2(x)))
        return self.reduce(x)


class Translator(nn.Module):
    """n_t gSTA blocks: (N, c_in, h, w) -> (N, c_out, h, w) through hid channels."""

    def __init__(self, c_in: int, c_out: int, hid: int, n_t: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        rates = torch.linspace(0, drop_path, n_t).tolist()
        dims = [c_in] + [hid] * (n_t - 1) + [c_out]
        self.blocks = nn.Sequential(*[GSTABlock(dims[i], dims[i + 1], mlp_ratio, rates[i]) for i in range(n_t)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


# ----------------------------------------------------------------------------- the model
class SimVP(Forecaster):
    """SimVP-gSTA next-frame forecaster, causal (see the module docstring).

    (B, T, C, H, W) in [0, 1] -> (B, T, C, H, W); step t forecasts frame t + 1 from frames <= t.
    Raises ValueError for a bad config (naming the field) or an input of another shape.
    """

    def __init__(self, cfg) -> None:  # cfg: crnn.model.ModelConfig with kind="simvp"
        super().__init__(cfg, "simvp")
        sc: SimVPConfig = cfg.simvp
        self.window, self.hid_s = sc.window, sc.hid_s
        self.encoder = Encoder(cfg.channels, sc.hid_s, sc.n_s, sc.spatio_kernel)
        # each window slot: hid_s latent channels + 1 channel "real frame (1) or padding (0)"
        self.translator = Translator(sc.window * (sc.hid_s + 1), sc.hid_s, sc.hid_t, sc.n_t, sc.mlp_ratio,
                                     sc.drop_path)
        self.decoder = Decoder(sc.hid_s, cfg.channels, sc.n_s, sc.spatio_kernel)
        if self.residual:  # start as persistence: the change is learned from zero
            nn.init.zeros_(self.decoder.readout.weight)
            nn.init.zeros_(self.decoder.readout.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.shape)
        b, t = x.shape[:2]
        z, skip = self.encoder(x.flatten(0, 1))             # (B*T, hid_s, h, w), (B*T, hid_s, H, W)
        z = z.unflatten(0, (b, t))                           # (B, T, hid_s, h, w)
        win, valid = causal_windows(z, self.window)          # (B, T, window, hid_s, h, w), (T, window)
        flag = valid.view(1, t, self.window, 1, 1, 1).expand(b, t, self.window, 1, *z.shape[-2:])
        win = torch.cat([win, flag], dim=3)                  # (B, T, window, hid_s + 1, h, w)
        z_next = self.translator(win.flatten(0, 1).flatten(1, 2))  # (B*T, hid_s, h, w)
        out = self.decoder(z_next, skip).unflatten(0, (b, t))       # (B, T, C, H, W)
        return x + out if self.residual else out
