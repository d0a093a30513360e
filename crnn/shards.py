"""Parquet shards of image series: schema, splits, publishing, and readers (Ray Data and plain).

One row per series:

    series_id  string            "pine-000123" (generated) or the folder name (ingested)
    seed       int64             the tree's simulator seed (-1 for ingested real series)
    split      string            "train" | "val" | "test"
    ages       tensor int32 (T,) ages of the frames, ascending
    frames     tensor uint8 (T, H, W, C)
    height, width, channels  int32  (so readers without Ray can reshape)
    <param>    float64           one column per simulator parameter (NaN for ingested series)

Tensor columns are written by Ray Data (its ``ArrowTensorTypeV2`` extension): with Ray imported,
``ray.data.read_parquet`` gives numpy arrays back; plain pyarrow sees ``large_list`` storage plus
the shape in the field metadata, which :func:`read_numpy` decodes without Ray.

A dataset is published under one directory (a local path or any URI pyarrow understands, e.g.
``s3://bucket/pines``) with ``dataset.json`` (the dataset card) beside the shards. The card is
written last: a directory without it is incomplete and every reader refuses it. The shards are
first written to a sibling staging directory and published with :func:`crnn.storage.publish_dir`,
so an earlier dataset at the same path survives a failed run untouched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from crnn.storage import join, publish_dir, read_text, resolve, write_json

CARD_NAME = "dataset.json"
FORMAT_NAME = "crnn-forecast-shards"
SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")
# The paper's test set: 384 series. Among the first 3840 generated series every tenth (index % 10
# == 9) is test, so the default 3847-series dataset has exactly 384 test series and the test set
# never changes when more series are generated. Every twentieth (index % 20 == 4) is validation.
PAPER_TEST_SERIES = 384
_TEST_REGION = PAPER_TEST_SERIES * 10
REQUIRED_COLUMNS = ("series_id", "seed", "split", "ages", "frames", "height", "width", "channels")


class ShardError(ValueError):
    """A shard or dataset directory that cannot be read; the message names the file."""


# ----------------------------------------------------------------------------- splits and seeds
def split_for_index(index: int) -> str:
    """Split of the generated series number ``index`` (stable as the dataset grows)."""
    if index < 0:
        raise ValueError(f"series index must be >= 0, got {index}")
    if index < _TEST_REGION and index % 10 == 9:
        return "test"
    if index % 20 == 4:
        return "val"
    return "train"


def split_for_id(series_id: str, test_fraction: float = 0.1, val_fraction: float = 0.1) -> str:
    """Split of an ingested series, from a hash of its id (stable, independent of the others)."""
    h = int.from_bytes(hashlib.blake2b(series_id.encode(), digest_size=8).digest(), "little")
    u = h / 2.0**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def split_counts(num_series: int) -> dict[str, int]:
    counts = dict.fromkeys(SPLITS, 0)
    idx = np.arange(num_series)
    test = (idx < _TEST_REGION) & (idx % 10 == 9)
    val = ~test & (idx % 20 == 4)
    counts["test"], counts["val"] = int(test.sum()), int(val.sum())
    counts["train"] = num_series - counts["test"] - counts["val"]
    return counts


def series_seed(base_seed: int, index: int) -> int:
    """The simulator seed of series ``index`` in a dataset made with ``base_seed`` (63-bit)."""
    state = np.random.SeedSequence([int(base_seed), int(index)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2**63 - 1)


# ----------------------------------------------------------------------------- listing
def list_shards(path: str) -> list[str]:
    """Sorted shard paths (inside the filesystem) of a dataset directory."""
    fs, root = resolve(path)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise ShardError(f"{path}: no such dataset directory")
    if info.type == pafs.FileType.File:
        return [root]
    sel = pafs.FileSelector(root, recursive=True)
    files = [
        f.path
        for f in fs.get_file_info(sel)
        if f.type == pafs.FileType.File and f.path.endswith(".parquet")
        and not any(part.startswith((".", "_")) for part in f.path[len(root):].split("/"))
    ]
    if not files:
        raise ShardError(f"{path}: no *.parquet shards")
    return sorted(files)


# ----------------------------------------------------------------------------- card
def read_card(path: str) -> dict[str, Any]:
    """The dataset card of a published dataset; refuses an incomplete or foreign directory."""
    card_path = join(path, CARD_NAME)
    try:
        card = json.loads(read_text(card_path))
    except FileNotFoundError:
        raise ShardError(
            f"{path}: no {CARD_NAME}; not a dataset, or an incomplete one (generation failed?)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ShardError(f"{card_path}: corrupt dataset card ({e})") from None
    if not isinstance(card, dict):
        raise ShardError(f"{card_path}: not a dataset card (a JSON {type(card).__name__}, expected an object)")
    if card.get("format") != FORMAT_NAME:
        raise ShardError(f"{card_path}: format {card.get('format')!r} is not {FORMAT_NAME!r}")
    check_card(card, card_path)
    return card


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_card(card: dict[str, Any], card_path: str = CARD_NAME) -> None:
    """The card's fields that readers rely on, type by type: ``num_series`` (int >= 0), ``ages`` (a
    non-empty list of distinct ints), ``height``/``width``/``channels`` (ints >= 1), ``splits`` (split
    -> count, summing to ``num_series``), ``shards`` (``{"file", "rows"}`` objects, rows summing to
    ``num_series``), ``params`` (objects with a ``name``). A ShardError names the card and the field
    (``"300"`` for ``num_series`` or ``"10,15"`` for ``ages`` is refused, not coerced)."""
    def bad(name: str, why: str):
        raise ShardError(f"{card_path}: field {name!r} {why}")

    for name in ("num_series", "ages", "height", "width", "channels", "splits", "shards"):
        if name not in card:
            bad(name, "is missing")
    n = card["num_series"]
    if not _is_int(n) or n < 0:
        bad("num_series", f"is {n!r}; expected an integer >= 0")
    for name in ("height", "width", "channels"):
        if not _is_int(card[name]) or card[name] < 1:
            bad(name, f"is {card[name]!r}; expected an integer >= 1")
    ages = card["ages"]
    if not isinstance(ages, list) or not ages or not all(_is_int(a) for a in ages):
        bad("ages", f"is {ages!r}; expected a list of integer ages")
    if len(set(ages)) != len(ages):
        bad("ages", f"is {ages!r}; an age appears twice")
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


def _check_tensor(field: pa.Field, where: str, shape: tuple[int, ...] | None, ndim: int) -> tuple[int, ...]:
    """Shape of a tensor column: Ray's tensor type, or a plain (nested) list of ``shape`` (the
    shape the card or the frames column says). Errors name the file and the column."""
    name, want_dtype = field.name, _TENSOR_DTYPES[field.name]
    depth, value_t = _list_levels(_storage(field.type))
    if depth == 0 or not (pa.types.is_integer(value_t)):
        raise ShardError(f"{where}: column {name!r} has type {field.type}; expected a tensor of "
                         f"{want_dtype} (Ray's tensor type or a list of integers)")
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
    and lists the columns that need a cast on read.
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
    ages_shape = _check_tensor(ages, where, shape[:1], 1)
    if ages_shape != shape[:1]:
        raise ShardError(f"{where}: column 'ages' has shape {ages_shape} but frames have {shape[0]} per series")
    if _tensor_shape(ages) is None or _list_levels(_storage(ages.type))[1] != pa.int32():
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
    """Value checks from the footer's column statistics (min, max, nulls: free, where the writer kept
    them): ``split`` only train/val/test and no nulls (another value was dropped silently by every
    split filter), ``height``/``width``/``channels`` those of the frames, ``ages`` within the card's.
    The readers check every value as they decode (:func:`normalize_table`)."""
    expect = dict(zip(("height", "width", "channels"), layout.frames_shape[1:]))
    ages = [int(a) for a in card["ages"]]
    nulls: dict[str, int] = {}
    for g in (md.row_group(i) for i in range(md.num_row_groups)):
        for j in range(g.num_columns):
            c = g.column(j)
            name, st = c.path_in_schema.split(".")[0], c.statistics
            if st is None or name not in ("split", "ages", *expect):
                continue
            if st.has_null_count and name != "ages":  # (list nulls: the decoder names them)
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
                if lo < min(ages) or hi > max(ages):
                    raise ShardError(f"{where}: column 'ages' has values {lo}..{hi}, but {CARD_NAME} says the "
                                     f"ages are {ages}")
            elif (lo, hi) != (expect[name], expect[name]):
                raise ShardError(f"{where}: column {name!r} has values {lo}..{hi}, but the frames are "
                                 f"{'x'.join(map(str, layout.frames_shape[1:]))} (HxWxC)")
    for name, n in nulls.items():
        if n:
            raise ShardError(f"{where}: column {name!r} has {n} null values"
                             + (f"; every series needs a split, one of {SPLITS}" if name == "split" else ""))


def _shard_layouts(path: str, card: dict[str, Any]) -> dict[str, ShardLayout]:
    """Every shard's layout (footers only); ShardError names a corrupt or foreign file, and, when the
    card lists its shards (every published dataset's does), a listed shard that is missing, a
    ``.parquet`` file it does not list, or a shard whose row count differs from the listed one."""
    fs, root = resolve(path)
    layouts, rows = {}, {}
    for shard in list_shards(path):
        try:
            with fs.open_input_file(shard) as f:
                pf = pq.ParquetFile(f)
                schema, rows[shard] = pf.schema_arrow, pf.metadata.num_rows
        except Exception as e:  # pyarrow raises ArrowInvalid/OSError for truncated or foreign files
            raise ShardError(f"{shard}: corrupt or not a Parquet file ({e})") from None
        layouts[shard] = shard_layout(schema, shard, card)
        _check_footer_values(pf.metadata, shard, card, layouts[shard])
    listed = card.get("shards")
    if isinstance(listed, list) and listed and fs.get_file_info(root).type == pafs.FileType.Directory:
        want = {posixpath.join(root, s["file"]): s.get("rows") for s in listed if isinstance(s, dict) and "file" in s}
        for shard in sorted(set(want) - set(rows)):
            raise ShardError(f"{shard}: listed in {CARD_NAME} but missing (an incomplete copy?)")
        for shard in sorted(set(rows) - set(want)):
            raise ShardError(f"{shard}: not listed in {CARD_NAME}: a stray file in the dataset directory "
                             f"(a copy, or a shard of another dataset?); move it out")
        for shard, n in rows.items():
            if isinstance(want[shard], int) and want[shard] != n:
                raise ShardError(f"{shard}: {n} rows, but {CARD_NAME} lists {want[shard]} (a shard of another "
                                 f"dataset, or an incomplete copy?)")
    return layouts


def validate(path: str) -> dict[str, Any]:
    """Read the card and every shard's footer; raise :class:`ShardError` naming a bad file.

    Cheap (footers only): run before streaming so a corrupt or foreign shard fails up front with
    its name rather than deep inside a training run.
    """
    card = read_card(path)
    _shard_layouts(path, card)
    return card


def _tensor_values(col: pa.ChunkedArray | pa.Array, name: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """(N,) + shape numpy array from a tensor column: Ray's tensor type (one flat list per row) or
    plain lists, flat or nested one level per dimension; every row's lengths are checked."""
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
    want_dtype = _TENSOR_DTYPES[name]
    if values.dtype != want_dtype:
        info = np.iinfo(want_dtype)
        if values.size and (values.min() < info.min or values.max() > info.max):
            raise ShardError(f"{where}: column {name!r} has values outside the range of {want_dtype}")
        values = values.astype(want_dtype)
    return values.reshape((n,) + tuple(shape))


def _check_values(table: pa.Table, frames_shape: tuple[int, ...], where: str,
                  card_ages: Iterable[int] | None, counts: dict[str, int] | None) -> None:
    """The value checks of :func:`normalize_table` (its table's columns cast to the contract's types)."""
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
        want_ages = np.asarray(list(card_ages), dtype=np.int64)
        ages = _tensor_values(table.column("ages"), "ages", frames_shape[:1], where)
        differ = np.flatnonzero((ages != want_ages).any(axis=1)) if len(ages) else []
        if len(differ):
            row = int(differ[0])
            raise ShardError(f"{where}: column 'ages' is {ages[row].tolist()} in row {row} ({len(differ)} rows "
                             f"differ), but {CARD_NAME} says the ages are {want_ages.tolist()}")


def normalize_table(table: pa.Table, frames_shape: tuple[int, ...], where: str, *,
                    splits: list[str] | None = None, columns: Iterable[str] | None = None,
                    card_ages: Iterable[int] | None = None,
                    counts: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Column arrays in the contract's types from a shard's table (any accepted variant):
    strings as str, integers at their widths, parameters float64, ``frames``/``ages`` as
    uint8/int32 tensors; rows of ``splits`` only, ``columns`` only (default: all).

    The values the table holds are checked (ShardError naming ``where`` and the column): ``split``
    one of train/val/test (no nulls), ``height``/``width``/``channels`` those of ``frames_shape``,
    every row's ``ages`` equal to ``card_ages`` (when given). ``counts`` (split -> series), when
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
    _check_values(table, frames_shape, where, card_ages, counts)
    if splits is not None:
        table = table.filter(pa.compute.is_in(table.column("split"), pa.array(splits, pa.string())))
    out = {}
    for name in table.column_names:
        if columns is not None and name not in columns:
            continue
        if name in _TENSOR_DTYPES:
            shape = frames_shape if name == "frames" else frames_shape[:1]
            out[name] = _tensor_values(table.column(name), name, shape, where)
        else:
            out[name] = table.column(name).to_numpy(zero_copy_only=False)
    return out


# ----------------------------------------------------------------------------- publishing
def check_out_free(out: str, overwrite: bool = False) -> bool:
    """Whether ``out`` exists; FileExistsError naming it when it does and ``overwrite`` is off
    (jobs call this before starting Ray; :func:`publish` calls it again).

    ``overwrite`` replaces only a dataset: a directory with ``dataset.json``, an empty one, or one
    holding nothing but ``.parquet`` shards (a write interrupted before its card). A file or a
    directory of anything else (a photo folder given as ``--out`` by mistake, a home directory) is
    never deleted: FileExistsError naming it and what it holds."""
    fs, root = resolve(out)
    info = fs.get_file_info(root)
    exists = info.type != pafs.FileType.NotFound
    if exists and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    if exists:
        if info.type != pafs.FileType.Directory:
            raise FileExistsError(f"{out} is a file, not a dataset directory; overwrite replaces only a "
                                  f"dataset (a directory with {CARD_NAME}), so it is left alone")
        names = [posixpath.basename(i.path) for i in fs.get_file_info(pafs.FileSelector(root))]
        other = sorted(n for n in names if not n.endswith(".parquet"))
        if CARD_NAME not in names and other:
            shown = ", ".join(other[:5]) + (", ..." if len(other) > 5 else "")
            raise FileExistsError(f"{out} is not a dataset (no {CARD_NAME}; it holds {shown}); overwrite "
                                  f"replaces only a dataset, so it is left alone: choose another output path")
    return exists


def publish(write_shards, out: str, card: dict[str, Any], overwrite: bool = False) -> str:
    """Write a dataset atomically: ``write_shards(dir)`` writes the shards, then the card.

    Through :func:`crnn.storage.publish_dir` with the card as its marker: the shards and then the
    card (its shard list and row count checked, RuntimeError otherwise) are written to a sibling
    staging directory (``<out>.staging-<random>``), which replaces ``out`` only once both are
    complete. Locally that is a rename; on an object store the staged files are copied into
    ``out`` with the card last, so readers, which require the card, never see a half-written
    dataset. A failed run leaves nothing at ``out``, or the previous dataset (with ``overwrite``)
    untouched. FileExistsError (:func:`check_out_free`) when ``out`` exists without ``overwrite``
    or is not a dataset.
    """
    check_out_free(out, overwrite)

    def fill(staging: str) -> None:
        write_shards(staging)
        fs, root = resolve(staging)
        write_json(join(staging, CARD_NAME), _finish_card(fs, root, card))

    publish_dir(out, fill, marker=CARD_NAME)
    return out


def _finish_card(fs: pafs.FileSystem, root: str, card: dict[str, Any]) -> dict[str, Any]:
    """Add the shard list (name, rows) and check the row total against the card."""
    shards = []
    for f in sorted(i.path for i in fs.get_file_info(pafs.FileSelector(root)) if i.path.endswith(".parquet")):
        with fs.open_input_file(f) as fh:
            shards.append({"file": posixpath.basename(f), "rows": pq.ParquetFile(fh).metadata.num_rows})
    total = sum(s["rows"] for s in shards)
    if total != card["num_series"]:
        raise RuntimeError(f"wrote {total} rows but expected {card['num_series']}")
    return {**card, "shards": shards}


def base_card(*, num_series: int, ages: Iterable[int], height: int, width: int, channels: int = 3,
              splits: dict[str, int], source: str, params: list[dict] | None = None,
              **extra: Any) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "num_series": int(num_series),
        "splits": splits,
        "ages": [int(a) for a in ages],
        "height": int(height),
        "width": int(width),
        "channels": int(channels),
        "columns": {
            "series_id": "string", "seed": "int64", "split": "string ('train'|'val'|'test')",
            "ages": "tensor int32 (T,)", "frames": "tensor uint8 (T, H, W, C)",
            "height": "int32", "width": "int32", "channels": "int32",
            **{p["name"]: "float64" for p in (params or [])},
        },
        "params": params or [],
        **extra,
    }


def rows_to_batch(rows: list[dict[str, Any]], param_names: Iterable[str]) -> dict[str, np.ndarray]:
    """Column batch (numpy, as Ray Data's map_batches returns) from per-series dicts."""
    frames = np.stack([r["frames"] for r in rows]).astype(np.uint8)  # (B, T, H, W, C)
    b, _, h, w, c = frames.shape
    batch = {
        "series_id": np.array([r["series_id"] for r in rows], dtype=object),
        "seed": np.array([r["seed"] for r in rows], dtype=np.int64),
        "split": np.array([r["split"] for r in rows], dtype=object),
        "ages": np.stack([np.asarray(r["ages"], dtype=np.int32) for r in rows]),
        "frames": frames,
        "height": np.full(b, h, np.int32),
        "width": np.full(b, w, np.int32),
        "channels": np.full(b, c, np.int32),
    }
    for name in param_names:
        batch[name] = np.array([r.get("params", {}).get(name, np.nan) for r in rows], np.float64)
    return batch


def write_ray_dataset(ds, directory: str) -> None:
    """Write a Ray Dataset of series rows as zstd Parquet shards named ``shard-NNNNN.parquet``."""
    from ray.data import SaveMode
    from ray.data.datasource import FilenameProvider

    class _Names(FilenameProvider):
        def get_filename_for_block(self, block, write_uuid, task_index, block_index):
            return f"shard-{task_index:05d}-{block_index:03d}.parquet"

        def get_filename_for_task(self, write_uuid, task_index):
            return f"shard-{task_index:05d}.parquet"

    # OVERWRITE: ``directory`` is always fresh (a staging dir, or emptied by ``publish``), and the
    # stable names (no write UUID) keep a dataset's layout identical from run to run.
    ds.write_parquet(directory, compression="zstd", filename_provider=_Names(), mode=SaveMode.OVERWRITE)


# ----------------------------------------------------------------------------- readers
def frames_to_float(frames: np.ndarray) -> np.ndarray:
    """uint8 (B, T, H, W, C) -> float32 (B, T, C, H, W) in [0, 1]."""
    return np.ascontiguousarray(frames.transpose(0, 1, 4, 2, 3), dtype=np.float32) / 255.0


def torch_frames(frames, device=None, dtype=None):
    """uint8 (B, T, H, W, C) numpy/tensor -> float (B, T, C, H, W) in [0, 1] on ``device``.

    The uint8 -> float conversion happens after the transfer, so only bytes cross to the GPU.
    """
    import torch

    x = torch.as_tensor(frames)
    if device is not None:
        x = x.to(device, non_blocking=True)
    return x.permute(0, 1, 4, 2, 3).to(dtype or torch.float32).div_(255.0)


def _splits_arg(split: str | Iterable[str] | None) -> list[str] | None:
    if split is None:
        return None
    splits = [split] if isinstance(split, str) else list(split)
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise ValueError(f"unknown split(s) {bad}; expected some of {SPLITS}")
    return splits


# columns every reader reads (they are small) to check their values against the card and the frames
_CHECKED_COLUMNS = ["split", "ages", "height", "width", "channels"]


def _read_shards(batch: dict[str, np.ndarray], *, fs, frames_shape, splits, columns, read_cols,
                 card_ages=None) -> dict[str, np.ndarray]:
    """``map_batches`` function of :func:`read_ray` for datasets with shards in a variant layout:
    reads each shard with pyarrow, checks its values and casts it to the contract's types."""
    if read_cols is not None:
        read_cols = list(dict.fromkeys(list(read_cols) + _CHECKED_COLUMNS))
    parts = []
    for shard in batch["path"]:
        with fs.open_input_file(str(shard)) as f:
            table = pq.ParquetFile(f).read(columns=read_cols)
        parts.append(normalize_table(table, frames_shape, str(shard), splits=splits, columns=columns,
                                     card_ages=card_ages))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def read_ray(path: str, split: str | Iterable[str] | None = None, columns: list[str] | None = None,
             **read_args):
    """Stream a published dataset with ``ray.data.read_parquet``, optionally one or more splits.

    Returns a ``ray.data.Dataset`` of rows with numpy ``frames`` (T, H, W, C) uint8; convert a batch
    with :func:`torch_frames` (e.g. as the ``collate_fn`` of ``iter_torch_batches``). The card and
    every shard's footer are checked first (:class:`ShardError` names a bad file and column);
    shards in an accepted variant layout (see :func:`shard_layout`) are cast to the contract's
    types as they stream.
    """
    import ray.data
    from ray.data.expressions import col

    card = read_card(path)
    layouts = _shard_layouts(path, card)
    splits = _splits_arg(split)
    fs, _ = resolve(path)
    read_cols = None if columns is None else list(dict.fromkeys(list(columns) + (["split"] if splits else [])))
    variants = sorted({c for lay in layouts.values() for c in lay.needs_cast})
    if variants:
        # Ray Data's Parquet reader merges shards of different types before any map could cast
        # them: each shard is read (and cast) by one task instead.
        shards = list(layouts)
        return ray.data.from_items([{"path": p} for p in shards], override_num_blocks=len(shards)).map_batches(
            _read_shards, batch_size=1, fn_kwargs=dict(
                fs=fs, frames_shape=next(iter(layouts.values())).frames_shape, splits=splits,
                columns=None if columns is None else list(columns), read_cols=read_cols,
                card_ages=[int(a) for a in card["ages"]]))
    ds = ray.data.read_parquet(list(layouts), filesystem=fs, **read_args)
    if read_cols is not None:
        ds = ds.select_columns(read_cols)  # projection is pushed down into the Parquet scan
    if splits is not None:
        ds = ds.filter(expr=col("split").is_in(splits))  # pushed down into the Parquet scan
        if columns is not None and "split" not in columns:
            ds = ds.select_columns(list(columns))
    return ds


def read_numpy(path: str, split: str | Iterable[str] | None = None,
               columns: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Read a published dataset into memory without Ray (tests, tools, small data).

    Returns column arrays in the contract's types (any accepted variant layout is cast); ``frames``
    is uint8 (N, T, H, W, C), ``ages`` int32 (N, T). Rows are in shard order. A shard that cannot be
    read raises :class:`ShardError` naming it (and the column, for a schema problem).
    """
    card = read_card(path)
    fs, _ = resolve(path)
    splits = _splits_arg(split)
    columns = None if columns is None else list(columns)
    parts: dict[str, list[np.ndarray]] = {}
    want = None if columns is None else list(dict.fromkeys(columns + _CHECKED_COLUMNS))
    counts: dict[str, int] = {}
    for shard in _shard_layouts(path, card):  # every footer and the card's shard list first
        try:
            with fs.open_input_file(shard) as f:
                pf = pq.ParquetFile(f)
                layout = shard_layout(pf.schema_arrow, shard, card)
                table = pf.read(columns=want)
        except ShardError:
            raise
        except Exception as e:  # truncated file, bad page, foreign file
            raise ShardError(f"{shard}: corrupt or unreadable shard ({e})") from None
        for name, arr in normalize_table(table, layout.frames_shape, shard, splits=splits, columns=columns,
                                         card_ages=card["ages"], counts=counts).items():
            parts.setdefault(name, []).append(arr)
    listed = {k: v for k, v in card["splits"].items() if v}
    if {k: v for k, v in counts.items() if v} != listed:
        raise ShardError(f"{posixpath.join(path, CARD_NAME)}: field 'splits' says {card['splits']} series per "
                         f"split, but the shards' column 'split' holds {counts}")
    if not parts:
        return {}
    return {k: np.concatenate(v) for k, v in parts.items()}
