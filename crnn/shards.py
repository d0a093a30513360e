"""Parquet shards of image series: schema, splits, publishing, and readers (Ray Data and plain).

One row per series:

    series_id  string            "pine-000123" (generated) or the folder name (ingested)
    seed       int64             the tree's simulator seed (-1 for ingested real series)
    split      string            "train" | "val" | "test"
    ages       tensor int32 (T,) ages of the frames, ascending; float32 (T,) when the card says
                                 ``"ages_dtype": "float32"`` (real ages, e.g. forecasts at 32.5)
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

The checks that every reader runs (the card's fields, each shard's schema and values, and the cast
of an accepted variant layout) are :mod:`crnn.shardcheck`, with :class:`~crnn.shardcheck.ShardError`.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import unicodedata
from typing import Any, Iterable

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from crnn.shardcheck import (
    AGES_DTYPES, CARD_NAME, SPLITS, ShardError, ShardLayout, _check_footer_values, ages_dtype, card_ages, check_card,
    normalize_table, shard_layout,
)
from crnn import irregular
from crnn.storage import join, publish_dir, read_text, resolve, write_json

FORMAT_NAME = "crnn-forecast-shards"
SCHEMA_VERSION = 1
# The paper's test set: 384 series. Among the first 3840 generated series every tenth (index % 10
# == 9) is test, so the default 3847-series dataset has exactly 384 test series and the test set
# never changes when more series are generated. Every twentieth (index % 20 == 4) is validation.
PAPER_TEST_SERIES = 384
_TEST_REGION = PAPER_TEST_SERIES * 10


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


def same_name(name: str) -> str:
    """``name`` in Unicode NFC: the form in which two series names are compared for identity.
    ``"Kiefer-\u00f6"`` (o-umlaut as one code point, NFC: what Linux and Windows keyboards give) and
    ``"Kiefer-o\u0308"`` (o + combining diaeresis, NFD: what macOS file systems store) are one name."""
    return unicodedata.normalize("NFC", name)


def split_error(data_path: str, split: str, counts: dict | None, choose: str = "--split",
                exclude: Iterable[str] = ()) -> ValueError:
    """The ValueError for a split that a dataset (``counts``: its card's series per split) does not
    have or has no series in, naming the splits that have some (but those in ``exclude``: taken for
    another use) and how to choose one (``choose``: the job's option, ``--split`` or
    ``data.test_split=``)."""
    counts = {str(k): int(v) for k, v in (counts or {}).items()}
    state = "empty" if split in counts else "unknown"
    sep = "" if choose.endswith("=") else " "
    have = [f"{choose}{sep}{s}" for s, n in counts.items() if n and s not in set(exclude)]
    fix = f"; choose one that has series: {' or '.join(have)}" if have else ""
    return ValueError(f"{data_path}: split {split!r} is {state} (series per split: {counts}){fix}")


def split_for_id(series_id: str, test_fraction: float = 0.1, val_fraction: float = 0.1) -> str:
    """Split of an ingested series, from a hash of its id (stable, independent of the others). The
    id is hashed in NFC (:func:`same_name`): a name typed composed and the same name read back
    decomposed from a macOS folder land in the same split (ASCII names are unchanged by NFC)."""
    h = int.from_bytes(hashlib.blake2b(same_name(series_id).encode(), digest_size=8).digest(), "little")
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
def require_regular(card: dict[str, Any], path: str, what: str) -> None:
    """ValueError naming ``path`` when its card is an irregular dataset (per-series ages,
    ``"layout": "irregular"``): ``what`` (the regular evaluation, a window or horizon prediction) reads
    the paper's regular grid; irregular data has its own paths (crnn.timeeval, predict's target ages)."""
    if card.get("layout") == "irregular":
        raise ValueError(f"{path}: an irregular dataset (per-series ages, up to {card.get('max_frames')} frames); "
                         f"{what} takes a regular dataset (the same ages in every series)")


def read_card(path: str) -> dict[str, Any]:
    """The dataset card of a published dataset; refuses an incomplete or foreign directory."""
    card_path = join(path, CARD_NAME)
    try:
        card = json.loads(read_text(card_path))
    except (FileNotFoundError, NotADirectoryError):
        fs, p = resolve(path)
        if fs.get_file_info(p).type == pafs.FileType.File:  # e.g. --data data/pines/dataset.json
            raise ShardError(f"{path}: a file, not a dataset directory; give the directory holding "
                             f"{CARD_NAME}") from None
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


# ----------------------------------------------------------------------------- validation
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
        if irregular.is_irregular(card):
            layouts[shard] = irregular.shard_layout(schema, shard, card)
            irregular.check_footer(pf.metadata, shard, card, layouts[shard])
        else:
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


def base_card(*, num_series: int, ages: Iterable[float], height: int, width: int, channels: int = 3,
              splits: dict[str, int], source: str, params: list[dict] | None = None,
              ages_dtype: str = "int32", **extra: Any) -> dict[str, Any]:
    """A regular dataset's card (:func:`publish` adds the shard list). ``ages_dtype``: ``"int32"``
    (whole ages, no ``ages_dtype`` field: the card generate and ingest have always written) or
    ``"float32"`` (real ages: the card says ``"ages_dtype": "float32"``, its ``ages`` are floats and
    the shards' ``ages`` must be a float32 tensor of them)."""
    if ages_dtype not in AGES_DTYPES:
        raise ValueError(f"ages_dtype={ages_dtype!r}: expected one of {sorted(AGES_DTYPES)}")
    floats = ages_dtype == "float32"
    return {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "num_series": int(num_series),
        "splits": splits,
        "ages": [float(a) if floats else int(a) for a in ages],
        **({"ages_dtype": ages_dtype} if floats else {}),
        "height": int(height),
        "width": int(width),
        "channels": int(channels),
        "columns": {
            "series_id": "string", "seed": "int64", "split": "string ('train'|'val'|'test')",
            "ages": f"tensor {ages_dtype} (T,)", "frames": "tensor uint8 (T, H, W, C)",
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

    if isinstance(frames, np.ndarray) and not frames.flags.writeable:
        frames = frames.copy()  # Arrow-backed arrays are read-only; torch warns on (and may not) share them
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
                 card_ages=None, ages_dtype=np.int32) -> dict[str, np.ndarray]:
    """``map_batches`` function of :func:`read_ray` for datasets with shards in a variant layout:
    reads each shard with pyarrow, checks its values and casts it to the contract's types."""
    if read_cols is not None:
        read_cols = list(dict.fromkeys(list(read_cols) + _CHECKED_COLUMNS))
    parts = []
    for shard in batch["path"]:
        with fs.open_input_file(str(shard)) as f:
            table = pq.ParquetFile(f).read(columns=read_cols)
        parts.append(normalize_table(table, frames_shape, str(shard), splits=splits, columns=columns,
                                     card_ages=card_ages, ages_dtype=ages_dtype))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def read_ray(path: str, split: str | Iterable[str] | None = None, columns: list[str] | None = None,
             **read_args):
    """Stream a published dataset with ``ray.data.read_parquet``, optionally one or more splits.

    Returns a ``ray.data.Dataset`` of rows with numpy ``frames`` (T, H, W, C) uint8 and ``ages`` (T,)
    int32 (float32 when the card says ``"ages_dtype": "float32"``); convert a batch
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
    if irregular.is_irregular(card):  # ages float32 (T_max,), num_frames, num_inputs: crnn.irregular
        return irregular.read_ray(list(layouts), fs, card, splits, None if columns is None else list(columns),
                                  **read_args)
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
                card_ages=card_ages(card), ages_dtype=ages_dtype(card)))
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
    is uint8 (N, T, H, W, C), ``ages`` int32 (N, T) (float32 when the card says ``"ages_dtype":
    "float32"``). Rows are in shard order. A shard that cannot be
    read raises :class:`ShardError` naming it (and the column, for a schema problem).
    """
    card = read_card(path)
    fs, _ = resolve(path)
    splits = _splits_arg(split)
    columns = None if columns is None else list(columns)
    parts: dict[str, list[np.ndarray]] = {}
    checked = _CHECKED_COLUMNS + (irregular._CHECKED if irregular.is_irregular(card) else [])
    want = None if columns is None else list(dict.fromkeys(columns + checked))
    counts: dict[str, int] = {}
    # every footer and the card's shard list checked first; each shard's layout comes from there
    for shard, layout in _shard_layouts(path, card).items():
        try:
            with fs.open_input_file(shard) as f:
                table = pq.ParquetFile(f).read(columns=want)
        except ShardError:
            raise
        except Exception as e:  # truncated file, bad page, foreign file
            raise ShardError(f"{shard}: corrupt or unreadable shard ({e})") from None
        if irregular.is_irregular(card):
            arrays = irregular.normalize_table(table, layout, shard, card, splits=splits, columns=columns,
                                               counts=counts)
        else:
            arrays = normalize_table(table, layout.frames_shape, shard, splits=splits, columns=columns,
                                     card_ages=card_ages(card), counts=counts, ages_dtype=ages_dtype(card))
        for name, arr in arrays.items():
            parts.setdefault(name, []).append(arr)
    listed = {k: v for k, v in card["splits"].items() if v}
    if {k: v for k, v in counts.items() if v} != listed:
        raise ShardError(f"{posixpath.join(path, CARD_NAME)}: field 'splits' says {card['splits']} series per "
                         f"split, but the shards' column 'split' holds {counts}")
    if not parts:
        return {}
    return {k: np.concatenate(v) for k, v in parts.items()}
