"""Where a forecaster's error sits: which image rows, which pixels, which series.

    python benchmarks/error_anatomy.py --data data/pines runs/convlstm-20k/model [MODEL_DIR ...]
    python benchmarks/error_anatomy.py --data data/pines runs/a/model --json runs/anatomy.json

For each model (and persistence, for scale) on a dataset split (default: the model's test split),
the forecast of the last input step (age 30 on the default dataset), delivered as uint8 like
predict and Serve deliver it, is compared with the real frame. Squared error on 0-255 pixels:

* ``mse``: of the uint8 forecast (``crnn.evaluate`` scores the float forecast, a few hundredths
  apart: 55.06 here vs 55.03 there for the 20,000-series ConvLSTM);
* ``by_row``: MSE of each image row (top first), averaged over series, columns and channels: where
  in the picture the error is (on pines: the crown's lower part, where branches die and are shed);
* ``top_value_share``: share of the total squared error in the worst 1 %, 5 % and 20 % of pixel
  values (one value = one pixel's channel of one series) -- how concentrated it is;
* ``changed_share``/``changed_fraction``: share of the error on the pixels whose colour changed
  between the last input frame and the target, and how many pixels that is;
* ``transitions``: per kind of pixel change from the last input frame to the target, the fraction
  of pixels (``pixels``), the share of the total error (``share``) and the MSE on those pixels
  (``mse``). Background = within ``BG_TOL`` of the series' most frequent colour in the last input
  frame (the scene's backdrop: 88 % of a pine frame; a flat backdrop is assumed, and of colours
  equally frequent the smallest in RGB order is taken). Kinds: ``background`` (stays backdrop),
  ``appeared`` (backdrop -> object: growth), ``vanished`` (object -> backdrop: shed), and on object
  pixels in both frames ``greyed`` (colour spread max-min over RGB falls from >= ``GREY_CHROMA`` to
  below it: on pines, live needles/wood turning into a dead grey branch), ``changed`` (any other
  change beyond ``BG_TOL``) and ``unchanged``; the six partition the pixels;
* ``series_quantiles`` (10/50/90/99 %) of per-series MSE and ``worst_decile_share`` (share of the
  error in the worst 10 % of series); ``corr_with_change``: correlation over series between a
  model's MSE and persistence's (how much the series changed).

Grid models only (those ``jobs/evaluate.py`` scores on a regular dataset); no Ray; checks the model
and dataset with ``crnn.evaluate.check_evaluate`` before reading frames (ValueError naming the
problem).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from crnn.evaluate import check_models_split  # noqa: E402
from crnn.inference import forecast_window, load_model, to_uint8  # noqa: E402
from crnn.model import ModelConfig, build_model  # noqa: E402
from crnn.shards import read_numpy  # noqa: E402
from crnn.storage import write_json  # noqa: E402

TOP_SHARES = (0.01, 0.05, 0.2)
BG_TOL = 6          # max |channel difference| (0-255) still counted as the same colour
GREY_CHROMA = 25    # RGB spread (max - min channel) below which a pixel counts as grey


def _check_frames(**arrays: np.ndarray) -> None:
    """ValueError unless every named array is uint8 (0-255, as delivered) and all are (N, H, W, C)
    of one shape."""
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray) or a.dtype != np.uint8:
            raise ValueError(f"{name} must be uint8 (0-255, as delivered), got "
                             f"{getattr(a, 'dtype', type(a).__name__)}")
    shapes = [a.shape for a in arrays.values()]
    if len(shapes[0]) != 4 or len(set(shapes)) > 1:
        raise ValueError(f"{', '.join(arrays)} must be (N, H, W, C) of one shape, got "
                         f"{', '.join(map(str, shapes))}")


def _backdrop(frames: np.ndarray) -> np.ndarray:
    """Per series, the most frequent colour of a uint8 (N, H, W, C) frame: (N, C)."""
    out = np.empty((len(frames), frames.shape[-1]), frames.dtype)
    for i, f in enumerate(frames):
        colours, counts = np.unique(f.reshape(-1, f.shape[-1]), axis=0, return_counts=True)
        out[i] = colours[np.argmax(counts)]
    return out


def transitions(last_input: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean (N, H, W) masks of the kinds of change from ``last_input`` to ``truth`` (uint8
    (N, H, W, C)): background, appeared, vanished, greyed, changed, unchanged (see the module
    docstring); they partition the pixels."""
    _check_frames(last_input=last_input, truth=truth)
    last, truth = last_input.astype(np.int16), truth.astype(np.int16)
    bg = _backdrop(last_input).astype(np.int16)[:, None, None, :]
    last_bg = np.abs(last - bg).max(-1) <= BG_TOL
    truth_bg = np.abs(truth - bg).max(-1) <= BG_TOL
    obj = ~last_bg & ~truth_bg
    moved = np.abs(truth - last).max(-1) > BG_TOL
    greyed = obj & moved & (np.ptp(last, axis=-1) >= GREY_CHROMA) & (np.ptp(truth, axis=-1) < GREY_CHROMA)
    return {"background": last_bg & truth_bg, "appeared": last_bg & ~truth_bg, "vanished": ~last_bg & truth_bg,
            "greyed": greyed, "changed": obj & moved & ~greyed, "unchanged": obj & ~moved & ~greyed}


def anatomy(pred: np.ndarray, truth: np.ndarray, last_input: np.ndarray,
            reference_series_mse: np.ndarray | None = None) -> dict:
    """The error anatomy of forecasts ``pred`` against ``truth``, both uint8 (N, H, W, C), with
    ``last_input`` (N, H, W, C) the frame before the target. ``reference_series_mse`` (N,): per-series
    MSE of a reference forecaster (persistence) for ``corr_with_change``. Keys: see the module
    docstring, plus ``series_mse`` (N,) as a list. Raises ValueError for arrays that are not uint8, of
    mismatched shapes, or empty."""
    pred, truth, last_input = (np.asarray(a) for a in (pred, truth, last_input))
    _check_frames(pred=pred, truth=truth, last_input=last_input)
    if not len(pred):
        raise ValueError("no series to score (N = 0)")
    err = (pred.astype(np.float64) - truth.astype(np.float64)) ** 2        # (N, H, W, C)
    total = float(err.sum())
    series = err.mean(axis=(1, 2, 3))
    flat = np.sort(err.ravel())[::-1]
    changed = (last_input != truth).any(axis=-1)                             # (N, H, W)
    worst = np.sort(series)[::-1][:max(1, int(round(0.1 * len(series))))]
    per_pixel = err.sum(axis=-1)                                             # (N, H, W)
    kinds = {k: {"pixels": float(m.mean()),
                 "share": float(per_pixel[m].sum()) / total if total else 0.0,
                 "mse": float(per_pixel[m].mean() / err.shape[-1]) if m.any() else 0.0}
             for k, m in transitions(last_input, truth).items()}
    out = {
        "mse": float(err.mean()),
        "by_row": [float(v) for v in err.mean(axis=(0, 2, 3))],
        "top_value_share": {f"{q:g}": (float(flat[:max(1, int(len(flat) * q))].sum()) / total
                                       if total else 0.0) for q in TOP_SHARES},
        "changed_fraction": float(changed.mean()),
        "changed_share": float(per_pixel[changed].sum()) / total if total else 0.0,
        "transitions": kinds,
        "series_quantiles": {f"{q:g}": float(v) for q, v in
                             zip((0.1, 0.5, 0.9, 0.99), np.quantile(series, (0.1, 0.5, 0.9, 0.99)))},
        "worst_decile_share": float(worst.sum() / series.sum()) if series.sum() else 0.0,
        "series_mse": [float(v) for v in series],
    }
    if reference_series_mse is not None and len(series) > 1 and series.std() > 0 \
            and np.std(reference_series_mse) > 0:
        out["corr_with_change"] = float(np.corrcoef(series, reference_series_mse)[0, 1])
    return out


def measure(model_dirs: list[str], data: str, split: str | None = None) -> dict:
    """``anatomy`` of each model directory's last-step forecast and of persistence on ``data``'s
    split. Raises ValueError (ModelError, ShardError) naming a bad model, dataset or split, before
    any forecast is made."""
    split = check_models_split(model_dirs, data, split)
    frames = read_numpy(data, split=split, columns=["frames"])["frames"]     # (N, T, H, W, C)
    models = {}
    for m in model_dirs:
        model, cfg, _ = load_model(m)
        models[m] = (model, cfg.data.in_frames)
    in_frames = next(iter(models.values()))[1]
    if any(k != in_frames for _, k in models.values()):
        raise ValueError(f"the models see different numbers of input frames: "
                         f"{ {m: k for m, (_, k) in models.items()} }")
    truth, last = frames[:, in_frames], frames[:, in_frames - 1]
    pers = to_uint8(forecast_window(build_model(ModelConfig(kind="persistence")), frames, in_frames))[:, -1]
    res = {"data": data, "split": split, "series": len(frames), "step": in_frames,
           "models": {"persistence": anatomy(pers, truth, last)}}
    ref = np.asarray(res["models"]["persistence"]["series_mse"])
    for m, (model, _) in models.items():
        pred = to_uint8(forecast_window(model, frames, in_frames))[:, -1]
        res["models"][m] = anatomy(pred, truth, last, ref)
    return res


def format_report(res: dict, bands: int = 8) -> str:
    """A text report: one block per model, rows grouped into ``bands`` horizontal bands."""
    lines = [f"error anatomy: {res['data']} split {res['split']} ({res['series']} series), "
             f"forecast of step {res['step']} (frame index {res['step']}), MSE on 0-255 pixels"]
    for name, a in res["models"].items():
        rows = np.asarray(a["by_row"])
        edges = np.linspace(0, len(rows), bands + 1).round().astype(int)
        band = [f"{rows[lo:hi].mean():.0f}" for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]
        top = ", ".join(f"{float(q) * 100:g} %: {v:.2f}" for q, v in a["top_value_share"].items())
        qs = " / ".join(f"{v:.1f}" for v in a["series_quantiles"].values())
        lines += [f"- {name}: MSE {a['mse']:.2f}",
                  f"    by row band, top to bottom: {' | '.join(band)}",
                  f"    share of the error in the worst pixel values ({top})",
                  f"    on pixels that changed since the last input: {a['changed_share']:.2f} of the error, "
                  f"{a['changed_fraction']:.2f} of the pixels",
                  "    by kind of change (pixels / share of the error / MSE there): " + "; ".join(
                      f"{k} {v['pixels'] * 100:.1f} % / {v['share'] * 100:.1f} % / {v['mse']:.0f}"
                      for k, v in a["transitions"].items()),
                  f"    per-series MSE 10/50/90/99 %: {qs}; worst 10 % of series: "
                  f"{a['worst_decile_share']:.2f} of the error"
                  + (f"; corr. with persistence's error {a['corr_with_change']:.2f}"
                     if "corr_with_change" in a else "")]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="model directories (runs/<name>/model)")
    p.add_argument("--data", required=True, help="a regular dataset (jobs/generate.py output)")
    p.add_argument("--split", default=None, help="split to score (default: the models' test split)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the result as JSON")
    a = p.parse_args(argv)
    try:
        res = measure(a.models, a.data, a.split)
    except (ValueError, OSError) as e:                 # OSError: e.g. --data names a file
        p.error(str(e))
    print(format_report(res))
    if a.json:
        write_json(a.json, {**res, "models": {k: {kk: vv for kk, vv in v.items() if kk != "series_mse"}
                                              for k, v in res["models"].items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
