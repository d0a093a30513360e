"""Offline batch forecasting: a published dataset in, a published dataset of forecasts out (Ray Data).

    card = predict_dataset("runs/x/model", "data/pines", "runs/x/forecasts")            # ages 15..30
    card = predict_dataset(model, data, out, horizon=3, split="test")                    # ages 30, 35, 40

Each series' first ``in_frames`` frames (the model config's ``data.in_frames``; ages 10..25 for the
paper's data) are the inputs, as in training and evaluation; ``inputs="last"`` uses the last
``in_frames`` frames instead (forecast beyond the end of the data). Two modes:

* ``horizon=None`` (window): the model's next-frame forecast for every input step, like
  :func:`crnn.evaluate.predict` -- inputs ages 10..25 -> forecasts of ages 15..30;
* ``horizon=h``: autoregressive rollout (:func:`crnn.model.rollout`) ``h`` steps past the last input,
  forecasts fed back as inputs -- inputs ages 10..25 -> ages 30, 35, ... (``h`` frames).

The shards are read with :func:`crnn.shards.read_ray` (every shard's footer is checked first) and
forecast by ``map_batches`` on an actor pool of :class:`BatchForecaster` (``concurrency`` actors, each
with ``num_cpus``/``num_gpus``; the model is loaded once per actor). The output is a dataset in the
same shard format (:mod:`crnn.shards`), one row per input series::

    series_id  string   the source series' id          seed  int64   copied from the source
    split      string   the source split (so ``read_ray(out, split=...)`` works)
    source_split string the same, named explicitly     ages  tensor int32 (K,)  forecast ages
    frames     tensor uint8 (K, H, W, C)  forecasts     height, width, channels  int32

with K = in_frames (window) or horizon, and a ``dataset.json`` card with ``"kind": "forecasts"`` and a
``"forecast"`` section (model, its version, data, mode, input ages). Output goes through
:func:`crnn.shards.publish`: locally it is written to a staging directory renamed into place only
after every shard and the card are written, so a failed run leaves no dataset (or the previous one,
with ``overwrite``) at ``out``. A shard that cannot be read fails the run with its path.

The helpers shared with online serving (:mod:`crnn.serve`) live here too: :func:`forecast_uint8`,
:func:`model_version`, :func:`default_input_ages`.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Sequence

import numpy as np
import torch

from crnn.model import FAMILIES, rollout
from crnn.shards import ShardError

__all__ = [
    "predict_dataset", "plan_predict", "BatchForecaster", "forecast_uint8", "forecast_ages", "to_uint8",
    "model_version", "default_input_ages", "find_unreadable_shard", "pick_device",
]

DEFAULT_FIRST_AGE = 10
DEFAULT_AGE_STEP = 5
INPUTS = ("first", "last")
OUTPUT_COLUMNS = ("series_id", "seed", "split", "source_split", "ages", "frames", "height", "width", "channels")


# ----------------------------------------------------------------------------- shared helpers
def pick_device(device: str | None, num_gpus: float = 0.0) -> str:
    """``None``/"auto" -> "cuda" when GPUs were asked for, else "cpu"; checks CUDA is there."""
    if device in (None, "auto"):
        device = "cuda" if num_gpus and num_gpus > 0 else "cpu"
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available here")
    return str(device)


def to_uint8(pred: np.ndarray) -> np.ndarray:
    """float (N, K, C, H, W) in [0, 1] -> uint8 (N, K, H, W, C), rounded like
    :func:`crnn.evaluate.to_uint8_frames`."""
    return np.clip(np.rint(np.asarray(pred, np.float64) * 255.0), 0, 255).astype(np.uint8).transpose(0, 1, 3, 4, 2)


def forecast_uint8(model: torch.nn.Module, frames: np.ndarray, in_frames: int,
                   horizon: int | Sequence[int] | None, device: str | torch.device = "cpu") -> np.ndarray | list:
    """Forecasts of ``model`` for uint8 inputs (B, in_frames, H, W, C), as uint8 frames.

    * ``horizon=None``: the window forecast ``model(x)`` -> (B, in_frames, H, W, C);
    * an int ``h``: ``rollout(model, x, h, window=in_frames)`` -> (B, h, H, W, C);
    * a sequence of ints (one per series): the rollout of each series to its own horizon, run as one
      batch that shrinks as short horizons finish (series sorted by horizon) -> a list of
      (h_i, H, W, C) arrays. Each equals the rollout of that series alone, up to float rounding.

    Runs under ``torch.inference_mode``; the model must already be in eval mode on ``device``.
    """
    frames = np.asarray(frames)
    if frames.ndim != 5 or frames.shape[1] != in_frames:
        raise ValueError(f"forecast_uint8: expected frames (B, {in_frames}, H, W, C), got {frames.shape}")
    from crnn.shards import torch_frames

    with torch.inference_mode():
        x = torch_frames(frames, device=device)  # (B, T, C, H, W) in [0, 1]
        if horizon is None:
            return to_uint8(model(x).clamp_(0.0, 1.0).float().cpu().numpy())
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


def forecast_ages(input_ages: np.ndarray, horizon: int | None) -> np.ndarray:
    """Ages of the forecasts for input ages (B, T) (or (T,)): window -> the next age of every input,
    rollout -> ``horizon`` ages past the last one, in steps of the last spacing."""
    a = np.asarray(input_ages, np.int64)
    one = a.ndim == 1
    a = np.atleast_2d(a)
    step = (a[:, -1] - a[:, -2]) if a.shape[1] >= 2 else np.full(len(a), DEFAULT_AGE_STEP)
    if horizon is None:
        out = np.concatenate([a[:, 1:], (a[:, -1] + step)[:, None]], axis=1)
    else:
        out = a[:, -1:] + step[:, None] * np.arange(1, horizon + 1)[None, :]
    out = out.astype(np.int32)
    return out[0] if one else out


def model_version(payload: dict[str, Any]) -> str:
    """Short content hash of a model file payload (config + weights): equal models, equal versions."""
    h = hashlib.sha256(json.dumps(payload.get("config", {}), sort_keys=True).encode())
    for name, t in sorted(payload["state_dict"].items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # 0-dim too (BatchNorm counters)
    return h.hexdigest()[:12]


def default_input_ages(cfg, metrics: dict | None = None) -> list[int]:
    """Ages of the model's ``in_frames`` inputs when a request does not say: the training data card's
    first ages (from the model's metrics, or the card at ``cfg.data.path`` when that is a local
    directory), else 10, 15, 20, ... (the paper's ages)."""
    n = cfg.data.in_frames
    ages = None
    for key in ("input_ages", "data_ages", "ages"):
        v = (metrics or {}).get(key)
        if isinstance(v, (list, tuple)) and len(v) >= n:
            ages = v
            break
    if ages is None and cfg.data.path and "://" not in cfg.data.path and os.path.isdir(cfg.data.path):
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


def find_unreadable_shard(path: str) -> str | None:
    """Fully decode every shard of a dataset; the first that fails, as ``"<path>: <error>"``."""
    import pyarrow.parquet as pq

    from crnn.shards import list_shards, resolve

    fs, _ = resolve(path)
    for shard in list_shards(path):
        try:
            with fs.open_input_file(shard) as f:
                pq.ParquetFile(f).read()
        except Exception as e:  # truncated file, bad page, foreign file
            return f"{shard}: corrupt or unreadable shard ({type(e).__name__}: {e})"
    return None


# ----------------------------------------------------------------------------- Ray Data UDF
class BatchForecaster:
    """``map_batches`` callable class: loads the model once per actor, forecasts numpy batches."""

    def __init__(self, model_path: str, device: str = "cpu", horizon: int | None = None,
                 inputs: str = "first", torch_threads: int = 0):
        from crnn.checkpoint import load_model

        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        if torch.device(device).type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.device = device
        self.model, self.cfg, _ = load_model(model_path, device)
        self.in_frames = self.cfg.data.in_frames
        self.horizon = horizon
        self.inputs = inputs

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        frames = np.asarray(batch["frames"])  # (B, T, H, W, C) uint8
        ages = np.asarray(batch["ages"])  # (B, T)
        n = self.in_frames
        sel = slice(0, n) if self.inputs == "first" else slice(frames.shape[1] - n, frames.shape[1])
        out = forecast_uint8(self.model, frames[:, sel], n, self.horizon, self.device)
        b, _, h, w, c = out.shape
        return {
            "series_id": batch["series_id"],
            "seed": np.asarray(batch["seed"], np.int64),
            "split": batch["split"],
            "source_split": batch["split"],
            "ages": forecast_ages(ages[:, sel], self.horizon),
            "frames": out,
            "height": np.full(b, h, np.int32),
            "width": np.full(b, w, np.int32),
            "channels": np.full(b, c, np.int32),
        }


# ----------------------------------------------------------------------------- driver
def plan_predict(model_path: str, data_path: str, out: str, *, split: str | Sequence[str] | None = None,
                 horizon: int | None = None, inputs: str = "first", batch_size: int = 256, num_gpus: float = 0.0,
                 device: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Every check of :func:`predict_dataset`, without Ray and before any work: arguments, the model
    directory (:class:`crnn.checkpoint.ModelError`), the dataset's card and shard footers
    (:class:`crnn.shards.ShardError`), data the model cannot take, an existing ``out``. Returns
    what the run needs (config, model payload, card, splits, ages)."""
    from crnn.checkpoint import check_model_dir
    from crnn.shards import SPLITS, check_out_free, validate

    if inputs not in INPUTS:
        raise ValueError(f"inputs={inputs!r}: expected one of {INPUTS}")
    if horizon is not None and (isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1):
        raise ValueError(f"horizon={horizon!r} must be a positive int (or None for the window forecast)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive int")
    device = pick_device(device, num_gpus)
    cfg, payload = check_model_dir(model_path)  # ModelError names a bad model directory
    in_frames = cfg.data.in_frames
    card = validate(data_path)
    src_ages = [int(a) for a in card["ages"]]
    if len(src_ages) < in_frames:
        raise ValueError(f"{data_path}: {len(src_ages)} frames per series (ages {src_ages}); the model "
                         f"needs in_frames={in_frames}")
    size = (int(card["height"]), int(card["width"]), int(card["channels"]))
    m = cfg.model
    if m.kind in FAMILIES and size != (m.height, m.width, m.channels):
        raise ValueError(f"image size mismatch: data {data_path} has {size[0]}x{size[1]}x{size[2]} (HxWxC) "
                         f"frames but model {model_path} expects {m.height}x{m.width}x{m.channels}")
    splits = None if split is None else ([split] if isinstance(split, str) else list(split))
    counts = dict(card.get("splits") or {})
    if splits is None:
        num_series = int(card["num_series"])
    else:
        bad = [s for s in splits if s not in SPLITS]
        if bad:
            raise ValueError(f"unknown split(s) {bad}; expected some of {SPLITS}")
        counts = {s: int(counts.get(s, 0)) for s in splits}
        num_series = sum(counts.values())
    if num_series == 0:
        raise ValueError(f"{data_path}: no series in split(s) {splits} (series per split: {card.get('splits')})")
    in_ages = src_ages[:in_frames] if inputs == "first" else src_ages[-in_frames:]
    check_out_free(out, overwrite)
    return {"cfg": cfg, "payload": payload, "card": card, "device": device, "splits": splits, "counts": counts,
            "num_series": num_series, "size": size, "in_ages": in_ages,
            "out_ages": forecast_ages(np.asarray(in_ages), horizon).tolist()}


def predict_dataset(model_path: str, data_path: str, out: str, *, split: str | Sequence[str] | None = None,
                    horizon: int | None = None, inputs: str = "first", batch_size: int = 256,
                    concurrency: int | tuple[int, int] = 1, num_cpus: float = 1.0, num_gpus: float = 0.0,
                    device: str | None = None, overwrite: bool = False, preview: str | None = None,
                    preview_count: int = 6) -> dict[str, Any]:
    """Forecast every series of ``data_path`` (optionally some splits) with the model directory
    ``model_path`` and publish the forecasts at ``out``; returns the output's card. Needs Ray.

    Raises ValueError for bad arguments or data the model cannot take (too few frames, another image
    size), :class:`crnn.shards.ShardError` naming the shard for a corrupt input, FileExistsError
    when ``out`` exists without ``overwrite``.
    """
    from crnn.shards import SPLITS, base_card, publish, read_card, read_ray, write_ray_dataset

    plan = plan_predict(model_path, data_path, out, split=split, horizon=horizon, inputs=inputs,
                        batch_size=batch_size, num_gpus=num_gpus, device=device, overwrite=overwrite)
    device, payload, splits, counts = plan["device"], plan["payload"], plan["splits"], plan["counts"]
    num_series, size, in_ages, out_ages = plan["num_series"], plan["size"], plan["in_ages"], plan["out_ages"]
    version = model_version(payload)

    # Every shard footer is checked here (ShardError names a bad one) before anything is written.
    ds = read_ray(data_path, split=splits, columns=["series_id", "seed", "split", "ages", "frames"])
    threads = max(1, int(num_cpus)) if device == "cpu" else 0
    ds = ds.map_batches(
        BatchForecaster, batch_size=batch_size, batch_format="numpy", concurrency=concurrency,
        num_cpus=num_cpus, num_gpus=num_gpus or None,
        fn_constructor_kwargs=dict(model_path=model_path, device=device, horizon=horizon, inputs=inputs,
                                   torch_threads=threads),
    )
    out_card = base_card(
        num_series=num_series, ages=out_ages, height=size[0], width=size[1], channels=size[2],
        splits={s: int(counts.get(s, 0)) for s in SPLITS}, source=f"forecasts of {data_path} by {model_path}",
        kind="forecasts",
        forecast={"model": model_path, "model_version": version, "model_epoch": payload.get("epoch"),
                  "data": data_path, "split": splits, "mode": "window" if horizon is None else "rollout",
                  "horizon": horizon, "inputs": inputs, "input_ages": in_ages},
    )
    out_card["columns"]["source_split"] = "string (the source series' split; same as split)"
    out_card["columns"]["series_id"] = "string (the source series' id)"
    out_card["columns"]["ages"] = "tensor int32 (K,) forecast ages"
    out_card["columns"]["frames"] = "tensor uint8 (K, H, W, C) forecast frames"
    try:
        publish(lambda d: write_ray_dataset(ds, d), out, out_card, overwrite=overwrite)
    except ShardError:
        raise
    except Exception as e:
        # A shard whose footer is fine but whose pages are not fails inside a Ray Data read task;
        # name it (full decode of each shard, only on this failure path).
        bad = find_unreadable_shard(data_path)
        if bad is not None:
            raise ShardError(bad) from e
        raise
    if preview:
        write_preview(preview, model_path, data_path, splits, horizon, inputs, device, preview_count)
    return read_card(out)


def write_preview(path: str, model_path: str, data_path: str, splits, horizon: int | None, inputs: str,
                  device: str, count: int = 6) -> str:
    """PNG sheet of the first ``count`` series: inputs and forecasts (rollout), or real vs forecast
    frames at the same ages (window mode). Forecasts are recomputed in-process for these few series."""
    from crnn.checkpoint import load_model
    from crnn.plots import comparison_sheet, contact_sheet
    from crnn.shards import read_ray

    model, cfg, _ = load_model(model_path, device)
    n = cfg.data.in_frames
    rows = read_ray(data_path, split=splits, columns=["series_id", "ages", "frames"]) \
        .limit(max(1, count)).take_batch(max(1, count), batch_format="numpy")
    frames, ages, ids = rows["frames"], rows["ages"], [str(s) for s in rows["series_id"]]
    sel = slice(0, n) if inputs == "first" else slice(frames.shape[1] - n, frames.shape[1])
    pred = forecast_uint8(model, frames[:, sel], n, horizon, device)
    f_ages = [int(a) for a in forecast_ages(ages[0, sel], horizon)]
    real_ages = [int(a) for a in ages[0]]
    if horizon is None and all(a in real_ages for a in f_ages):
        idx = [real_ages.index(a) for a in f_ages]
        sheet = comparison_sheet({"real": frames[:, idx], "forecast": pred}, f_ages, series_ids=ids,
                                 title=f"forecasts by {os.path.basename(model_path.rstrip('/'))}")
    else:
        seq = np.concatenate([frames[:, sel], pred], axis=1)
        sheet = contact_sheet(list(seq), [int(a) for a in ages[0, sel]] + f_ages, row_labels=ids)
    sheet.save(path)
    return path
