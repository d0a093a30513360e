"""The shard contract's checks: what a dataset card, a shard's schema and a shard's values must be.

The format itself (the columns, the card, publishing, the readers) is :mod:`crnn.shards`, which runs
these checks on every read. This module does no I/O: it checks a card (a dict), a shard's Arrow
schema and footer statistics, and a shard's table as read, and casts a table in an accepted variant
layout to the contract's types (:func:`normalize_table`). Every error is a :class:`ShardError`
naming the file and, for a shard, the column. The constants the checks and the format share (the
card's file name, the splits, the required columns) live here, so :mod:`crnn.shards` imports this
module and never the other way round.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

CARD_NAME = "dataset.json"
SPLITS = ("train", "val", "test")
REQUIRED_COLUMNS = ("series_id", "seed", "split", "ages", "frames", "height", "width", "channels")


class ShardError(ValueError):
    """A shard or dataset directory that cannot be read; the message names the file."""


#: A regular card's ``ages_dtype`` -> the ``ages`` column's dtype. No ``ages_dtype`` field means int32
#: (whole ages: every dataset generate and ingest write); ``"float32"`` is any real ages (e.g. a
#: forecasts dataset at fractional target ages, :mod:`crnn.predict`).
AGES_DTYPES = {"int32": np.dtype(np.int32), "float32": np.dtype(np.float32)}


# ----------------------------------------------------------------------------- card
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def ages_dtype(card: dict[str, Any]) -> np.dtype:
    """The numpy dtype of a regular dataset's ``ages`` column: int32 unless the card says
    ``"ages_dtype": "float32"`` (a card that passed :func:`check_card`)."""
    return AGES_DTYPES[card.get("ages_dtype", "int32")]


def card_ages(card: dict[str, Any]) -> list[int] | list[float]:
    """A regular card's ages as Python numbers of its :func:`ages_dtype`: ints, or floats (as the card
    writes them; the shards hold them rounded to float32)."""
    return [float(a) for a in card["ages"]] if ages_dtype(card).kind == "f" else [int(a) for a in card["ages"]]


def check_card(card: dict[str, Any], card_path: str = CARD_NAME) -> None:
    """The card's fields that readers rely on, type by type: ``num_series`` (int >= 0), ``ages`` (a
    non-empty list of distinct ints; with ``"ages_dtype": "float32"`` a list of numbers, finite and
    strictly increasing as float32; ``ages_dtype`` absent or ``"int32"`` is the whole-number default,
    another value is refused), ``height``/``width``/``channels`` (ints >= 1), ``splits`` (split
    -> count, summing to ``num_series``), ``shards`` (``{"file", "rows"}`` objects, rows summing to
    ``num_series``), ``params`` (objects with a ``name``), ``age_unit`` when given (a non-blank
    string: what a time-aware model reads the ages in; years when absent). An irregular card (``"layout":
    "irregular"``) has no ``ages`` but the fields :func:`crnn.irregular.check_card` checks; another
    ``layout`` is refused. A ShardError names the card and the field (``"300"`` for
    ``num_series`` or ``"10,15"`` for ``ages`` is refused, not coerced)."""
    def bad(name: str, why: str):
        raise ShardError(f"{card_path}: field {name!r} {why}")

    layout = card.get("layout")
    if layout is not None and layout != "irregular":
        bad("layout", f"is {layout!r}; expected 'irregular' or no layout field (the regular grid)")
    unit = card.get("age_unit", "years")  # optional on the regular grid (years); irregular: required
    if not isinstance(unit, str) or not unit.strip():
        bad("age_unit", f"is {unit!r}; expected the unit of the ages, such as 'years' or 'months'")
    for name in ("num_series", "height", "width", "channels", "splits", "shards") + (() if layout else ("ages",)):
        if name not in card:
            bad(name, "is missing")
    n = card["num_series"]
    if not _is_int(n) or n < 0:
        bad("num_series", f"is {n!r}; expected an integer >= 0")
    for name in ("height", "width", "channels"):
        if not _is_int(card[name]) or card[name] < 1:
            bad(name, f"is {card[name]!r}; expected an integer >= 1")
    if layout:  # the irregular layout: its own fields instead of one ``ages`` list
        from crnn import irregular

        irregular.check_card(card, card_path)
    else:
        dtype, ages = card.get("ages_dtype", "int32"), card["ages"]
        if not isinstance(dtype, str) or dtype not in AGES_DTYPES:
            bad("ages_dtype", f"is {dtype!r}; expected one of {sorted(AGES_DTYPES)} (absent: int32)")
        if dtype == "int32":
            if not isinstance(ages, list) or not ages or not all(_is_int(a) for a in ages):
                bad("ages", f"is {ages!r}; expected a list of integer ages (fractional ages need "
                            f"\"ages_dtype\": \"float32\")")
            if len(set(ages)) != len(ages):
                bad("ages", f"is {ages!r}; an age appears twice")
        else:
            if not isinstance(ages, list) or not ages or not all(_is_number(a) for a in ages):
                bad("ages", f"is {ages!r}; expected a list of numbers (ages_dtype {dtype})")
            with np.errstate(over="ignore"):  # a number beyond float32's range becomes inf: refused below
                stored = np.asarray(ages, np.float64).astype(np.float32)
            if not np.isfinite(stored).all():
                bad("ages", f"is {ages!r}; every age must be a finite {dtype} number")
            if not (np.diff(stored) > 0).all():
                bad("ages", f"is {ages!r}; expected strictly increasing ages (as {dtype}: "
                            f"{stored.tolist()})")
    splits = card["splits"]
    if not isinstance(splits, dict) or not all(_is_int(v) and v >= 0 for v in splits.values()):
        bad("splits", f"is {splits!r}; expected an object of series counts per split, e.g. "
                      f"{{\"train\": 68, \"val\": 4, \"test\": 8}}")
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        bad("splits", f"has unknown splits {unknown}; expected some of {SPLITS}")
    if sum(splits.values()) != n:
        bad("splits", f"counts {sum(splits.values())} series ({splits}) but num_series is {n}")
    shards = card["shards"]
    if not isinstance(shards, list) or not all(
            isinstance(e, dict) and isinstance(e.get("file"), str) and _is_int(e.get("rows")) and e["rows"] >= 0
            for e in shards):
        bad("shards", "is not a list of {\"file\": name, \"rows\": count} objects")
    if sum(e["rows"] for e in shards) != n:
        bad("shards", f"lists {sum(e['rows'] for e in shards)} rows but num_series is {n}")
    params = card.get("params", [])
    if not isinstance(params, list) or not all(isinstance(p, dict) and isinstance(p.get("name"), str) for p in params):
        bad("params", "is not a list of {\"name\": column, ...} objects")


# ----------------------------------------------------------------------------- validation
# The contract, column by column: the Arrow type each column is read as. Writers differ (a newer
# pyarrow emits ``string_view``, pandas a dictionary-encoded ``split`` for a category column, a
# plain writer ``list<int32>`` ages without Ray's tensor type):
# those variants are accepted and cast on read; anything else is a ShardError naming file and column.
_STRING_COLUMNS = ("series_id", "split")
_INT_COLUMNS = {"seed": pa.int64(), "height": pa.int32(), "width": pa.int32(), "channels": pa.int32()}
_TENSOR_DTYPES = {"ages": np.dtype(np.int32), "frames": np.dtype(np.uint8)}


def _is_string(t: pa.DataType) -> bool:
    """A string type, or dictionary-encoded strings (what pandas writes for a ``category`` column)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
            or pa.types.is_list_view(t) or pa.types.is_large_list_view(t))


def _tensor_shape(field: pa.Field) -> tuple[int, ...] | None:
    """Shape of a Ray tensor column, from the type (Ray imported) or the field metadata."""
    t = field.type
    if hasattr(t, "shape") and isinstance(t, pa.ExtensionType):
        return tuple(t.shape)
    meta = field.metadata or {}
    if b"ARROW:extension:metadata" in meta:
        try:
            shape = json.loads(meta[b"ARROW:extension:metadata"])
        except ValueError:
            return None
        if isinstance(shape, list) and all(isinstance(d, int) and d > 0 for d in shape):
            return tuple(shape)
    return None


def _list_levels(t: pa.DataType) -> tuple[int, pa.DataType]:
    """(nesting depth, value type) of a (nested) list type; (0, t) for anything else."""
    depth = 0
    while _is_list(t):
        t, depth = t.value_type, depth + 1
    return depth, t


def _storage(t: pa.DataType) -> pa.DataType:
    return t.storage_type if isinstance(t, pa.ExtensionType) else t


def tensor_value_type(field: pa.Field) -> pa.DataType:
    """The value type of a tensor column (Ray's tensor type or a plain, maybe nested, list)."""
    return _list_levels(_storage(field.type))[1]


def _check_tensor(field: pa.Field, where: str, shape: tuple[int, ...] | None, ndim: int,
                  dtype: np.dtype | None = None) -> tuple[int, ...]:
    """Shape of a tensor column: Ray's tensor type, or a plain (nested) list of ``shape`` (the
    shape the card or the frames column says). ``dtype``: the contract's (default that of
    ``_TENSOR_DTYPES``); integer values are accepted for any, floating values for a float dtype.
    Errors name the file and the column."""
    name = field.name
    want_dtype = np.dtype(dtype) if dtype is not None else _TENSOR_DTYPES[name]
    depth, value_t = _list_levels(_storage(field.type))
    floats = want_dtype.kind == "f"
    if depth == 0 or not (pa.types.is_integer(value_t) or (floats and pa.types.is_floating(value_t))):
        hint = ""
        if depth and name == "ages" and pa.types.is_floating(value_t):
            hint = (f"; {CARD_NAME} gives no \"ages_dtype\" (whole ages, int32): a dataset of fractional "
                    f"ages says \"ages_dtype\": \"float32\"")
        raise ShardError(f"{where}: column {name!r} has type {field.type}; expected a tensor of "
                         f"{want_dtype} (Ray's tensor type or a list of {'numbers' if floats else 'integers'})"
                         + hint)
    if want_dtype == np.uint8 and value_t != pa.uint8():
        raise ShardError(f"{where}: column {name!r} holds {value_t} values; expected uint8 pixels")
    found = _tensor_shape(field)
    if found is not None:
        if len(found) != ndim:
            raise ShardError(f"{where}: column {name!r} has tensor shape {found}; expected {ndim} dimensions")
        return found
    if shape is None:
        raise ShardError(f"{where}: column {name!r} is a plain list ({field.type}) and its shape is "
                         f"unknown; write it as a Ray tensor column")
    if depth not in (1, len(shape)):
        raise ShardError(f"{where}: column {name!r} is a {depth}-level list ({field.type}); expected a "
                         f"flat list or {len(shape)} levels for shape {shape}")
    return tuple(shape)


@dataclasses.dataclass(frozen=True)
class ShardLayout:
    """What :func:`shard_layout` found: the frames and ages shapes, and whether any column needs
    a cast (then readers decode through :func:`normalize_table`)."""

    frames_shape: tuple[int, ...]
    ages_shape: tuple[int, ...]
    needs_cast: tuple[str, ...] = ()


def shard_layout(schema: pa.Schema, where: str, card: dict | None = None) -> ShardLayout:
    """Check one shard's schema column by column (names, Arrow types, tensor shapes, dtypes).

    Raises :class:`ShardError` naming ``where`` and the column; accepts the common variants
    (``large_string``/``string_view`` strings, other integer widths, plain ``list<int>`` tensors)
    and lists the columns that need a cast on read. ``ages`` holds integers, unless the card says
    ``"ages_dtype": "float32"``: then floats (other float widths cast to float32) or integers (cast
    to float32; the values are checked against the card's either way). Floating ages under a card
    without ``ages_dtype`` (whole ages) are refused: reading them as int32 would truncate them.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise ShardError(f"{where}: schema mismatch, missing columns {missing}")
    dupes = sorted({n for n in schema.names if schema.names.count(n) > 1})
    if dupes:
        raise ShardError(f"{where}: schema mismatch, duplicate columns {dupes}")
    casts = []
    for name in _STRING_COLUMNS:
        t = schema.field(name).type
        if not _is_string(t):
            raise ShardError(f"{where}: column {name!r} has type {t}; expected string")
        if t != pa.string():
            casts.append(name)
    for name, want in _INT_COLUMNS.items():
        t = schema.field(name).type
        if not pa.types.is_integer(t):
            raise ShardError(f"{where}: column {name!r} has type {t}; expected {want}")
        if t != want:
            casts.append(name)
    card_shape = None
    if card is not None:
        card_shape = (len(card["ages"]), card["height"], card["width"], card["channels"])
    frames = schema.field("frames")
    shape = _check_tensor(frames, where, card_shape, 4)
    if _tensor_shape(frames) is None:
        casts.append("frames")
    if card_shape is not None and tuple(shape) != card_shape:
        raise ShardError(f"{where}: frames shape {tuple(shape)} differs from the card's {card_shape}")
    ages = schema.field("ages")
    want_ages = ages_dtype(card) if card is not None else _TENSOR_DTYPES["ages"]
    ages_shape = _check_tensor(ages, where, shape[:1], 1, want_ages)
    if ages_shape != shape[:1]:
        raise ShardError(f"{where}: column 'ages' has shape {ages_shape} but frames have {shape[0]} per series")
    if _tensor_shape(ages) is None or tensor_value_type(ages) != pa.from_numpy_dtype(want_ages):
        casts.append("ages")
    if card is not None:
        params = [p["name"] for p in card.get("params", [])]
        missing = [p for p in params if p not in schema.names]
        if missing:
            raise ShardError(f"{where}: schema mismatch, missing parameter columns {missing}")
        for name in params:
            t = schema.field(name).type
            if not (pa.types.is_floating(t) or pa.types.is_integer(t)):
                raise ShardError(f"{where}: column {name!r} has type {t}; expected float64")
            if t != pa.float64():
                casts.append(name)
    return ShardLayout(tuple(shape), tuple(ages_shape), tuple(casts))


def check_shard_schema(schema: pa.Schema, where: str, card: dict | None = None) -> tuple[int, ...]:
    """Check one shard's schema; returns the frames shape (T, H, W, C). Errors name ``where``."""
    return shard_layout(schema, where, card).frames_shape


def _check_footer_values(md: pq.FileMetaData, where: str, card: dict[str, Any], layout: ShardLayout) -> None:
    """Footer checks of a regular shard (:func:`check_footer` with the card's ages, as the shard
    stores them: float32 ages rounded to float32)."""
    ages = card_ages(card)
    stored = np.asarray(ages, ages_dtype(card)).tolist() if ages_dtype(card).kind == "f" else ages
    check_footer(md, where, layout, (min(stored), max(stored)), f"{CARD_NAME} says the ages are {ages}")


def check_footer(md: pq.FileMetaData, where: str, layout: ShardLayout, age_bounds: tuple[float, float],
                 ages_said: str, ranges: dict[str, tuple[int, int]] | None = None) -> None:
    """Value checks from the footer's column statistics (min, max, nulls: free, where the writer kept
    them): ``split`` only train/val/test and no nulls (another value was dropped silently by every
    split filter), ``height``/``width``/``channels`` those of the frames, ``ages`` within
    ``age_bounds`` (``ages_said``: what the card says, for the message), and each column of ``ranges``
    (e.g. the irregular layout's ``num_frames``) within its (lo, hi); no nulls in any of them but
    ``ages`` (list nulls: the decoder names them). Shared by both layouts (:mod:`crnn.irregular`).
    The readers check every value as they decode (:func:`normalize_table`)."""
    expect = dict(zip(("height", "width", "channels"), layout.frames_shape[-3:]))
    ranges = dict(ranges or {})
    nulls: dict[str, int] = {}
    for g in (md.row_group(i) for i in range(md.num_row_groups)):
        for j in range(g.num_columns):
            c = g.column(j)
            name, st = c.path_in_schema.split(".")[0], c.statistics
            if st is None or name not in ("split", "ages", *expect, *ranges):
                continue
            if st.has_null_count and name != "ages":
                nulls[name] = nulls.get(name, 0) + st.null_count
            if not st.has_min_max:
                continue
            lo, hi = (v.decode(errors="replace") if isinstance(v, bytes) else v for v in (st.min, st.max))
            if name == "split":
                for v in (lo, hi):
                    if v not in SPLITS:
                        raise ShardError(f"{where}: column 'split' has the value {v!r}; expected one of {SPLITS} "
                                         f"(series of another split would be left out of every split)")
            elif name == "ages":
                if lo < age_bounds[0] or hi > age_bounds[1]:
                    raise ShardError(f"{where}: column 'ages' has values {lo}..{hi}, but {ages_said}")
            elif name in ranges:
                if not ranges[name][0] <= lo <= hi <= ranges[name][1]:
                    raise ShardError(f"{where}: column {name!r} has values {lo}..{hi}; expected "
                                     f"{ranges[name][0]}..{ranges[name][1]}")
            elif (lo, hi) != (expect[name], expect[name]):
                raise ShardError(f"{where}: column {name!r} has values {lo}..{hi}, but the frames are "
                                 f"{'x'.join(map(str, layout.frames_shape[-3:]))} (HxWxC)")
    for name, n in nulls.items():
        if n:
            raise ShardError(f"{where}: column {name!r} has {n} null values"
                             + (f"; every series needs a split, one of {SPLITS}" if name == "split" else ""))


# ----------------------------------------------------------------------------- values
def _tensor_values(col: pa.ChunkedArray | pa.Array, name: str, shape: tuple[int, ...], where: str,
                   dtype: np.dtype | None = None) -> np.ndarray:
    """(N,) + shape numpy array from a tensor column: Ray's tensor type (one flat list per row) or
    plain lists, flat or nested one level per dimension; every row's lengths are checked. ``dtype``:
    the result's (default the contract's for ``name``; a float dtype is taken as stored)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if isinstance(arr, pa.ExtensionArray):
        arr = arr.storage
    n = len(arr)
    if arr.null_count:
        raise ShardError(f"{where}: column {name!r} has {arr.null_count} null rows")
    depth, _ = _list_levels(arr.type)
    dims = [int(np.prod(shape))] if depth == 1 else list(shape)
    if depth != len(dims):
        raise ShardError(f"{where}: column {name!r}: a {depth}-level list cannot hold shape {shape}")
    for level, want in enumerate(dims):
        lengths = pa.compute.list_value_length(arr).to_numpy(zero_copy_only=False)
        if len(lengths) and not (lengths == want).all():
            bad = int(np.flatnonzero(lengths != want)[0])
            raise ShardError(f"{where}: column {name!r}: {int(lengths[bad])} values at level {level} of "
                             f"row {bad} (nulls count as 0), shape {tuple(shape)} needs {want}")
        arr = arr.flatten()
    if arr.null_count:  # to_numpy would turn them into floats (NaN), then into garbage integers
        raise ShardError(f"{where}: column {name!r} has {arr.null_count} null values inside its lists")
    values = arr.to_numpy(zero_copy_only=False)
    want_dtype = np.dtype(dtype) if dtype is not None else _TENSOR_DTYPES[name]
    if values.dtype != want_dtype and want_dtype.kind == "f":
        values = values.astype(want_dtype)
    elif values.dtype != want_dtype:
        if values.dtype.kind == "f" and values.size and not (np.isfinite(values) & (values == np.round(values))).all():
            raise ShardError(f"{where}: column {name!r} holds fractional or non-finite values; expected "
                             f"{want_dtype} (whole numbers)")
        info = np.iinfo(want_dtype)
        if values.size and (values.min() < info.min or values.max() > info.max):
            raise ShardError(f"{where}: column {name!r} has values outside the range of {want_dtype}")
        values = values.astype(want_dtype)
    return values.reshape((n,) + tuple(shape))


def _check_values(table: pa.Table, frames_shape: tuple[int, ...], where: str,
                  card_ages: Iterable[float] | None, counts: dict[str, int] | None,
                  ages_dtype: np.dtype = _TENSOR_DTYPES["ages"]) -> None:
    """The value checks of :func:`normalize_table` (its table's columns cast to the contract's types;
    ``ages`` compared with ``card_ages`` in ``ages_dtype``)."""
    names = table.column_names
    if "split" in names:
        sp = table.column("split")
        if sp.null_count:
            raise ShardError(f"{where}: column 'split' has {sp.null_count} null values; every series needs a "
                             f"split, one of {SPLITS}")
        vc = pa.compute.value_counts(sp)
        found = dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()))
        unknown = sorted(v for v in found if v not in SPLITS)
        if unknown:
            raise ShardError(f"{where}: column 'split' has values {unknown[:5]} ({sum(found[v] for v in unknown)} "
                             f"rows); expected one of {SPLITS} (those series would be left out of every split)")
        if counts is not None:
            for v, k in found.items():
                counts[v] = counts.get(v, 0) + int(k)
    for name, want in zip(("height", "width", "channels"), frames_shape[1:]):
        if name in names:
            col = table.column(name)
            if col.null_count:
                raise ShardError(f"{where}: column {name!r} has {col.null_count} null values")
            v = col.to_numpy()
            if len(v) and (v != want).any():
                row = int(np.flatnonzero(v != want)[0])
                raise ShardError(f"{where}: column {name!r} is {int(v[row])} in row {row}, but the frames are "
                                 f"{'x'.join(map(str, frames_shape[1:]))} (HxWxC)")
    if card_ages is not None and "ages" in names:
        said = list(card_ages)
        floats = np.dtype(ages_dtype).kind == "f"  # float32: the card's ages rounded to float32, then equal
        want_ages = np.asarray(said, dtype=ages_dtype if floats else np.int64)
        ages = _tensor_values(table.column("ages"), "ages", frames_shape[:1], where, dtype=ages_dtype)
        differ = np.flatnonzero((ages != want_ages).any(axis=1)) if len(ages) else []
        if len(differ):
            row = int(differ[0])
            raise ShardError(f"{where}: column 'ages' is {ages[row].tolist()} in row {row} ({len(differ)} rows "
                             f"differ), but {CARD_NAME} says the ages are {said}")


def normalize_table(table: pa.Table, frames_shape: tuple[int, ...], where: str, *,
                    splits: list[str] | None = None, columns: Iterable[str] | None = None,
                    card_ages: Iterable[float] | None = None,
                    counts: dict[str, int] | None = None,
                    ages_dtype: np.dtype = _TENSOR_DTYPES["ages"]) -> dict[str, np.ndarray]:
    """Column arrays in the contract's types from a shard's table (any accepted variant):
    strings as str, integers at their widths, parameters float64, ``frames``/``ages`` as
    uint8/``ages_dtype`` (int32, or float32 when the card says so: :func:`ages_dtype`) tensors;
    rows of ``splits`` only, ``columns`` only (default: all).

    The values the table holds are checked (ShardError naming ``where`` and the column): ``split``
    one of train/val/test (no nulls), ``height``/``width``/``channels`` those of ``frames_shape``,
    every row's ``ages`` equal to ``card_ages`` (when given; float32 ages equal to the card's
    rounded to float32). ``counts`` (split -> series), when
    given, is increased by this table's rows per split (before the ``splits`` filter)."""
    columns = None if columns is None else set(columns)
    for i, name in enumerate(table.column_names):
        if name in _STRING_COLUMNS:
            want = pa.string()
        elif name in _INT_COLUMNS:
            want = _INT_COLUMNS[name]
        elif name not in _TENSOR_DTYPES and pa.types.is_integer(table.schema.field(i).type):
            want = pa.float64()  # a parameter column
        else:
            continue
        if table.schema.field(i).type != want:
            try:  # (before filtering: pyarrow cannot filter every variant, e.g. string_view)
                table = table.set_column(i, name, table.column(i).cast(want))
            except pa.ArrowException as e:  # e.g. a value that overflows the contract's width
                raise ShardError(f"{where}: column {name!r} cannot be read as {want} ({e})") from None
    _check_values(table, frames_shape, where, card_ages, counts, ages_dtype)
    if splits is not None:
        table = table.filter(pa.compute.is_in(table.column("split"), pa.array(splits, pa.string())))
    out = {}
    for name in table.column_names:
        if columns is not None and name not in columns:
            continue
        if name in _TENSOR_DTYPES:
            shape = frames_shape if name == "frames" else frames_shape[:1]
            out[name] = _tensor_values(table.column(name), name, shape, where,
                                       dtype=ages_dtype if name == "ages" else None)
        else:
            out[name] = table.column(name).to_numpy(zero_copy_only=False)
    return out
