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
written last: a directory without it is incomplete and every reader refuses it. Locally the shards
are first written to a sibling staging directory and renamed into place, so an earlier dataset at
the same path survives a failed run untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import shutil
import uuid
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.fs as pafs
import pyarrow.parquet as pq

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


# ----------------------------------------------------------------------------- filesystems
def resolve(path: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI such as ``s3://bucket/prefix``."""
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


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
    fs, root = resolve(path)
    card_path = posixpath.join(root, CARD_NAME)
    try:
        with fs.open_input_stream(card_path) as f:
            card = json.loads(f.read().decode())
    except FileNotFoundError:
        raise ShardError(
            f"{path}: no {CARD_NAME}; not a dataset, or an incomplete one (generation failed?)"
        ) from None
    except json.JSONDecodeError as e:
        raise ShardError(f"{card_path}: corrupt dataset card ({e})") from None
    if card.get("format") != FORMAT_NAME:
        raise ShardError(f"{card_path}: format {card.get('format')!r} is not {FORMAT_NAME!r}")
    return card


def _write_json(fs: pafs.FileSystem, path: str, obj: Any) -> None:
    with fs.open_output_stream(path) as f:
        f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


# ----------------------------------------------------------------------------- validation
def _tensor_shape(field: pa.Field) -> tuple[int, ...] | None:
    """Shape of a Ray tensor column, from the type (Ray imported) or the field metadata."""
    t = field.type
    if hasattr(t, "shape") and isinstance(t, pa.ExtensionType):
        return tuple(t.shape)
    meta = field.metadata or {}
    if b"ARROW:extension:metadata" in meta:
        return tuple(json.loads(meta[b"ARROW:extension:metadata"]))
    return None


def check_shard_schema(schema: pa.Schema, where: str, card: dict | None = None) -> tuple[int, ...]:
    """Check one shard's schema; returns the frames shape (T, H, W, C). Errors name ``where``."""
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise ShardError(f"{where}: schema mismatch, missing columns {missing}")
    shape = _tensor_shape(schema.field("frames"))
    if shape is None or len(shape) != 4:
        raise ShardError(f"{where}: 'frames' is not a (T, H, W, C) tensor column (type {schema.field('frames').type})")
    if card is not None:
        want = (len(card["ages"]), card["height"], card["width"], card["channels"])
        if tuple(shape) != want:
            raise ShardError(f"{where}: frames shape {tuple(shape)} differs from the card's {want}")
        params = [p["name"] for p in card.get("params", [])]
        missing = [p for p in params if p not in schema.names]
        if missing:
            raise ShardError(f"{where}: schema mismatch, missing parameter columns {missing}")
    return tuple(shape)


def validate(path: str) -> dict[str, Any]:
    """Read the card and every shard's footer; raise :class:`ShardError` naming a bad file.

    Cheap (footers only): run before streaming so a corrupt or foreign shard fails up front with
    its name rather than deep inside a training run.
    """
    card = read_card(path)
    fs, _ = resolve(path)
    for shard in list_shards(path):
        try:
            with fs.open_input_file(shard) as f:
                schema = pq.ParquetFile(f).schema_arrow
        except Exception as e:  # pyarrow raises ArrowInvalid/OSError for truncated or foreign files
            raise ShardError(f"{shard}: corrupt or not a Parquet file ({e})") from None
        check_shard_schema(schema, shard, card)
    return card


# ----------------------------------------------------------------------------- publishing
def publish(write_shards, out: str, card: dict[str, Any], overwrite: bool = False) -> str:
    """Write a dataset atomically: ``write_shards(dir)`` writes the shards, then the card.

    Local paths: shards go to a sibling staging directory that is renamed to ``out`` only after
    every shard and the card are written; with ``overwrite`` the previous dataset is replaced only
    then. URIs (object stores have no rename): shards are written into ``out`` and the card last,
    so readers, which require the card, never see a half-written dataset; an overwrite first writes
    the new shards to a sibling staging prefix and replaces the old dataset only once they are all
    written (a failed run leaves the old one intact).
    """
    fs, root = resolve(out)
    exists = fs.get_file_info(root).type != pafs.FileType.NotFound
    if exists and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    if is_local(out):
        staging = f"{root}.staging-{uuid.uuid4().hex[:8]}"
        os.makedirs(staging)
        try:
            write_shards(staging)
            card = _finish_card(fs, staging, card)
            _write_json(fs, posixpath.join(staging, CARD_NAME), card)
            if exists:
                trash = f"{root}.old-{uuid.uuid4().hex[:8]}"
                os.replace(root, trash)
                os.replace(staging, root)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(staging, root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    elif not exists:
        write_shards(out)
        card = _finish_card(fs, root, card)
        _write_json(fs, posixpath.join(root, CARD_NAME), card)
    else:  # overwrite on an object store: the old dataset stays until the new one is complete
        staging = f"{out.rstrip('/')}.staging-{uuid.uuid4().hex[:8]}"
        _, staging_root = resolve(staging)
        try:
            write_shards(staging)
            card = _finish_card(fs, staging_root, card)
        except BaseException:
            with contextlib.suppress(OSError):  # nothing may have been written there
                fs.delete_dir(staging_root)
            raise
        fs.delete_dir_contents(root, missing_dir_ok=True)
        pafs.copy_files(staging_root, root, source_filesystem=fs, destination_filesystem=fs, use_threads=False)
        fs.delete_dir(staging_root)
        _write_json(fs, posixpath.join(root, CARD_NAME), card)  # last: the dataset is complete
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


def read_ray(path: str, split: str | Iterable[str] | None = None, columns: list[str] | None = None,
             check: bool = True, **read_args):
    """Stream a published dataset with ``ray.data.read_parquet``, optionally one or more splits.

    Returns a ``ray.data.Dataset`` of rows with numpy ``frames`` (T, H, W, C) uint8; convert a batch
    with :func:`torch_frames` (e.g. as the ``collate_fn`` of ``iter_torch_batches``).
    """
    import ray.data
    from ray.data.expressions import col

    if check:
        validate(path)
    fs, _ = resolve(path)
    splits = None
    if split is not None:
        splits = [split] if isinstance(split, str) else list(split)
        bad = [s for s in splits if s not in SPLITS]
        if bad:
            raise ValueError(f"unknown split(s) {bad}; expected some of {SPLITS}")
    read_cols = None if columns is None else list(dict.fromkeys(list(columns) + (["split"] if splits else [])))
    ds = ray.data.read_parquet(list_shards(path), filesystem=fs, **read_args)
    if read_cols is not None:
        ds = ds.select_columns(read_cols)  # projection is pushed down into the Parquet scan
    if splits is not None:
        ds = ds.filter(expr=col("split").is_in(splits))  # pushed down into the Parquet scan
        if columns is not None and "split" not in columns:
            ds = ds.select_columns(list(columns))
    return ds


def _decode_tensor(col: pa.ChunkedArray, field: pa.Field) -> np.ndarray:
    shape = _tensor_shape(field)
    arr = col.combine_chunks()
    if isinstance(arr, pa.ExtensionArray):
        arr = arr.storage
    values = arr.flatten().to_numpy(zero_copy_only=False)
    return values.reshape((len(arr),) + tuple(shape))


def read_numpy(path: str, split: str | Iterable[str] | None = None,
               columns: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Read a published dataset into memory without Ray (tests, tools, small data).

    Returns column arrays; ``frames`` is uint8 (N, T, H, W, C), ``ages`` int32 (N, T). Rows are in
    shard order. A shard that cannot be read raises :class:`ShardError` naming it.
    """
    card = read_card(path)
    fs, _ = resolve(path)
    splits = None if split is None else ([split] if isinstance(split, str) else list(split))
    parts: dict[str, list[np.ndarray]] = {}
    want = None if columns is None else list(dict.fromkeys(list(columns) + ["split"]))
    for shard in list_shards(path):
        try:
            with fs.open_input_file(shard) as f:
                pf = pq.ParquetFile(f)
                check_shard_schema(pf.schema_arrow, shard, card)
                table = pf.read(columns=want)
        except ShardError:
            raise
        except Exception as e:  # truncated file, bad page, foreign file
            raise ShardError(f"{shard}: corrupt or unreadable shard ({e})") from None
        if splits is not None:
            table = table.filter(pa.compute.is_in(table.column("split"), pa.array(splits)))
        for name in table.column_names:
            if columns is not None and name not in columns:
                continue
            if name in ("frames", "ages"):
                arr = _decode_tensor(table.column(name), table.schema.field(name))
            else:
                arr = table.column(name).to_numpy(zero_copy_only=False)
            parts.setdefault(name, []).append(arr)
    if not parts:
        return {}
    return {k: np.concatenate(v) for k, v in parts.items()}
