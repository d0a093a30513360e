"""The main job end to end on one machine (what `make run` does): generate, train, evaluate.

    python jobs/run_all.py --out runs/make-run [--num-series 600] [--preset demo] [overrides...]

Runs on an embedded local Ray unless RAY_ADDRESS points at a cluster. Prints the metrics table
(trained model vs persistence, linear extrapolation and the paper's Table 3) and where everything
went.
"""

import os
import sys
import time

if not __package__:  # run as a script (python jobs/x.py): make crnn importable from the checkout
    import _bootstrap  # noqa: F401


def main(argv=None) -> int:
    from crnn.config import PRESETS, JobArgumentParser, USAGE_ERRORS, apply, load_config, parse_job_args, usage_error

    p = JobArgumentParser(description=__doc__)
    p.add_argument("--out", default="runs/make-run", help="folder for data/, train/ and eval/")
    p.add_argument("--num-series", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default="demo", help=f"config preset (default demo): {' | '.join(PRESETS)}")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--overwrite", action="store_true", help="start the training run in OUT/train over "
                   "(needed when its config differs from the one there)")
    p.add_argument("overrides", nargs="*", help="section.field=value config overrides (anywhere)")

    a = parse_job_args(p, argv)
    from crnn.evaluate import evaluate, format_table
    from crnn.generate import generate
    from crnn.plots import save_preview
    from crnn.runtime import init_ray
    from crnn.shards import read_numpy
    from crnn.train import fit

    from crnn import pine
    from crnn.generate import check_generate
    from crnn.rundir import check_run_dir
    from crnn.train import check_config, check_start_data, with_absolute_paths

    data, run, ev = (os.path.join(a.out, d) for d in ("data", "train", "eval"))
    try:  # before Ray starts (the dataset is made here: its fit to the model is checked by fit)
        cfg = with_absolute_paths(apply(load_config(a.preset, overrides=a.overrides),
                                        {"data.path": data, "train.num_workers": a.workers}))
        check_config(cfg, run, a.overwrite)
        check_start_data(cfg, {"age_unit": "years"}, run, a.overwrite,  # the simulator counts years
                         remedy="run_all simulates pines whose ages are years: start from a time-aware model "
                                "trained on years, or drop train.init_from to train from random weights")
        check_generate(a.num_series, 256, pine.DEFAULT_AGES, 32, 16)  # what generate() below makes
        check_run_dir(run, cfg, a.overwrite)
    except USAGE_ERRORS as e:
        return usage_error(p.prog, e)
    init_ray(log_to_driver=False)  # keep the console to the pipeline's own lines
    t0 = time.perf_counter()
    card = generate(data, num_series=a.num_series, seed=a.seed, overwrite=True)
    test = read_numpy(data, split="test", columns=["series_id", "frames"])
    save_preview(os.path.join(a.out, "preview.png"), test["frames"][:6], card["ages"], list(test["series_id"][:6]))
    print(f"[1/3] generated {card['num_series']} series {card['splits']} in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    fit(cfg, run, overwrite=a.overwrite)
    print(f"[2/3] trained ({a.preset} preset, {cfg.train.epochs} epochs) in {time.perf_counter() - t0:.1f} s")

    result = evaluate(os.path.join(run, "model"), data, out=ev)
    print("[3/3] evaluated on the test split\n")
    print(format_table(result))
    print(f"""
outputs:
  dataset        {data}  (dataset.json: the card)
  preview        {os.path.join(a.out, 'preview.png')}
  run            {run}  (config.yaml, metrics.csv, curve.png, tb/, model/)
  evaluation     {ev}  (metrics.json, predictions.png)
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
