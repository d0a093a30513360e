"""Turn a folder of real image series into the same Parquet shards as the simulator writes.

Layout: one sub-folder per series, one image per age, the age being the (last) number in the file
name::

    photos/
      fern-01/  10.jpg 15.jpg 20.jpg 25.jpg 30.jpg
      cat-07/   age_10.png age_15.png ...

Every series must have the same ages (given, or the most common set found). Images are read with
Pillow, converted to RGB and resized to the configured size (``fit``: ``crop`` centre-crops to the
target aspect first, ``pad`` letterboxes, ``stretch`` ignores the aspect). Series with missing or
extra ages, unreadable files or other problems are reported by name and left out; with ``strict``
nothing is published when anything was wrong.

Files are decoded in a thread pool in the driver (Pillow releases the GIL while decoding): the
folder lives where the job runs, so shipping it to Ray tasks would only add a copy. The shards are
written through Ray Data like the simulator's.
"""

from __future__ import annotations

import collections
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from crnn.shards import base_card, publish, rows_to_batch, split_for_id, write_ray_dataset

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
_AGE_RE = re.compile(r"(\d+)(?!.*\d)")


@dataclass
class IngestReport:
    ingested: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)   # series name -> what was wrong
    ages: tuple[int, ...] = ()

    def summary(self) -> str:
        lines = [f"ingested {len(self.ingested)} series at ages {list(self.ages)}"]
        if self.problems:
            lines.append(f"left out {len(self.problems)} series:")
            lines += [f"  {name}: {why}" for name, why in sorted(self.problems.items())]
        return "\n".join(lines)


def age_of(filename: str) -> int | None:
    m = _AGE_RE.search(os.path.splitext(filename)[0])
    return int(m.group(1)) if m else None


def load_image(path: str, height: int, width: int, fit: str = "crop") -> np.ndarray:
    """One image file -> uint8 (height, width, 3). Raises ValueError naming the file."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            if fit == "crop":
                im = ImageOps.fit(im, (width, height), Image.LANCZOS)
            elif fit == "pad":
                im = ImageOps.pad(im, (width, height), Image.LANCZOS, color=(255, 255, 255))
            elif fit == "stretch":
                im = im.resize((width, height), Image.LANCZOS)
            else:
                raise ValueError(f"fit must be crop, pad or stretch, got {fit!r}")
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path}: unreadable image ({e.__class__.__name__}: {e})") from None


def scan(root: str) -> dict[str, dict[int, list[str]]]:
    """{series name: {age: [file paths]}} for every sub-folder of ``root``; duplicates are errors."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: not a folder")
    series: dict[str, dict[int, list[str]]] = {}
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if not os.path.isdir(d) or name.startswith("."):
            continue
        files: dict[int, list[str]] = collections.defaultdict(list)
        for fn in sorted(os.listdir(d)):
            if not fn.startswith("."):
                age = age_of(fn)
                files[-1 if age is None else age].append(os.path.join(d, fn))
        series[name] = dict(files)
    return series


def _check_series(name: str, files: dict[int, list[str]], ages: tuple[int, ...]) -> str | None:
    if -1 in files:
        return f"file(s) without an age number in the name: {[os.path.basename(f) for f in files[-1]]}"
    dup = {a: [os.path.basename(f) for f in fs] for a, fs in files.items() if len(fs) > 1}
    if dup:
        return f"more than one file for age(s) {dup}"
    have = set(files)
    missing, extra = sorted(set(ages) - have), sorted(have - set(ages))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing ages {missing}")
        if extra:
            parts.append(f"unexpected ages {extra}")
        return f"{', '.join(parts)} (expected {list(ages)}, found {sorted(have)})"
    return None


def collect(root: str, height: int = 32, width: int = 16, ages: tuple[int, ...] | None = None,
            fit: str = "crop", threads: int = 8) -> tuple[list[dict], IngestReport]:
    """Load every good series under ``root``; returns (rows, report)."""
    series = scan(root)
    if not series:
        raise ValueError(f"{root}: no series sub-folders found")
    if ages is None:  # the most common age set among series that have one
        sets = collections.Counter(tuple(sorted(a for a in f if a >= 0)) for f in series.values())
        ages = max(sets.items(), key=lambda kv: (kv[1], len(kv[0])))[0]
    ages = tuple(sorted(int(a) for a in ages))
    if len(ages) < 2:
        raise ValueError(f"need at least 2 ages per series, got {list(ages)}")
    report = IngestReport(ages=ages)
    good = {}
    for name, files in series.items():
        problem = _check_series(name, files, ages)
        if problem:
            report.problems[name] = problem
        else:
            good[name] = [files[a][0] for a in ages]

    def load(item):
        name, paths = item
        try:
            return name, np.stack([load_image(p, height, width, fit) for p in paths]), None
        except ValueError as e:
            return name, None, str(e)

    rows = []
    with ThreadPoolExecutor(threads) as pool:
        for name, frames, err in pool.map(load, good.items()):
            if err:
                report.problems[name] = err
                continue
            rows.append({"series_id": name, "seed": -1, "split": split_for_id(name),
                         "ages": list(ages), "frames": frames, "params": {}})
            report.ingested.append(name)
    return rows, report


def ingest(root: str, out: str, height: int = 32, width: int = 16,
           ages: tuple[int, ...] | None = None, fit: str = "crop", shard_size: int = 256,
           strict: bool = False, overwrite: bool = False) -> IngestReport:
    """Ingest ``root`` and publish shards at ``out`` (needs Ray). Raises if ``strict`` and any
    series had a problem (then nothing is written), or if no series was usable."""
    rows, report = collect(root, height, width, ages, fit)
    if strict and report.problems:
        raise ValueError("strict ingest refused, nothing written:\n" + report.summary())
    if not rows:
        raise ValueError("no usable series:\n" + report.summary())
    import ray.data

    batch = rows_to_batch(rows, ())
    n = len(rows)
    num_shards = max(1, -(-n // shard_size))
    ds = ray.data.from_items(
        [{k: v[i] for k, v in batch.items()} for i in range(n)], override_num_blocks=num_shards
    )
    splits = collections.Counter(r["split"] for r in rows)
    card = base_card(
        num_series=n, ages=report.ages, height=height, width=width,
        splits={s: splits.get(s, 0) for s in ("train", "val", "test")},
        source=f"ingested from {os.path.abspath(root)}", fit=fit,
        left_out=report.problems, split_rule="hash of series_id: <0.1 test, <0.2 val, else train",
    )
    publish(lambda d: write_ray_dataset(ds, d), out, card, overwrite=overwrite)
    return report
