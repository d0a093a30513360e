"""Evaluation as a function of time (issue #14): how good are a time-aware model's forecasts as the
forecast reaches further, and how far can they be trusted.

    result = evaluate_time("runs/t/model", "data/pines-irr", out="runs/t/eval-time")
    print(format_time_table(result))            # MSE / MAE per forecast-gap bin and per input-spacing bin

For each series of the dataset's test split (an irregular dataset, :mod:`crnn.irregular`: the
first ``num_inputs`` frames are inputs, the rest targets), the model forecasts the target frames
from the input frames at their ages (:func:`crnn.timeaware.forecast_at`). Every target frame is
scored against the truth on 0-255 pixels (:func:`crnn.metrics.frame_metrics`: per-value MSE, MAE,
...) and put in a bin of

* the **forecast gap** ``target age - last input age`` (the dataset's ``age_unit``; bins
  :data:`GAP_EDGES` ``(0, 2], (2, 5], (5, 10], (10, 20], (20, 50]``, extended 1-2-5 for wider ranges);
* the **input spacing**, the mean gap between consecutive inputs (``(last - first) / (n - 1)``
  over all the series' inputs; bins :data:`SPACING_EDGES`).

Beside the model, given the same ages, three baselines (each delivered as uint8, like the model's
forecasts from Serve and predict):

* **persistence** (:func:`persistence_at`): the last input frame;
* **linear-in-time** (:func:`linear_at`): per pixel, the line through the last two inputs at their
  ages, evaluated at the target age, clipped to 0..255;
* **analog** (:class:`AnalogBank`; Lorenz's method of analogues, as :mod:`crnn.models.analog` on the
  regular grid): a bank of *training* trees rendered by the dataset's simulator at every age of the
  dataset's age grid (the card's ``irregular`` section; train-split series indices only,
  :func:`crnn.shards.split_for_index`, so no test tree is in it); each query is compared in L2 with
  every bank tree's frames at the query's input ages, and the forecast is the last input plus the
  mean change ``bank[target age] - bank[last input age]`` of the k = 8 nearest trees.

**Trust** (:func:`trust_from_bins`): from the by-gap table, the largest gap up to which the model
beats persistence by 2x and by 1.2x in MSE (every bin up to that edge meets the ratio; null when
the first bin does not), written as ``trust.json`` (and, on request, into the model directory,
where Serve's ``GET /model`` shows it).

Grid models (every ``model.kind`` but ``timevp``) are refused before any forecasting: they answer
only their training grid, and an irregular dataset's ages are not on it.

No Ray: the split is read into memory with :func:`crnn.shards.read_numpy`; the analog bank is
rendered by a process pool (or read from its ``.npy`` cache).
"""

from __future__ import annotations

import io
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np
import torch

__all__ = [
    "evaluate_time", "check_time_evaluate", "evaluate_dataset", "format_time_table", "markdown_trust_table",
    "persistence_at", "linear_at", "AnalogBank", "render_bank", "load_or_render_bank", "bank_indices",
    "bin_edges", "assign_bins", "score_by_bins", "trust_from_bins", "trust_record", "refuse_grid_model",
    "is_irregular_dataset", "GAP_EDGES", "SPACING_EDGES", "TRUST_RATIOS", "BANK_SIZE", "ANALOG_K",
    "FORECASTERS", "TRUST_FILE",
]

#: Forecast-gap bin edges (dataset unit): (0, 2], (2, 5], (5, 10], (10, 20], (20, 50].
GAP_EDGES = (0.0, 2.0, 5.0, 10.0, 20.0, 50.0)
#: Input-spacing bin edges (mean gap between consecutive inputs).
SPACING_EDGES = (0.0, 2.0, 5.0, 10.0, 20.0, 50.0)
#: Trust levels: the model's MSE at least this many times better than persistence's.
TRUST_RATIOS = {"2x": 2.0, "1.2x": 1.2}
#: Analog bank: trees rendered (the first BANK_SIZE train-split series indices), neighbours.
BANK_SIZE = 2000
ANALOG_K = 8
#: At most this much memory for the uint8 bank (fewer trees for large images or long age grids).
BANK_MAX_BYTES = 2**31
FORECASTERS = ("model", "persistence", "linear", "analog")
TRUST_FILE = "trust.json"
BANK_FILE = "analog_bank.npy"
_METRICS = ("mse", "mae", "rmse", "psnr", "ssim")


# ----------------------------------------------------------------------------- baselines
def _deliver(x: np.ndarray) -> np.ndarray:
    """Float pixels on 0..255 -> uint8 as delivered (rounded half to even, clipped)."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def persistence_at(frames: np.ndarray, ages: Sequence[float], target_ages: Sequence[float]) -> np.ndarray:
    """The last input frame, once per target age: ``frames`` uint8 (n, H, W, C) at ``ages`` (n) ->
    uint8 (m, H, W, C) for the m ``target_ages``. ValueError for no frames or no targets."""
    frames = np.asarray(frames)
    if len(frames) < 1 or len(target_ages) < 1:
        raise ValueError(f"persistence_at: {len(frames)} input frames and {len(target_ages)} target ages; "
                         f"need at least one of each")
    return np.repeat(frames[-1:], len(target_ages), axis=0).astype(np.uint8)


def linear_at(frames: np.ndarray, ages: Sequence[float], target_ages: Sequence[float]) -> np.ndarray:
    """Linear-in-time extrapolation per pixel: the line through the last two inputs ``(a1, x1)``,
    ``(a2, x2)`` evaluated at each target age ``t``, ``x2 + (x2 - x1) (t - a2) / (a2 - a1)``, clipped
    to 0..255 and rounded -> uint8 (m, H, W, C). ``frames`` uint8 (n >= 2, H, W, C) at strictly
    increasing ``ages`` (years or the dataset's unit). ValueError for fewer than 2 inputs, ages
    that do not match the frames or do not increase."""
    frames = np.asarray(frames)
    a = [float(v) for v in ages]
    if len(frames) < 2 or len(a) != len(frames):
        raise ValueError(f"linear_at: needs >= 2 input frames with one age each, got {len(frames)} frames, "
                         f"ages {a}")
    if not a[-1] > a[-2]:
        raise ValueError(f"linear_at: the last two input ages {a[-2]:g}, {a[-1]:g} do not increase")
    x1, x2 = frames[-2].astype(np.float64), frames[-1].astype(np.float64)
    slope = (x2 - x1) / (a[-1] - a[-2])                             # pixel value per age unit
    t = np.asarray(target_ages, np.float64)[:, None, None, None]   # (m, 1, 1, 1)
    return _deliver(x2[None] + slope[None] * (t - a[-1]))


# ----------------------------------------------------------------------------- analog bank
def bank_indices(size: int) -> list[int]:
    """The first ``size`` series indices of the training split (:func:`crnn.shards.split_for_index`):
    the bank's trees. Test indices (< 3840, ``index % 10 == 9``) and validation ones are never in it."""
    from crnn.shards import split_for_index

    out, i = [], 0
    while len(out) < size:
        if split_for_index(i) == "train":
            out.append(i)
        i += 1
    return out


def _render_chunk(args) -> np.ndarray:
    # a process-pool task: (scene, base_seed, indices, ages, height, width) -> uint8 (n, A, H, W, C)
    from crnn.generate import simulator
    from crnn.shards import series_seed

    scene, base_seed, indices, ages, height, width = args
    sim = simulator(scene)
    return np.stack([sim.make_series(series_seed(base_seed, i), ages=ages, height=height, width=width)[1]
                     for i in indices])


class AnalogBank:
    """Trees rendered at every age of a grid, and the analog forecast from them.

    ``frames``: uint8 (N, A, H, W, C), tree ``i`` at ``ages[j]``; ``ages``: (A,) ascending, in the
    dataset's unit; ``info``: what it was made from (scene, seed, generator version, size, ...).
    """

    def __init__(self, frames: np.ndarray, ages: Sequence[float], info: dict[str, Any] | None = None) -> None:
        frames = np.asarray(frames)
        ages = np.asarray(ages, np.float64)
        if frames.ndim != 5 or frames.dtype != np.uint8 or len(frames) == 0:
            raise ValueError(f"AnalogBank: frames must be uint8 (N >= 1, A, H, W, C), got {frames.dtype} "
                             f"{frames.shape}")
        if ages.ndim != 1 or len(ages) != frames.shape[1] or np.any(np.diff(ages) <= 0):
            raise ValueError(f"AnalogBank: {len(ages)} ages for {frames.shape[1]} frames per tree, or not ascending")
        self.frames, self.ages, self.info = frames, ages, dict(info or {})

    def __len__(self) -> int:
        return len(self.frames)

    def age_index(self, ages: Sequence[float], where: str = "") -> list[int]:
        """Index of each age in the bank's grid; ValueError naming ``where`` and the first age that is
        not on it (a tolerance of 1e-6 relative: float32 ages of the shards match)."""
        out = []
        for a in ages:
            j = int(np.argmin(np.abs(self.ages - float(a))))
            if abs(self.ages[j] - float(a)) > 1e-6 * max(1.0, abs(float(a))):
                raise ValueError(f"{where + ': ' if where else ''}age {float(a):g} is not on the analog bank's age "
                                 f"grid {self.ages[0]:g}..{self.ages[-1]:g} (step {self.ages[1] - self.ages[0]:g})")
            out.append(j)
        return out

    def forecast(self, frames: Sequence[np.ndarray], ages: Sequence[Sequence[float]],
                 target_ages: Sequence[Sequence[float]], k: int = ANALOG_K,
                 where: Sequence[str] | None = None, exclude: Sequence[int] = ()) -> list[np.ndarray]:
        """Analog forecasts: ``frames[i]`` uint8 (n_i, H, W, C) at ``ages[i]`` -> uint8 (m_i, H, W, C) at
        ``target_ages[i]``. Distance to tree b: ``sum_j ||frames[i][j] - bank[b, ages[i][j]]||^2`` over
        all the query's inputs (exact: float64 on 0..255 integers), the k nearest N (ties: lower tree
        index), forecast ``clip(x_last + mean_{b in N}(bank[b, t] - bank[b, a_last]), 0, 255)``.
        ``exclude``: bank rows never used (e.g. the evaluated series themselves when a training split
        is evaluated). ValueError for k outside [1, usable trees], a frame size other than the bank's,
        an age off the grid."""
        usable = len(self) - len(set(int(e) for e in exclude))
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= usable:
            raise ValueError(f"analog: k={k!r} must be an int in [1, {usable}] (the bank's usable trees)")
        n_q = len(frames)
        names = list(where) if where is not None else [f"series[{i}]" for i in range(n_q)]
        shape = self.frames.shape[2:]
        d2 = np.zeros((n_q, len(self)), np.float64)        # (Q, N) summed squared distances
        idx_in, idx_tg, by_age = [], [], {}
        for i in range(n_q):
            f = np.asarray(frames[i])
            if f.shape[1:] != shape:
                raise ValueError(f"{names[i]}: frames {f.shape[1:]} but the analog bank's are {shape}")
            ii = self.age_index(ages[i], names[i])
            idx_in.append(ii)
            idx_tg.append(self.age_index(target_ages[i], names[i]))
            for j, a in enumerate(ii):
                by_age.setdefault(a, []).append((i, j))
        for a, pairs in by_age.items():                    # one matrix product per bank age
            b = self.frames[:, a].reshape(len(self), -1).astype(np.float64)        # (N, D)
            x = np.stack([np.asarray(frames[i][j]).reshape(-1) for i, j in pairs]).astype(np.float64)  # (P, D)
            part = (x ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None, :] - 2.0 * (x @ b.T)  # (P, N)
            d2[[i for i, _ in pairs]] += part              # one input per age per query: rows distinct
        d2[:, list(exclude)] = np.inf
        nearest = np.argsort(d2, axis=1, kind="stable")[:, :k]                      # (Q, k)
        out = []
        for i in range(n_q):
            nb = self.frames[nearest[i]].astype(np.float64)                         # (k, A, H, W, C)
            change = nb[:, idx_tg[i]] - nb[:, idx_in[i][-1]][:, None]               # (k, m, H, W, C)
            out.append(_deliver(np.asarray(frames[i][-1], np.float64)[None] + change.mean(0)))
        return out


def _bank_rows_of(bank: AnalogBank, series_ids: Sequence[str]) -> list[int]:
    """Rows of ``bank`` (its trees are :func:`bank_indices`) holding the dataset series ``series_ids``
    (generated ids end in the series index: ``pine-000123``)."""
    row = {idx: r for r, idx in enumerate(bank_indices(len(bank)))}
    out = []
    for sid in series_ids:
        tail = str(sid).rsplit("-", 1)[-1]
        if tail.isdigit() and int(tail) in row:
            out.append(row[int(tail)])
    return sorted(set(out))


def _bank_key(card: dict[str, Any]) -> dict[str, Any]:
    """What a bank is rendered from, from an irregular dataset card; ValueError when the card cannot
    say (an ingested dataset: no simulator, no age grid)."""
    from crnn.generate import simulator
    from crnn.irregular import IrregularSpec

    spec = card.get("irregular")
    if not isinstance(spec, dict) or "base_seed" not in card:
        raise ValueError("the dataset was not generated by a simulator (its card has no 'irregular' sampling "
                         "options or no 'base_seed'), so there are no training trees to render")
    scene = str(card.get("scene", "pines"))
    sim = simulator(scene)
    if card.get("generator_version") not in (None, sim.GENERATOR_VERSION):
        raise ValueError(f"the dataset was made by simulator {card.get('generator_version')!r}, this checkout has "
                         f"{sim.GENERATOR_VERSION!r}: its bank would not be the dataset's trees")
    fields = {f: spec[f] for f in ("min_inputs", "max_inputs", "min_targets", "max_targets", "age_min",
                                   "age_max", "age_step") if f in spec}
    grid = IrregularSpec(**fields).grid()
    ages = [int(a) for a in grid] if scene == "pines" else [float(a) for a in grid]
    return {"scene": scene, "generator_version": sim.GENERATOR_VERSION, "base_seed": int(card["base_seed"]),
            "height": int(card["height"]), "width": int(card["width"]), "ages": ages,
            "indices": "the first N train-split series indices (crnn.shards.split_for_index)"}


def render_bank(key: dict[str, Any], size: int, workers: int = 0, chunk: int = 25) -> tuple[AnalogBank, float]:
    """Render ``size`` training trees (:func:`bank_indices`) of the scene, seed and image size of
    ``key`` (:func:`_bank_key` of a card) at every age of ``key["ages"]`` -> (bank, seconds).
    ``workers``: processes (0: all CPUs; 1: in this process)."""
    idx = bank_indices(size)
    ages = tuple(key["ages"])
    jobs = [(key["scene"], key["base_seed"], idx[s:s + chunk], ages, key["height"], key["width"])
            for s in range(0, len(idx), chunk)]
    workers = workers or os.cpu_count() or 1
    t0 = time.perf_counter()
    if workers <= 1 or len(jobs) <= 1:
        parts = [_render_chunk(j) for j in jobs]
    else:
        # the platform's start method (fork on Linux: no main-module guard needed in callers' scripts);
        # evaluate_time renders the bank before the model's first forward pass starts torch's threads
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as ex:
            parts = list(ex.map(_render_chunk, jobs))
    seconds = time.perf_counter() - t0
    info = {**key, "size": len(idx), "render_s": round(seconds, 2), "workers": workers}
    return AnalogBank(np.concatenate(parts), key["ages"], info), seconds


def load_or_render_bank(card: dict[str, Any], size: int = BANK_SIZE, path: str | None = None,
                        workers: int = 0) -> AnalogBank:
    """The analog bank of the dataset with ``card``: read from ``path`` (a ``.npy``, local or URI, with
    its ``.json`` description beside it) when that holds at least ``size`` trees rendered from the
    same scene, seed, simulator version, image size and age grid (its first ``size`` are used), else
    rendered (:func:`render_bank`) and, with ``path``, written there (atomically, crnn.storage).
    ``bank.info`` says which (``cached``) and how long rendering took. ValueError when the card
    cannot give a bank (:func:`_bank_key`)."""
    from crnn.storage import exists, read_bytes, read_json, write_bytes, write_json

    key = _bank_key(card)
    a = len(key["ages"])
    per_tree = a * key["height"] * key["width"] * int(card.get("channels", 3))
    size = max(1, min(int(size), BANK_MAX_BYTES // per_tree))
    meta_path = None if path is None else os.path.splitext(path)[0] + ".json"
    if path is not None and exists(path) and exists(meta_path):
        meta = read_json(meta_path, default={})
        if {k: meta.get(k) for k in key} == key and int(meta.get("size", 0)) >= size:
            frames = np.load(io.BytesIO(read_bytes(path)), allow_pickle=False)[:size]
            return AnalogBank(frames, key["ages"], {**meta, "size": size, "cached": True, "path": path})
    bank, _ = render_bank(key, size, workers)
    bank.info.update(cached=False, path=path)
    if path is not None:
        buf = io.BytesIO()
        np.save(buf, bank.frames, allow_pickle=False)
        write_bytes(path, buf.getvalue())
        write_json(meta_path, {k: v for k, v in bank.info.items() if k not in ("cached", "path")})
    return bank


# ----------------------------------------------------------------------------- bins and scores
def bin_edges(max_value: float, base: Sequence[float] = GAP_EDGES) -> list[float]:
    """``base`` edges, extended in the 1-2-5 progression (100, 200, 500, ...) until the last edge is
    >= ``max_value`` (the widest gap or spacing of the data), so every value has a bin."""
    edges = [float(e) for e in base]
    decade = 1.0
    while edges[-1] < max_value:
        nxt = [m * decade for m in (1.0, 2.0, 5.0) if m * decade > edges[-1]]
        if nxt:
            edges.append(nxt[0])
        else:
            decade *= 10.0
    return edges


def assign_bins(values: Sequence[float], edges: Sequence[float]) -> np.ndarray:
    """Bin index of each value, right-closed bins ``(edges[b], edges[b+1]]``: int64 (n,). ValueError
    naming the first value that is not finite or outside ``(edges[0], edges[-1]]``."""
    v = np.asarray(values, np.float64)
    e = np.asarray(edges, np.float64)
    bad = ~np.isfinite(v) | (v <= e[0]) | (v > e[-1])
    if bad.any():
        raise ValueError(f"value {v[bad][0]:g} is outside the bins ({e[0]:g}, {e[-1]:g}]")
    return np.searchsorted(e, v, side="left") - 1


def _label(lo: float, hi: float) -> str:
    return f"({lo:g}, {hi:g}]"


def _frame_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float | None]:
    """MSE, MAE, RMSE, PSNR (dB), SSIM of uint8 (n, H, W, C) frames on 0-255 pixels
    (:func:`crnn.metrics.frame_metrics`); frames smaller than SSIM's 11x11 window get the same MSE,
    MAE, RMSE and PSNR definitions and SSIM None."""
    from crnn.metrics import frame_metrics

    m = frame_metrics(pred, truth, scale=1.0, channels_last=True)  # SSIM NaN below its window
    return {k: None if k == "ssim" and math.isnan(m[k]) else m[k] for k in _METRICS}


def score_by_bins(preds: dict[str, Sequence[np.ndarray]], truth: Sequence[np.ndarray], bins: np.ndarray,
                  edges: Sequence[float], values: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """Per bin, every forecaster's metrics over the target frames in it.

    ``truth``: the target frames, each uint8 (H, W, C); ``preds[name]``: that forecaster's frames in
    the same order; ``bins``: each target's bin index into ``edges``. Returns one dict per bin:
    ``{"bin": [lo, hi], "label": "(lo, hi]", "targets": count, "metrics": {name: frame_metrics} }``
    (metrics on 0-255 pixels, :func:`_frame_scores`: per-value MSE, MAE, RMSE, PSNR, SSIM; every
    target frame weighs the same); bins without targets have ``"metrics": {}``. With ``values`` (the
    binned quantity per target, e.g. its gap) each bin with targets also has ``"max"``: the largest
    value in it -- how far the evidence of that bin actually reaches."""
    bins = np.asarray(bins)
    if len(bins) != len(truth) or any(len(p) != len(truth) for p in preds.values()):
        raise ValueError(f"score_by_bins: {len(truth)} targets, {len(bins)} bins, "
                         f"{ {k: len(v) for k, v in preds.items()} } forecasts")
    out = []
    for b in range(len(edges) - 1):
        sel = np.flatnonzero(bins == b)
        row = {"bin": [float(edges[b]), float(edges[b + 1])], "label": _label(edges[b], edges[b + 1]),
               "targets": int(len(sel)), "metrics": {}}
        if len(sel):
            if values is not None:
                row["max"] = float(np.max(np.asarray(values, np.float64)[sel]))
            t = np.stack([truth[i] for i in sel])
            for name, p in preds.items():
                row["metrics"][name] = _frame_scores(np.stack([p[i] for i in sel]), t)
        out.append(row)
    return out


def trust_from_bins(bins: Sequence[dict[str, Any]], ratios: dict[str, float] = TRUST_RATIOS,
                    model: str = "model", baseline: str = "persistence") -> dict[str, float | None]:
    """Up to which gap the model beats ``baseline`` by each ratio: ``{"2x": gap or None, ...}``.

    ``bins``: the by-gap table (:func:`score_by_bins`), in order. For ratio r the answer is the upper
    edge of the last bin of the run, from the first bin with targets, of bins where ``MSE(baseline) >=
    r * MSE(model)`` (a model MSE of 0 meets any r) -- or, when the bin records it (``"max"``), the
    largest gap actually measured in that bin, if smaller: trust is never claimed beyond the evidence
    (a (20, 50] bin whose targets reach 33 years says 33). The run ends at the first bin that fails or
    has no targets (no evidence there). None when the first bin with targets fails, or no bin has any."""
    out: dict[str, float | None] = {}
    for name, r in ratios.items():
        best, started = None, False
        for row in bins:
            m = row.get("metrics") or {}
            if not row.get("targets") or model not in m or baseline not in m:
                if started:
                    break
                continue
            started = True
            if not m[baseline]["mse"] >= r * m[model]["mse"]:
                break
            best = float(min(row["bin"][1], row.get("max", math.inf)))
        out[name] = best
    return out


def trust_record(result: dict[str, Any]) -> dict[str, Any]:
    """The ``trust.json`` of an :func:`evaluate_time` result: ``{"unit", "better_than_persistence":
    {"2x": gap or null, "1.2x": ...}, "bins": [{"gap": [lo, hi], "targets", "model_mse",
    "persistence_mse", "ratio"}], "dataset", "split", "series", "targets", "model", "tta", "measured"}``
    (``tta``: the test-time augmentation the model was scored with; ``mirror_axis`` with hflip)."""
    rows = []
    for row in result["by_gap"]["bins"]:
        m = row["metrics"]
        mm, pm = (m.get("model") or {}).get("mse"), (m.get("persistence") or {}).get("mse")
        ratio = None if mm is None or pm is None else (pm / mm if mm > 0 else math.inf)
        rows.append({"gap": row["bin"], "targets": row["targets"], "model_mse": mm, "persistence_mse": pm,
                     "ratio": ratio})
    from crnn.storage import json_safe

    return json_safe({"unit": result["unit"], "better_than_persistence": result["trust"], "bins": rows,
                      "dataset": result["data"], "split": result["split"], "series": result["num_series"],
                      "targets": result["num_targets"], "model": result["model"],
                      "tta": result.get("tta", "none"),
                      **({"mirror_axis": result["mirror_axis"]} if result.get("mirror_axis") is not None else {}),
                      "measured": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})


# ----------------------------------------------------------------------------- checks
def is_irregular_dataset(path: str) -> bool:
    """Whether ``path``'s card says ``"layout": "irregular"`` (False when it cannot be read: the
    regular evaluation's checks then name the problem)."""
    from crnn.shards import read_card

    try:
        return read_card(path).get("layout") == "irregular"
    except Exception:  # noqa: BLE001 -- any unreadable card: let the regular path report it
        return False


def refuse_grid_model(cfg, model_path: str, data_path: str) -> None:
    """ValueError naming the model kind when the model of ``cfg`` is a grid model (every family but
    the time-aware ones, :data:`crnn.timeaware.TIME_AWARE_KINDS`): it cannot answer the per-series ages
    of an irregular dataset."""
    from crnn.timeaware import TIME_AWARE_KINDS, is_time_aware

    if not is_time_aware(cfg):
        raise ValueError(
            f"model {model_path} is a grid model (model.kind={cfg.model.kind!r}): it forecasts whole steps of "
            f"its training grid from exactly {cfg.data.in_frames} evenly spaced frames, but {data_path} is an "
            f"irregular dataset (each series at its own ages); use a time-aware model "
            f"(model.kind={TIME_AWARE_KINDS[0]}) on it, or this model on a regular dataset")


def _check_args(batch_size: int, k: int, bank_size: int, bank_workers: int) -> None:
    """ValueError naming the first numeric option out of range."""
    for name, v, low in (("--batch-size", batch_size, 1), ("k (neighbours)", k, 1), ("--bank-size", bank_size, 0),
                         ("--bank-workers", bank_workers, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    if bank_size and bank_size < k:
        raise ValueError(f"--bank-size {bank_size} is smaller than k={k} neighbours (0 skips the analog baseline)")


def check_time_evaluate(model_path: str, data_path: str, split: str | None = None,
                        device: str | torch.device = "cpu", batch_size: int = 64, bank_size: int = BANK_SIZE,
                        k: int = ANALOG_K, bank_workers: int = 0, tta: str = "none",
                        mirror_axis: float | None = None) -> str:
    """What :func:`evaluate_time` would refuse, checked before any work (the model file, the card and
    the shards' footers): the arguments, the device, a grid model (:func:`refuse_grid_model`), a
    dataset that is not irregular, ages in another unit than the model's
    (:func:`crnn.timeaware.check_data_unit`), an unknown or empty split (default: the model config's
    ``data.test_split``), a frame size other than the model's, the test-time augmentation and its
    axis (:func:`crnn.mirror.tta_axis`). Returns the split; raises ValueError (ModelError,
    ShardError, ImageSizeError)."""
    from crnn.checkpoint import check_model_dir
    from crnn.inference import check_dataset_image_size, image_size, pick_device
    from crnn.shards import split_error
    from crnn.mirror import check_tta, tta_axis
    from crnn.shards import validate
    from crnn.timeaware import check_data_unit

    _check_args(batch_size, k, bank_size, bank_workers)
    check_tta(tta, model_path)
    pick_device(device)
    cfg, payload = check_model_dir(model_path)
    refuse_grid_model(cfg, model_path, data_path)
    card = validate(data_path)
    if card.get("layout") != "irregular":
        raise ValueError(f"{data_path}: a regular dataset (the same ages in every series); the time-aware "
                         f"evaluation takes an irregular one (crnn.evaluate.evaluate scores regular datasets)")
    check_data_unit(model_path, cfg, payload.get("data"), card, data_path)
    split = split or cfg.data.test_split
    counts = {str(s): v for s, v in (card.get("splits") or {}).items()}
    if not counts.get(split):
        raise split_error(data_path, split, counts)
    check_dataset_image_size(image_size(cfg.model), card, data_path, f"model {model_path}")
    tta_axis(tta, mirror_axis, payload.get("data"), card, data_path)
    return split


# ----------------------------------------------------------------------------- evaluation
def _series(data: dict[str, np.ndarray]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Split rows -> (series with >= 2 inputs and >= 1 target, left-out series with the reason).
    ``num_inputs`` 0 (not marked: ingested photos): all frames but the last are inputs."""
    keep, left = [], []
    for i, sid in enumerate(data["series_id"]):
        n, ni = int(data["num_frames"][i]), int(data["num_inputs"][i])
        ni = ni if ni > 0 else n - 1
        if ni < 2 or ni >= n:
            left.append({"series_id": str(sid), "reason": f"{ni} input frame(s) and {n - ni} target(s); the "
                         f"evaluation needs >= 2 inputs (the model's minimum, and linear-in-time's) and >= 1 target"})
            continue
        ages = data["ages"][i, :n].astype(np.float64)
        keep.append({"series_id": str(sid), "frames": data["frames"][i, :ni], "ages": ages[:ni].tolist(),
                     "targets": data["frames"][i, ni:n], "target_ages": ages[ni:].tolist()})
    return keep, left


def evaluate_time(model_path: str, data_path: str, out: str | None = None, split: str | None = None,
                  device: str | torch.device = "cpu", batch_size: int = 64, bank_size: int = BANK_SIZE,
                  bank_path: str | None = None, bank_workers: int = 0, k: int = ANALOG_K,
                  write_trust_to_model: bool = False, tta: str = "none",
                  mirror_axis: float | None = None) -> dict[str, Any]:
    """Score the time-aware model directory ``model_path`` and the baselines on one split (default:
    the model config's ``data.test_split``) of the irregular dataset ``data_path``, per forecast-gap
    and per input-spacing bin (module docstring).

    ``bank_size`` trees in the analog bank (0: no analog baseline), cached at ``bank_path`` (a
    ``.npy``; default ``<out>/analog_bank.npy`` with ``out``, else not cached), rendered by
    ``bank_workers`` processes (0: all CPUs). ``tta="hflip"``: the model's forecasts with mirror
    test-time augmentation (:class:`crnn.mirror.MirrorTTA`: the ages pass through as they are; about
    the axis :func:`crnn.mirror.tta_axis` picks), recorded as ``tta`` and ``mirror_axis`` in the result
    and in ``trust.json``; the baselines are scored as they are. With ``out`` (a local directory or URI) writes
    ``result.json`` (the returned dict), ``table.txt`` (:func:`format_time_table`), ``mse_by_gap.png``
    (MSE vs gap and vs spacing, one line per forecaster, log y) and ``trust.json``
    (:func:`trust_record`); ``write_trust_to_model`` also writes ``<model_path>/trust.json``.

    Raises ValueError (before forecasting) for an unknown ``tta`` or a bad axis, a grid model
    (:func:`refuse_grid_model`), a regular
    dataset, an empty split, a frame size other than the model's, a series whose ages the model does
    not answer (:class:`crnn.timeaware.AgeError` naming the series); ModelError for a bad model
    directory. A bank that cannot be made (an ingested dataset) skips the analog baseline, said in
    ``skipped_baselines``. Series with fewer than 2 inputs are left out and listed (``left_out``).
    """
    from crnn.config import to_dict
    from crnn.inference import check_dataset_image_size, image_size, load_model, pick_device
    from crnn.shards import split_error
    from crnn.mirror import check_tta, tta_axis, with_tta
    from crnn.shards import read_card, read_numpy
    from crnn.storage import join, json_safe, write_bytes, write_json, write_text
    from crnn.timeaware import check_ages, check_data_unit, forecast_at, time_domain

    _check_args(batch_size, k, bank_size, bank_workers)
    check_tta(tta, model_path)
    device = pick_device(device)
    model, cfg, meta = load_model(model_path, device)
    refuse_grid_model(cfg, model_path, data_path)
    card = read_card(data_path)
    if card.get("layout") != "irregular":
        raise ValueError(f"{data_path}: a regular dataset; the time-aware evaluation takes an irregular one")
    check_data_unit(model_path, cfg, meta.get("data"), card, data_path)
    split = split or cfg.data.test_split
    check_dataset_image_size(image_size(cfg.model), card, data_path, f"model {model_path}")
    axis = tta_axis(tta, mirror_axis, meta.get("data"), card, data_path)
    data = read_numpy(data_path, split=split, columns=["series_id", "ages", "frames", "num_frames", "num_inputs"])
    if not data or len(data["series_id"]) == 0:
        raise split_error(data_path, split, card.get("splits"))
    series, left_out = _series(data)
    if not series:
        raise ValueError(f"{data_path}: no series of split {split!r} has >= 2 inputs and a target "
                         f"({len(left_out)} left out: {left_out[0]['reason']})")
    domain = time_domain(cfg, meta.get("data"), meta.get("metrics"))
    for s in series:  # every series' ages checked before any forecast, naming the series
        check_ages(domain, s["ages"], s["target_ages"], where=f"{data_path} series {s['series_id']}")

    frames, ages, targets = ([s[f] for s in series] for f in ("frames", "ages", "target_ages"))
    skipped: dict[str, str] = {}
    bank, bank_info = None, None
    # the bank is no bigger than the training set a network learned from: the analog forecast gets
    # the same trees (seeds of the training split) and no more -- unless the training split itself is
    # evaluated: its series are then taken out of the bank, which may reach past the split
    if split != "train":
        bank_size = min(bank_size, max(int((card.get("splits") or {}).get("train", 0)), k))
    if bank_size:  # rendered before the model runs (worker processes are forked from this one)
        path = bank_path or (join(out, BANK_FILE) if out is not None else None)
        try:
            bank = load_or_render_bank(card, bank_size, path, bank_workers)
        except ValueError as e:
            skipped["analog"] = str(e)
        else:
            bank_info = {k: v for k, v in bank.info.items() if k != "ages"}
    else:
        skipped["analog"] = "--bank-size 0"
    preds: dict[str, list[np.ndarray]] = {
        "model": forecast_at(with_tta(model, axis), domain, frames, ages, targets, device=device,
                             batch_size=batch_size),
        "persistence": [persistence_at(f, a, t) for f, a, t in zip(frames, ages, targets)],
        "linear": [linear_at(f, a, t) for f, a, t in zip(frames, ages, targets)],
    }
    if bank is not None:  # the evaluated series are never their own analogs (e.g. --split train)
        exclude = _bank_rows_of(bank, [s["series_id"] for s in series])
        bank_info["excluded"] = len(exclude)
        if len(bank) - len(exclude) < k:
            skipped["analog"] = (f"{len(bank) - len(exclude)} bank trees left once the {len(exclude)} evaluated "
                                 f"series are taken out, fewer than k={k}: use a larger --bank-size")
        else:
            preds["analog"] = bank.forecast(frames, ages, targets, k=k, where=[s["series_id"] for s in series],
                                            exclude=exclude)

    # one entry per target frame: (H, W, C) uint8 truth and forecasts, its gap and its series' spacing
    truth = [f for s in series for f in s["targets"]]
    flat = {name: [f for p in ps for f in p] for name, ps in preds.items()}
    gaps = np.array([t - s["ages"][-1] for s in series for t in s["target_ages"]])
    spacing = np.array([(s["ages"][-1] - s["ages"][0]) / (len(s["ages"]) - 1)
                        for s in series for _ in s["target_ages"]])
    gap_edges, sp_edges = bin_edges(gaps.max(), GAP_EDGES), bin_edges(spacing.max(), SPACING_EDGES)
    by_gap = score_by_bins(flat, truth, assign_bins(gaps, gap_edges), gap_edges, gaps)
    by_spacing = score_by_bins(flat, truth, assign_bins(spacing, sp_edges), sp_edges, spacing)
    overall = score_by_bins(flat, truth, np.zeros(len(truth), int), [0.0, math.inf])[0]["metrics"]
    unit = str(card.get("age_unit", "years"))
    result = json_safe({
        "model": model_path, "data": data_path, "split": split, "kind": cfg.model.kind, "epoch": meta.get("epoch"),
        "unit": unit, "num_series": len(series), "num_targets": len(truth), "left_out": left_out,
        "forecasters": list(preds), "skipped_baselines": skipped, "analog": {"k": k, "bank": bank_info},
        "time_domain": domain.as_dict(),
        "by_gap": {"edges": gap_edges, "bins": by_gap},
        "by_spacing": {"edges": sp_edges, "bins": by_spacing},
        "overall": overall,
        "trust": trust_from_bins(by_gap),
        "model_config": to_dict(cfg)["model"],
        "tta": tta,
        **({"mirror_axis": axis} if axis is not None else {}),
    })
    if out is not None:
        files = {"result": join(out, "result.json"), "table": join(out, "table.txt"),
                 "plot": join(out, "mse_by_gap.png"), "trust": join(out, TRUST_FILE)}
        if write_trust_to_model:
            files["model_trust"] = join(model_path, TRUST_FILE)
        result["files"] = files
        from crnn.plots import metric_by_bins

        write_bytes(files["plot"], metric_by_bins(
            [(f"forecast gap ({unit})", result["by_gap"]["bins"]),
             (f"input spacing ({unit}, mean gap between inputs)", result["by_spacing"]["bins"])],
            result["forecasters"], metric="mse",
            title=f"{cfg.model.kind} on {split}: {len(series)} series, {len(truth)} targets"))
        write_text(files["table"], format_time_table(result) + "\n")
        write_json(files["result"], result)
    if out is not None or write_trust_to_model:
        record = trust_record(result)
        if out is not None:
            write_json(join(out, TRUST_FILE), record)
        if write_trust_to_model:
            write_json(join(model_path, TRUST_FILE), record)
            result.setdefault("files", {})["model_trust"] = join(model_path, TRUST_FILE)
    return result


def evaluate_dataset(model_path: str, data_path: str, out: str | None = None, **kw) -> tuple[dict[str, Any], str]:
    """Either evaluation, chosen by the dataset's card: the time-aware one (:func:`evaluate_time`)
    for an irregular dataset, else :func:`crnn.evaluate.evaluate`. Returns (result, its text table).
    ``kw``: that function's keyword arguments (``split``, ``device``, ...)."""
    if is_irregular_dataset(data_path):
        result = evaluate_time(model_path, data_path, out=out, **kw)
        return result, format_time_table(result)
    from crnn.evaluate import evaluate, format_table

    result = evaluate(model_path, data_path, out=out, **kw)
    return result, format_table(result)


# ----------------------------------------------------------------------------- tables
def _num(v: Any, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _ratio(row: dict[str, Any]) -> str:
    m = row["metrics"]
    if "model" not in m or "persistence" not in m or m["model"]["mse"] is None:
        return "–"
    mm, pm = m["model"]["mse"], m["persistence"]["mse"]
    return "inf" if mm == 0 else f"{pm / mm:.2f}x"


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells)).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def format_time_table(result: dict[str, Any]) -> str:
    """Plain-text tables of an :func:`evaluate_time` result: MSE and MAE (0-255 pixels) per
    forecast-gap bin and per input-spacing bin for every forecaster, persistence / model MSE, the
    trust gaps and what was skipped or left out."""
    from crnn.mirror import tta_note

    names = result["forecasters"]
    unit = result["unit"]
    lines = [f"{result['kind']} on {result['data']} split {result['split']!r}: {result['num_series']} series, "
             f"{result['num_targets']} target frames (pixels 0-255)"]
    for title, key in (("forecast gap", "by_gap"), ("input spacing", "by_spacing")):
        for metric in ("mse", "mae"):
            rows = [[row["label"], str(row["targets"]),
                     *(_num((row["metrics"].get(n) or {}).get(metric)) for n in names),
                     *([_ratio(row)] if metric == "mse" else [])]
                    for row in result[key]["bins"]]
            lines += ["", f"{metric.upper()} by {title} ({unit})"]
            lines += _grid([title, "targets", *names, *(["pers/model"] if metric == "mse" else [])], rows)
    ov = result["overall"]
    lines += ["", "all targets: " + ", ".join(f"{n} MSE {_num((ov.get(n) or {}).get('mse'))}" for n in names)]
    t = result["trust"]
    lines.append("trust (model MSE better than persistence's in every gap bin up to): "
                 + ", ".join(f"{r}: {'none' if g is None else f'{g:g} {unit}'}" for r, g in t.items()))
    note = tta_note(result)
    if note:
        lines.append(note)
    for name, why in (result.get("skipped_baselines") or {}).items():
        lines.append(f"{name}: skipped ({why})")
    bank = (result.get("analog") or {}).get("bank")
    if bank:
        how = "read from its cache" if bank.get("cached") else f"rendered in {bank.get('render_s')} s"
        lines.append(f"analog: k={result['analog']['k']}, bank of {bank['size']} training trees ({how})")
    if result.get("left_out"):
        lines.append(f"left out: {len(result['left_out'])} series ({result['left_out'][0]['reason']})")
    return "\n".join(lines)


def markdown_trust_table(result: dict[str, Any]) -> str:
    """The README's trust table (markdown) of an :func:`evaluate_time` result: MSE per forecast-gap
    bin for every forecaster, persistence / model, and the trust gaps below it."""
    names = result["forecasters"]
    unit = result["unit"]
    label = {"model": f"model ({result['kind']})", "linear": "linear-in-time", "analog": "analog (k=8)"}
    lines = [f"| gap ({unit}) | targets | " + " | ".join(label.get(n, n) for n in names) + " | persistence / model |",
             "|---" * (len(names) + 3) + "|"]
    for row in result["by_gap"]["bins"]:
        if not row["targets"]:
            continue
        cells = [_num((row["metrics"].get(n) or {}).get("mse"), 0) for n in names]
        lines.append(f"| {row['label']} | {row['targets']} | " + " | ".join(cells) + f" | {_ratio(row)} |")
    t = result["trust"]
    lines += ["", "Trusted (MSE better than persistence in every gap bin up to): "
              + "; ".join(f"{r} up to {'— (not even the first bin)' if g is None else f'{g:g} {unit}'}"
                          for r, g in t.items())]
    return "\n".join(lines)

