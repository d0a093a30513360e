"""Inference: a model directory loaded onto a device, and its forecasts -- written once for
evaluation (:mod:`crnn.evaluate`), offline prediction (:mod:`crnn.predict`), Serve's
``ForecastEngine`` (:mod:`crnn.serve`) and the benchmarks.

    device = pick_device("auto", num_gpus=1)                  # "cuda", or ValueError naming it
    model, cfg, meta = load_model("runs/x/model", device)     # eval mode; ModelError for a bad directory
    check_image_size(image_size(cfg.model), (32, 16, 3), "data/pines", "model runs/x/model")
    pred = forecast_window(model, frames, cfg.data.in_frames)  # float (N, in_frames, C, H, W) in [0, 1]
    out = forecast_uint8(model, frames[:, :4], 4, horizon=3)    # uint8 (N, 3, H, W, C)

Frames come in as uint8 (N, T, H, W, C), as shards and images store them, and reach the model as
float (N, T, C, H, W) in [0, 1] (:func:`crnn.shards.torch_frames`); forecasts go back to uint8 with
:func:`to_uint8`. A step of the window forecast is the frame one age step later; the rollout
(:func:`crnn.model.rollout`) feeds each forecast back as the newest input.

Model families plug in through :data:`crnn.model.FAMILIES` and :func:`crnn.model.build_model`
(which a checkpoint's saved config rebuilds): a registered family is loaded, size-checked, forecast
and rolled out here with no change to this module. Baselines (kinds outside ``FAMILIES``:
persistence, linear) take any image size.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence

import numpy as np
import torch

from crnn.checkpoint import ModelError, model_from_payload, read_model_file
from crnn.model import FAMILIES, ModelConfig, rollout

__all__ = [
    "pick_device", "setup_torch", "load_model", "ModelError", "model_version", "default_input_ages",
    "image_size", "check_image_size", "ImageSizeError", "to_uint8", "forecast_window", "forecast_uint8",
    "DEFAULT_FIRST_AGE", "DEFAULT_AGE_STEP", "MAX_HORIZON",
]

#: Input ages assumed when neither a request nor the model's training data says: 10, 15, 20, ...
DEFAULT_FIRST_AGE = 10
DEFAULT_AGE_STEP = 5

#: The most rollout steps (future frames past the last input) one forecast may ask for: the bound of
#: ``jobs/predict.py --horizon`` and the default of Serve's ``max_horizon`` (each step feeds the previous
#: forecast back in, so errors compound; past ~10 steps of 5 years the forecasts are not worth their time).
MAX_HORIZON = 10


# ----------------------------------------------------------------------------- device
def pick_device(device: str | torch.device | None = "auto", num_gpus: float = 0.0) -> str:
    """The torch device to run on, as a string ("cpu", "cuda", "cuda:1").

    ``None``/"auto" -> "cuda" when GPUs were asked for (``num_gpus > 0``, e.g. a Ray actor's share),
    else "cpu". ValueError naming ``device`` unless it is cpu, cuda or cuda:N, CUDA is available
    here, and N is a CUDA device this machine has.
    """
    if device is None or device == "auto":
        device = "cuda" if num_gpus and num_gpus > 0 else "cpu"
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError):  # torch: "Expected one of cpu, cuda, ... device type"
        d = None
    if d is None or d.type not in ("cpu", "cuda"):
        raise ValueError(f"device={str(device)!r}: expected cpu, cuda or cuda:N")
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} requested but CUDA is not available here")
    if d.type == "cuda" and d.index is not None and d.index >= torch.cuda.device_count():
        raise ValueError(f"device={str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return str(d)


def setup_torch(device: str, torch_threads: int = 0) -> None:
    """Process-wide torch settings for inference: ``torch_threads`` intra-op threads (0: torch's
    default) and, on CUDA, TF32 matmuls and convolutions."""
    if torch_threads > 0:
        torch.set_num_threads(torch_threads)
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


# ----------------------------------------------------------------------------- loading
def load_model(path: str, device: str | torch.device = "cpu", version: bool = False, tta: str = "none",
               mirror_axis: float | None = None) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """(model in eval mode on ``device``, its :class:`crnn.config.Config`, meta) from the model
    directory ``path`` (local or URI). meta: ``epoch`` and ``metrics`` (as trained), ``data`` (the
    training data's summary, :func:`crnn.timeaware.data_summary`, or None), ``tta``, and with
    ``version`` the content hash :func:`model_version` (it reads every weight once; with TTA,
    ``+hflip`` is appended: the forecasts differ). The model is built from the config the checkpoint
    carries, never from flags. ``tta="hflip"``: the model wrapped in mirror test-time augmentation
    (:class:`crnn.mirror.MirrorTTA`) about ``mirror_axis``, by default the training data's
    (``data["mirror_axis"]``). Raises :class:`ModelError` naming the path for a missing, damaged or
    foreign directory (:func:`crnn.checkpoint.read_model_file`) or weights that do not fit their
    config; ValueError naming it for a bad ``tta`` or axis (:func:`crnn.mirror.model_tta_axis`)."""
    from crnn.mirror import check_tta, model_tta_axis, with_tta

    check_tta(tta, path)  # before reading any weight
    payload = read_model_file(path)
    model, cfg = model_from_payload(payload, path)
    model.to(device).eval()
    meta = {"epoch": payload["epoch"], "metrics": payload["metrics"], "data": payload.get("data"), "tta": tta}
    size = image_size(cfg.model)  # None: a baseline, any width
    model = with_tta(model, model_tta_axis(tta, mirror_axis, meta["data"], size[1] if size else None, path))
    if version:
        meta["version"] = model_version(payload, tta)
    return model, cfg, meta


def model_version(payload: dict[str, Any], tta: str = "none") -> str:
    """Short content hash of a model file payload (config + weights): equal models, equal versions;
    with test-time augmentation ``tta`` other than none, ``+<tta>`` is appended (other forecasts)."""
    h = hashlib.sha256(json.dumps(payload.get("config", {}), sort_keys=True).encode())
    for name, t in sorted(payload["state_dict"].items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # 0-dim too (BatchNorm counters)
    return h.hexdigest()[:12] + ("" if tta == "none" else f"+{tta}")


def default_input_ages(cfg, metrics: dict | None = None) -> list[int]:
    """Ages of the model's ``in_frames`` inputs when a request does not say: the training data card's
    first ages (from the model's metrics, or the card at ``cfg.data.path`` when that is local), else
    10, 15, 20, ... (the paper's ages)."""
    from crnn.storage import is_local

    n = cfg.data.in_frames
    ages = None
    for key in ("input_ages", "data_ages", "ages"):
        v = (metrics or {}).get(key)
        if isinstance(v, (list, tuple)) and len(v) >= n:
            ages = v
            break
    if ages is None and cfg.data.path and is_local(cfg.data.path):  # never a remote read from a replica
        try:
            from crnn.shards import read_card

            ages = read_card(cfg.data.path).get("ages")
        except Exception:  # no card, foreign directory: fall back to the default
            ages = None
    try:
        ages = [int(a) for a in ages[:n]] if ages is not None and len(ages) >= n else None
    except (TypeError, ValueError):
        ages = None
    if ages is None or any(b <= a for a, b in zip(ages, ages[1:])):
        ages = [DEFAULT_FIRST_AGE + DEFAULT_AGE_STEP * i for i in range(n)]
    return ages


# ----------------------------------------------------------------------------- image size
class ImageSizeError(ValueError):
    """Images of another size than the model takes; the message names both sizes."""


def image_size(mc: ModelConfig) -> tuple[int, int, int] | None:
    """(height, width, channels) a model of config ``mc`` takes, or None when it takes any size: a
    trained family keeps the size it was trained on (the CRNN's Dense layer cannot take another;
    the convolutional families were fitted to it), the baselines work per pixel."""
    return (mc.height, mc.width, mc.channels) if mc.kind in FAMILIES else None


def check_image_size(expected: Sequence[int] | None, got: Sequence[int], where: str, model: str = "the model",
                     hint: str = "") -> None:
    """ImageSizeError unless ``got`` equals ``expected`` (both (height, width, channels); ``expected``
    None: any size). The message: ``"<where>: images are 16x16x3 but <model> expects 32x16x3
    (height x width x channels)"``, then ``; <hint>`` when given."""
    if expected is None or tuple(int(v) for v in got) == tuple(int(v) for v in expected):
        return
    fmt = "x".join
    raise ImageSizeError(f"{where}: images are {fmt(map(str, got))} but {model} expects "
                         f"{fmt(map(str, expected))} (height x width x channels)" + (f"; {hint}" if hint else ""))


def resize_hint(expected: Sequence[int]) -> str:
    """What to do about a dataset whose images are not a model's size (``expected``: (height, width,
    channels)): make the dataset again at that size -- the network's size is fixed once trained."""
    h, w = int(expected[0]), int(expected[1])
    return (f"a trained network reads one image size: make the dataset at {h}x{w} (jobs/ingest.py --height {h} "
            f"--width {w}; the simulator: jobs/generate.py --height {h} --width {w})")


def check_dataset_image_size(expected: Sequence[int] | None, card: dict, data_path: str, model: str) -> None:
    """:func:`check_image_size` of a dataset ``card``'s images against a model's ``expected`` size,
    with :func:`resize_hint` in the ImageSizeError."""
    got = (card["height"], card["width"], card["channels"])
    check_image_size(expected, got, data_path, model, hint=resize_hint(expected) if expected is not None else "")


# ----------------------------------------------------------------------------- forecasting
def to_uint8(pred: np.ndarray) -> np.ndarray:
    """float (N, K, C, H, W) in [0, 1] -> uint8 (N, K, H, W, C): times 255, rounded half to even
    (``np.rint``), clipped to 0..255 (values outside [0, 1] included)."""
    return np.clip(np.rint(np.asarray(pred, np.float64) * 255.0), 0, 255).astype(np.uint8).transpose(0, 1, 3, 4, 2)


def forecast_window(model: torch.nn.Module, frames_uint8: np.ndarray, in_frames: int = 4, batch_size: int = 256,
                    device: str | torch.device = "cpu") -> np.ndarray:
    """Next-frame forecasts of ``model`` for each of the first ``in_frames`` frames.

    ``frames_uint8``: (N, T, H, W, C) uint8 with T >= in_frames; the model sees
    ``frames[:, :in_frames]``, ``batch_size`` series at a time. Returns float32
    (N, in_frames, C, H, W) in [0, 1] (clamped) on the CPU; step ``t`` is the forecast of
    ``frames[:, t + 1]``. Runs in eval mode under ``torch.inference_mode`` (the model's train/eval
    mode is restored afterwards). ValueError naming the bad argument.
    """
    from crnn.shards import torch_frames

    frames = np.asarray(frames_uint8)
    if frames.ndim != 5:
        raise ValueError(f"forecast_window: expected frames (N, T, H, W, C), got shape {frames.shape}")
    if isinstance(in_frames, bool) or not isinstance(in_frames, int) or in_frames < 1:
        raise ValueError(f"forecast_window: in_frames={in_frames!r} must be a positive int")
    if frames.shape[1] < in_frames:
        raise ValueError(f"forecast_window: {frames.shape[1]} frames per series, fewer than in_frames={in_frames}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"forecast_window: batch_size={batch_size!r} must be a positive int")
    n, _, h, w, c = frames.shape
    out = np.empty((n, in_frames, c, h, w), np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for i in range(0, n, batch_size):
                x = torch_frames(frames[i:i + batch_size, :in_frames], device=device)  # (B, T, C, H, W)
                out[i:i + batch_size] = model(x).clamp_(0.0, 1.0).float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def forecast_uint8(model: torch.nn.Module, frames: np.ndarray, in_frames: int,
                   horizon: int | Sequence[int] | None, device: str | torch.device = "cpu") -> np.ndarray | list:
    """Forecasts of ``model`` for uint8 inputs (B, in_frames, H, W, C), as uint8 frames.

    * ``horizon=None``: the window forecast (:func:`forecast_window`) -> (B, in_frames, H, W, C);
    * an int ``h``: ``rollout(model, x, h, window=in_frames)`` -> (B, h, H, W, C);
    * a sequence of ints (one per series): the rollout of each series to its own horizon, run as one
      batch that shrinks as short horizons finish (series sorted by horizon) -> a list of
      (h_i, H, W, C) arrays. Each equals the rollout of that series alone, up to float rounding.

    Runs under ``torch.inference_mode``; the model must already be in eval mode on ``device``.
    ValueError for frames of another shape or a horizon that is not positive.
    """
    from crnn.shards import torch_frames

    frames = np.asarray(frames)
    if frames.ndim != 5 or frames.shape[1] != in_frames:
        raise ValueError(f"forecast_uint8: expected frames (B, {in_frames}, H, W, C), got {frames.shape}")
    if horizon is None:
        return to_uint8(forecast_window(model, frames, in_frames, max(1, len(frames)), device))
    with torch.inference_mode():
        x = torch_frames(frames, device=device)  # (B, T, C, H, W) in [0, 1]
        if isinstance(horizon, (int, np.integer)) and not isinstance(horizon, bool):
            return to_uint8(rollout(model, x, int(horizon), window=in_frames).float().cpu().numpy())
        hs = np.asarray([int(h) for h in horizon], np.int64)
        if hs.shape != (len(frames),) or (hs < 1).any():
            raise ValueError(f"forecast_uint8: need one positive horizon per series, got {list(horizon)}")
        order = np.argsort(-hs, kind="stable")  # longest first: the active series are a prefix
        hs_sorted = hs[order]
        cur = x[torch.as_tensor(order, device=x.device)]
        b, _, c, h, w = cur.shape
        out = np.empty((b, int(hs_sorted[0]), c, h, w), np.float32)
        for k in range(int(hs_sorted[0])):
            n = int((hs_sorted > k).sum())
            cur = cur[:n]
            nxt = model(cur)[:, -1].clamp(0.0, 1.0)  # (n, C, H, W), as in crnn.model.rollout
            out[:n, k] = nxt.float().cpu().numpy()
            cur = torch.cat([cur, nxt.unsqueeze(1)], dim=1)[:, -in_frames:]
        u = to_uint8(out)
        result: list[np.ndarray | None] = [None] * b
        for i, src in enumerate(order):
            result[src] = u[i, :hs_sorted[i]]
        return result
