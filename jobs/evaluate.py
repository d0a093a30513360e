"""Evaluate a model directory on a dataset split, next to the persistence, linear and analog baselines.

    python jobs/evaluate.py --model runs/x/model --data data/pines [--out runs/x/eval] [--split test]
    python jobs/evaluate.py --model runs/t/model --data data/pines-irr --out runs/t/eval [--write-trust-to-model]

A regular dataset: prints the paper's Table 3 comparison at the last forecast age (30) and MSE per
age; with --out writes metrics.json and predictions.png (real vs forecast frames, the paper's Fig. 7).
An irregular dataset ("layout": "irregular"; a time-aware model, model.kind=timevp): the evaluation
as a function of time (crnn/timeeval.py): MSE and MAE per forecast-gap and input-spacing bin beside
persistence, linear-in-time and the analog forecast, and up to which gap the model beats persistence
by 2x and 1.2x; with --out writes result.json, table.txt, mse_by_gap.png and trust.json. Either kind:
--tta hflip scores the model with mirror test-time augmentation (crnn/mirror.py; the baselines as they
are). No Ray.
"""

import sys

if not __package__:  # run as a script (python jobs/x.py): make crnn importable from the checkout
    import _bootstrap  # noqa: F401


def main(argv=None) -> int:
    from crnn.config import JobArgumentParser, USAGE_ERRORS, parse_job_args, usage_error

    p = JobArgumentParser(description=__doc__)
    p.add_argument("--model", required=True, help="model directory (local path or URI)")
    p.add_argument("--data", required=True, help="dataset directory (local path or URI)")
    p.add_argument("--out", help="folder (local path or URI) for metrics.json and predictions.png "
                   "(an irregular dataset: result.json, table.txt, mse_by_gap.png, trust.json)")
    p.add_argument("--split", help="split to score (default: the model config's data.test_split)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--num-examples", type=int, default=6, help="series shown in predictions.png")
    p.add_argument("--batch-size", type=int, default=None, help="series per forward pass (default 256; 64 on "
                   "an irregular dataset)")
    p.add_argument("--tta", default="none", choices=("none", "hflip"), help="test-time augmentation of the model's forecasts: none | hflip "
                   "(the mean of the forecast and the mirrored forecast of the mirrored series; twice the work)")
    p.add_argument("--mirror-axis", type=float, default=None, metavar="COLUMN",
                   help="with --tta hflip: the pixel column (a multiple of 0.5) to mirror about (default: the "
                   "model's training data's axis, else the dataset's: the pines' trunk column width // 2)")
    g = p.add_argument_group("irregular datasets (the time-aware evaluation)")
    g.add_argument("--bank-size", type=int, default=None, help="training trees in the analog bank (default "
                   "2000; 0 skips the analog baseline)")
    g.add_argument("--bank", help="the analog bank's .npy cache (local path or URI; default <out>/analog_bank.npy)")
    g.add_argument("--bank-workers", type=int, default=0, help="processes rendering the bank (0: all CPUs)")
    g.add_argument("--write-trust-to-model", action="store_true",
                   help="also write <model>/trust.json (shown by Serve's GET /model)")

    a = parse_job_args(p, argv)
    from crnn.storage import check_dir_target
    from crnn.timeeval import is_irregular_dataset

    if a.out is not None:  # the files are written last: a file in the way is found now, not then
        try:
            check_dir_target(a.out)
        except ValueError as e:
            return usage_error(p.prog, e)
    if is_irregular_dataset(a.data):
        return _evaluate_time(p, a)
    a.batch_size = 256 if a.batch_size is None else a.batch_size
    # checked before any work: the arguments and device, the model directory (file, format, keys,
    # config, weights), the dataset (card, every shard's schema), the split and the frame size
    from crnn.evaluate import check_evaluate

    try:
        check_evaluate(a.model, a.data, split=a.split, device=a.device, num_examples=a.num_examples,
                       batch_size=a.batch_size, tta=a.tta, mirror_axis=a.mirror_axis)
        if a.write_trust_to_model or a.bank_size is not None or a.bank is not None:
            raise ValueError(f"{a.data}: a regular dataset; --write-trust-to-model, --bank-size and --bank belong "
                             f"to the time-aware evaluation of an irregular dataset")
    except USAGE_ERRORS as e:
        return usage_error(p.prog, e)

    from crnn.evaluate import evaluate, format_table

    return _run(lambda: evaluate(a.model, a.data, out=a.out, split=a.split, device=a.device,
                                 num_examples=a.num_examples, batch_size=a.batch_size, tta=a.tta,
                                 mirror_axis=a.mirror_axis), format_table)


def _run(evaluation, table) -> int:
    """Run ``evaluation()`` (either kind), print its ``table`` and the files written; exit status 1
    with the error on stderr when it fails after the up-front checks. A model/dataset mirror-axis
    disagreement was already warned about by those checks: the run does not say it twice."""
    import warnings

    from crnn.mirror import MirrorAxisWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MirrorAxisWarning)
            result = evaluation()
    except (ValueError, FileNotFoundError) as e:
        print(f"evaluate failed: {e}", file=sys.stderr)
        return 1
    print(table(result))
    for what, path in result.get("files", {}).items():
        print(f"wrote {what}: {path}")
    return 0


def _evaluate_time(p, a) -> int:
    from crnn.config import USAGE_ERRORS, usage_error
    from crnn.timeeval import BANK_SIZE, check_time_evaluate, evaluate_time, format_time_table

    kw = dict(split=a.split, device=a.device, batch_size=64 if a.batch_size is None else a.batch_size,
              bank_size=BANK_SIZE if a.bank_size is None else a.bank_size, bank_workers=a.bank_workers)
    kw.update(tta=a.tta, mirror_axis=a.mirror_axis)
    try:  # before any work: the arguments, a grid model, the dataset, the split, the frame size, the TTA axis
        check_time_evaluate(a.model, a.data, **kw)
    except USAGE_ERRORS as e:
        return usage_error(p.prog, e)
    return _run(lambda: evaluate_time(a.model, a.data, out=a.out, bank_path=a.bank,
                                      write_trust_to_model=a.write_trust_to_model, **kw), format_time_table)


if __name__ == "__main__":
    sys.exit(main())
