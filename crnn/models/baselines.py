"""Parameter-free baselines behind the forecasters' interface: (B, T, C, H, W) in [0, 1] -> the
same shape, output step t the forecast of the frame after input t (``model.kind=persistence|linear``).
"""

from __future__ import annotations

import torch

from crnn.models.base import Forecaster, check_input as _check_input

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
