"""Evaluate a trained model on a dataset split against the two baselines and the paper's Table 3.

    result = evaluate("runs/x/model", "data/pines", out="runs/x/eval")   # split: cfg.data.test_split
    print(format_table(result))

The model sees frames ``0..in_frames-1`` (ages 10, 15, 20, 25) and forecasts frames
``1..in_frames`` (ages 15, 20, 25, 30); the headline is the last forecast age (30), the one the
paper's Table 3 reports. Every model -- the trained one, ``persistence`` (repeat the last frame) and
``linear`` (per-pixel linear extrapolation) -- is scored with :func:`crnn.metrics.per_age_metrics` on
0-255 pixels (MAE, MSE, RMSE, PSNR dB, SNR power ratio, SNR dB, SSIM).

The result is a plain JSON dict and equals its own JSON round trip:

* ages are *string* keys in ``results`` (``result["results"]["model"]["30"]["mse"]``), as JSON
  would make them; ``result["headline"][name]`` is the headline age's metrics for each model;
* non-finite floats are stored as ``None`` (JSON ``null``): ``psnr``/``snr``/``snr_db`` are +inf
  exactly when ``mse == 0`` (a perfect forecast), ``snr_db`` is -inf when the targets are all
  black; ``improvement_over_persistence`` is ``None`` when the model's MSE is 0.

No Ray: the split is read into memory with :func:`crnn.shards.read_numpy` (the paper's test set is
384 series of 32x16x3, a few MB).
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import torch

from crnn.config import to_dict
from crnn.inference import (check_dataset_image_size, check_image_size, forecast_window, image_size, load_model,
                            pick_device, resize_hint, to_uint8)
from crnn.metrics import PAPER_TABLE3, per_age_metrics
from crnn.mirror import tta_axis, tta_note, with_tta
from crnn.model import ModelConfig, build_model
from crnn.shards import card_ages, read_card, read_numpy, require_regular, split_error
from crnn.storage import join, json_safe, write_bytes, write_json
from crnn.timeaware import AtAges, _unit, check_data_unit, window_ages

__all__ = ["evaluate", "check_evaluate", "format_table", "BASELINES", "PAPER_AGE"]

#: The baselines every evaluation reports next to the model: persistence (repeat the last frame),
#: linear extrapolation, and the analog forecast (k nearest neighbours in the dataset's training
#: split: crnn.models.analog) -- the training-free bar a network must clear.
BASELINES = ("persistence", "linear", "analog")
#: Analog forecast settings: neighbours, and the most training series kept in its bank (a random
#: subset, seeded, beyond that; 20,000 as in the analog figure of the forecast-quality issue).
ANALOG_K = 8
ANALOG_MAX_BANK = 20_000
#: ... and at most this much memory for its float32 bank (fewer series for large images).
ANALOG_MAX_BYTES = 2**30
#: The age of the frame the paper's Table 3 scores.
PAPER_AGE = 30
_METRIC_COLUMNS = (("MAE", "mae"), ("MSE", "mse"), ("PSNR dB", "psnr"), ("SSIM", "ssim"),
                   ("SNR (ratio)", "snr"), ("SNR dB", "snr_db"))


# ----------------------------------------------------------------------------- evaluation
def check_evaluate(model_path: str, data_path: str, split: str | None = None,
                   device: str | torch.device = "cpu", num_examples: int = 6, batch_size: int = 256,
                   tta: str = "none", mirror_axis: float | None = None) -> str:
    """What :func:`evaluate` would refuse, checked before any work (cheap: the model file, the card
    and the shards' footers): the arguments, the device, the model directory, the dataset, that the
    split (default: the model config's ``data.test_split``) is one the card counts series in, that
    the frames fit the model, a time-aware model's age unit (:func:`crnn.timeaware.check_data_unit`)
    and whether it answers the dataset's ages (:func:`crnn.timeaware.window_ages`), and
    the test-time augmentation (:func:`crnn.mirror.tta_axis`). Returns the split;
    raises ValueError (ModelError, ShardError)."""
    from crnn.checkpoint import check_model_dir
    from crnn.shards import validate

    if num_examples < 0 or batch_size < 1:
        raise ValueError(f"--num-examples must be >= 0 and --batch-size >= 1, got {num_examples}, {batch_size}")
    pick_device(device)
    cfg, payload = check_model_dir(model_path)
    card = validate(data_path)
    split = split or cfg.data.test_split
    counts = {str(k): v for k, v in (card.get("splits") or {}).items()}
    if not counts.get(split):
        raise split_error(data_path, split, counts)
    _require_regular(card, data_path)
    check_data_unit(model_path, cfg, payload.get("data"), card, data_path)
    in_frames = cfg.data.in_frames
    if len(card["ages"]) < in_frames + 1:
        raise ValueError(f"{data_path}: {len(card['ages'])} frames per series (ages {list(card['ages'])}), but "
                         f"the model sees in_frames={in_frames} and needs {in_frames + 1}")
    check_dataset_image_size(image_size(cfg.model), card, data_path, f"model {model_path}")
    window_ages(model_path, cfg, payload.get("data"), card_ages(card), data_path, payload.get("metrics"))
    tta_axis(tta, mirror_axis, payload.get("data"), card, data_path)
    return split


def check_models_split(model_paths: list[str], data_path: str, split: str | None = None) -> str:
    """:func:`check_evaluate` for several models that are to be scored side by side on one split:
    returns that split; ValueError for no model, for models whose test splits differ (when ``split``
    is not given) and everything :func:`check_evaluate` refuses."""
    if not model_paths:
        raise ValueError("give at least one model directory")
    splits = {m: check_evaluate(m, data_path, split) for m in model_paths}
    if len(set(splits.values())) > 1:
        raise ValueError(f"the models' test splits differ ({splits}); pass --split")
    return next(iter(splits.values()))


def evaluate(model_path: str, data_path: str, out: str | None = None, split: str | None = None,
             device: str | torch.device = "cpu", num_examples: int = 6, batch_size: int = 256,
             tta: str = "none", mirror_axis: float | None = None) -> dict[str, Any]:
    """Score the model directory ``model_path`` and both baselines on one split of ``data_path``.

    ``split`` defaults to the model config's ``data.test_split``. With ``out`` (a local directory,
    created, or a URI such as ``s3://bucket/runs/x/eval``), writes ``metrics.json`` (the returned
    dict) and ``predictions.png`` (real frames, the model's forecasts and persistence's for
    ``num_examples`` series, like the paper's Fig. 7).

    Raises ValueError for: data with fewer than ``in_frames + 1`` frames per series, frames whose
    size differs from the model's (:class:`crnn.inference.ImageSizeError`, naming both), an empty or
    unknown split, a device that is not cpu/cuda[:N] or CUDA unavailable; ModelError for a bad
    model directory.

    A time-aware model (``model.kind=timevp``) on a dataset whose ages are not its grid ages is
    asked at the dataset's ages (:class:`crnn.timeaware.AtAges`; :class:`crnn.timeaware.AgeError`
    when it cannot answer them).

    ``tta="hflip"``: the model's forecasts with mirror test-time augmentation
    (:class:`crnn.mirror.MirrorTTA`, about the axis :func:`crnn.mirror.tta_axis` picks; recorded as ``tta`` and
    ``mirror_axis`` in the result); the baselines are scored as they are.
    """
    device = pick_device(device)
    model, cfg, meta = load_model(model_path, device)
    in_frames = cfg.data.in_frames
    split = split or cfg.data.test_split

    card = read_card(data_path)
    _require_regular(card, data_path)
    check_data_unit(model_path, cfg, meta.get("data"), card, data_path)
    axis = tta_axis(tta, mirror_axis, meta.get("data"), card, data_path)
    ages_all = card_ages(card)  # ints; floats for a card of real ages ("ages_dtype": "float32")
    if len(ages_all) < in_frames + 1:
        raise ValueError(
            f"{data_path}: {len(ages_all)} frames per series (ages {ages_all}), but the model sees "
            f"in_frames={in_frames} and needs {in_frames + 1} (inputs plus the next frame as target)"
        )
    expected = image_size(cfg.model)  # None: a baseline, any size
    check_dataset_image_size(expected, card, data_path, f"model {model_path}")
    # a time-aware model off its grid: the window forecast at the dataset's ages (None: on the grid)
    at_ages = window_ages(model_path, cfg, meta.get("data"), ages_all, data_path, meta.get("metrics"))
    model = with_tta(model if at_ages is None else AtAges(model, at_ages), axis)

    data = read_numpy(data_path, split=split, columns=["series_id", "frames"])
    frames = data.get("frames")
    if frames is None or len(frames) == 0:
        raise split_error(data_path, split, card.get("splits"))
    n, t, h, w, c = frames.shape
    check_image_size(expected, (h, w, c), data_path, f"model {model_path}",
                     hint=resize_hint(expected) if expected else "")
    series_ids = [str(s) for s in data["series_id"]]
    ages = ages_all[1:in_frames + 1]
    headline = ages[-1]

    # targets on 0-255, channels first: (N, in_frames, C, H, W), exact (no /255 round trip)
    target = frames[:, 1:in_frames + 1].transpose(0, 1, 4, 2, 3).astype(np.float64)
    preds = {"model": forecast_window(model, frames, in_frames, batch_size, device)}
    skipped = {}
    for kind in BASELINES:
        if kind == "analog":
            try:  # the evaluated series are never their own analogs (e.g. --split train)
                base = analog_baseline(data_path, cfg.data.train_splits, in_frames, exclude=series_ids)
            except ValueError as e:  # e.g. an ingested photo set without a training split
                skipped[kind] = str(e)
                continue
        else:
            base = build_model(ModelConfig(kind=kind, height=h, width=w, channels=c))
        preds[kind] = forecast_window(base.to(device), frames, in_frames, batch_size, device)
    results = {name: per_age_metrics(p.astype(np.float64) * 255.0, target, ages, scale=1.0)
               for name, p in preds.items()}
    for per_age in results.values():  # the field's convention too (OpenSTL, PredRNN): see frame_mse01
        for m in per_age.values():
            m["mse_frame01"] = frame_mse01(m["mse"], c * h * w)

    mse_model = results["model"][headline]["mse"]
    mse_pers = results["persistence"][headline]["mse"]
    improvement = mse_pers / mse_model if mse_model > 0 else math.inf
    result = json_safe({
        "model": model_path,
        "data": data_path,
        "split": split,
        "num_series": n,
        "ages": ages,
        "input_ages": ages_all[:in_frames],
        "age_unit": str(card.get("age_unit", "years")).strip(),  # a card without one counts years
        "headline_age": headline,
        "results": results,
        "headline": {name: r[headline] for name, r in results.items()},
        **({"paper": {**PAPER_TABLE3, "age": PAPER_AGE}} if is_paper_scene(card) else {}),
        "model_config": to_dict(cfg)["model"],
        "epoch": meta.get("epoch"),
        "improvement_over_persistence": improvement,
        "tta": tta,
        **({"mirror_axis": axis} if axis is not None else {}),
        "skipped_baselines": skipped,
    })

    if out is not None:  # a local directory or a URI, through crnn.storage (each file replaced whole)
        result["files"] = {"metrics": join(out, "metrics.json"), "predictions": join(out, "predictions.png")}
        png = io.BytesIO()
        _figure(frames, preds, series_ids, ages, in_frames, num_examples,
                title=f"{split}: real vs forecast ({cfg.model.kind})").save(png, format="PNG")
        write_bytes(result["files"]["predictions"], png.getvalue())
        write_json(result["files"]["metrics"], result)
    return result


def _require_regular(card: dict[str, Any], data_path: str) -> None:
    """:func:`crnn.shards.require_regular`, pointing an irregular dataset to the time-aware evaluation."""
    try:
        require_regular(card, data_path, "evaluation")
    except ValueError as e:
        raise ValueError(f"{e}; the time-aware evaluation scores it (crnn.timeeval.evaluate_time; jobs/evaluate.py "
                         f"picks it by the dataset card)") from None


def frame_mse01(mse_255: float, values_per_frame: int) -> float:
    """The field's MSE convention from this project's: per-pixel MSE on 0-255 -> squared error summed
    over a frame's C*H*W values on the [0, 1] scale, averaged over frames (what OpenSTL and PredRNN
    tables report; Moving MNIST's 64x64x1 frames make it 4096x the per-value MSE on [0, 1])."""
    return float(mse_255) * values_per_frame / 255.0**2


def analog_baseline(data_path: str, splits, in_frames: int, k: int = ANALOG_K,
                    max_bank: int = ANALOG_MAX_BANK, seed: int = 0, exclude=()):
    """The analog forecaster (:class:`crnn.models.analog.AnalogForecaster`) over the training
    split(s) of ``data_path``, less the series whose ids are in ``exclude`` (at most ``max_bank``
    series and :data:`ANALOG_MAX_BYTES` of float32 frames; a seeded random subset beyond that).
    Raises ValueError when fewer than ``k`` series remain."""
    from crnn.models.analog import AnalogForecaster

    data = read_numpy(data_path, split=list(splits), columns=["series_id", "frames"])
    bank = data.get("frames")
    if bank is not None and len(exclude):
        bank = bank[~np.isin(np.asarray(data["series_id"]).astype(str), np.asarray(list(exclude), str))]
    n = 0 if bank is None else len(bank)
    if n < k:
        raise ValueError(f"{data_path}: the analog baseline needs >= {k} series in split(s) {list(splits)} "
                         f"for its bank, found {n}")
    max_bank = max(k, min(max_bank, ANALOG_MAX_BYTES // (4 * (in_frames + 1) * int(np.prod(bank.shape[2:])))))
    if n > max_bank:
        bank = bank[np.sort(np.random.default_rng(seed).choice(n, max_bank, replace=False))]
    return AnalogForecaster(bank[:, :in_frames + 1], k=k)


def _pick_examples(n: int, k: int) -> list[int]:
    """``k`` series spread evenly over ``n`` (deterministic)."""
    k = max(0, min(int(k), n))
    if k == 0:
        return []
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})


def _figure(frames: np.ndarray, preds: dict[str, np.ndarray], series_ids: list[str], ages: list[int],
            in_frames: int, num_examples: int, title: str):
    """The paper's Fig. 7 as a PIL image: real frames, the model's and persistence's forecasts."""
    from crnn.plots import comparison_sheet

    idx = _pick_examples(len(frames), num_examples) or [0]
    kinds = {
        "real": frames[idx, 1:in_frames + 1],
        "model": to_uint8(preds["model"][idx]),
        "persistence": to_uint8(preds["persistence"][idx]),
    }
    return comparison_sheet(kinds, ages, series_ids=[series_ids[i] for i in idx], title=title)


# ----------------------------------------------------------------------------- table
def _fmt(value: Any, key: str, mse: Any) -> str:
    if key == "ssim" and isinstance(value, float) and math.isnan(value):
        return "n/a"  # frames smaller than SSIM's window (crnn.metrics)
    if value is None:
        # None = non-finite; psnr/snr/snr_db are +inf iff mse == 0
        return "inf" if key in ("psnr", "snr", "snr_db") and mse == 0 else "n/a"
    if isinstance(value, str):
        return value
    if key == "ssim":
        return f"{value:.4f}"
    return f"{value:.2f}"


def is_paper_scene(card: dict) -> bool:
    """Whether a dataset ``card`` is of the paper's kind of data, this project's pine simulator (its
    ``source`` "simulator pine-..."): only there is the paper's Table 3 row a comparison. Not for the
    shapes scene, ingested photos or forecasts."""
    return str(card.get("source", "")).startswith("simulator pine")


def format_table(result: dict[str, Any]) -> str:
    """Plain-text tables (0-255 pixels): all metrics at the headline age for the model, both
    baselines and the paper's Table 3 (when the result has it: the simulated pines, :func:`is_paper_scene`);
    then MSE per forecast age. Ages in another unit than years (the result's ``age_unit``) are labelled
    with it, and the paper's rows (age 30 years) left out."""
    age = result["headline_age"]
    res = result["results"]
    unit = str(result.get("age_unit") or "years").strip()
    in_years = _unit(unit) == "year"  # compared as the age-unit checks compare units
    paper = result.get("paper")  # None: not the paper's kind of data (another scene, photos)
    show_paper = in_years and paper is not None
    names = ["model", *(b for b in BASELINES if b in res)]  # a baseline may be skipped (no bank)
    rows: list[list[str]] = []
    for name in names:
        m = res[name][str(age)]
        rows.append([name] + [_fmt(m.get(k), k, m.get("mse")) for _, k in _METRIC_COLUMNS])
    if show_paper:
        paper_vals = {"mae": f"{paper['mae']:.2f}", "mse": f"{paper['mse']:.2f}",
                      "snr": f"{paper['snr_paper']:.2f} (definition unknown)"}
        rows.append([f"paper (T3, age {paper.get('age', PAPER_AGE)})"]
                    + [paper_vals.get(k, "-") for _, k in _METRIC_COLUMNS])
    header = ["", *(label for label, _ in _METRIC_COLUMNS)]
    of = "" if in_years else f" {unit}"
    lines = [
        f"Forecast of age {age}{of}: split {result['split']!r}, {result['num_series']} series, "
        f"inputs ages {result.get('input_ages', '?')}{of} (pixels 0-255)",
        *_grid(header, rows),
    ]
    if paper is not None and not in_years:
        lines.append(f"(the paper's Table 3, at age {paper.get('age', PAPER_AGE)} years, is not shown beside ages "
                     f"in {unit})")
    note = tta_note(result)
    if note:
        lines.append(note)
    for name, why in (result.get("skipped_baselines") or {}).items():
        lines.append(f"{name}: skipped ({why})")
    imp = result.get("improvement_over_persistence")
    if imp is None:
        lines.append("model MSE is 0 (perfect forecast)")
    else:
        lines.append(f"persistence MSE / model MSE at age {age}{of}: {imp:.3f}"
                     f" ({'model better' if imp > 1 else 'model not better'})")
    lines.append("")
    ages = [str(a) for a in result["ages"]]
    mse_rows = [[name] + [_fmt(res[name][a]["mse"], "mse", None) for a in ages] for name in names]
    if show_paper:
        mse_rows.append(["paper"] + [f"{paper['mse']:.2f}" if a == str(paper.get("age", PAPER_AGE)) else "-"
                                     for a in ages])
    lines.append("MSE per forecast age" + ("" if in_years else f" (ages in {unit})"))
    lines += _grid(["", *(f"age {a}" for a in ages)], mse_rows)
    return "\n".join(lines)


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells)).rstrip()

    return [line(header), "  ".join("-" * wd for wd in widths), *(line(r) for r in rows)]
