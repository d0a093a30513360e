"""Forecast every series of a dataset with a trained model (Ray Data actor pool) into a new dataset.

    python jobs/predict.py --model runs/x/model --data data/pines --out runs/x/forecasts
    python jobs/predict.py --model M --data D --out O --split test --horizon 3 --preview O.png
    python jobs/predict.py --model M --data D --out O --num-gpus 1 --concurrency 2    # GPU actors
    python jobs/predict.py --model M --data D --out O --target-ages 30,35,40           # any ages (#14)

Inputs are each series' first in_frames frames (ages 10..25), as in training; --inputs last uses
the last ones. Without --horizon the output holds the model's next-frame forecast for every input
step (ages 15..30); with --horizon H, H frames rolled out past the last input (ages 30, 35, ...);
with --target-ages, the forecasts at those ages (a time-aware model: any later ages; a grid model:
whole steps of its input spacing). --target-ages also takes an irregular dataset: each series'
inputs are its first num_inputs frames at its own ages. Every series' ages are checked against the
targets before Ray starts (a usage error naming the series id). Output: Parquet shards (series_id =
source id, ages -- float32 when a target age is fractional, else int32 --, frames, split/source_split,
...) and a dataset.json card marked as forecasts (with "ages_dtype": "float32" for fractional ages;
crnn.shards' readers take either), published atomically (a failed run leaves nothing at --out).
"""

import sys
import time

if not __package__:  # run as a script (python jobs/x.py): make crnn importable from the checkout
    import _bootstrap  # noqa: F401


def main(argv=None) -> int:
    from crnn.config import JobArgumentParser, USAGE_ERRORS, parse_job_args, usage_error

    p = JobArgumentParser(description=__doc__)
    p.add_argument("--model", required=True, help="model directory (local path or URI)")
    p.add_argument("--data", required=True, help="input dataset directory (local path or URI)")
    p.add_argument("--out", required=True, help="output dataset directory (local path or URI)")
    p.add_argument("--split", action="append", help="only these splits (repeatable); default: all")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--horizon", type=int, help="roll out H frames past the inputs, 1 to crnn.inference.MAX_HORIZON "
                      "(10; Serve's max_horizon) (default: window forecast)")
    what.add_argument("--target-ages", help="forecast at these ages, comma-separated (e.g. 30,35,40 or 32.5,40); "
                                            "regular or irregular datasets")
    p.add_argument("--inputs", choices=("first", "last"), default="first", help="which in_frames frames are inputs")
    p.add_argument("--batch-size", type=int, default=256, help="series per model call")
    p.add_argument("--concurrency", type=int, default=1, help="forecasting actors")
    p.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per actor (also its torch threads)")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per actor (>0: forecast on CUDA)")
    p.add_argument("--preview", help="write a PNG sheet of a few series' inputs/forecasts")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    p.add_argument("--tta", default="none", choices=("none", "hflip"), help="test-time augmentation: none | hflip (the mean of each forecast "
                   "and the mirrored forecast of the mirrored series; twice the work)")
    p.add_argument("--mirror-axis", type=float, default=None, metavar="COLUMN",
                   help="with --tta hflip: the pixel column (a multiple of 0.5) to mirror about (default: the "
                   "model's training data's axis, else the dataset's: the pines' trunk column width // 2)")
    p.add_argument("--ray-num-cpus", type=int, help="CPUs of an embedded local Ray")

    a = parse_job_args(p, argv)

    from crnn.predict import plan_predict, predict_dataset
    from crnn.shardcheck import ShardError

    # checked before Ray starts: arguments, model directory, dataset (card, every shard's schema),
    # that the model takes the data, and that --out is free (or --overwrite)
    try:
        if a.concurrency < 1 or a.num_cpus <= 0 or a.num_gpus < 0:
            raise ValueError(f"--concurrency must be >= 1, --num-cpus > 0 and --num-gpus >= 0, got "
                             f"{a.concurrency}, {a.num_cpus}, {a.num_gpus}")
        if a.ray_num_cpus is not None and a.ray_num_cpus < 1:
            raise ValueError(f"--ray-num-cpus must be >= 1, got {a.ray_num_cpus}")
        if a.ray_num_cpus is not None and a.concurrency * a.num_cpus + 1 > a.ray_num_cpus:
            # the actors hold their CPUs for the whole run, and Ray Data's read and write tasks need one
            # whole CPU each: with less left over the run waits for a CPU that never frees (a hang)
            raise ValueError(f"--ray-num-cpus {a.ray_num_cpus}: the forecasting actors take --concurrency x "
                             f"--num-cpus = {a.concurrency * a.num_cpus:g} CPUs and Ray Data's read and write "
                             f"tasks need 1 more; give --ray-num-cpus >= {a.concurrency * a.num_cpus + 1:g} or fewer "
                             f"actor CPUs")
        if a.preview is not None:  # written after the forecasts are published: checked now, not then
            _check_preview(a.preview)
        plan = plan_predict(a.model, a.data, a.out, split=a.split, horizon=a.horizon, inputs=a.inputs,
                            batch_size=a.batch_size, num_gpus=a.num_gpus, overwrite=a.overwrite,
                            target_ages=a.target_ages, tta=a.tta, mirror_axis=a.mirror_axis)
    except USAGE_ERRORS as e:
        return usage_error(p.prog, e)

    from crnn.runtime import init_ray, per_second

    init_ray(num_cpus=a.ray_num_cpus)
    t0 = time.perf_counter()
    try:
        card = predict_dataset(a.model, a.data, a.out, split=a.split, horizon=a.horizon, inputs=a.inputs,
                               batch_size=a.batch_size, concurrency=a.concurrency, num_cpus=a.num_cpus,
                               num_gpus=a.num_gpus, overwrite=a.overwrite, preview=a.preview,
                               target_ages=a.target_ages, plan=plan, tta=a.tta,
                               mirror_axis=a.mirror_axis)  # checked above: not again
    except (ShardError, ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"predict failed: {e}", file=sys.stderr)
        return 1
    dt = time.perf_counter() - t0
    n = card["num_series"]
    print(f"wrote forecasts of {n} series (ages {card['ages']}) in {len(card['shards'])} shards to {a.out} "
          f"in {dt:.1f} s ({per_second(n, dt)} series/s)")
    if a.preview:
        print(f"preview: {a.preview}")
    return 0


def _check_preview(path: str) -> None:
    """ValueError unless ``path`` can take the preview sheet: a local file whose extension Pillow
    writes (.png, .jpg, ...), in an existing folder, not a folder itself."""
    import os

    from PIL import Image

    ext = os.path.splitext(path)[1].lower()
    if "://" in path:
        raise ValueError(f"--preview {path}: a local file path (the sheet is written with Pillow), not a URI")
    if os.path.isdir(path):
        raise ValueError(f"--preview {path} is a directory; give an image file path, e.g. {path.rstrip('/')}/forecasts.png")
    if ext not in Image.registered_extensions() or Image.registered_extensions()[ext] not in Image.SAVE:
        raise ValueError(f"--preview {path}: {ext or 'no extension'} is not an image format Pillow writes; "
                         f"give e.g. forecasts.png")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ValueError(f"--preview {path}: no folder {parent}")


if __name__ == "__main__":
    sys.exit(main())
