"""The model registry: one typed config (:class:`ModelConfig`, with a section per family), the
trainable families (:data:`FAMILIES`: the paper's CRNN, ConvLSTM, PredRNN, SimVP, TimeVP; ``crnn/models/``)
and the parameter-free baselines behind one interface, built by :func:`build_model`; plus
:func:`rollout`, :func:`count_parameters` and :func:`count_flops`.

Every model maps a window of frames to a same-length window of forecasts::

    x: float (B, T, C, H, W) in [0, 1]  ->  y: (B, T, C, H, W)

where output step ``t`` is the forecast of the frame *after* input frame ``t``
(inputs ages 10, 15, 20, 25 -> outputs ages 15, 20, 25, 30). The paper's model (Zhang & Li) and
how it follows the Keras original: :mod:`crnn.models.crnn`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from crnn.models.base import DEFAULT_WINDOW, Forecaster, check_input as _check_input
from crnn.models.baselines import LinearExtrapolationBaseline, PersistenceBaseline
from crnn.models.convlstm import ConvLSTMConfig, ConvLSTMForecaster
from crnn.models.crnn import CRNN, KerasLSTM, hard_sigmoid
from crnn.models.simvp import SimVP, SimVPConfig
from crnn.models.predrnn import PredRNN, PredRNNConfig
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
    "PredRNN",
    "PredRNNConfig",
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

    # Which model: "crnn" (the paper's network), "convlstm" (crnn.models.convlstm), "predrnn"
    # (crnn.models.predrnn), "simvp" (crnn.models.simvp), "timevp" (crnn.models.timevp: time-aware, any ages), "persistence"
    # (repeat the last frame) or "linear" (per-pixel linear extrapolation of the last two frames).
    # The fields below `kind`'s section are the paper CRNN's; every other family has its own
    # section (model.convlstm.*, model.predrnn.*, model.simvp.*, model.timevp.*).
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
    predrnn: PredRNNConfig = field(default_factory=PredRNNConfig)

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
        if self.kind in FAMILIES and self.kind != "crnn":  # a family with its own typed section
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


#: Trainable families (``model.kind``) -> their class; each is built from the whole ModelConfig.
FAMILIES: dict[str, type[Forecaster]] = {"crnn": CRNN, "convlstm": ConvLSTMForecaster, "predrnn": PredRNN,
                                         "simvp": SimVP, "timevp": TimeVP}


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
