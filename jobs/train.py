"""Train the CRNN with Ray Train on Parquet shards streamed by Ray Data.

    python jobs/train.py --data data/pines --preset quick --out runs/quick
    python jobs/train.py --data s3://bucket/pines --preset paper --out s3://bucket/runs/paper \\
        --workers 4 --use-gpu train.precision=bf16
    make cluster-up && .venv/bin/ray job submit --working-dir . -- python jobs/train.py \\
        --data $PWD/data/pines300 --preset quick --out $PWD/runs/quick    # README: "As a Ray job on this machine"

Any config field can be overridden as section.field=value (model.*, data.*, train.*), after
the preset and the --config YAML file; overrides may stand anywhere on the command line.
Rerunning the same command resumes an interrupted run; --out belongs to one config: another one
is refused unless --overwrite (which deletes the old run first). Bad arguments, data or --out:
one line on stderr, exit status 2, before Ray starts.
"""

import sys

if not __package__:  # run as a script (python jobs/x.py): make crnn importable from the checkout
    import _bootstrap  # noqa: F401


def main(argv=None) -> int:
    from crnn.config import USAGE_ERRORS, JobArgumentParser, add_job_args, from_job_args, parse_job_args, usage_error

    p = JobArgumentParser(description=__doc__)
    add_job_args(p)
    p.add_argument("--evaluate", action="store_true", help="evaluate the best model on the test split after training (an irregular dataset: error by "
                        "forecast gap, and the trust into the model directory)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete an existing run in --out and start over (needed when its config differs)")
    a = parse_job_args(p, argv)

    # Everything is checked before Ray starts: config, dataset (card and every shard's schema),
    # that the data fits the model, and that --out is free or holds a run of this same config.
    from crnn.shards import split_error, validate
    from crnn.rundir import check_run_dir
    from crnn.train import check_config, check_data, check_start_data, with_absolute_paths

    try:
        cfg = with_absolute_paths(from_job_args(a.preset, a.config, a.overrides, data=a.data, workers=a.workers,
                                                use_gpu=a.use_gpu, epochs=a.epochs))
        check_config(cfg, a.out, a.overwrite)
        card = validate(cfg.data.path)
        check_data(cfg, card)
        check_start_data(cfg, card, a.out, a.overwrite)
        if a.evaluate and not card["splits"].get(cfg.data.test_split):  # was a traceback after training
            taken = (*cfg.data.train_splits, cfg.data.val_split)  # a test split must be apart from both
            e = split_error(cfg.data.path, cfg.data.test_split, card["splits"], "data.test_split=", taken)
            raise ValueError(f"--evaluate: {e} (or drop --evaluate)")
        check_run_dir(a.out, cfg, a.overwrite)
    except USAGE_ERRORS as e:
        return usage_error(p.prog, e)

    from crnn.runtime import init_ray
    from crnn.train import fit

    init_ray()
    result = fit(cfg, a.out, overwrite=a.overwrite)
    from crnn.rundir import best_checkpoint

    best = best_checkpoint(result)
    print(f"run directory: {a.out}")
    which = "best checkpoint" if card["splits"].get(cfg.data.val_split) else "the last epoch's: no validation series"
    print(f"  model:   {a.out.rstrip('/')}/model  ({which}, from {best.path})")
    print(f"  metrics: {a.out.rstrip('/')}/metrics.csv")
    if a.evaluate:  # the paper's table on a regular dataset, error by forecast gap on an irregular one
        from crnn.timeeval import evaluate_dataset, is_irregular_dataset

        # a time-aware model's trust (up to which gap it beats persistence) goes into its directory,
        # where Serve's GET /model shows it
        kw = {"write_trust_to_model": True} if is_irregular_dataset(a.data) else {}
        _, table = evaluate_dataset(f"{a.out.rstrip('/')}/model", a.data, out=f"{a.out.rstrip('/')}/eval",
                                    device="cuda" if cfg.train.use_gpu else "cpu", **kw)
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
