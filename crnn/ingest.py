"""Turn a folder of real image series into the same Parquet shards as the simulator writes.

Layout: one sub-folder per series, one image per age named by its age::

    photos/
      fern-01/  10.jpg 15.jpg 20.jpg 25.jpg 30.jpg
      cat-07/   age_10.png age_15.png ...

The age rule (:func:`parse_age`), on the file name without its extension: the whole number right
after the word ``age`` (any case, then optionally ``_``, ``-``, ``=`` or a space; ``age_15.png``,
``IMG_age20.jpg``, ``Age-5_v2.png``; not inside a longer word such as ``page``), else the only
number in the name (``10.jpg``, ``tree10.png``); digits of any script count (Python's ``\\d``:
fullwidth ``１０.jpg`` is 10). A name whose age is ambiguous -- a decimal
(``10.5.png``), several numbers and no ``age`` marker (``img2-at-30.png``), two different ``age``
numbers, a number over :data:`MAX_AGE` (2**24: a camera counter or timestamp) -- is not guessed: the image is ignored and listed with the reason
(``IngestReport.unclear``, ``"unclear_ages"`` in ``dataset.json``). An image without any number
(``cover.jpg``) leaves its series out.

Only image files count (:func:`crnn.images.is_image_file`: an image extension such as .png, .jpg,
.tif, .webp in any case, not hidden): ``Thumbs.db``, ``desktop.ini``, ``.DS_Store``, notes and the
like are ignored and listed (``IngestReport.ignored``, ``"ignored"`` in ``dataset.json``).

Every series must have the same ages (given, or the most common set found), unless ``irregular``
(``jobs/ingest.py --irregular``): then each series keeps its own ages (at least 2) and, when the
folders hold different sets of ages, the dataset is written in the irregular layout
(:mod:`crnn.irregular`: frames padded to the longest series, ``num_frames`` per series,
``num_inputs`` 0 as the dataset does not say which frames are inputs, ``age_unit`` in the card);
when every folder holds the same ages it is the regular dataset, exactly as without the option. Images are decoded by
:mod:`crnn.images`, the decoder Serve uses too (EXIF orientation, 16-bit scaled to 8, transparency
composited over ``background``, white by default, a pixel limit checked from the header), then
resized to the configured size (``fit``: ``crop`` centre-crops to the target aspect first, ``pad``
letterboxes with ``background``, ``stretch`` ignores the aspect). Series with missing or extra
ages, unreadable or oversized files or other problems are reported by name and reason and left
out; with ``strict`` nothing is published when anything was wrong.

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
from PIL import Image, ImageOps

from crnn import images
from crnn import irregular as irr
from crnn.shards import base_card, publish, rows_to_batch, same_name, split_for_id, write_ray_dataset

IMAGE_EXTS = images.IMAGE_EXTENSIONS
_AGE_MARKED = re.compile(r"(?<![a-z])age[ _=-]?(\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"\d+")
_DECIMAL = re.compile(r"\d+[.,]\d+")
#: The largest age a file name may give: 2**24, the largest whole number every reader holds exactly
#: (float32 ages of an irregular dataset; int32 of a regular one). A longer number (a camera's
#: counter, a timestamp) is not guessed as an age.
MAX_AGE = 2 ** 24


@dataclass
class IngestReport:
    ingested: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)   # series name -> what was wrong
    ages: tuple[int, ...] = ()
    ignored: list[str] = field(default_factory=list)  # paths relative to the root, not image files
    unclear: dict[str, str] = field(default_factory=dict)  # images (relative path) with an ambiguous age -> why
    series_ages: dict[str, tuple[int, ...]] = field(default_factory=dict)  # irregular: series -> its ages

    @property
    def irregular(self) -> bool:
        """Whether the ingested series hold different sets of ages (the irregular layout)."""
        return len(set(self.series_ages.values())) > 1

    def summary(self, written: bool = True) -> str:
        """What the ingest did, or (``written`` False: a refused strict ingest) would have done."""
        did = "ingested" if written else "would have ingested"
        if self.irregular:
            sizes = [len(a) for a in self.series_ages.values()]
            lines = [f"{did} {len(self.ingested)} series at their own ages (irregular: {min(sizes)}.."
                     f"{max(sizes)} frames)"]
        else:
            lines = [f"{did} {len(self.ingested)} series at ages {list(self.ages)}"]
        if self.problems:
            lines.append(f"left out {len(self.problems)} series:")
            lines += [f"  {name}: {why}" for name, why in sorted(self.problems.items())]
        if self.ignored:
            shown = ", ".join(self.ignored[:10]) + (", ..." if len(self.ignored) > 10 else "")
            what = "file(s) or folder(s)" if any(p.endswith("/") for p in self.ignored) else "file(s)"
            lines.append(f"ignored {len(self.ignored)} {what} that are not images: {shown}")
        if self.unclear:
            lines.append(f"ignored {len(self.unclear)} image(s) whose age is ambiguous (rename them, e.g. 10.png "
                         f"or age_10.png):")
            lines += [f"  {path}: {why}" for path, why in sorted(self.unclear.items())]
        return "\n".join(lines)


def written_summary(card: dict) -> str:
    """What a user needs next from an ingested dataset's ``card``: its image size (a model trained on
    it reads that size only; the shipped model reads 32x16) and its series per split (by a hash of
    each series' name), with what an empty validation or test split means for training and scoring."""
    splits = {s: int(card["splits"].get(s, 0)) for s in ("train", "val", "test")}
    lines = [f"images: {card['height']}x{card['width']}x{card['channels']} (height x width x channels; a model "
             f"reads the size it was trained at: models/pine-convlstm reads 32x16x3)",
             f"splits: {', '.join(f'{s} {n}' for s, n in splits.items())} (by a hash of each series' name: ~80/10/10 %)"]
    if not splits["val"] and irr.is_irregular(card):  # crnn.train._check_lessons refuses it
        lines.append("  no val series: training on this irregular dataset is refused (a time-aware model's "
                     "validation needs series); ingest more series")
    elif not splits["val"]:
        lines.append("  no val series: training on this dataset keeps its last epoch (nothing to choose the best by)")
    if not splits["test"]:
        lines.append("  no test series: score or forecast another split (jobs/evaluate.py / jobs/predict.py --split train)")
    return "\n".join(lines)


def parse_age(filename: str) -> tuple[int | None, str | None]:
    """(age, None) by the module's rule, (None, None) for a name without a number, or (None, why)
    when the age is ambiguous: ``10.png`` -> 10, ``age_15.png`` -> 15, ``IMG_age20.jpg`` -> 20,
    ``age10_v2.png`` -> 10; ``10.5.png``, ``img2-at-30.png``, ``age10_age15.png``, ``99999999999.png``
    (over :data:`MAX_AGE`) -> (None, why)."""
    stem = os.path.splitext(os.path.basename(filename))[0]
    marked = {int(m.group(1)) for m in _AGE_MARKED.finditer(stem)}
    if len(marked) == 1 and not _DECIMAL.search(stem[stem.lower().find("age"):]):
        return _in_range(marked.pop())
    if len(marked) > 1:
        return None, f"several ages marked {sorted(marked)}"
    decimal = _DECIMAL.search(stem)
    if decimal:
        return None, f"a decimal number {decimal.group(0)!r}: ages are whole numbers"
    numbers = _NUMBER.findall(stem)
    if not numbers:
        return None, None
    if len(numbers) > 1:
        return None, f"several numbers {[int(n) for n in numbers]} and no 'age' marker"
    return _in_range(int(numbers[0]))


def _in_range(age: int) -> tuple[int | None, str | None]:
    if age > MAX_AGE:
        return None, f"{age} is too large for an age (at most {MAX_AGE})"
    return age, None


def age_of(filename: str) -> int | None:
    """The age in ``filename`` by :func:`parse_age`'s rule; None when it has none or it is ambiguous."""
    return parse_age(filename)[0]


def load_image(path: str, height: int, width: int, fit: str = "crop",
               background: tuple[int, int, int] = images.BACKGROUND,
               max_pixels: int | None = None) -> np.ndarray:
    """One image file -> uint8 (height, width, 3) RGB, decoded by :func:`crnn.images.normalize` and
    resized with Lanczos by ``fit`` (``pad`` fills with ``background``).

    Raises :class:`crnn.images.ImageError` (a ValueError) naming the file: unreadable, unsupported
    pixels, or a header claiming more than ``max_pixels`` pixels (default Pillow's limit); ValueError
    for a bad ``fit``.
    """
    if fit not in ("crop", "pad", "stretch"):
        raise ValueError(f"fit must be crop, pad or stretch, got {fit!r}")
    with images.open_image(path, max_pixels=max_pixels) as src:
        im = images.normalize(src, path, mode="RGB", background=background)
        if fit == "crop":
            im = ImageOps.fit(im, (width, height), Image.LANCZOS)
        elif fit == "pad":
            im = ImageOps.pad(im, (width, height), Image.LANCZOS, color=tuple(background))
        else:
            im = im.resize((width, height), Image.LANCZOS)
        return np.asarray(im, dtype=np.uint8)


def scan(root: str) -> tuple[dict[str, dict[int, list[str]]], list[str], dict[str, str]]:
    """(series, ignored, unclear) for the folder ``root``: series = {series name: {age: [image
    paths]}} for every non-hidden sub-folder (age -1: image files without a number in the name);
    ignored = paths relative to ``root`` of everything that is not an image file (a folder's ends in "/")
    (:func:`crnn.images.is_image_file`) or is hidden, sorted; unclear = {relative path: why} of the
    images whose age is ambiguous (:func:`parse_age`), left out of their series.
    Raises FileNotFoundError if ``root`` is not a folder."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: not a folder")
    series: dict[str, dict[int, list[str]]] = {}
    ignored: list[str] = []
    unclear: dict[str, str] = {}
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if not os.path.isdir(d) or name.startswith("."):
            ignored.append(name + ("/" if os.path.isdir(d) else ""))  # a folder listed as one: "name/"
            continue
        files: dict[int, list[str]] = collections.defaultdict(list)
        for fn in sorted(os.listdir(d)):
            if not images.is_image_file(fn) or not os.path.isfile(os.path.join(d, fn)):
                ignored.append(f"{name}/{fn}" + ("/" if os.path.isdir(os.path.join(d, fn)) else ""))
                continue
            age, why = parse_age(fn)
            if why:
                unclear[f"{name}/{fn}"] = f"ambiguous age: {why}"
                continue
            files[-1 if age is None else age].append(os.path.join(d, fn))
        series[name] = dict(files)
    return series, ignored, unclear


def check_series_found(root: str, series: dict, ignored: list[str]) -> None:
    """ValueError naming ``root`` when :func:`scan` found no series sub-folder in it; when it holds
    images itself (one series' folder given as the root), the message says to give its parent."""
    if series:
        return
    hint = ""
    if any(images.is_image_file(f) for f in ignored):
        hint = ("; it holds images itself: give the folder above it, which holds one sub-folder per series "
                "(photos/fern-01/10.jpg, photos/fern-01/15.jpg, ...)")
    raise ValueError(f"{root}: no series sub-folders found{hint}")


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
            fit: str = "crop", threads: int = 8, background: tuple[int, int, int] = images.BACKGROUND,
            max_pixels: int | None = None, irregular: bool = False,
            strict: bool = False, listing: tuple | None = None) -> tuple[list[dict], IngestReport]:
    """Load every good series under ``root``; returns (rows, report).

    Each row's ``frames`` is uint8 (len(ages), height, width, 3). A series with a problem (missing,
    extra or duplicate ages, an image without an age, files :func:`load_image` refuses -- every one
    of them named, :data:`MAX_LISTED` at most) is left out and named in ``report.problems`` with the
    reason; non-image files are listed in ``report.ignored``, images whose age is ambiguous in
    ``report.unclear`` (with the reason). ``background``: anything :func:`crnn.images.parse_color`
    takes. Raises FileNotFoundError / ValueError if ``root`` holds no series or fewer than 2 ages, or
    for a bad ``fit``, ``background`` or ``max_pixels``; with ``strict``, ValueError before any image
    is decoded when the file names alone show a problem (:func:`plan_series`).

    ``irregular``: every series keeps its own ages (``ages`` must then be None, else ValueError);
    a series with fewer than 2 ages is left out. Each row's ``ages`` are its own, and
    ``report.series_ages`` maps each ingested series to them; when they all agree,
    ``report.ages`` is that set (a regular dataset), else ``report.ages`` is ().

    ``listing``: what :func:`scan` returned for ``root``, when the caller listed it already
    (``jobs/ingest.py`` does, before Ray starts); None lists ``root`` here. ValueError when a file
    in it is not in its series' folder under ``root`` (a listing of another folder).
    """
    if irregular and ages is not None:
        raise ValueError("irregular ingest keeps each series' own ages: do not give ages too")
    if fit not in ("crop", "pad", "stretch"):
        raise ValueError(f"fit must be crop, pad or stretch, got {fit!r}")
    background = images.parse_color(background)
    images.pixel_limit(max_pixels)  # a bad limit fails here, not once per file
    series, ignored, unclear = scan(root) if listing is None else _check_listing(root, listing)
    check_series_found(root, series, ignored)
    report, good = plan_series(series, ignored, unclear, ages, irregular)
    if strict:
        check_strict(report, decoded=False)
    rows = _load_rows(good, report, height, width, fit, background, max_pixels, threads,
                      extra={"num_inputs": 0} if irregular else None)
    if irregular:
        for r in rows:
            report.series_ages[r["series_id"]] = good[r["series_id"]][0]
        if not report.irregular and rows:
            report.ages = tuple(rows[0]["ages"])
    return rows, report


def _check_listing(root: str, listing: tuple) -> tuple:
    """``listing`` as it is, when every image path in it lies in its series' folder under ``root``
    (as :func:`scan` of ``root`` gives them); else ValueError naming the first that does not. The
    same folder spelt another way (``./photos`` for ``photos``, a trailing slash, absolute for
    relative, a symbolic link to it) is the same folder: compared by ``os.path.realpath``."""
    for name, files in listing[0].items():
        folder = os.path.join(root, name)
        real = os.path.realpath(folder)  # once per series, not once per image path spelt otherwise
        stray = next((p for paths in files.values() for p in paths if os.path.dirname(p) != folder
                      and os.path.realpath(os.path.dirname(p)) != real), None)
        if stray is not None:
            raise ValueError(f"listing: {stray} is not in {folder}: a listing of another folder than {root} "
                             f"(pass what scan({root!r}) returned)")
    return listing


def plan_series(series: dict[str, dict[int, list[str]]], ignored: list[str], unclear: dict[str, str],
                ages: tuple[int, ...] | None = None,
                irregular: bool = False) -> tuple[IngestReport, dict[str, tuple[tuple[int, ...], list[str]]]]:
    """What the listing of :func:`scan` alone says, no image read: (report, good). ``report`` holds
    ``ages`` (given, else the most common set; () when ``irregular``) and ``problems`` = the series
    whose file names are wrong (missing, extra or duplicate ages, a file without an age; irregular:
    fewer than 2 ages); ``good`` = {series name: (its ages, one image path per age)} to decode.
    Folders whose names are the same text in different Unicode forms (NFC/NFD, :func:`crnn.shards.same_name`)
    would be two series with one name: each is a problem naming the other. Raises ValueError for ages
    outside 0..:data:`MAX_AGE` or fewer than 2 of them (regular)."""
    by_name = collections.defaultdict(list)
    for name in series:
        by_name[same_name(name)].append(name)
    twins = {n for names in by_name.values() if len(names) > 1 for n in names}
    # the twins are left out, so they do not vote for the most common set of ages either
    report, good = _plan_series({n: f for n, f in series.items() if n not in twins} or series, ignored, unclear,
                                ages, irregular)
    for names in by_name.values():
        for name in names if len(names) > 1 else ():
            others = [n for n in names if n != name]
            report.problems[name] = (f"the same name as folder(s) {', '.join(map(ascii, others))} in another "
                                     f"Unicode form (NFC/NFD: composed vs decomposed accents, e.g. copied from "
                                     f"macOS; this one is {ascii(name)}): rename or merge them")
            good.pop(name, None)
    return report, good


def _plan_series(series, ignored, unclear, ages, irregular):
    """:func:`plan_series` but for the Unicode check."""
    if irregular:
        report = IngestReport(ignored=ignored, unclear=unclear)
        good = {}
        for name, files in series.items():
            found = tuple(sorted(a for a in files if a >= 0))
            problem = _check_series(name, files, found)
            if problem is None and len(found) < 2:
                problem = f"only {len(found)} age(s) {list(found)}; a series needs at least 2"
            if problem:
                report.problems[name] = problem
            else:
                good[name] = (found, [files[a][0] for a in found])
        return report, good
    if ages is None:  # the most common age set among series that have one
        sets = collections.Counter(tuple(sorted(a for a in f if a >= 0)) for f in series.values())
        ages = max(sets.items(), key=lambda kv: (kv[1], len(kv[0])))[0]
    ages = tuple(sorted(int(a) for a in ages))
    if any(not 0 <= a <= MAX_AGE for a in ages):
        raise ValueError(f"ages must be whole numbers 0..{MAX_AGE}, got {list(ages)}")
    if len(ages) < 2:
        why = ""
        if unclear:  # the ages a user meant may sit in the names this rule would not guess
            first = sorted(unclear.items())[:3]
            why = (f"; {len(unclear)} image(s) were ignored because their age is ambiguous, e.g. "
                   + ", ".join(f"{path} ({reason})" for path, reason in first) + ": rename them, e.g. 10.png")
        raise ValueError(f"need at least 2 ages per series, got {list(ages)}{why}")
    report = IngestReport(ages=ages, ignored=ignored, unclear=unclear)
    good = {}
    for name, files in series.items():
        problem = _check_series(name, files, ages)
        if problem:
            report.problems[name] = problem
        else:
            good[name] = (ages, [files[a][0] for a in ages])
    return report, good


def check_strict(report: IngestReport, decoded: bool = True) -> None:
    """ValueError listing every series left out so far (``report.problems``, :meth:`IngestReport.summary`):
    what ``strict`` refuses. Called on the listing's problems (``decoded`` False: the message says
    no image was decoded, so unreadable files are not known yet), then again after decoding."""
    if not report.problems:
        return
    if decoded:
        raise ValueError("strict ingest refused, nothing written:\n" + report.summary(written=False))
    raise ValueError(f"strict ingest refused by the file names alone, before decoding any image (an unreadable "
                     f"image is found once these pass), nothing written: {len(report.problems)} series would be "
                     f"left out:\n"
                     + "\n".join(f"  {name}: {why}" for name, why in sorted(report.problems.items())))


#: At most this many bad files are named per series (then "and N more").
MAX_LISTED = 20


def _bad_files(errors: list[str]) -> str:
    """One series' undecodable files, each named with its reason: the first :data:`MAX_LISTED`, then a count."""
    shown = "; ".join(errors[:MAX_LISTED])
    more = f"; and {len(errors) - MAX_LISTED} more" if len(errors) > MAX_LISTED else ""
    return f"{len(errors)} unusable image(s): {shown}{more}"


def _load_rows(good: dict, report, height, width, fit, background, max_pixels, threads, extra=None) -> list[dict]:
    """Decode every series of ``good`` (name -> (ages, image paths)) in ``threads`` threads: rows
    for the shards; a series with undecodable images goes to ``report.problems`` instead, naming
    every one of them (:func:`_bad_files`)."""

    def load(item):
        name, (ages_, paths) = item
        frames, errors = [], []
        for p in paths:  # every file, not just up to the first bad one: all of them are reported
            try:
                frames.append(load_image(p, height, width, fit, background, max_pixels))
            except images.ImageError as e:
                errors.append(str(e))
        if errors:
            return name, ages_, None, _bad_files(errors)
        return name, ages_, np.stack(frames), None

    rows = []
    with ThreadPoolExecutor(threads) as pool:
        for name, ages_, frames, err in pool.map(load, good.items()):
            if err:
                report.problems[name] = err
                continue
            rows.append({"series_id": name, "seed": -1, "split": split_for_id(name),
                         "ages": list(ages_), "frames": frames, "params": {}, **(extra or {})})
            report.ingested.append(name)
    return rows


def ingest(root: str, out: str, height: int = 32, width: int = 16,
           ages: tuple[int, ...] | None = None, fit: str = "crop", shard_size: int = 256,
           strict: bool = False, overwrite: bool = False,
           background: tuple[int, int, int] = images.BACKGROUND,
           max_pixels: int | None = None, irregular: bool = False, age_unit: str = "years",
           listing: tuple | None = None) -> IngestReport:
    """Ingest ``root`` and publish shards at ``out`` (needs Ray). The card (``dataset.json``) lists
    the series left out (``left_out``: name -> reason), the non-image files ignored (``ignored``),
    the images whose age is ambiguous (``unclear_ages``: path -> reason) and the ``background`` used. Raises ValueError if ``strict`` and any series had a problem (then
    nothing is written; a problem the file names show is refused before any image is decoded), or if
    no series was usable.

    ``irregular``: see :func:`collect`; folders with different sets of ages give a dataset in the
    irregular layout (:mod:`crnn.irregular`) whose card records ``age_unit`` (the unit of the ages
    in the file names); folders that all agree give the regular dataset. Either card records
    ``age_unit`` (a time-aware model reads the ages in it; ValueError when it is blank).
    ``listing``: as in :func:`collect` (the folder is then not listed a second time)."""
    if fit not in ("crop", "pad", "stretch"):
        raise ValueError(f"fit must be crop, pad or stretch, got {fit!r}")
    if not isinstance(age_unit, str) or not age_unit.strip():
        raise ValueError(f"age_unit must name the unit of the ages in the file names (e.g. years, months), "
                         f"got {age_unit!r}")
    background = images.parse_color(background)
    rows, report = collect(root, height, width, ages, fit, background=background, max_pixels=max_pixels,
                           irregular=irregular, strict=strict, listing=listing)  # strict: names refused before decoding
    if strict:
        check_strict(report)
    if not rows:
        raise ValueError("no usable series:\n" + report.summary())
    import ray.data

    n = len(rows)
    t_max = max(len(r["ages"]) for r in rows)
    batch = irr.rows_to_batch(rows, t_max, ()) if report.irregular else rows_to_batch(rows, ())
    num_shards = max(1, -(-n // shard_size))
    ds = ray.data.from_items(
        [{k: v[i] for k, v in batch.items()} for i in range(n)], override_num_blocks=num_shards
    )
    splits = collections.Counter(r["split"] for r in rows)
    card = base_card(
        num_series=n, ages=report.ages, height=height, width=width,
        splits={s: splits.get(s, 0) for s in ("train", "val", "test")},
        source=f"ingested from {os.path.abspath(root)}", fit=fit,
        left_out=report.problems, ignored=report.ignored, unclear_ages=report.unclear,
        background="#%02x%02x%02x" % tuple(background), split_rule="hash of series_id (in Unicode NFC): <0.1 test, <0.2 val, else train",
    )
    card["age_unit"] = age_unit.strip()  # the regular card too: a time-aware model reads ages in it
    if report.irregular:
        found = [a for r in rows for a in r["ages"]]
        card = irr.finish_card({**card, **irr.card_fields(max_frames=t_max, age_unit=card["age_unit"],
                                                          age_range=(min(found), max(found)))})
    publish(lambda d: write_ray_dataset(ds, d), out, card, overwrite=overwrite)
    return report
