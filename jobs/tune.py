"""Search the CRNN's hyperparameters with Ray Tune (each trial a Ray Train run), early-stopped by ASHA.

    python jobs/tune.py --data data/pines --out runs/tune --preset quick --num-samples 8
    python jobs/tune.py --data data/pines --out runs/grid --space factors --searcher grid train.epochs=20
    python jobs/tune.py --data s3://bucket/pines --out s3://bucket/tune --preset paper --space paper \\
        --searcher tpe --num-samples 64 --use-gpu --models s3://bucket/models
    ray job submit --working-dir . -- python jobs/tune.py --data ... --out ...

Writes under --out: results.csv (every trial), best_config.yaml, curves/*.png, best/ (the best model
directory: `--model` for evaluate, predict and serve; with test_metrics.json and tune_result.json),
search.json and the Tune experiment ray/<name>/. Running the same command again resumes an
interrupted search (finished trials are not redone). Search spaces: paper (the paper's factors plus
lr, filters, LSTM units, dropout), factors (only the paper's four comparisons: 96 grid points), small,
families (model.kind and each forecaster family's fields), or a YAML file of `section.field: {choice|grid|uniform|loguniform|quniform|randint|...: [args]}`.
Base config: --preset, then --config YAML, then section.field=value overrides.
"""

import math
import sys

if not __package__:  # run as a script (python jobs/x.py): make crnn importable from the checkout
    import _bootstrap  # noqa: F401


def main(argv=None) -> int:
    from crnn.config import USAGE_ERRORS, JobArgumentParser, add_job_args, from_job_args, parse_job_args, usage_error
    from crnn.tune import SEARCHERS, SPACES

    p = JobArgumentParser(description=__doc__)
    # --workers, --use-gpu and --epochs apply to every trial; --epochs is ASHA's max_t
    add_job_args(p, out_help="search directory (local path, or a URI on a cluster): new, empty or an earlier search")
    p.add_argument("--space", default="paper", help=f"search space: {' | '.join(SPACES)} | FILE.yaml (a path or URI)")
    p.add_argument("--searcher", default="random", choices=SEARCHERS,
                   help="grid | random (Tune's own) | tpe (Optuna's TPE; optuna is another name for it)")
    p.add_argument("--num-samples", type=int, help="trials (grid: passes over the grid); default 8, grid 1")
    p.add_argument("--name", default="tune", help="experiment name (and the models/<name>/ folder)")
    p.add_argument("--models", help="also publish the best model to MODELS/<name>/")
    p.add_argument("--seed", type=int, default=0, help="searcher seed")
    p.add_argument("--max-concurrent", type=int, help="concurrent trials (default: derived from the cluster)")
    p.add_argument("--trial-cpus", type=float, default=0.1, help="CPU requested by each trial's driver")
    p.add_argument("--data-cpus", type=float, default=1.0, help="CPUs kept free for Ray Data read tasks")
    p.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs before a trial can be stopped")
    p.add_argument("--reduction-factor", type=float, default=2, help="ASHA: keep 1/rf of trials per rung")
    p.add_argument("--no-asha", action="store_true", help="run every trial to the end")
    p.add_argument("--no-resume", action="store_true", help="refuse to resume an existing search")
    p.add_argument("--retry-errored", action="store_true", help="on resume, rerun trials that failed")
    p.add_argument("--no-evaluate", action="store_true", help="skip the test-split evaluation of the best model")
    a = parse_job_args(p, argv)

    # checked before Ray starts: config, search space, searcher, dataset (card, every shard's schema)
    from crnn.shards import validate
    from crnn.train import check_data
    from crnn.tune import check_config, check_space_data, load_space, validate_space

    try:
        cfg = from_job_args(a.preset, a.config, a.overrides, data=a.data, workers=a.workers,
                            use_gpu=a.use_gpu, epochs=a.epochs)
        check_config(cfg)
        validate_space(cfg, load_space(a.space))
        for flag, value, ok in (("--num-samples", a.num_samples, a.num_samples is None or a.num_samples >= 1),
                                ("--max-concurrent", a.max_concurrent, a.max_concurrent is None or a.max_concurrent >= 1),
                                ("--grace-period", a.grace_period, a.grace_period >= 1),
                                ("--reduction-factor", a.reduction_factor, a.reduction_factor > 1),
                                ("--trial-cpus", a.trial_cpus, a.trial_cpus >= 0),
                                ("--data-cpus", a.data_cpus, a.data_cpus >= 0)):
            if not ok:
                raise ValueError(f"{flag} must be {'> 1' if flag == '--reduction-factor' else '>= 0' if 'cpus' in flag else '>= 1'}, "
                                 f"got {value}")
        card = validate(cfg.data.path)
        check_data(cfg, card)
        check_space_data(cfg, load_space(a.space), card)
        check_search_dir(a.out, a.name, resume=not a.no_resume)
    except USAGE_ERRORS as e:
        return usage_error(p.prog, e)

    from crnn.runtime import init_ray
    from crnn.tune import run_search

    init_ray(include_dashboard=True)  # Ray Train V2 inside Tune trials needs the dashboard
    try:
        outcome = run_search(
            cfg, a.out, space=a.space, searcher=a.searcher, num_samples=a.num_samples, name=a.name, seed=a.seed,
            asha=not a.no_asha, grace_period=a.grace_period, reduction_factor=a.reduction_factor,
            max_concurrent=a.max_concurrent, trial_cpus=a.trial_cpus, data_cpus=a.data_cpus, models=a.models,
            resume=not a.no_resume, retry_errored=a.retry_errored, evaluate=not a.no_evaluate)
    except ValueError as e:
        print(f"tune failed: {e}", file=sys.stderr)
        return 1
    print_summary(outcome)
    return 0 if outcome["best"] is not None else 1


def check_search_dir(out: str, name: str, resume: bool = True) -> None:
    """``--out`` must be absent, empty, or a search directory (it has search.json, written first by
    every search): anything else -- a file, a photo folder, a home directory -- is refused (a
    RunDirError naming it) before Ray starts, as train refuses a non-run directory. With
    ``resume=False`` an existing experiment ``ray/<name>`` is refused too."""
    import posixpath

    import pyarrow.fs as pafs

    from crnn.storage import resolve
    from crnn.rundir import RunDirError

    fs, root = resolve(out)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        return
    if info.type != pafs.FileType.Directory:
        raise RunDirError(f"--out {out} is a file, not a search directory")
    entries = fs.get_file_info(pafs.FileSelector(root))
    if not entries:
        return
    if not any(e.base_name == "search.json" and e.type == pafs.FileType.File for e in entries):
        raise RunDirError(f"--out {out} is not empty and has no search.json: not a search directory of this "
                          f"project; choose another --out")
    if not resume and fs.get_file_info(posixpath.join(root, "ray", name)).type != pafs.FileType.NotFound:
        raise RunDirError(f"--out {out} holds the search {name!r} already and --no-resume was given; "
                          f"choose another --out or --name")


def print_summary(outcome: dict) -> None:
    rows = outcome["rows"]
    counts = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    print(f"\n{len(rows)} trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
          + (" (restored)" if outcome.get("restored") else ""))
    print(f"resources: {outcome['plan']['note']}")
    keys = sorted({k for r in rows for k in r["config"]})
    head = ["rank", "status", "epochs", "best_val_loss"] + [k.split(".", 1)[1] for k in keys]
    print(" | ".join(head))
    for r in rows[:10]:
        v = r["best_val_loss"]
        cells = [str(r["rank"]), r["status"], str(r["epochs"]), f"{v:.5f}" if math.isfinite(v) else "-"]
        cells += [_short(r["config"].get(k)) for k in keys]
        print(" | ".join(cells))
    if len(rows) > 10:
        print(f"... {len(rows) - 10} more in results.csv")
    if outcome.get("interrupted"):
        print("the search was interrupted: run the same command again to resume it")
    best = outcome["best"]
    if best is not None:
        tm = outcome.get("test_metrics") or {}
        head_m = (tm.get("headline") or {}).get("model") or {}
        ssim = head_m.get("ssim")  # null for frames smaller than SSIM's 11x11 window (crnn.metrics)
        ssim = f"{ssim:.3f}" if isinstance(ssim, (int, float)) and math.isfinite(ssim) else "n/a"
        print(f"best trial {best['trial_id']}: val_loss {best['best_val_loss']:.5f} at epoch {best['best_epoch']}"
              + (f"; test MSE {head_m['mse']:.2f}, SSIM {ssim} at age {tm.get('headline_age')}"
                 if head_m.get("mse") is not None else ""))
    for what, path in outcome["files"].items():
        print(f"  {what}: {path if isinstance(path, str) else ', '.join(path)}")


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


if __name__ == "__main__":
    sys.exit(main())
