"""Evaluate a model directory on a dataset split, next to the persistence and linear baselines.

    python jobs/evaluate.py --model runs/x/model --data data/pines [--out runs/x/eval] [--split test]

Prints the paper's Table 3 comparison at the last forecast age (30) and MSE per age; with --out
writes metrics.json and predictions.png (real vs forecast frames, the paper's Fig. 7). No Ray.
"""

import sys

if not __package__:  # run as a script (python jobs/x.py): make crnn importable from the checkout
    import _bootstrap  # noqa: F401


def main(argv=None) -> int:
    from crnn.config import JobArgumentParser, USAGE_ERRORS, parse_job_args, usage_error

    p = JobArgumentParser(description=__doc__)
    p.add_argument("--model", required=True, help="model directory (local path or URI)")
    p.add_argument("--data", required=True, help="dataset directory (local path or URI)")
    p.add_argument("--out", help="folder (local path or URI) for metrics.json and predictions.png")
    p.add_argument("--split", help="split to score (default: the model config's data.test_split)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--num-examples", type=int, default=6, help="series shown in predictions.png")
    p.add_argument("--batch-size", type=int, default=256)

    a = parse_job_args(p, argv)
    # checked before any work: the arguments and device, the model directory (file, format, keys,
    # config, weights), the dataset (card, every shard's schema), the split and the frame size
    from crnn.evaluate import check_evaluate

    try:
        check_evaluate(a.model, a.data, split=a.split, device=a.device, num_examples=a.num_examples,
                       batch_size=a.batch_size)
    except USAGE_ERRORS as e:
        return usage_error(p.prog, e)

    from crnn.evaluate import evaluate, format_table

    try:
        result = evaluate(a.model, a.data, out=a.out, split=a.split, device=a.device,
                          num_examples=a.num_examples, batch_size=a.batch_size)
    except (ValueError, FileNotFoundError) as e:
        print(f"evaluate failed: {e}", file=sys.stderr)
        return 1
    print(format_table(result))
    for what, path in result.get("files", {}).items():
        print(f"wrote {what}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
