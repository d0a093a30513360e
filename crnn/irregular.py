"""Irregular series: a different number of frames per series, at each series' own real ages.

The layout (``"layout": "irregular"`` in ``dataset.json``; the regular paper grid has no
``layout`` field and is unchanged). Every series is padded to the dataset's ``max_frames``
(``T_max``) so that each column keeps one fixed shape, which Ray Data streams as ordinary fixed-shape
tensor columns (one contiguous numpy array per batch, no ragged arrays, no per-row Python objects):

    ages        tensor float32 (T_max,)            the series' ages in the card's ``age_unit``,
                                                   strictly increasing in the first ``num_frames``
                                                   slots, 0.0 in the padding slots
    frames      tensor uint8 (T_max, H, W, C)      all-zero in the padding slots
    num_frames  int32                              valid frames, 2..T_max (the mask is
                                                   ``arange(T_max) < num_frames``)
    num_inputs  int32                              frames 0..num_inputs-1 are the inputs and the
                                                   rest the targets (generated series); 0 when the
                                                   dataset does not say (ingested photos: training
                                                   chooses)

plus the regular columns ``series_id, seed, split, height, width, channels`` and one float64 column
per simulator parameter. Padding costs almost nothing on disk (zstd squeezes the zero frames).

The card of an irregular dataset has no ``ages`` list (so code written for the regular grid
refuses it instead of misreading it); it has ``layout``, ``max_frames``, ``age_unit``,
``age_range`` ``[lo, hi]`` (every stored age lies in it) and, for generated datasets, the sampling
options (``irregular``). :func:`check_card` checks those fields, :func:`shard_layout` a shard's
schema, :func:`check_footer` its footer statistics and :func:`check_values` every row's values
(ages strictly increasing and inside ``age_range``, ``num_frames``/``num_inputs`` in range, padding
zero): each raises :class:`~crnn.shardcheck.ShardError` naming the file and the column.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from crnn.shardcheck import (
    REQUIRED_COLUMNS, ShardError, ShardLayout, _check_tensor, _check_values, _is_int, _is_number, _tensor_shape,
    _tensor_values, check_footer as check_footer_values, tensor_value_type,
)

LAYOUT = "irregular"
COLUMNS = REQUIRED_COLUMNS + ("num_frames", "num_inputs")


def is_irregular(card: dict[str, Any]) -> bool:
    return card.get("layout") == LAYOUT


# ----------------------------------------------------------------------------- sampling (generation)
@dataclasses.dataclass(frozen=True)
class IrregularSpec:
    """How :func:`crnn.generate.generate` draws each series' ages.

    Per series: ``num_inputs`` uniform in [min_inputs, max_inputs] (min_inputs >= 2), ``num_targets`` uniform in
    [min_targets, max_targets], then that many distinct ages from the grid ``age_min, age_min +
    age_step, ..., <= age_max`` (the dataset's unit, years for both scenes), sorted: the first
    ``num_inputs`` are the inputs, the rest the targets (so every target is after the last input).
    Pines render whole years only, so their grid must be integers (``age_step`` 1, 2, ...); shapes
    render any real age. ``max_frames`` = max_inputs + max_targets."""

    min_inputs: int = 2
    max_inputs: int = 6
    min_targets: int = 1
    max_targets: int = 3
    age_min: float = 1.0
    age_max: float = 50.0
    age_step: float = 1.0

    @property
    def max_frames(self) -> int:
        return self.max_inputs + self.max_targets

    def grid(self) -> np.ndarray:
        """The ages series are drawn from (float64, ascending)."""
        n = int(np.floor((self.age_max - self.age_min) / self.age_step + 1e-9)) + 1
        return self.age_min + self.age_step * np.arange(max(n, 0), dtype=np.float64)

    def check(self, max_age: float) -> None:
        """ValueError naming the option that is out of range."""
        for name in ("min_inputs", "max_inputs", "min_targets", "max_targets"):
            if not _is_int(getattr(self, name)):
                raise ValueError(f"{name} must be an integer, got {getattr(self, name)!r}")
        if not 2 <= self.min_inputs <= self.max_inputs:  # a time-aware model reads >= 2 frames (a gap)
            raise ValueError(f"need 2 <= min_inputs <= max_inputs (a history of at least 2 frames: one frame "
                             f"shows no growth, and no model takes it), got {self.min_inputs}..{self.max_inputs}")
        if not 1 <= self.min_targets <= self.max_targets:
            raise ValueError(f"need 1 <= min_targets <= max_targets, got {self.min_targets}..{self.max_targets}")
        if not self.age_step > 0:
            raise ValueError(f"age_step must be > 0, got {self.age_step}")
        if not 0 <= self.age_min < self.age_max <= max_age:
            raise ValueError(f"need 0 <= age_min < age_max <= {max_age:g} (the simulator's MAX_AGE), got "
                             f"{self.age_min:g}..{self.age_max:g}")
        if len(self.grid()) < self.max_frames:
            raise ValueError(f"the age grid {self.age_min:g}..{self.age_max:g} step {self.age_step:g} has "
                             f"{len(self.grid())} ages, fewer than max_inputs + max_targets = {self.max_frames}")

    def sample(self, base_seed: int, index: int) -> tuple[tuple[float, ...], int]:
        """(ages ascending, num_inputs) of series ``index``: a function of (base_seed, index) only."""
        rng = np.random.default_rng(np.random.SeedSequence([int(base_seed), int(index), 0x1AE6]))
        n_in = int(rng.integers(self.min_inputs, self.max_inputs + 1))
        n_tg = int(rng.integers(self.min_targets, self.max_targets + 1))
        grid = self.grid()
        ages = np.sort(rng.choice(grid, size=n_in + n_tg, replace=False))
        return tuple(float(a) for a in ages), n_in

    def card(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- writing
def card_fields(*, max_frames: int, age_unit: str, age_range: tuple[float, float]) -> dict[str, Any]:
    """The card fields of the irregular layout (merge into :func:`crnn.shards.base_card`'s card,
    then :func:`finish_card` drops its ``ages`` and sets the columns)."""
    return {"layout": LAYOUT, "max_frames": int(max_frames), "age_unit": str(age_unit),
            "age_range": [float(age_range[0]), float(age_range[1])]}


def finish_card(card: dict[str, Any]) -> dict[str, Any]:
    """A regular :func:`crnn.shards.base_card` card with :func:`card_fields` merged in -> the
    irregular card: no ``ages`` list, the irregular ``columns``."""
    card = {k: v for k, v in card.items() if k != "ages"}
    cols = dict(card["columns"])
    cols.update({
        "ages": f"tensor float32 (T_max,) ({card['age_unit']}), increasing; 0 in padding slots",
        "frames": "tensor uint8 (T_max, H, W, C), zero in padding slots",
        "num_frames": "int32, valid frames 2..T_max (mask = arange(T_max) < num_frames)",
        "num_inputs": "int32, the first num_inputs frames are inputs, the rest targets; 0 = not marked",
    })
    card["columns"] = cols
    return card


def rows_to_batch(rows: list[dict[str, Any]], max_frames: int, param_names: Iterable[str]) -> dict[str, np.ndarray]:
    """Column batch of the irregular layout from per-series dicts (``frames`` (T_i, H, W, C) uint8,
    ``ages`` T_i numbers, ``num_inputs``): padded to ``max_frames``. ValueError if a series has
    more frames than ``max_frames`` or ages that do not match its frames."""
    h, w, c = rows[0]["frames"].shape[1:]
    b = len(rows)
    frames = np.zeros((b, max_frames, h, w, c), np.uint8)
    ages = np.zeros((b, max_frames), np.float32)
    n = np.zeros(b, np.int32)
    for i, r in enumerate(rows):
        t = len(r["frames"])
        if t > max_frames or len(r["ages"]) != t:
            raise ValueError(f"series {r['series_id']}: {t} frames, {len(r['ages'])} ages, max_frames {max_frames}")
        frames[i, :t], ages[i, :t], n[i] = r["frames"], np.asarray(r["ages"], np.float32), t
    batch = {
        "series_id": np.array([r["series_id"] for r in rows], dtype=object),
        "seed": np.array([r["seed"] for r in rows], dtype=np.int64),
        "split": np.array([r["split"] for r in rows], dtype=object),
        "ages": ages, "frames": frames, "num_frames": n,
        "num_inputs": np.array([int(r.get("num_inputs", 0)) for r in rows], np.int32),
        "height": np.full(b, h, np.int32), "width": np.full(b, w, np.int32), "channels": np.full(b, c, np.int32),
    }
    for name in param_names:
        batch[name] = np.array([r.get("params", {}).get(name, np.nan) for r in rows], np.float64)
    return batch


# ----------------------------------------------------------------------------- checks
def check_card(card: dict[str, Any], card_path: str) -> None:
    """The irregular card's own fields: ``max_frames`` (int >= 2), ``age_unit`` (a string),
    ``age_range`` ([lo, hi] numbers, 0 <= lo <= hi). ShardError names the card and the field."""
    def bad(name: str, why: str):
        raise ShardError(f"{card_path}: field {name!r} {why}")

    for name in ("max_frames", "age_unit", "age_range"):
        if name not in card:
            bad(name, "is missing (required by the irregular layout)")
    if not _is_int(card["max_frames"]) or card["max_frames"] < 2:
        bad("max_frames", f"is {card['max_frames']!r}; expected an integer >= 2")
    if not isinstance(card["age_unit"], str):
        bad("age_unit", f"is {card['age_unit']!r}; expected a string such as 'years'")
    r = card["age_range"]
    if not isinstance(r, list) or len(r) != 2 or not all(_is_number(v) for v in r) or not 0 <= r[0] <= r[1]:
        bad("age_range", f"is {r!r}; expected [lo, hi] with 0 <= lo <= hi")


def shard_layout(schema: pa.Schema, where: str, card: dict[str, Any]) -> ShardLayout:
    """Check an irregular shard's schema column by column: the regular columns (strings, int32
    sizes, float64 parameters) plus ``ages`` a float32 tensor (T_max,), ``frames`` a uint8 tensor
    (T_max, H, W, C) matching the card, ``num_frames``/``num_inputs`` int32. Only the exact types
    this module writes are accepted (the layout has no legacy writers): ShardError otherwise,
    naming ``where`` and the column."""
    missing = [c for c in COLUMNS if c not in schema.names]
    if missing:
        raise ShardError(f"{where}: schema mismatch, missing columns {missing} (irregular layout)")
    want = {"series_id": (pa.string(), pa.large_string()), "split": (pa.string(), pa.large_string()),
            "seed": (pa.int64(),), "height": (pa.int32(),), "width": (pa.int32(),), "channels": (pa.int32(),),
            "num_frames": (pa.int32(),), "num_inputs": (pa.int32(),)}
    want.update({p["name"]: (pa.float64(),) for p in card.get("params", [])})
    for name, types in want.items():
        if name not in schema.names:
            raise ShardError(f"{where}: schema mismatch, missing parameter column {name!r}")
        if schema.field(name).type not in types:
            raise ShardError(f"{where}: column {name!r} has type {schema.field(name).type}; expected {types[0]}")
    card_shape = (card["max_frames"], card["height"], card["width"], card["channels"])
    frames = schema.field("frames")
    if _tensor_shape(frames) is None:
        raise ShardError(f"{where}: column 'frames' has type {frames.type}; expected a Ray tensor column")
    shape = _check_tensor(frames, where, card_shape, 4)
    if tuple(shape) != card_shape:
        raise ShardError(f"{where}: column 'frames' has shape {tuple(shape)}, but the card says {card_shape} "
                         f"(max_frames, height, width, channels)")
    ages = schema.field("ages")
    if tensor_value_type(ages) != pa.float32() or _tensor_shape(ages) != (card["max_frames"],):
        raise ShardError(f"{where}: column 'ages' has type {ages.type} shape {_tensor_shape(ages)}; expected a "
                         f"float32 tensor of shape ({card['max_frames']},) (irregular layout)")
    return ShardLayout(tuple(shape), (card["max_frames"],), ())


def check_footer(md: pq.FileMetaData, where: str, card: dict[str, Any], layout: ShardLayout) -> None:
    """Footer statistics (free; :func:`crnn.shardcheck.check_footer`, the regular layout's checks):
    ``split`` only train/val/test, sizes those of the frames, no nulls, ``num_frames`` in
    2..max_frames, ``ages`` inside the card's ``age_range`` (padding 0 allowed). ShardError naming
    file and column."""
    lo_age, hi_age = card["age_range"]
    check_footer_values(md, where, layout, (0, hi_age), f"the card's age_range is [{lo_age}, {hi_age}]",
                        ranges={"num_frames": (2, card["max_frames"])})


def check_values(batch: dict[str, np.ndarray], where: str, card: dict[str, Any]) -> None:
    """Every row's values (numpy columns, whichever of ages/frames/num_frames/num_inputs are present;
    ages and frames are checked against ``num_frames``, so they need it): ``num_frames`` in
    2..max_frames, ``num_inputs`` in 0..num_frames-1, ``ages`` strictly increasing over the valid
    slots, inside ``age_range`` and 0 in the padding, ``frames`` all zero in the padding.
    ShardError naming ``where``, the column and the first bad row."""
    t_max = card["max_frames"]
    lo_age, hi_age = card["age_range"]
    n = batch.get("num_frames")
    if n is None:
        return
    n = np.asarray(n)
    bad = np.flatnonzero((n < 2) | (n > t_max))
    if len(bad):
        raise ShardError(f"{where}: column 'num_frames' is {int(n[bad[0]])} in row {int(bad[0])}; expected 2..{t_max}")
    valid = frame_mask(n, t_max)                                        # (N, T_max) the mask
    if "num_inputs" in batch:
        k = np.asarray(batch["num_inputs"])
        bad = np.flatnonzero((k < 0) | (k >= n))
        if len(bad):
            r = int(bad[0])
            raise ShardError(f"{where}: column 'num_inputs' is {int(k[r])} in row {r} with num_frames {int(n[r])}; "
                             f"expected 0..num_frames-1 (0: not marked)")
    if "ages" in batch:
        a = np.asarray(batch["ages"], np.float64)
        rows = np.flatnonzero((valid & ~((a >= lo_age) & (a <= hi_age))).any(axis=1))
        if len(rows):
            r = int(rows[0])
            raise ShardError(f"{where}: column 'ages' is {a[r, :n[r]].tolist()} in row {r}, outside the card's "
                             f"age_range [{lo_age}, {hi_age}] (or not finite)")
        step_ok = (np.diff(a, axis=1) > 0) | ~valid[:, 1:]
        rows = np.flatnonzero(~step_ok.all(axis=1))
        if len(rows):
            r = int(rows[0])
            raise ShardError(f"{where}: column 'ages' is {a[r, :n[r]].tolist()} in row {r}; ages must be strictly "
                             f"increasing")
        rows = np.flatnonzero(((a != 0) & ~valid).any(axis=1))
        if len(rows):
            raise ShardError(f"{where}: column 'ages' is {a[int(rows[0])].tolist()} in row {int(rows[0])}: non-zero "
                             f"after num_frames={int(n[rows[0]])} (padding slots must be 0)")
    if "frames" in batch:
        f = np.asarray(batch["frames"])
        pad = (f != 0).any(axis=tuple(range(2, f.ndim))) & ~valid  # (N, T_max); N may be 0
        rows = np.flatnonzero(pad.any(axis=1))
        if len(rows):
            r = int(rows[0])
            raise ShardError(f"{where}: column 'frames' has an image in padding slot "
                             f"{int(np.flatnonzero(pad[r])[0])} of row {r}, but num_frames is {int(n[r])} "
                             f"(frames and num_frames disagree)")


def normalize_table(table: pa.Table, layout: ShardLayout, where: str, card: dict[str, Any], *,
                    splits: list[str] | None = None, columns: Iterable[str] | None = None,
                    counts: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Numpy columns of an irregular shard's table (``frames`` uint8 (N, T_max, H, W, C), ``ages``
    float32 (N, T_max), ``num_frames``/``num_inputs`` int32 (N,)), after the value checks: the regular
    split/size checks on every row, then :func:`check_values` on the rows of ``splits`` (the rows read,
    as the Ray reader checks the rows it streams); ``columns`` only (the checked columns are decoded
    for the check either way). ``counts`` (split -> series) is increased by this table's rows per
    split. Rows of other splits are filtered out before any tensor is decoded."""
    _check_values(table, layout.frames_shape, where, None, counts)
    if splits is not None:
        table = table.filter(pa.compute.is_in(table.column("split"), pa.array(splits, pa.string())))
    want = None if columns is None else set(columns) | set(_CHECKED)
    out = {}
    for name in table.column_names:
        if want is not None and name not in want:
            continue
        if name == "frames":
            out[name] = _tensor_values(table.column(name), "frames", layout.frames_shape, where)
        elif name == "ages":
            out[name] = _tensor_values(table.column(name), "ages", layout.ages_shape, where, dtype=np.float32)
        else:
            out[name] = table.column(name).to_numpy(zero_copy_only=False)
    check_values(out, where, card)
    return {k: v for k, v in out.items() if columns is None or k in set(columns)}


def usable(num_frames, num_inputs) -> np.ndarray:
    """bool (N,): which series can be a training lesson (:func:`crnn.loop.irregular_io`): at least 2
    input frames and 1 target -- ``num_inputs >= 2`` and a frame after them, or unmarked
    (``num_inputs == 0``) with at least 3 frames to split."""
    n, k = np.asarray(num_frames), np.asarray(num_inputs)
    return ((k >= 2) & (n > k)) | ((k == 0) & (n >= 3))


# ----------------------------------------------------------------------------- batches
def frame_mask(num_frames, max_frames: int) -> np.ndarray:
    """bool (N, max_frames): True for the valid frames of each series."""
    return np.arange(max_frames)[None, :] < np.asarray(num_frames)[:, None]


def torch_series(batch: dict[str, Any], device=None, dtype=None) -> dict[str, Any]:
    """A batch of an irregular dataset as torch tensors on ``device``: ``frames`` float (B, T_max,
    C, H, W) in [0, 1] (:func:`crnn.shards.torch_frames`: only bytes cross to the GPU), ``ages``
    float32 (B, T_max) in the card's unit, ``mask`` bool (B, T_max), ``num_frames`` and
    ``num_inputs`` int64 (B,). KeyError naming a missing column."""
    import torch

    from crnn.shards import torch_frames

    n = torch.tensor(np.asarray(batch["num_frames"]), dtype=torch.int64)  # (copies: Ray's arrays are read-only)
    frames = torch_frames(batch["frames"], device=device, dtype=dtype)
    t_max = frames.shape[1]
    out = {
        "frames": frames,
        "ages": torch.tensor(np.asarray(batch["ages"], np.float32)),
        "mask": torch.from_numpy(frame_mask(n.numpy(), t_max)),
        "num_frames": n,
        "num_inputs": torch.tensor(np.asarray(batch["num_inputs"]), dtype=torch.int64),
    }
    if device is not None:
        out.update({k: v.to(device, non_blocking=True) for k, v in out.items() if k != "frames"})
    return out


# ----------------------------------------------------------------------------- Ray Data
# columns the Ray reader always reads (small) to check every row; ``frames`` is checked when read
_CHECKED = ["split", "ages", "num_frames", "num_inputs"]


def _check_batch(batch: dict[str, np.ndarray], *, card: dict[str, Any], columns: list[str] | None) -> dict:
    """``map_batches`` function of :func:`read_ray`: :func:`check_values` per source shard (the
    ``path`` column), then the requested columns."""
    paths = batch["path"]
    for p in np.unique(paths):
        rows = paths == p
        check_values({k: v[rows] for k, v in batch.items() if k != "path"}, str(p), card)
    return {k: v for k, v in batch.items() if k != "path" and (columns is None or k in columns)}


def read_ray(files: list[str], fs, card: dict[str, Any], splits: list[str] | None,
             columns: list[str] | None, **read_args):
    """Ray Dataset of an irregular dataset's shards (``files``, already footer-checked): fixed-shape
    tensor columns (``ages`` float32 (T_max,), ``frames`` uint8 (T_max, H, W, C)) straight from
    ``ray.data.read_parquet`` with the projection and the split filter pushed down; every row is
    checked (:func:`check_values`) as it streams, a ShardError naming the shard and the column."""
    import ray.data
    from ray.data.expressions import col

    ds = ray.data.read_parquet(files, filesystem=fs, include_paths=True, **read_args)
    if columns is not None:
        ds = ds.select_columns(list(dict.fromkeys(list(columns) + _CHECKED + ["path"])))
    if splits is not None:
        ds = ds.filter(expr=col("split").is_in(splits))
    small = {k: card[k] for k in ("max_frames", "age_range")}
    return ds.map_batches(_check_batch, batch_format="numpy",
                          fn_kwargs=dict(card=small, columns=None if columns is None else list(columns)))
