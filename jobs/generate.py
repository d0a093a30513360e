"""Generate simulated image series (pines, or moving shapes) as Parquet shards (parallel Ray tasks).

    python jobs/generate.py --num-series 3847 --seed 0 --out data/pines --preview data/pines.png
    python jobs/generate.py --scene shapes --num-series 3847 --out data/shapes
    python jobs/generate.py --irregular --inputs 2,6 --targets 1,3 --age-range 1,50 --out data/pines-irr

--irregular: each series gets its own random input ages and target ages after them (the irregular
shard layout: frames padded to --inputs max + --targets max, with num_frames and num_inputs columns;
see README "Data"). Ages are drawn from the grid --age-range lo..hi step --age-step (years; pines
render whole years, so the grid must be integers there; shapes take any real step).
"""

import sys
import time

if not __package__:  # run as a script (python jobs/x.py): make crnn importable from the checkout
    import _bootstrap  # noqa: F401


def main(argv=None) -> int:
    from crnn.config import JobArgumentParser, USAGE_ERRORS, parse_job_args, usage_error

    p = JobArgumentParser(description=__doc__)
    p.add_argument("--scene", choices=("pines", "shapes"), default="pines",
                   help="what to simulate: growing pines (the paper's task) or coloured shapes that "
                        "move and grow (a non-pine check)")
    p.add_argument("--num-series", type=int, default=3847, help="series to simulate (paper: 3847)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed; series i uses a seed derived from it")
    p.add_argument("--out", required=True, help="output directory (local path or URI, e.g. s3://bucket/pines)")
    p.add_argument("--height", type=int, default=32)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--ages", default="10,15,20,25,30", help="comma-separated ages to snapshot")
    g = p.add_argument_group("irregular series (issue #14)")
    g.add_argument("--irregular", action="store_true",
                   help="per-series random input and target ages instead of --ages (irregular layout)")
    # defaults filled in below: given without --irregular, they are refused rather than ignored
    g.add_argument("--inputs", help="MIN,MAX input frames per series, MIN >= 2 (with --irregular; default 2,6)")
    g.add_argument("--targets",
                   help="MIN,MAX target frames per series, all after the last input (with --irregular; default 1,3)")
    g.add_argument("--age-range", help="LO,HI: ages are drawn from LO..HI (years; with --irregular; default 1,50; "
                                       "a negative LO as --age-range=-5,10)")
    g.add_argument("--age-step", type=float,
                   help="spacing of the age grid (years; pines need whole numbers; with --irregular; default 1)")
    p.add_argument("--shard-size", type=int, default=256, help="series per Parquet shard")
    p.add_argument("--preview", help="write a contact sheet PNG of a few test series")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for an embedded local Ray")

    a = parse_job_args(p, argv)
    given = [f for f, v in (("--inputs", a.inputs), ("--targets", a.targets), ("--age-range", a.age_range),
                            ("--age-step", a.age_step)) if v is not None]
    if given and not a.irregular:
        p.error(f"{', '.join(given)} only apply with --irregular (per-series ages); the regular grid is --ages")
    if a.irregular and a.ages != p.get_default("ages"):
        p.error("--ages is the regular grid; with --irregular the ages come from --age-range and --age-step")
    a.inputs, a.targets = a.inputs or "2,6", a.targets or "1,3"
    a.age_range, a.age_step = a.age_range or "1,50", 1.0 if a.age_step is None else a.age_step
    try:
        ages = tuple(int(x) for x in a.ages.split(","))
    except ValueError:
        p.error(f"--ages must be comma-separated integers, got {a.ages!r}")
    irregular = None
    if a.irregular:
        from crnn.irregular import IrregularSpec

        def pair(opt, text, kind):
            try:
                lo, hi = (kind(x) for x in text.split(","))
            except ValueError:
                p.error(f"{opt} must be MIN,MAX ({kind.__name__}s), got {text!r}")
            return lo, hi

        (i0, i1), (t0, t1) = pair("--inputs", a.inputs, int), pair("--targets", a.targets, int)
        lo, hi = pair("--age-range", a.age_range, float)
        irregular = IrregularSpec(min_inputs=i0, max_inputs=i1, min_targets=t0, max_targets=t1,
                                  age_min=lo, age_max=hi, age_step=a.age_step)

    from crnn.generate import check_generate, generate
    from crnn.shards import check_out_free

    try:  # before Ray starts
        if a.num_cpus is not None and a.num_cpus < 1:
            raise ValueError(f"--num-cpus must be >= 1, got {a.num_cpus}")
        check_generate(a.num_series, a.shard_size, ages, a.height, a.width, a.scene, irregular)
        check_out_free(a.out, a.overwrite)
    except USAGE_ERRORS as e:
        return usage_error(p.prog, e)
    from crnn.runtime import init_ray, per_second

    init_ray(num_cpus=a.num_cpus)
    t0 = time.perf_counter()
    card = generate(a.out, num_series=a.num_series, seed=a.seed, ages=ages, height=a.height,
                    width=a.width, shard_size=a.shard_size, overwrite=a.overwrite, scene=a.scene,
                    irregular=irregular)
    dt = time.perf_counter() - t0
    print(f"wrote {card['num_series']} series ({card['splits']}) in {len(card['shards'])} shards "
          f"to {a.out} in {dt:.1f} s ({per_second(card['num_series'], dt)} series/s)")
    print(f"dataset card: {a.out.rstrip('/')}/dataset.json")
    if a.preview and irregular is not None:
        print("--preview: not drawn for an irregular dataset (no common ages)")
    elif a.preview:
        from crnn.plots import save_preview
        from crnn.shards import read_numpy

        data = read_numpy(a.out, split="test", columns=["series_id", "frames"])
        if len(data.get("frames", [])) == 0:
            data = read_numpy(a.out, columns=["series_id", "frames"])
        k = min(6, len(data["frames"]))
        save_preview(a.preview, data["frames"][:k], card["ages"], ids=list(data["series_id"][:k]))
        print(f"preview: {a.preview}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
