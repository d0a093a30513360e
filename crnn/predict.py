"""Offline batch forecasting: a published dataset in, a published dataset of forecasts out (Ray Data).

    card = predict_dataset("runs/x/model", "data/pines", "runs/x/forecasts")            # ages 15..30
    card = predict_dataset(model, data, out, horizon=3, split="test")                    # ages 30, 35, 40
    card = predict_dataset(model, data, out, target_ages=[32.5, 40])                      # ages 32.5, 40

On a regular dataset each series' first ``in_frames`` frames (the model config's ``data.in_frames``;
ages 10..25 for the paper's data) are the inputs, as in training and evaluation; ``inputs="last"``
uses the last ``in_frames`` frames instead (forecast beyond the end of the data). Three modes:

* ``horizon=None`` (window): the model's next-frame forecast for every input step, like
  :func:`crnn.inference.forecast_window` -- inputs ages 10..25 -> forecasts of ages 15..30 (the last
  one the last age plus the last spacing: a grid model's next step); a time-aware model is asked at
  the dataset's ages (:class:`crnn.timeaware.AtAges`), its last step at the frame after the inputs
  when the dataset has it;
* ``horizon=h``: autoregressive rollout (:func:`crnn.inference.forecast_uint8`) ``h`` steps past the last input,
  forecasts fed back as inputs -- inputs ages 10..25 -> ages 30, 35, ... (``h`` frames, 1 <= h <= :data:`crnn.inference.MAX_HORIZON`, Serve's bound too);
* ``target_ages=[t1, ...]`` (issue #14): every series forecast at those ages with
  :func:`crnn.timeaware.forecast_at`, the path Serve takes -- any later ages for a time-aware model
  (``model.kind=timevp``), whole steps of the input spacing for a grid model. This mode also takes an
  irregular dataset (``"layout": "irregular"``, :mod:`crnn.irregular`): each series' inputs are its
  first ``num_inputs`` frames at its own ages (all ``num_frames`` when ``num_inputs`` is 0). Every
  series' input ages are checked against the targets and the model (:func:`crnn.timeaware.check_ages`)
  from the small columns before anything runs: ValueError naming the series id.

The shards are read with :func:`crnn.shards.read_ray` (every shard's footer is checked first) and
forecast by ``map_batches`` on an actor pool of :class:`BatchForecaster` (``concurrency`` actors, each
with ``num_cpus``/``num_gpus``; the model is loaded once per actor). The output is a dataset in the
same shard format (:mod:`crnn.shards`), one row per input series::

    series_id  string   the source series' id          seed  int64   copied from the source
    split      string   the source split (so ``read_ray(out, split=...)`` works)
    source_split string the same, named explicitly     ages  tensor int32 (K,)  forecast ages
    frames     tensor uint8 (K, H, W, C)  forecasts     height, width, channels  int32

with K = in_frames (window), horizon or ``len(target_ages)``, and a ``dataset.json`` card with
``"kind": "forecasts"`` and a ``"forecast"`` section (model, its version, data, mode, input ages or
``"per series"``, target ages) and the source's ``age_unit`` (years when it has none). When any target age is fractional, ``ages`` is a **float32** tensor
(K,) and the card's ``ages`` list holds those floats (``"ages_dtype": "float32"``); :mod:`crnn.shards`'
readers take it like any dataset and return float32 ages (so does a window/horizon forecast of such a
dataset, whose ages stay float32). Output goes through
:func:`crnn.shards.publish`: locally it is written to a staging directory renamed into place only
after every shard and the card are written, so a failed run leaves no dataset (or the previous one,
with ``overwrite``) at ``out``. A shard that cannot be read fails the run with its path.

Loading, the device, the size check and the forecasts themselves are :mod:`crnn.inference`'s,
shared with evaluation and Serve.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any, Sequence

import numpy as np

from crnn.inference import (DEFAULT_AGE_STEP, MAX_HORIZON, check_dataset_image_size, forecast_uint8, image_size,
                            load_model, model_version, pick_device, setup_torch)
from crnn.mirror import check_tta, tta_axis
from crnn.shardcheck import ShardError
from crnn.timeaware import (
    AtAges, check_ages, check_data_unit, check_grid_inputs, forecast_at, is_time_aware, time_domain, window_ages,
)

__all__ = ["predict_dataset", "plan_predict", "BatchForecaster", "forecast_ages", "find_unreadable_shard",
           "parse_target_ages", "check_series_ages"]

INPUTS = ("first", "last")
OUTPUT_COLUMNS = ("series_id", "seed", "split", "source_split", "ages", "frames", "height", "width", "channels")


# ----------------------------------------------------------------------------- helpers
def forecast_ages(input_ages: np.ndarray, horizon: int | None) -> np.ndarray:
    """Ages of the forecasts for input ages (B, T) (or (T,)): window -> the next age of every input,
    rollout -> ``horizon`` ages past the last one, in steps of the last spacing. int32, or float32 for
    float input ages (a dataset of real ages, ``"ages_dtype": "float32"``)."""
    a = np.asarray(input_ages)
    floats = a.dtype.kind == "f"
    a = a.astype(np.float64 if floats else np.int64)
    one = a.ndim == 1
    a = np.atleast_2d(a)
    step = (a[:, -1] - a[:, -2]) if a.shape[1] >= 2 else np.full(len(a), DEFAULT_AGE_STEP)
    if horizon is None:
        out = np.concatenate([a[:, 1:], (a[:, -1] + step)[:, None]], axis=1)
    else:
        out = a[:, -1:] + step[:, None] * np.arange(1, horizon + 1)[None, :]
    out = out.astype(np.float32 if floats else np.int32)
    return out[0] if one else out


def parse_target_ages(v: str | Sequence[float] | None) -> list[float] | None:
    """``"30,35,40"`` or a list of numbers -> [30.0, 35.0, 40.0] (None stays None). ValueError naming
    the value when it is empty, not numbers, not finite or not strictly increasing."""
    if v is None:
        return None
    parts = [p.strip() for p in v.split(",")] if isinstance(v, str) else list(v)
    try:
        if any(isinstance(p, bool) for p in parts):
            raise ValueError
        out = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise ValueError(f"target_ages={v!r}: expected numbers, e.g. 30,35,40") from None
    if not out or not all(np.isfinite(out)) or any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"target_ages={v!r}: expected one or more finite, strictly increasing ages")
    return out


def _age(a) -> int | float:
    """An age as a label: a whole number as int (``30``), else float (``32.5``)."""
    return int(a) if float(a).is_integer() else float(a)


def _input_slice(num_frames: int, in_frames: int, inputs: str) -> slice:
    return slice(0, in_frames) if inputs == "first" else slice(num_frames - in_frames, num_frames)


def _inputs_of(batch: dict[str, np.ndarray], irregular: bool, in_frames: int, inputs: str):
    """(frames list, ages list) of a batch's inputs: ``in_frames`` frames (first or last) of a regular
    dataset; each series' first ``num_inputs`` frames (all ``num_frames`` when 0) of an irregular one."""
    ages = np.asarray(batch["ages"])
    frames = batch.get("frames")
    if not irregular:
        sel = _input_slice(ages.shape[1], in_frames, inputs)
        return (None if frames is None else list(np.asarray(frames)[:, sel])), [list(a) for a in ages[:, sel]]
    n = np.asarray(batch["num_frames"])
    k = np.asarray(batch["num_inputs"])
    k = np.where(k > 0, k, n)
    return ((None if frames is None else [np.asarray(frames)[i, :k[i]] for i in range(len(k))]),
            [list(ages[i, :k[i]]) for i in range(len(k))])


def check_series_ages(domain, data_path: str, card: dict[str, Any], splits, in_frames: int, inputs: str,
                      target_ages: list[float]) -> None:
    """Every series' input ages checked against ``target_ages`` and the model's ``domain``
    (:func:`crnn.timeaware.check_ages`), from the small columns only (ids and ages; no frames).
    ValueError (AgeError) naming the first bad series id, and how many others share its input ages."""
    from crnn import irregular as irr
    from crnn.shards import read_numpy
    from crnn.timeaware import AgeError

    irregular = irr.is_irregular(card)
    cols = ["series_id", "ages"] + (["num_frames", "num_inputs"] if irregular else [])
    small = read_numpy(data_path, split=splits, columns=cols)
    keys = [tuple(float(v) for v in a) for a in _inputs_of(small, irregular, in_frames, inputs)[1]]
    count = Counter(keys)  # a regular dataset: one set of input ages for every series
    checked, first, bad = set(), None, 0
    for sid, key in zip(small["series_id"], keys):
        if key in checked:
            continue
        checked.add(key)
        more = f" (and {count[key] - 1} other series with these input ages)" if count[key] > 1 else ""
        try:
            check_ages(domain, key, target_ages, where=f"{data_path}: series {sid}{more}",
                       max_steps=MAX_HORIZON, max_steps_name="crnn.inference.MAX_HORIZON, as --horizon")
        except AgeError as e:
            first, bad = first or e, bad + count[key]
    if first is not None:  # the first bad series named, and how many of all cannot be answered
        raise AgeError(f"{first}; {bad} of {len(keys)} series cannot be answered at these target ages") from None


def find_unreadable_shard(path: str) -> str | None:
    """Fully decode every shard of a dataset; the first that fails, as ``"<path>: <error>"``."""
    import pyarrow.parquet as pq

    from crnn.shards import list_shards
    from crnn.storage import resolve

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
                 inputs: str = "first", torch_threads: int = 0, target_ages: Sequence[float] | None = None,
                 irregular: bool = False, tta: str = "none", mirror_axis: float | None = None,
                 window_ages: Sequence[float] | None = None):
        setup_torch(device, torch_threads)
        self.device = device
        self.model, self.cfg, meta = load_model(model_path, device, tta=tta, mirror_axis=mirror_axis)
        # the window of a time-aware model off its grid, at the dataset's ages (plan_predict's)
        self.window = self.model if window_ages is None else AtAges(self.model, window_ages)
        self.window_ages = window_ages
        self.domain = time_domain(self.cfg, meta.get("data"), meta.get("metrics"))
        self.in_frames = self.cfg.data.in_frames
        self.horizon = horizon
        self.inputs = inputs
        self.target_ages = None if target_ages is None else [float(t) for t in target_ages]
        self.irregular = irregular  # an irregular dataset (target ages only): num_frames, num_inputs columns

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        frames = np.asarray(batch["frames"])  # (B, T, H, W, C) uint8 (T = T_max, padded, when irregular)
        ages = np.asarray(batch["ages"])  # (B, T)
        n = self.in_frames
        if self.target_ages is not None:  # any ages: crnn.timeaware.forecast_at, the path Serve takes
            x, a = _inputs_of(batch, self.irregular, n, self.inputs)
            out = np.stack(forecast_at(self.model, self.domain, x, a, [self.target_ages] * len(x), self.device,
                                       batch_size=max(1, len(x))))  # (B, K, H, W, C)
            out_ages = np.tile(np.asarray(self.target_ages, target_dtype(self.target_ages)), (len(x), 1))
        else:
            sel = _input_slice(frames.shape[1], n, self.inputs)
            out = forecast_uint8(self.window if self.horizon is None else self.model, frames[:, sel], n,
                                 self.horizon, self.device)
            out_ages = forecast_ages(ages[:, sel], self.horizon)
            if self.horizon is None and self.window_ages is not None:  # the ages asked, every row alike
                out_ages = np.tile(np.asarray(self.window_ages[1:], out_ages.dtype), (len(out_ages), 1))
        b, _, h, w, c = out.shape
        return {
            "series_id": batch["series_id"],
            "seed": np.asarray(batch["seed"], np.int64),
            "split": batch["split"],
            "source_split": batch["split"],
            "ages": out_ages,
            "frames": out,
            "height": np.full(b, h, np.int32),
            "width": np.full(b, w, np.int32),
            "channels": np.full(b, c, np.int32),
        }


def target_dtype(target_ages: Sequence[float]):
    """The output ``ages`` column's dtype: int32 when every target age is whole, else float32."""
    return np.int32 if all(float(t).is_integer() for t in target_ages) else np.float32


# ----------------------------------------------------------------------------- driver
def plan_predict(model_path: str, data_path: str, out: str, *, split: str | Sequence[str] | None = None,
                 horizon: int | None = None, inputs: str = "first", batch_size: int = 256, num_gpus: float = 0.0,
                 device: str | None = None, overwrite: bool = False,
                 target_ages: Sequence[float] | str | None = None, tta: str = "none",
                 mirror_axis: float | None = None) -> dict[str, Any]:
    """Every check of :func:`predict_dataset`, without Ray and before any work: arguments, the model
    directory (:class:`crnn.checkpoint.ModelError`), the dataset's card and shard footers
    (:class:`crnn.shardcheck.ShardError`), data the model cannot take, with ``target_ages`` every
    series' input ages against them and the model (:func:`check_series_ages`: ValueError naming the
    series id), an existing ``out``; in the window mode, a time-aware model's ages
    (:func:`crnn.timeaware.window_ages`: AgeError naming the dataset). Returns what the run needs
    (config, model payload, card, splits, ages, the output's ``ages_dtype``, ``window_ages``: the ages
    a time-aware model's window is asked at, None on its grid) and the arguments it checked
    (``"args"``): pass it to
    :func:`predict_dataset` as ``plan`` so that the run does not check (and read the ages) again."""
    args = dict(model_path=model_path, data_path=data_path, out=out, split=split, horizon=horizon, inputs=inputs,
                batch_size=batch_size, num_gpus=num_gpus, device=device, overwrite=overwrite, target_ages=target_ages,
                tta=tta, mirror_axis=mirror_axis)
    from crnn import irregular as irr
    from crnn.checkpoint import check_model_dir
    from crnn.shardcheck import SPLITS
    from crnn.shards import ages_dtype, card_ages, check_out_free, require_regular, validate

    if inputs not in INPUTS:
        raise ValueError(f"inputs={inputs!r}: expected one of {INPUTS}")
    if horizon is not None and (isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1):
        raise ValueError(f"horizon={horizon!r} must be a positive int (or None for the window forecast)")
    if horizon is not None and horizon > MAX_HORIZON:
        raise ValueError(f"horizon={horizon} is over the limit of {MAX_HORIZON} rollout steps "
                         f"(crnn.inference.MAX_HORIZON, Serve's default max_horizon)")
    target_ages = parse_target_ages(target_ages)
    if target_ages is not None and horizon is not None:
        raise ValueError(f"horizon={horizon} and target_ages={target_ages}: give one (ages to forecast, or a "
                         f"number of steps)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive int")
    check_tta(tta, model_path)  # before reading the model
    device = pick_device(device, num_gpus)
    cfg, payload = check_model_dir(model_path)  # ModelError names a bad model directory
    in_frames = cfg.data.in_frames
    card = validate(data_path)
    check_data_unit(model_path, cfg, payload.get("data"), card, data_path)
    axis = tta_axis(tta, mirror_axis, payload.get("data"), card, model_path)
    irregular = irr.is_irregular(card)
    if irregular:  # per-series ages: a time-aware model only (refused by kind, before any age is read)
        from crnn.timeeval import refuse_grid_model

        refuse_grid_model(cfg, model_path, data_path)
    if target_ages is None:
        require_regular(card, data_path, "prediction without target ages (window, horizon)")
    elif irregular and inputs != "first":
        raise ValueError(f"inputs={inputs!r}: {data_path} is an irregular dataset, whose inputs are each series' "
                         f"first num_inputs frames (inputs='first')")
    src_ages = [] if irregular else card_ages(card)  # ints, or floats ("ages_dtype": "float32")
    if not irregular and len(src_ages) < in_frames:
        raise ValueError(f"{data_path}: {len(src_ages)} frames per series (ages {src_ages}); the model "
                         f"needs in_frames={in_frames}")
    size = (int(card["height"]), int(card["width"]), int(card["channels"]))
    check_dataset_image_size(image_size(cfg.model), card, data_path, f"model {model_path}")
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
    in_ages = "per series" if irregular else src_ages[:in_frames] if inputs == "first" else src_ages[-in_frames:]
    if target_ages is None and horizon is not None:  # model(frames): a time-aware model reads its grid ages
        check_grid_inputs(model_path, cfg, in_ages, data_path, "the rollout (--horizon)")
    window_at = None  # the window of a time-aware model off its grid: asked at the dataset's ages (AtAges)
    if target_ages is not None:
        domain = time_domain(cfg, payload.get("data"), payload.get("metrics"))
        check_series_ages(domain, data_path, card, splits, in_frames, inputs, target_ages)
        fractional = target_dtype(target_ages) == np.float32
        out_ages = [float(t) if fractional else int(t) for t in target_ages]
    else:  # the source's ages, continued: int32, or float32 from a dataset of real ages
        fractional = ages_dtype(card).kind == "f"
        # from the ages as the shards store them, as BatchForecaster computes the rows' ages: the same values
        out_ages = forecast_ages(np.asarray(in_ages, ages_dtype(card)), horizon).tolist()
        if horizon is None and inputs == "first" and len(src_ages) > in_frames and is_time_aware(cfg):
            # a time-aware window's last step forecasts the frame after the inputs (a grid model's: the
            # next step of its grid, the last age plus the last spacing)
            out_ages[-1] = src_ages[in_frames]
        if horizon is None:
            window_at = window_ages(model_path, cfg, payload.get("data"), [*in_ages, out_ages[-1]], data_path,
                                    payload.get("metrics"))
    check_out_free(out, overwrite)
    return {"cfg": cfg, "payload": payload, "card": card, "device": device, "splits": splits, "counts": counts,
            "num_series": num_series, "size": size, "in_ages": in_ages, "out_ages": out_ages,
            "target_ages": target_ages, "irregular": irregular, "ages_dtype": "float32" if fractional else "int32",
            "mirror_axis": axis, "window_ages": window_at, "args": args}


def predict_dataset(model_path: str, data_path: str, out: str, *, split: str | Sequence[str] | None = None,
                    horizon: int | None = None, inputs: str = "first", batch_size: int = 256,
                    concurrency: int | tuple[int, int] = 1, num_cpus: float = 1.0, num_gpus: float = 0.0,
                    device: str | None = None, overwrite: bool = False, preview: str | None = None,
                    preview_count: int = 6, target_ages: Sequence[float] | str | None = None,
                    plan: dict[str, Any] | None = None, tta: str = "none",
                    mirror_axis: float | None = None) -> dict[str, Any]:
    """Forecast every series of ``data_path`` (optionally some splits) with the model directory
    ``model_path`` and publish the forecasts at ``out``; returns the output's card. Needs Ray.
    ``target_ages`` (not with ``horizon``): forecast every series at those ages (module docstring;
    a regular or an irregular dataset). ``plan``: what :func:`plan_predict` returned for the same
    arguments (a job checks before starting Ray), so they are not checked twice; ValueError if it
    was made for other arguments. ``tta="hflip"``: mirror test-time augmentation of every forecast
    (:class:`crnn.mirror.MirrorTTA`; about ``mirror_axis``, by default the model's training data's,
    else the dataset's: :func:`crnn.mirror.tta_axis`), recorded in the output card's ``forecast``.

    Raises ValueError for bad arguments or data the model cannot take (too few frames, another image
    size, with ``target_ages`` a series whose ages the model cannot answer, named by its id, in the
    window mode ages a time-aware model cannot answer, naming the dataset -- all before any work),
    :class:`crnn.shardcheck.ShardError` naming the shard for a corrupt input, FileExistsError when
    ``out`` exists without ``overwrite``.
    """
    from crnn.shardcheck import SPLITS
    from crnn.shards import base_card, publish, read_card, read_ray, write_ray_dataset

    args = dict(model_path=model_path, data_path=data_path, out=out, split=split, horizon=horizon, inputs=inputs,
                batch_size=batch_size, num_gpus=num_gpus, device=device, overwrite=overwrite, target_ages=target_ages,
                tta=tta, mirror_axis=mirror_axis)
    if plan is None:
        plan = plan_predict(**args)
    elif plan.get("args") != args:
        other = {k: v for k, v in (plan.get("args") or {}).items() if args.get(k) != v}
        raise ValueError(f"plan was made by plan_predict for other arguments ({other}); pass the plan of this "
                         f"run's arguments, or none")
    device, payload, splits, counts = plan["device"], plan["payload"], plan["splits"], plan["counts"]
    num_series, size, in_ages, out_ages = plan["num_series"], plan["size"], plan["in_ages"], plan["out_ages"]
    target_ages, irregular = plan["target_ages"], plan["irregular"]
    version = model_version(payload, tta)  # as load_model's
    axis = plan["mirror_axis"]

    # Every shard footer is checked here (ShardError names a bad one) before anything is written.
    cols = ["series_id", "seed", "split", "ages", "frames"] + (["num_frames", "num_inputs"] if irregular else [])
    ds = read_ray(data_path, split=splits, columns=cols)
    threads = max(1, int(num_cpus)) if device == "cpu" else 0
    ds = ds.map_batches(
        BatchForecaster, batch_size=batch_size, batch_format="numpy", concurrency=concurrency,
        num_cpus=num_cpus, num_gpus=num_gpus or None,
        fn_constructor_kwargs=dict(model_path=model_path, device=device, horizon=horizon, inputs=inputs,
                                   torch_threads=threads, target_ages=target_ages, irregular=irregular,
                                   tta=tta, mirror_axis=axis, window_ages=plan.get("window_ages")),
    )
    mode = "ages" if target_ages is not None else "window" if horizon is None else "rollout"
    out_card = base_card(
        num_series=num_series, ages=out_ages, ages_dtype=plan["ages_dtype"], height=size[0], width=size[1],
        channels=size[2],
        splits={s: int(counts.get(s, 0)) for s in SPLITS}, source=f"forecasts of {data_path} by {model_path}",
        kind="forecasts",
        forecast={"model": model_path, "model_version": version, "model_epoch": payload.get("epoch"),
                  "data": data_path, "split": splits, "mode": mode, "horizon": horizon, "target_ages": out_ages
                  if target_ages is not None else None, "inputs": "first num_inputs frames (all when 0)" if
                  irregular else inputs, "input_ages": in_ages, "tta": tta,
                  **({"mirror_axis": axis} if axis is not None else {})},
    )
    # the forecast ages count in the source's unit (a time-aware model's too: check_data_unit): kept, so
    # that a model trained or scored on the forecasts reads them as the source's ages
    out_card["age_unit"] = str(plan["card"].get("age_unit", "years"))
    out_card["columns"]["source_split"] = "string (the source series' split; same as split)"
    out_card["columns"]["series_id"] = "string (the source series' id)"
    out_card["columns"]["ages"] = f"tensor {plan['ages_dtype']} (K,) forecast ages"
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
        write_preview(preview, model_path, data_path, splits, horizon, inputs, device, preview_count,
                      target_ages=target_ages, irregular=irregular, tta=tta, mirror_axis=axis)
    return read_card(out)


def write_preview(path: str, model_path: str, data_path: str, splits, horizon: int | None, inputs: str,
                  device: str, count: int = 6, target_ages: Sequence[float] | None = None,
                  irregular: bool = False, tta: str = "none", mirror_axis: float | None = None) -> str:
    """PNG sheet of the first ``count`` series: inputs and forecasts (rollout), real vs forecast
    frames at the same ages (window mode), or the forecasts at ``target_ages`` (a row per series,
    labelled with its id). Forecasts are recomputed in-process for these few
    series (with the run's test-time augmentation)."""
    from crnn.plots import comparison_sheet, contact_sheet
    from crnn.shards import read_ray

    model, cfg, meta = load_model(model_path, device, tta=tta, mirror_axis=mirror_axis)
    n = cfg.data.in_frames
    cols = ["series_id", "ages", "frames"] + (["num_frames", "num_inputs"] if irregular else [])
    rows = read_ray(data_path, split=splits, columns=cols) \
        .limit(max(1, count)).take_batch(max(1, count), batch_format="numpy")
    frames, ages, ids = rows["frames"], rows["ages"], [str(s) for s in rows["series_id"]]
    if target_ages is not None:
        x, a = _inputs_of(rows, irregular, n, inputs)
        domain = time_domain(cfg, meta.get("data"), meta.get("metrics"))
        pred = forecast_at(model, domain, x, a, [list(target_ages)] * len(x), device)
        sheet = contact_sheet(pred, [_age(t) for t in target_ages],
                              row_labels=ids)
        sheet.save(path)
        return path
    sel = slice(0, n) if inputs == "first" else slice(frames.shape[1] - n, frames.shape[1])
    pred = forecast_uint8(model, frames[:, sel], n, horizon, device)
    f_ages = [_age(a) for a in forecast_ages(ages[0, sel], horizon)]
    real_ages = [_age(a) for a in ages[0]]
    if horizon is None and all(a in real_ages for a in f_ages):
        idx = [real_ages.index(a) for a in f_ages]
        sheet = comparison_sheet({"real": frames[:, idx], "forecast": pred}, f_ages, series_ids=ids,
                                 title=f"forecasts by {os.path.basename(model_path.rstrip('/'))}")
    else:
        seq = np.concatenate([frames[:, sel], pred], axis=1)
        sheet = contact_sheet(list(seq), [_age(a) for a in ages[0, sel]] + f_ages, row_labels=ids)
    sheet.save(path)
    return path
