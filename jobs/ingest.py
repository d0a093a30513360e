"""Turn a folder of real image series into Parquet shards (same format as the simulator's).

    python jobs/ingest.py --src photos/ --out data/photos [--ages 10,15,20,25,30] [--strict]

One sub-folder per series, one image per age named by the age (10.jpg, age_15.png, IMG_age20.jpg:
the number after "age", else the only number; an ambiguous name such as 10.5.png or 10_v2.png is
ignored and listed with the reason, not guessed). Files
that are not images (Thumbs.db, .DS_Store, notes) are ignored and listed; images are decoded by
crnn/images.py, the decoder Serve uses (EXIF orientation, 16-bit scaled, transparency over
--background). A series with an unreadable or oversized image is reported and left out.
"""

import os
import sys

if not __package__:  # run as a script (python jobs/x.py): make crnn importable from the checkout
    import _bootstrap  # noqa: F401


def main(argv=None) -> int:
    from crnn.config import JobArgumentParser, USAGE_ERRORS, parse_job_args, usage_error

    p = JobArgumentParser(description=__doc__)
    p.add_argument("--src", required=True, help="folder with one sub-folder per series")
    p.add_argument("--out", required=True, help="output dataset directory (local path or URI)")
    p.add_argument("--height", type=int, default=32,
                   help="pixel rows of every frame written (default 32: the pines' size, which the shipped "
                        "models/pine-convlstm reads; a model trained on this dataset reads this size only)")
    p.add_argument("--width", type=int, default=16, help="pixel columns of every frame written (default 16)")
    p.add_argument("--ages", help="comma-separated ages every series must have (default: most common set)")
    p.add_argument("--irregular", action="store_true",
                   help="keep each series' own ages (>= 2): folders with different sets of ages give an "
                        "irregular dataset (padded frames + num_frames); excludes --ages")
    p.add_argument("--age-unit", default="years",
                   help="unit of the ages in the file names, recorded in the card (default years); a time-aware "
                        "model reads ages in it")
    p.add_argument("--fit", choices=["crop", "pad", "stretch"], default="crop",
                   help="how a photo of another aspect ratio becomes --height x --width: crop its centre, pad it "
                        "with --background, or stretch it (default crop)")
    p.add_argument("--shard-size", type=int, default=256, help="series per Parquet shard (default 256)")
    p.add_argument("--strict", action="store_true", help="publish nothing and exit 1 if any series is bad (a problem the file names show: "
                   "before Ray starts and before any image is decoded)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out (it survives "
                   "a failed run)")
    p.add_argument("--background", default="white",
                   help="colour behind transparent pixels and of --fit pad borders: a name, #rrggbb or R,G,B "
                        "(default white, as Serve)")
    p.add_argument("--max-pixels", type=int,
                   help="refuse images whose header claims more pixels (default: Pillow's limit, ~89.5 million)")
    p.add_argument("--preview", help="write a contact sheet PNG of a few ingested series")

    a = parse_job_args(p, argv)
    from crnn.images import parse_color
    from crnn.shards import check_out_free

    try:  # before Ray starts
        try:
            ages = tuple(int(x) for x in a.ages.split(",")) if a.ages else None
        except ValueError:
            raise ValueError(f"--ages must be comma-separated integers, got {a.ages!r}") from None
        from crnn.ingest import MAX_AGE

        if ages is not None and (len(ages) < 2 or len(set(ages)) != len(ages) or min(ages) < 0 or max(ages) > MAX_AGE):
            raise ValueError(f"--ages needs at least 2 different ages 0..{MAX_AGE}, got {a.ages!r}")
        try:
            background = parse_color(a.background)
        except ValueError as e:
            raise ValueError(f"--background: {e}") from None
        if a.max_pixels is not None and a.max_pixels < 1:
            raise ValueError(f"--max-pixels must be >= 1, got {a.max_pixels}")
        if not os.path.isdir(a.src):
            raise FileNotFoundError(f"--src {a.src}: no such folder")
        if a.height < 1 or a.width < 1 or a.shard_size < 1:
            raise ValueError(f"--height, --width and --shard-size must be >= 1, got {a.height}, {a.width}, "
                             f"{a.shard_size}")
        if not a.age_unit.strip():
            raise ValueError(f"--age-unit must name the unit of the ages in the file names (e.g. years, months), "
                             f"got {a.age_unit!r}")
        if a.irregular and ages is not None:
            raise ValueError("--irregular keeps each series' own ages: do not give --ages too")
        check_out_free(a.out, a.overwrite)
        from crnn.ingest import check_series_found, check_strict, plan_series, scan

        series, ignored, unclear = scan(a.src)  # names only, no image read: a wrong --src is told before Ray starts
        check_series_found(f"--src {a.src}", series, ignored)
        listing, _ = plan_series(series, ignored, unclear, ages, a.irregular)  # the ages, from names alone
    except USAGE_ERRORS as e:
        return usage_error(p.prog, e)
    if a.strict:  # what the file names show is refused before Ray starts and before any image is decoded
        try:
            check_strict(listing, decoded=False)
        except ValueError as e:
            print(f"ingest failed: {e}", file=sys.stderr)
            return 1

    from crnn.ingest import ingest, written_summary
    from crnn.runtime import init_ray
    from crnn.shards import read_card

    init_ray()
    try:
        report = ingest(a.src, a.out, height=a.height, width=a.width, ages=ages, fit=a.fit,
                        shard_size=a.shard_size, strict=a.strict, overwrite=a.overwrite,
                        background=background, max_pixels=a.max_pixels, irregular=a.irregular,
                        age_unit=a.age_unit, listing=(series, ignored, unclear))  # listed once, above
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"ingest failed: {e}", file=sys.stderr)
        return 1
    print(report.summary())
    print(f"wrote {a.out}")
    print(written_summary(read_card(a.out)))
    if a.preview and report.irregular:
        print("--preview: not drawn for an irregular dataset (no common ages)")
    elif a.preview:
        from crnn.plots import save_preview
        from crnn.shards import read_numpy

        data = read_numpy(a.out, columns=["series_id", "frames"])
        k = min(6, len(data["frames"]))
        save_preview(a.preview, data["frames"][:k], report.ages, ids=list(data["series_id"][:k]))
        print(f"preview: {a.preview}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
