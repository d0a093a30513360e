"""CRNN forecaster of Zhang & Li ("Prediction of Future Appearances via Convolutional
Recurrent Neural Networks Based on Image Time Series in Cloud Computing"), in PyTorch
(``model.kind=crnn``; built by :func:`crnn.model.build_model` from a :class:`crnn.model.ModelConfig`).

Every model maps a window of frames to a same-length window of forecasts::

    x: float (B, T, C, H, W) in [0, 1]  ->  y: (B, T, C, H, W)

where output step ``t`` is the forecast of the frame *after* input frame ``t``
(inputs ages 10, 15, 20, 25 -> outputs ages 15, 20, 25, 30).

The CRNN follows the paper's Keras model layer by layer (Keras 2 defaults)::

    TimeDistributed(Conv2D(64, 3x3, valid, tanh))      32x16x3  -> 30x14x64
    TimeDistributed(Conv2D(128, 3x3, valid, tanh))              -> 28x12x128
    TimeDistributed(MaxPooling2D(2x2))                          -> 14x6x128
    TimeDistributed(Flatten())                                  -> 10752
    LSTM(384, tanh, hard_sigmoid, dropout=.3, recurrent_dropout=.3, return_sequences)
    TimeDistributed(Dense(H*W*C, linear))  -> reshape (C, H, W)

Keras details reproduced:

* glorot-uniform kernels (conv, dense, LSTM input kernel) and zero biases;
* LSTM recurrent kernel stored Keras-style as one (U, 4U) matrix, gate order
  i, f, c, o, initialised orthogonal *as a whole* (Keras' ``Orthogonal`` makes the
  rows of a wide matrix orthonormal: ``W @ W.T == I_U``; the individual (U, U) gate
  blocks are not orthogonal on their own);
* ``unit_forget_bias=True``: LSTM bias is zero except the forget block, which is 1;
* ``hard_sigmoid(x) = clip(0.2 x + 0.5, 0, 1)`` (Keras 2 / tf.keras definition; note
  that Keras 3 and ``torch.nn.functional.hardsigmoid`` use ``relu6(x + 3) / 6``,
  which has slope 1/6, not 0.2);
* ``dropout`` / ``recurrent_dropout``: one inverted-dropout mask per sequence, drawn
  at the first step and reused at every time step (Keras' "variational" dropout),
  applied to the LSTM inputs and to ``h_{t-1}`` respectively, only in training
  mode. One mask is shared by the four gates, as in Keras ``implementation=2``
  (Keras 2.2's ``implementation=1`` draws a separate mask per gate; the expected
  regularisation is the same and the shared mask lets the input projection of all
  steps be one matmul).

Layouts differ from Keras only where it cannot matter for learning: images are
channels-first and the flatten order is (C, H', W') instead of (H', W', C).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from crnn.models.base import Forecaster

if TYPE_CHECKING:  # crnn.model imports this module for its registry
    from crnn.model import ModelConfig

# ---- activations ---------------------------------------------------------------


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Keras 2 hard sigmoid: clip(0.2 * x + 0.5, 0, 1)."""
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


_ELEMENTWISE = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "hard_sigmoid": hard_sigmoid,
    "selu": F.selu,
    "relu": F.relu,
}
_MODULES = {"tanh": nn.Tanh, "relu": nn.ReLU, "selu": nn.SELU}


# ---- LSTM -----------------------------------------------------------------------


class KerasLSTM(nn.Module):
    """Keras-2-equivalent LSTM layer with ``return_sequences=True``.

    Parameters use Keras' layout: ``kernel`` (F, 4U), ``recurrent_kernel`` (U, 4U),
    ``bias`` (4U,), gates ordered i, f, c, o. Input: (B, T, F) -> output (B, T, U).
    Initial states are zeros.
    """

    def __init__(
        self,
        input_size: int,
        units: int,
        activation: str = "tanh",
        recurrent_activation: str = "hard_sigmoid",
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.units = units
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.activation_name = activation
        self.recurrent_activation_name = recurrent_activation
        self._act = _ELEMENTWISE[activation]
        self._rec_act = _ELEMENTWISE[recurrent_activation]
        self.kernel = nn.Parameter(torch.empty(input_size, 4 * units))
        self.recurrent_kernel = nn.Parameter(torch.empty(units, 4 * units))
        self.bias = nn.Parameter(torch.empty(4 * units))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        u = self.units
        nn.init.xavier_uniform_(self.kernel)  # glorot_uniform, fan_in=F, fan_out=4U
        # Keras Orthogonal on the whole (U, 4U) matrix: orthonormal rows (W W^T = I_U).
        # torch's orthogonal_ does the same QR-of-the-transpose construction.
        nn.init.orthogonal_(self.recurrent_kernel)
        with torch.no_grad():
            self.bias.zero_()
            self.bias[u : 2 * u].fill_(1.0)  # unit_forget_bias

    def _mask(self, like: torch.Tensor, p: float) -> torch.Tensor:
        # inverted dropout mask, drawn once per sequence (reused at every step)
        keep = 1.0 - p
        return torch.empty_like(like).bernoulli_(keep) / keep

    def forward(self, x: torch.Tensor, record: list | None = None) -> torch.Tensor:
        """``record``, when a list, receives ``(z, c)`` per step: the gate pre-activations
        (B, 4U, order i f c o) and the cell state (B, U) -- for diagnostics (benchmarks/saturation.py)."""
        b, t, f = x.shape
        u = self.units
        if self.training and self.dropout > 0.0:
            # same input mask for all steps: (B, 1, F) broadcast over T
            x = x * self._mask(x[:, :1], self.dropout)
        # input projection of every step in one matmul:
        # (B, T, F) -> (B*T, F) @ (F, 4U) -> (B, T, 4U)
        z_x = torch.addmm(self.bias, x.reshape(b * t, f), self.kernel).view(b, t, 4 * u)
        h = x.new_zeros(b, u)  # (B, U)
        c = x.new_zeros(b, u)  # (B, U)
        rec_mask = None
        if self.training and self.recurrent_dropout > 0.0:
            rec_mask = self._mask(h, self.recurrent_dropout)  # (B, U), same for all steps
        outputs = []
        for step in range(t):  # T is small (4): static unrolled loop
            h_in = h * rec_mask if rec_mask is not None else h
            z = z_x[:, step] + h_in @ self.recurrent_kernel  # (B, 4U)
            z_i, z_f, z_c, z_o = z.chunk(4, dim=1)  # 4 x (B, U)
            i = self._rec_act(z_i)
            f_g = self._rec_act(z_f)
            o = self._rec_act(z_o)
            c = f_g * c + i * self._act(z_c)
            h = o * self._act(c)
            outputs.append(h)
            if record is not None:
                record.append((z, c))
        return torch.stack(outputs, dim=1)  # T x (B, U) -> (B, T, U)

    def extra_repr(self) -> str:
        return (
            f"input_size={self.input_size}, units={self.units}, "
            f"activation={self.activation_name}, "
            f"recurrent_activation={self.recurrent_activation_name}, "
            f"dropout={self.dropout}, recurrent_dropout={self.recurrent_dropout}"
        )


# ---- CRNN -----------------------------------------------------------------------


class CRNN(Forecaster):
    """The paper's convolutional recurrent network (see module docstring)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        layers: list[nn.Module] = []
        in_ch = cfg.channels
        for n_filters in cfg.conv_filters:
            layers.append(nn.Conv2d(in_ch, n_filters, cfg.kernel_size, stride=1, padding=0))
            layers.append(_MODULES[cfg.conv_activation]())
            in_ch = n_filters
        if cfg.pool > 1:
            layers.append(nn.MaxPool2d(cfg.pool))  # floor mode, like Keras 'valid' pooling
        layers.append(nn.Flatten(start_dim=1))
        # (B*T, C, H, W) -> (B*T, F)
        self.encoder = nn.Sequential(*layers)
        self.lstm = KerasLSTM(
            cfg.flat_features(),
            cfg.lstm_units,
            activation=cfg.lstm_activation,
            recurrent_activation=cfg.recurrent_activation,
            dropout=cfg.dropout,
            recurrent_dropout=cfg.recurrent_dropout,
        )
        self.decoder = nn.Linear(cfg.lstm_units, cfg.frame_size())
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in list(self.encoder) + [self.decoder]:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)  # glorot_uniform
                nn.init.zeros_(m.bias)
        self.lstm.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if x.dim() != 5 or tuple(x.shape[2:]) != (cfg.channels, cfg.height, cfg.width):
            raise ValueError(
                f"expected input of shape (B, T, {cfg.channels}, {cfg.height}, {cfg.width}), "
                f"got {tuple(x.shape)}"
            )
        b, t = x.shape[:2]
        # (B, T, C, H, W) -> (B*T, C, H, W)
        frames = x.reshape(b * t, cfg.channels, cfg.height, cfg.width)
        # (B*T, C, H, W) -> (B*T, F)   [F = 128*14*6 = 10752 at 32x16]
        feats = self.encoder(frames)
        # (B*T, F) -> (B, T, F)
        feats = feats.view(b, t, -1)
        # (B, T, F) -> (B, T, U)
        hidden = self.lstm(feats)
        # (B, T, U) -> (B, T, C*H*W)
        out = self.decoder(hidden)
        # (B, T, C*H*W) -> (B, T, C, H, W)
        out = out.view(b, t, cfg.channels, cfg.height, cfg.width)
        if cfg.residual:
            out = x + out  # predict the change from the last seen frame
        return out


def _paper_parameter_count(cfg: ModelConfig) -> int:
    """Closed-form trainable parameter count of the CRNN for ``cfg`` (for checks)."""
    n, in_ch = 0, cfg.channels
    for f in cfg.conv_filters:
        n += f * (in_ch * cfg.kernel_size**2 + 1)
        in_ch = f
    u = cfg.lstm_units
    n += 4 * u * (cfg.flat_features() + u + 1)
    n += (u + 1) * cfg.frame_size()
    return n
