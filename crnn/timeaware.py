"""Forecasts at requested ages: what a model accepts in time (:class:`TimeDomain`), the checks of a
request's ages (:func:`check_ages`) and the forecast itself (:func:`forecast_at`) -- one path for
Serve, ``jobs/predict.py --target-ages`` and the time-aware evaluation (issue #14).

    model, cfg, meta = crnn.inference.load_model("runs/t/model")
    domain = time_domain(cfg, meta.get("data"))                # what ages the model answers
    check_ages(domain, [7, 11, 12, 19], [22.5, 40], where="series[0]")   # AgeError naming the problem
    outs = forecast_at(model, domain, [frames], [[7, 11, 12, 19]], [[22.5, 40]])  # [uint8 (2, H, W, C)]

Two kinds of model:

* **time-aware** (``model.kind=timevp``, :class:`crnn.models.timevp.TimeVP`): 2..N input frames at
  any strictly increasing ages (only the most recent ``window`` are read), forecasts at any ages
  after the last input. Ages are real numbers in the training data's ``age_unit`` (years for the
  simulated scenes). A request is refused when an age lies *far* outside the ages the model was
  trained on: more than ``margin`` outside ``age_range`` (:data:`MARGIN_FRACTION` of the range's
  width, at least one ``grid_step``).
* **grid** models (every other family): exactly ``in_frames`` evenly spaced inputs (the spacing is
  read as the training grid's step: the ages only label the frames), forecasts at whole steps after
  the last input (``last + k * spacing``), answered by a rollout to the furthest requested step.

The domain comes from the ``data`` summary the checkpoint carries (:func:`data_summary`, written at
training from the dataset card); model directories written before it fall back to the model
config's ages (the paper's grid 10, 15, 20, 25 -> 30).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["TimeDomain", "AgeError", "time_domain", "data_summary", "check_ages", "forecast_at",
           "is_time_aware", "check_start_ages", "check_data_unit", "check_grid_inputs", "window_ages", "AtAges",
           "training_window_ages", "MARGIN_FRACTION", "TIME_AWARE_KINDS"]

#: Families conditioned on real-valued ages (forward(frames, ages, mask, target_ages)).
TIME_AWARE_KINDS = ("timevp",)
#: How far outside the training ages a request may reach, as a fraction of the range's width.
MARGIN_FRACTION = 0.25


class AgeError(ValueError):
    """Ages a model cannot answer; the message names the series and the problem (Serve: HTTP 422)."""


@dataclass(frozen=True)
class TimeDomain:
    """What ages a model answers.

    ``time_aware``: any ages (True) or its training grid only. ``age_unit``: the unit of every age
    ("years"). ``age_range``: (lo, hi), the ages the model was trained on (inputs and targets).
    ``margin``: how far outside ``age_range`` a request may reach. ``min_inputs``/``max_inputs``:
    input frames per series (``max_inputs`` 0: any number; a time-aware model reads the last
    ``window``). ``step``: the grid spacing (grid models; the time unit of a time-aware model's
    embedding, ``model.timevp.grid_step``). ``default_ages``: the input ages assumed when a request
    gives none (the training grid's first ``in_frames``; empty for a model trained on per-series
    ages, which needs every request to give them)."""

    time_aware: bool
    age_unit: str
    age_range: tuple[float, float]
    margin: float
    min_inputs: int
    max_inputs: int
    window: int
    step: float
    default_ages: tuple[float, ...]

    @property
    def accepted(self) -> tuple[float, float]:
        """(lo, hi): every input and target age must lie in it."""
        return self.age_range[0] - self.margin, self.age_range[1] + self.margin

    def default_targets(self, ages: Sequence[float]) -> list[float]:
        """The target ages when a request gives none: one step after the last input."""
        return [float(ages[-1]) + self.step]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["age_range"] = list(self.age_range)
        d["accepted_ages"] = list(self.accepted)
        d["default_ages"] = list(self.default_ages)
        return d


def is_time_aware(cfg) -> bool:
    """Whether the model of config ``cfg`` (a :class:`crnn.config.Config`) answers any ages."""
    return cfg.model.kind in TIME_AWARE_KINDS


def data_summary(card: dict[str, Any], in_frames: int) -> dict[str, Any]:
    """The part of a dataset card (``dataset.json``) a model directory keeps (the checkpoint's
    ``data``): ``layout`` ("regular" or "irregular"), ``age_unit``, ``age_range`` [lo, hi] of the
    ages trained on and, on the regular grid, ``ages`` (the first ``in_frames + 1``); ``mirror_axis``,
    the data's axis of left-right symmetry (:func:`crnn.mirror.mirror_axis`: what
    ``train.augment=hflip`` mirrors about). ValueError for a card whose ``mirror_axis`` is invalid."""
    from crnn.mirror import mirror_axis

    axis = mirror_axis(card)
    if card.get("layout") == "irregular":
        lo, hi = card["age_range"]
        return {"layout": "irregular", "age_unit": str(card.get("age_unit", "years")),
                "age_range": [float(lo), float(hi)], "mirror_axis": axis}
    ages = [float(a) for a in card["ages"][:in_frames + 1]]
    return {"layout": "regular", "age_unit": str(card.get("age_unit", "years")),
            "age_range": [ages[0], ages[-1]], "ages": ages, "mirror_axis": axis}


def _unit(text: str) -> str:
    """An age unit as compared: case, surrounding spaces and the plural ``s`` of a word longer than
    three letters do not matter ("Years" = "year"; "ms" is not "m", "hrs" not "hr")."""
    u = text.strip().lower()
    return u[:-1] if len(u) > 3 and u.endswith("s") else u


def _unit_mismatch(model_data: dict[str, Any] | None, data: dict[str, Any] | None) -> tuple[str, str, str, str] | None:
    """``(model's unit, data's unit, model note, data note)`` when they differ as :func:`_unit`
    compares them, else None. The units as written, without surrounding spaces; either absent: years,
    and its note says so (a model directory or dataset card that records no unit)."""
    was = str((model_data or {}).get("age_unit", "years")).strip()
    now = str((data or {}).get("age_unit", "years")).strip()
    if _unit(was) == _unit(now):
        return None
    assumed = "" if "age_unit" in (model_data or {}) else " (its directory records no unit: years assumed)"
    data_assumed = "" if "age_unit" in (data or {}) else " (its card records no unit: years assumed)"
    return was, now, assumed, data_assumed


def _photo_fix(unit: str) -> str:
    """How photos get ages in ``unit``: ingest records the numbers in the file names as they are."""
    return (f"for photos: files named by their ages in {unit} -- ingest does not convert ages -- ingested with "
            f"jobs/ingest.py --age-unit {unit}")


def check_start_ages(init_from: str, source, source_data: dict[str, Any] | None, data: dict[str, Any],
                     data_path: str = "", remedy: str | None = None) -> None:
    """Refuse fine-tuning a time-aware model on ages counted in another unit (issue #14's leftover).

    A time-aware model (:func:`is_time_aware`) reads the ages as numbers in its training data's
    ``age_unit``: started from it on a dataset in months, it would read 18 months as 18 years.
    ``init_from``: the ``train.init_from`` path (named in the error); ``source``: that model's Config;
    ``source_data``: its checkpoint's ``data`` summary (:func:`data_summary`; None or without
    ``age_unit`` for model directories written before it: years, and the error says so); ``data``: the
    new training data's card or summary (``age_unit``, years when absent); ``data_path``: the dataset,
    named in the error ("" for in-memory arrays). Units compare without case, surrounding spaces or the
    plural ``s`` of a word longer than three letters ("Years" = "year", "ms" is not "m"). Grid models do not read ages: nothing to check. ValueError naming
    both units otherwise, ending with ``remedy`` (default: give the dataset's ages in the model's unit,
    as ingest can, or drop ``train.init_from``; jobs whose data is simulated say what they can do)."""
    if not is_time_aware(source):
        return
    bad = _unit_mismatch(source_data, data)
    if bad:
        was, now, assumed, data_assumed = bad
        where = f"the dataset {data_path}" if data_path else "the training data"
        remedy = remedy or (f"Train on a dataset whose ages count in {was!r} ({_photo_fix(was)}), or drop "
                            f"train.init_from to train from random weights")
        raise ValueError(f"train.init_from={init_from!r}: that time-aware model reads ages in {was!r}{assumed}, "
                         f"{where} counts them in {now!r}{data_assumed}; fine-tuning would read one as the "
                         f"other. {remedy}")


def check_data_unit(model_path: str, cfg, model_data: dict[str, Any] | None, card: dict[str, Any],
                    data_path: str) -> None:
    """Refuse forecasting or scoring a dataset whose ages are in another unit than a time-aware
    model's (issue #14: "what will it look like at 18 months?" asked of a model that counts years
    would be answered at 18 years). ``model_path``, ``data_path``: named in the error; ``cfg``: the
    model's Config; ``model_data``: its checkpoint's ``data`` summary (:func:`data_summary`; None or
    without ``age_unit`` for directories written before it: years, and the error says so); ``card``:
    the dataset card (``age_unit``, years when absent). Units compare as in :func:`check_start_ages`.
    Grid models do not read ages: nothing to check. ValueError naming both units otherwise (and which
    side records no unit); used before any work by :func:`crnn.predict.plan_predict`,
    :func:`crnn.evaluate.check_evaluate` and :func:`crnn.evaluate.evaluate`,
    :func:`crnn.timeeval.check_time_evaluate` and :func:`crnn.timeeval.evaluate_time`."""
    if not is_time_aware(cfg):
        return
    bad = _unit_mismatch(model_data, card)
    if bad:
        was, now, assumed, data_assumed = bad
        raise ValueError(f"model {model_path} is time-aware and reads ages in {was!r}{assumed}, but {data_path} "
                         f"counts them in {now!r}{data_assumed}: it would read one as the other. Use a dataset "
                         f"whose ages count in {was!r} ({_photo_fix(was)}), or a model trained on ages in {now!r}")


def check_grid_inputs(model_path: str, cfg, input_ages: Sequence[float], data_path: str, what: str) -> None:
    """Refuse a rollout (``model(frames)`` fed its own forecasts: predict's ``--horizon`` mode; the
    window forecast, predict's default and the regular evaluation, asks at the dataset's ages
    instead: :func:`window_ages`) of a time-aware model whose
    inputs are not at its grid ages: ``model(x)`` reads frame t as age ``model.timevp.grid_start + t *
    grid_step`` whatever the dataset says, so frames at other ages (``--inputs last`` of the pines:
    15..30) were forecast as if at the grid's and labelled with the dataset's ages. ``input_ages``: the
    ages of the frames given; ``what``: the mode, named in the error with the fix (forecasting at the
    series' own ages: :func:`forecast_at`, predict's ``--target-ages``). Grid models read no ages:
    nothing to check. ValueError otherwise."""
    if _off_grid(cfg, input_ages) is not None:  # a time-aware model, inputs off its grid
        tc = cfg.model.timevp
        grid = [float(tc.grid_start) + t * float(tc.grid_step) for t in range(len(input_ages))]
        raise ValueError(f"model {model_path} is time-aware: {what} reads its inputs as its grid ages {_fmt(grid)} "
                         f"(model.timevp.grid_start {tc.grid_start:g}, grid_step {tc.grid_step:g}), but {data_path}'s "
                         f"inputs are at ages {_fmt([float(a) for a in input_ages])}: the forecasts would be made for "
                         f"the grid's ages and labelled with these. Forecast at the series' own ages instead "
                         f"(jobs/predict.py --target-ages; crnn.timeaware.forecast_at)")


class AtAges(torch.nn.Module):
    """A time-aware model's window forecast at ``ages`` instead of its grid: ``forward(x)`` on x (B, T,
    C, H, W) is :meth:`crnn.models.timevp.TimeVP.forward_grid` with frame t at ``ages[t]`` and output t
    the forecast of ``ages[t + 1]`` (``ages``: T + 1 values, shared by every series; see
    :func:`window_ages`). What the regular evaluation scores a time-aware model with on a dataset whose
    ages are not the model's grid."""

    def __init__(self, model: torch.nn.Module, ages: Sequence[float]) -> None:
        super().__init__()
        self.model, self.ages = model, [float(a) for a in ages]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.ages[:x.shape[1] + 1])


def window_ages(model_path: str, cfg, model_data: dict[str, Any] | None, ages: Sequence[float],
                data_path: str, metrics: dict[str, Any] | None = None) -> list[float] | None:
    """The ages a time-aware model's window forecast is made at when ``ages`` (a regular dataset's
    first ``in_frames + 1``: the inputs, then the last target) are not its grid ages; None when they
    are, and for grid models (which read no ages). :class:`AgeError` naming ``data_path`` when the
    model cannot answer them, on its grid or off it (:func:`check_ages`: not strictly increasing, far
    outside the ages it was trained on; one input frame is enough here, as the window's first step
    reads one). Wrap the model in :class:`AtAges` with the result."""
    if not is_time_aware(cfg):
        return None
    n = int(cfg.data.in_frames)
    a = [float(v) for v in ages[:n + 1]]
    domain = dataclasses.replace(time_domain(cfg, model_data, metrics), min_inputs=1)
    check_ages(domain, a[:n], a[n:], where=f"{data_path} (a regular dataset; model {model_path})")
    return _off_grid(cfg, a)


def training_window_ages(cfg, data: dict[str, Any] | None) -> list[float] | None:
    """The ages a time-aware model trains at on a regular dataset whose ages (the training data's
    summary ``data``, :func:`data_summary`) are not its grid ages: ``in_frames + 1`` values, passed to
    ``model(x, ages)`` by the training loop (:func:`crnn.loop.train_step`) so it learns the ages it
    will be asked at (:class:`AtAges`, :func:`forecast_at`). None on the grid, for an irregular dataset
    (per-series ages), for grid models and without a summary. ValueError when a regular summary off
    the grid holds fewer than ``in_frames + 1`` ages (the frames' ages are not known; on the grid the
    grid goes on)."""
    if not data or data.get("layout") == "irregular" or not data.get("ages") or not is_time_aware(cfg):
        return None
    need = int(cfg.data.in_frames) + 1
    if _off_grid(cfg, data["ages"]) is None:  # on the grid as far as recorded: it goes on along the grid
        return None
    if len(data["ages"]) < need:
        raise ValueError(f"the training data's summary records {len(data['ages'])} ages {_fmt(data['ages'])}, but "
                         f"data.in_frames={need - 1} trains on {need} frames: their ages are not known (pass the "
                         f"summary of their own dataset: crnn.timeaware.data_summary)")
    return _off_grid(cfg, data["ages"])


def evenly_spaced(ages: Sequence[float]) -> bool:
    """Whether ``ages`` step by one spacing (relative tolerance 1e-6), as a grid model reads its
    frames; fewer than three ages always are."""
    a = [float(v) for v in ages]
    s = a[1] - a[0] if len(a) >= 2 else 0.0
    return all(abs((y - x) - s) <= 1e-6 * abs(s) for x, y in zip(a, a[1:]))


def _off_grid(cfg, ages: Sequence[float]) -> list[float] | None:
    """A time-aware model's first ``in_frames + 1`` of ``ages`` when they are not its grid ages
    (``model.timevp.grid_start + t * grid_step``); None when they are, and for grid models."""
    if not is_time_aware(cfg):
        return None
    n = int(cfg.data.in_frames)
    a = [float(v) for v in ages[:n + 1]]
    tc = cfg.model.timevp
    grid = [float(tc.grid_start) + t * float(tc.grid_step) for t in range(len(a))]
    return None if np.allclose(a, grid, rtol=0, atol=1e-6) else a


def time_domain(cfg, data: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None) -> TimeDomain:
    """The :class:`TimeDomain` of a model from its config and the checkpoint's ``data`` summary
    (:func:`data_summary`; None for model directories written before it: the grid of
    :func:`crnn.inference.default_input_ages` is assumed)."""
    from crnn.inference import default_input_ages

    n = int(cfg.data.in_frames)
    data = data or {}
    if data.get("ages") and len(data["ages"]) >= 2:
        grid = [float(a) for a in data["ages"]]
    else:
        grid = [float(a) for a in default_input_ages(cfg, metrics)]
    step = grid[1] - grid[0] if len(grid) >= 2 else 5.0
    if len(grid) < n + 1:
        grid = grid + [grid[-1] + step * (i + 1) for i in range(n + 1 - len(grid))]
    unit = str(data.get("age_unit", "years"))
    if is_time_aware(cfg):
        tc = cfg.model.timevp
        lo, hi = data.get("age_range") or (grid[0], grid[n])
        lo, hi = float(lo), float(hi)
        margin = max(float(tc.grid_step), MARGIN_FRACTION * (hi - lo))
        # trained on per-series ages, the model has no usual history: requests must say their ages
        defaults = () if data.get("layout") == "irregular" else tuple(grid[:n])
        return TimeDomain(True, unit, (lo, hi), margin, 2, 0, int(tc.window), float(tc.grid_step), defaults)
    return TimeDomain(False, unit, (grid[0], grid[n]), math.inf, n, n, n, step, tuple(grid[:n]))


def _num(v: float) -> str:
    """The shortest text that reads back as ``v`` (``repr``), whole numbers without ``.0``."""
    r = repr(float(v))
    return r[:-2] if r.endswith(".0") else r


def _fmt(v: Sequence[float]) -> str:
    return "[" + ", ".join(_num(a) for a in v) + "]"


def check_ages(domain: TimeDomain, ages: Sequence[float], target_ages: Sequence[float], where: str = "",
               num_frames: int | None = None, max_steps: int | None = None,
               max_steps_name: str = "max_horizon") -> tuple[list[float], list[float]]:
    """(ages, target_ages) as float lists, or :class:`AgeError` naming ``where`` and the problem:
    too few or too many input frames (``num_frames``, default ``len(ages)``, must equal
    ``len(ages)``), ages not finite or not strictly increasing, no target ages, a target age not after
    the last input age, or not strictly increasing, an age outside what the model accepts
    (:attr:`TimeDomain.accepted`), and for grid models inputs not evenly spaced, targets not whole
    steps of that spacing after the last input, or (``max_steps``) the last target more than
    ``max_steps`` rollout steps after it (the message names the limit as ``max_steps_name``: Serve's
    ``max_horizon``, predict's ``crnn.inference.MAX_HORIZON``)."""
    p = f"{where}: " if where else ""
    try:
        a = [float(v) for v in ages]
        t = [float(v) for v in target_ages]
    except (TypeError, ValueError):
        raise AgeError(f"{p}ages and target_ages must be numbers, got {list(ages)!r} and {list(target_ages)!r}") from None
    if num_frames is not None and num_frames != len(a):
        raise AgeError(f"{p}{num_frames} frames but {len(a)} ages {_fmt(a)}; give one age per input frame")
    if len(a) < domain.min_inputs:
        raise AgeError(f"{p}{len(a)} input frame(s); the model needs at least {domain.min_inputs}")
    if domain.max_inputs and len(a) > domain.max_inputs:
        raise AgeError(f"{p}{len(a)} input frames; the model takes exactly {domain.max_inputs} "
                       f"(a grid model; a time-aware model, model.kind=timevp, takes any number)")
    if not all(math.isfinite(v) for v in a + t):
        raise AgeError(f"{p}ages must be finite numbers, got {_fmt(a)} -> {_fmt(t)}")
    # compared as the model sees them, float32: ages distinct in float64 only (10, 10.0000001) would
    # pass here and then fail inside the forward pass -- in Serve, for every series of the batch
    a32, t32 = np.asarray(a, np.float32), np.asarray(t, np.float32)
    if not (np.isfinite(a32).all() and np.isfinite(t32).all()):
        raise AgeError(f"{p}ages must be finite numbers within float32 range, got {_fmt(a)} -> {_fmt(t)}")
    if (np.diff(a32) <= 0).any():
        raise AgeError(f"{p}ages {_fmt(a)} are not strictly increasing (oldest frame first; compared at "
                       f"float32 precision, as the model reads them)")
    if not t:
        raise AgeError(f"{p}target_ages is empty: ask for at least one age")
    if t32[0] <= a32[-1]:
        raise AgeError(f"{p}target age {_num(t[0])} is not after the last input age {_num(a[-1])}; forecasts are "
                       f"of later ages (compared at float32 precision, as the model reads them)")
    if (np.diff(t32) <= 0).any():
        raise AgeError(f"{p}target_ages {_fmt(t)} are not strictly increasing (compared at float32 precision)")
    lo, hi = domain.accepted
    out = [v for v in a + t if not lo <= v <= hi]
    if out:
        lo_t, hi_t = domain.age_range
        raise AgeError(f"{p}age {out[0]:g} is far outside the ages the model was trained on "
                       f"({lo_t:g}..{hi_t:g} {domain.age_unit}; accepted {lo:g}..{hi:g})")
    if not domain.time_aware:
        s = a[1] - a[0] if len(a) >= 2 else domain.step  # a grid model's ages label its fixed spacing
        on_grid = evenly_spaced(a) and all(abs((v - a[-1]) / s - round((v - a[-1]) / s)) <= 1e-6 for v in t)
        if not on_grid:
            raise AgeError(f"{p}ages {_fmt(a)} -> {_fmt(t)} are off a grid model's grid: it takes evenly spaced "
                           f"inputs and forecasts whole steps of that spacing after the last one (trained at a "
                           f"spacing of {domain.step:g}, in {domain.age_unit}; a time-aware model, model.kind=timevp, takes any "
                           f"ages)")
        steps = round((t[-1] - a[-1]) / s)
        if max_steps is not None and steps > max_steps:
            raise AgeError(f"{p}target age {_num(t[-1])} is {steps} steps of {_num(s)} after the last input age "
                           f"{_num(a[-1])}; a grid model rolls out at most {max_steps} steps ({max_steps_name})")
    return a, t


def _spacing(ages: Sequence[float], domain: TimeDomain) -> float:
    return ages[1] - ages[0] if len(ages) >= 2 else domain.step


def forecast_at(model: torch.nn.Module, domain: TimeDomain, frames: Sequence[np.ndarray],
                ages: Sequence[Sequence[float]], target_ages: Sequence[Sequence[float]],
                device: str | torch.device = "cpu", batch_size: int = 64) -> list[np.ndarray]:
    """Forecasts of each series at its ``target_ages``.

    ``frames[i]``: uint8 (n_i, H, W, C), oldest first, at ``ages[i]`` (n_i values); ``target_ages[i]``:
    m_i ages after the last one. Returns one uint8 (m_i, H, W, C) per series. Ages are checked first
    (:func:`check_ages`: :class:`AgeError` naming ``series[i]``). A time-aware model answers all
    targets of a batch in one forward pass (series padded to the batch's longest history and
    target list, the padding masked); a grid model rolls out to the furthest grid step asked for
    and returns the requested steps. The model must be in eval mode on ``device``.
    """
    from crnn.inference import to_uint8
    from crnn.model import rollout
    from crnn.shards import torch_frames

    if not (len(frames) == len(ages) == len(target_ages)):
        raise ValueError(f"forecast_at: {len(frames)} series, {len(ages)} age lists, {len(target_ages)} target lists")
    checked = [check_ages(domain, a, t, f"series[{i}]", num_frames=len(f))
               for i, (f, a, t) in enumerate(zip(frames, ages, target_ages))]
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for s in range(0, len(frames), batch_size):
            part = range(s, min(s + batch_size, len(frames)))
            if domain.time_aware:
                n = max(len(frames[i]) for i in part)
                m = max(len(checked[i][1]) for i in part)
                h, w, c = frames[part[0]].shape[1:]
                x = np.zeros((len(part), n, h, w, c), np.uint8)
                a = np.zeros((len(part), n), np.float32)
                mask = np.zeros((len(part), n), bool)
                t = np.zeros((len(part), m), np.float32)
                for j, i in enumerate(part):
                    k = len(frames[i])
                    x[j, :k], a[j, :k], mask[j, :k] = frames[i], checked[i][0], True
                    ti = checked[i][1]
                    t[j, :len(ti)], t[j, len(ti):] = ti, ti[-1]  # padding targets repeat the last one
                pred = model(torch_frames(x, device=device), torch.from_numpy(a).to(device),
                             torch.from_numpy(mask).to(device), torch.from_numpy(t).to(device))
                u = to_uint8(pred.clamp(0, 1).float().cpu().numpy())
                out.extend(u[j, :len(checked[i][1])] for j, i in enumerate(part))
            else:
                steps = [[int(round((v - checked[i][0][-1]) / _spacing(checked[i][0], domain))) for v in checked[i][1]]
                         for i in part]
                x = torch_frames(np.stack([frames[i] for i in part]), device=device)
                pred = rollout(model, x, max(max(k) for k in steps), window=domain.window)
                u = to_uint8(pred.clamp(0, 1).float().cpu().numpy())
                out.extend(u[j, [k - 1 for k in ks]] for j, ks in enumerate(steps))
    return out
