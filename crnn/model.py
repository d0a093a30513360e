"""CRNN forecaster of Zhang & Li ("Prediction of Future Appearances via Convolutional
Recurrent Neural Networks Based on Image Time Series in Cloud Computing"), in PyTorch,
plus two parameter-free baselines behind the same interface.

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

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from crnn.models.base import DEFAULT_WINDOW, Forecaster, check_input as _check_input
from crnn.models.convlstm import ConvLSTMConfig, ConvLSTMForecaster
from crnn.models.simvp import SimVP, SimVPConfig
from crnn.models.timevp import TimeVP, TimeVPConfig

__all__ = [
    "ModelConfig",
    "build_model",
    "count_parameters",
    "count_flops",
    "rollout",
    "Forecaster",
    "CRNN",
    "ConvLSTMForecaster",
    "SimVP",
    "TimeVP",
    "KerasLSTM",
    "FAMILIES",
    "PersistenceBaseline",
    "LinearExtrapolationBaseline",
    "hard_sigmoid",
    "DEFAULT_WINDOW",
]

_BASELINE_KINDS = ("persistence", "linear")  # the trainable kinds are FAMILIES' keys (below CRNN)
_CONV_ACTIVATIONS = ("tanh", "relu", "selu")
_LSTM_ACTIVATIONS = ("tanh", "selu")
_RECURRENT_ACTIVATIONS = ("hard_sigmoid", "sigmoid", "tanh")


@dataclass
class ModelConfig:
    """Everything needed to build a model; the defaults are the paper's CRNN."""

    # Which model: "crnn" (the paper's network), "convlstm" (crnn.models.convlstm), "simvp"
    # (crnn.models.simvp), "timevp" (crnn.models.timevp: time-aware, any ages), "persistence"
    # (repeat the last frame) or "linear" (per-pixel linear extrapolation of the last two frames).
    # The fields below `kind`'s section are the paper CRNN's; every other family has its own
    # section (model.convlstm.*, model.simvp.*, model.timevp.*).
    kind: str = "crnn"
    # Image size in pixels (rows, columns) and number of colour channels.
    height: int = 32
    width: int = 16
    channels: int = 3
    # Output channels of each Conv2D layer, applied in order (paper: 64, 128).
    conv_filters: tuple[int, ...] = (64, 128)
    # Square kernel size of every Conv2D (stride 1, 'valid' padding).
    kernel_size: int = 3
    # Activation after every Conv2D: "tanh" (paper) | "relu" | "selu".
    conv_activation: str = "tanh"
    # Max-pooling window and stride after the last Conv2D (1 = no pooling).
    pool: int = 2
    # Number of LSTM units U (paper: 384).
    lstm_units: int = 384
    # LSTM cell/output activation: "tanh" (paper) | "selu".
    lstm_activation: str = "tanh"
    # LSTM gate activation: "hard_sigmoid" (Keras: clip(0.2x+0.5, 0, 1)) | "sigmoid" | "tanh".
    recurrent_activation: str = "hard_sigmoid"
    # Dropout rate on the LSTM inputs (Keras `dropout`), same mask at every step.
    dropout: float = 0.3
    # Dropout rate on h_{t-1} (Keras `recurrent_dropout`), same mask at every step.
    recurrent_dropout: float = 0.3
    # Beyond the paper: output_t = x_t + dense(h_t), i.e. the network predicts the
    # change from the last seen frame instead of the whole next frame.
    residual: bool = False
    # The other families' sections, each used only when `kind` names it.
    convlstm: ConvLSTMConfig = field(default_factory=ConvLSTMConfig)
    simvp: SimVPConfig = field(default_factory=SimVPConfig)
    timevp: TimeVPConfig = field(default_factory=TimeVPConfig)

    def __post_init__(self) -> None:
        # Accept lists (e.g. from YAML/JSON) for the tuple field.
        if isinstance(self.conv_filters, list):
            self.conv_filters = tuple(self.conv_filters)

    # ---- derived sizes -------------------------------------------------------
    def conv_output_hw(self) -> tuple[int, int]:
        """(H', W') after the convs and the pooling (may be <= 0 for a bad config)."""
        shrink = len(self.conv_filters) * (self.kernel_size - 1)
        h, w = self.height - shrink, self.width - shrink
        return h // self.pool, w // self.pool

    def flat_features(self) -> int:
        """Per-step feature count fed to the LSTM (paper: 128 * 14 * 6 = 10752)."""
        h, w = self.conv_output_hw()
        return self.conv_filters[-1] * h * w

    def frame_size(self) -> int:
        """Number of values per frame, C * H * W (Dense output size)."""
        return self.channels * self.height * self.width

    # ---- validation ----------------------------------------------------------
    def validate(self) -> "ModelConfig":
        """Raise ValueError naming the offending field; returns self."""
        kinds = (*FAMILIES, *_BASELINE_KINDS)
        if self.kind not in kinds:
            raise ValueError(f"ModelConfig.kind={self.kind!r}: expected one of {kinds}")
        for name in ("height", "width", "channels"):
            _check_pos_int(name, getattr(self, name))
        if self.kind in ("convlstm", "simvp", "timevp"):
            getattr(self, self.kind).validate(self.height, self.width)
        if self.kind != "crnn":
            return self
        if not isinstance(self.conv_filters, tuple) or len(self.conv_filters) == 0:
            raise ValueError(
                f"ModelConfig.conv_filters={self.conv_filters!r}: expected a non-empty "
                "tuple of positive ints"
            )
        for i, f in enumerate(self.conv_filters):
            _check_pos_int(f"conv_filters[{i}]", f)
        _check_pos_int("kernel_size", self.kernel_size)
        _check_pos_int("pool", self.pool)
        _check_pos_int("lstm_units", self.lstm_units)
        _check_choice("conv_activation", self.conv_activation, _CONV_ACTIVATIONS)
        _check_choice("lstm_activation", self.lstm_activation, _LSTM_ACTIVATIONS)
        _check_choice("recurrent_activation", self.recurrent_activation, _RECURRENT_ACTIVATIONS)
        for name in ("dropout", "recurrent_dropout"):
            p = getattr(self, name)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not (0.0 <= p < 1.0):
                raise ValueError(f"ModelConfig.{name}={p!r}: expected a number in [0, 1)")
        if not isinstance(self.residual, bool):
            raise ValueError(f"ModelConfig.residual={self.residual!r}: expected a bool")
        shrink = len(self.conv_filters) * (self.kernel_size - 1)
        hp, wp = self.conv_output_hw()
        if hp < 1 or wp < 1:
            raise ValueError(
                f"ModelConfig.height/width={self.height}x{self.width}: image too small for "
                f"{len(self.conv_filters)} valid {self.kernel_size}x{self.kernel_size} convs "
                f"(-> {self.height - shrink}x{self.width - shrink}) followed by pool={self.pool}"
            )
        return self


def _check_pos_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"ModelConfig.{name}={value!r}: expected a positive int")


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"ModelConfig.{name}={value!r}: expected one of {choices}")


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


# ---- baselines ------------------------------------------------------------------


class PersistenceBaseline(Forecaster):
    """Forecast of the next frame = the current frame (no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x)
        return x.clone()


class LinearExtrapolationBaseline(Forecaster):
    """Forecast = clamp(2 x_t - x_{t-1}, 0, 1) per pixel; step 0 falls back to x_0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x)
        # (B, T, C, H, W) -> (B, T-1, C, H, W): extrapolate from each consecutive pair
        extrap = torch.clamp(2.0 * x[:, 1:] - x[:, :-1], 0.0, 1.0)
        # step 0 has no predecessor: persistence; -> (B, T, C, H, W)
        return torch.cat([x[:, :1], extrap], dim=1)


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


#: Trainable families (``model.kind``) -> their class; each is built from the whole ModelConfig.
FAMILIES: dict[str, type[Forecaster]] = {"crnn": CRNN, "convlstm": ConvLSTMForecaster, "simvp": SimVP,
                                         "timevp": TimeVP}


# ---- public helpers --------------------------------------------------------------


def build_model(cfg: ModelConfig) -> Forecaster:
    """Build the model described by ``cfg`` (validated; raises ValueError on bad fields)."""
    cfg.validate()
    if cfg.kind in FAMILIES:
        return FAMILIES[cfg.kind](cfg)
    if cfg.kind == "persistence":
        return PersistenceBaseline()
    return LinearExtrapolationBaseline()


def count_flops(cfg: ModelConfig, frames: int = DEFAULT_WINDOW, backward: bool = False) -> int:
    """Floating-point operations for one series of ``frames`` frames (a multiply-add counts 2),
    measured by torch's own ``torch.utils.flop_counter.FlopCounterMode`` on a forward pass (plus
    the backward pass with ``backward=True``: a training step without the optimizer). Counts the
    matmuls and convolutions, which dominate every family; 0 for the parameter-free baselines."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(cfg).train(backward)
    x = torch.rand(1, frames, cfg.channels, cfg.height, cfg.width)
    counter = FlopCounterMode(display=False)
    with counter:
        y = model(x)
        if backward and y.requires_grad:
            y.float().pow(2).mean().backward()
    return int(counter.get_total_flops())


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (paper CRNN: 17,773,440)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def rollout(
    model: nn.Module, x: torch.Tensor, horizon: int, window: int = DEFAULT_WINDOW
) -> torch.Tensor:
    """Autoregressively forecast ``horizon`` frames beyond the last frame of ``x``.

    ``x`` is (B, T0, C, H, W) in [0, 1]. The model is run on the most recent
    ``window`` frames (the number it was trained on; the paper uses 4); its forecast
    for the frame after the last input is clamped to [0, 1], appended to the window,
    the oldest frame is dropped, and the model is run again. If ``T0 < window`` the
    window first grows up to ``window`` frames.

    Returns (B, horizon, C, H, W) in [0, 1]. Does not change train/eval mode nor
    disable autograd: call ``model.eval()`` / ``torch.no_grad()`` as needed.
    """
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon <= 0:
        raise ValueError(f"rollout: horizon={horizon!r} must be a positive int")
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
        raise ValueError(f"rollout: window={window!r} must be a positive int")
    _check_input(x)
    frames = x[:, -window:]  # (B, <=window, C, H, W)
    preds = []
    for _ in range(horizon):
        nxt = model(frames)[:, -1].clamp(0.0, 1.0)  # (B, T', C, H, W) -> (B, C, H, W)
        preds.append(nxt)
        # append the forecast, keep the most recent `window` frames
        frames = torch.cat([frames, nxt.unsqueeze(1)], dim=1)[:, -window:]
    return torch.stack(preds, dim=1)  # horizon x (B, C, H, W) -> (B, horizon, C, H, W)


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

