"""Image-forecast metrics on the pixel scale the paper reports (0-255).

API
---
``frame_metrics(pred, target, *, scale=255.0, channels_last=False) -> dict[str, float]``
    ``pred``/``target``: arrays (N, C, H, W) -- or (N, H, W, C) with
    ``channels_last=True`` -- numpy arrays or torch tensors. ``scale`` converts the
    inputs to 0-255 pixel units: the default 255.0 is for floats in [0, 1] (model
    outputs); pass ``scale=1.0`` for uint8 / 0-255 data. Returns

    * ``mae``    mean |pred - target| over every value of every sample (pixels);
    * ``mse``    mean (pred - target)^2 over every value of every sample (pixels^2);
    * ``rmse``   sqrt(mse);
    * ``psnr``   10 log10(255^2 / mse) dB, from the pooled MSE (inf if mse == 0);
    * ``snr``    power ratio mean(target^2) / mse (pooled; inf if mse == 0);
    * ``snr_db`` 10 log10(snr);
    * ``ssim``   mean SSIM over images (each image: mean over channels of the mean
      SSIM map).

``per_age_metrics(pred, target, ages, *, scale=255.0, channels_last=False)``
    ``pred``/``target``: (N, T, C, H, W) (or (N, T, H, W, C)); ``ages``: T ages;
    returns ``{age: frame_metrics(pred[:, i], target[:, i])}``.

``ssim(pred, target, *, scale=255.0, channels_last=False, win_size=11, sigma=1.5)``
    SSIM of Wang et al. (2004): Gaussian window 11x11, sigma 1.5 (normalised to sum
    1), C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2, population (biased) local
    variances, computed per channel. Filtering is 'valid' -- the window is only
    placed where it fits entirely inside the image, exactly like Wang's reference
    ``ssim_index.m`` (``filter2(..., 'valid')``); no padding is invented. On the
    paper's 32 x 16 images this gives a 22 x 6 SSIM map per channel. Images smaller
    than the window raise ValueError here; ``frame_metrics``/``per_age_metrics`` give them
    SSIM NaN (their other metrics are defined), so a model of small images can be evaluated.

``snr_candidates(pred, target, ...)``: the alternative "SNR" definitions discussed
below, to compare with the paper once real data is available.

On the paper's "SNR 322.55" (Table 3, age 30, next to MAE 8.57 and MSE 377.35)
-------------------------------------------------------------------------------
Taking MAE and MSE as 0-255 pixel errors (they are consistent with that:
RMSE = 19.43, PSNR = 22.36 dB), check which "SNR" definitions could give 322.55:

* power ratio mean(y^2) / MSE: needs mean(y^2) = 322.55 * 377.35 = 121,714, i.e.
  RMS(y) = 348.9 > 255 -- impossible for 0-255 pixels (mean(y^2) <= 65,025, so
  this ratio is at most 65,025 / 377.35 = 172.3 here). The ratio is scale-free,
  so switching to the 0-1 scale changes nothing; ratios of sums over the same
  pixels equal ratios of means; var(y) / MSE is smaller still.
* in dB: 322.55 dB is a power ratio of 10^32.3 -- absurd (20 log10 likewise).
* amplitude ratios: mean(y) / RMSE needs mean(y) = 6,266; mean(y) / MAE needs
  2,764; RMS(y) / RMSE needs RMS(y) = 6,266 -- all > 255, impossible.
* peak-based ratios: 255^2 / MSE = 172.3 (PSNR 22.36 dB), 255 / RMSE = 13.1,
  255 / MAE = 29.8 -- none is 322.55.

Only dimensionally inconsistent mixtures can reach 322.55, and each needs an
assumption about the (unpublished) test images: mean(y^2) / MAE needs
RMS(y) = 52.6; sum(y^2) over one 32x16x3 frame divided by the MSE needs
RMS(y) = 8.9 (15.4 over a single-channel 32x16 frame); mean(y^2) on 0-255 over an
MSE on the 0-1 scale needs RMS(y) = 1.37. None is a standard SNR and none can be
confirmed from the numbers in the paper. Conclusion: no standard, consistent
definition of SNR reproduces 322.55 with the reported MSE; the value should be
treated as not comparable (possibly a different normalisation or an error in the
paper). We report the well-defined ``snr`` (power ratio) and ``snr_db`` and keep
the paper's figure only as ``PAPER_TABLE3["snr_paper"]``; ``snr_candidates`` lets
the mixed definitions be checked against real data.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = [
    "PAPER_TABLE3",
    "PEAK",
    "frame_metrics",
    "per_age_metrics",
    "ssim",
    "snr_candidates",
    "gaussian_window",
]

#: Pixel peak value used by PSNR and the SSIM constants.
PEAK = 255.0

#: The paper's Table 3 values for the forecast age-30 frame (0-255 pixels);
#: "snr_paper" is the paper's SNR figure, whose definition is unknown (see above).
PAPER_TABLE3 = {"mae": 8.57, "mse": 377.35, "snr_paper": 322.55}

_K1, _K2 = 0.01, 0.03


# ---- input handling ---------------------------------------------------------------


def _to_numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensor, without importing torch
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _prepare(pred: Any, target: Any, scale: float, channels_last: bool, ndim: int, what: str):
    """Return float64 arrays in 0-255 units, channels first: (..., C, H, W)."""
    p, t = _to_numpy(pred), _to_numpy(target)
    if p.shape != t.shape:
        raise ValueError(f"{what}: pred shape {p.shape} != target shape {t.shape}")
    if p.ndim != ndim:
        lead = "(N, C, H, W)" if ndim == 4 else "(N, T, C, H, W)"
        raise ValueError(f"{what}: expected {ndim}-D arrays {lead} (channels_last: C last), got shape {p.shape}")
    if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0):
        raise ValueError(f"{what}: scale={scale!r} must be a positive number")
    for name, a in (("pred", p), ("target", t)):
        if a.dtype == np.uint8 and scale != 1.0:
            raise ValueError(f"{what}: {name} is uint8 (0-255); pass scale=1.0, got scale={scale}")
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise ValueError(f"{what}: {name} has non-numeric dtype {a.dtype}")
    p = p.astype(np.float64) * scale
    t = t.astype(np.float64) * scale
    if t.size and t.max() > PEAK * (1 + 1e-6):
        raise ValueError(
            f"{what}: target exceeds 255 after scaling (max {t.max():.4g}); "
            f"0-255 data needs scale=1.0, got scale={scale}"
        )
    if channels_last:
        p = np.moveaxis(p, -1, -3)
        t = np.moveaxis(t, -1, -3)
    return p, t


# ---- SSIM -----------------------------------------------------------------------------


def gaussian_window(win_size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """1-D Gaussian taps at offsets -(w-1)/2..(w-1)/2, normalised to sum 1."""
    x = np.arange(win_size, dtype=np.float64) - (win_size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of the last two axes with the symmetric taps g."""
    w = len(g)
    rows = np.lib.stride_tricks.sliding_window_view(img, w, axis=-1) @ g  # (..., H, W-w+1)
    return np.lib.stride_tricks.sliding_window_view(rows, w, axis=-2) @ g  # (..., H-w+1, W-w+1)


def _ssim_per_image(p: np.ndarray, t: np.ndarray, win_size: int, sigma: float) -> np.ndarray:
    """p, t: (N, C, H, W) in 0-255 -> SSIM per image (N,), channel-averaged."""
    h, w = p.shape[-2:]
    if h < win_size or w < win_size:
        raise ValueError(f"ssim: image {h}x{w} smaller than the {win_size}x{win_size} window")
    g = gaussian_window(win_size, sigma)
    c1, c2 = (_K1 * PEAK) ** 2, (_K2 * PEAK) ** 2
    mu_p, mu_t = _filter_valid(p, g), _filter_valid(t, g)
    var_p = _filter_valid(p * p, g) - mu_p**2
    var_t = _filter_valid(t * t, g) - mu_t**2
    cov = _filter_valid(p * t, g) - mu_p * mu_t
    num = (2 * mu_p * mu_t + c1) * (2 * cov + c2)
    den = (mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2)
    ssim_map = num / den  # (N, C, H', W')
    return ssim_map.mean(axis=(-1, -2)).mean(axis=-1)


def ssim(
    pred: Any,
    target: Any,
    *,
    scale: float = 255.0,
    channels_last: bool = False,
    win_size: int = 11,
    sigma: float = 1.5,
) -> float:
    """Mean SSIM over images of (N, C, H, W) arrays (see module docstring)."""
    p, t = _prepare(pred, target, scale, channels_last, 4, "ssim")
    return float(_ssim_per_image(p, t, win_size, sigma).mean())


# ---- metrics ------------------------------------------------------------------------


def _metrics_0255(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
    err = p - t
    mae = float(np.abs(err).mean())
    mse = float((err**2).mean())
    power = float((t**2).mean())
    if mse > 0:
        psnr = 10.0 * math.log10(PEAK**2 / mse)
        snr = power / mse
    else:
        psnr = snr = math.inf
    snr_db = 10.0 * math.log10(snr) if snr > 0 else -math.inf
    return {
        "mae": mae,
        "mse": mse,
        "rmse": math.sqrt(mse),
        "psnr": psnr,
        "snr": snr,
        "snr_db": snr_db,
        # images smaller than SSIM's 11x11 window (a user's 8x8 thumbnails) have no SSIM; the other
        # metrics still score them: NaN here (null in JSON, "n/a" in crnn.evaluate's tables), where
        # ssim() itself raises -- evaluating such a model after training it must not fail
        "ssim": float(_ssim_per_image(p, t, 11, 1.5).mean()) if min(p.shape[-2:]) >= 11 else math.nan,
    }


def frame_metrics(
    pred: Any, target: Any, *, scale: float = 255.0, channels_last: bool = False
) -> dict[str, float]:
    """MAE, MSE, RMSE, PSNR, SNR, SNR dB, SSIM of (N, C, H, W) frames on 0-255 pixels (SSIM NaN for
    frames smaller than its 11x11 window, whose other metrics are still defined).

    ``scale`` multiplies the inputs into 0-255 units: 255.0 (default) for floats in
    [0, 1], 1.0 for uint8 / 0-255 data. ``channels_last=True`` for (N, H, W, C).
    """
    p, t = _prepare(pred, target, scale, channels_last, 4, "frame_metrics")
    return _metrics_0255(p, t)


def per_age_metrics(
    pred: Any,
    target: Any,
    ages: Sequence[Any],
    *,
    scale: float = 255.0,
    channels_last: bool = False,
) -> dict[Any, dict[str, float]]:
    """``{age: frame_metrics(pred[:, i], target[:, i])}`` for (N, T, C, H, W) arrays.

    ``ages`` has one entry per step T (e.g. ``[15, 20, 25, 30]``).
    """
    p, t = _prepare(pred, target, scale, channels_last, 5, "per_age_metrics")
    ages = list(ages)
    if len(ages) != p.shape[1]:
        raise ValueError(
            f"per_age_metrics: {len(ages)} ages {ages} for {p.shape[1]} steps "
            f"(pred shape {tuple(_to_numpy(pred).shape)})"
        )
    if len(set(ages)) != len(ages):
        raise ValueError(f"per_age_metrics: duplicate ages {ages}")
    return {age: _metrics_0255(p[:, i], t[:, i]) for i, age in enumerate(ages)}


def snr_candidates(
    pred: Any, target: Any, *, scale: float = 255.0, channels_last: bool = False
) -> dict[str, float]:
    """Alternative "SNR" definitions (0-255 units), to compare with the paper's 322.55.

    Sum-based entries sum over each image and average over images.
    """
    p, t = _prepare(pred, target, scale, channels_last, 4, "snr_candidates")
    err = p - t
    mse, mae = float((err**2).mean()), float(np.abs(err).mean())
    ms_y, mean_y = float((t**2).mean()), float(t.mean())
    n_per_image = t[0].size if len(t) else 0
    mse01 = mse / PEAK**2

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else math.inf

    return {
        "power_ratio": ratio(ms_y, mse),  # mean(y^2) / MSE
        "power_ratio_db": 10 * math.log10(ratio(ms_y, mse)) if ms_y > 0 else -math.inf,
        "mean_over_rmse": ratio(mean_y, math.sqrt(mse)),
        "mean_over_mae": ratio(mean_y, mae),
        "ms_over_mae": ratio(ms_y, mae),  # mean(y^2) / MAE (dimensionally mixed)
        "frame_energy_over_mse": ratio(ms_y * n_per_image, mse),  # sum(y^2) per image / MSE
        "ms_over_mse01": ratio(ms_y, mse01),  # mean(y^2) [0-255] / MSE [0-1]
        "peak_power_ratio": ratio(PEAK**2, mse),  # 255^2 / MSE
    }
