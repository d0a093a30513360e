"""Train the CRNN with Ray Train on Parquet shards streamed by Ray Data.

    python jobs/train.py --data data/pines --preset quick --out runs/quick
    python jobs/train.py --data s3://bucket/pines --preset paper --out s3://bucket/runs/paper \\
        --workers 4 --use-gpu train.precision=bf16
    ray job submit --working-dir . -- python jobs/train.py --data ... --preset quick --out ...

Any config field can be overridden as section.field=value (model.*, data.*, train.*), after
the preset and the --config YAML file.
"""

import argparse
import sys

import _bootstrap  # noqa: F401


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset directory (local path or URI) with dataset.json")
    p.add_argument("--out", required=True, help="run directory (local path or URI)")
    p.add_argument("--preset", default="quick", help="quick | paper | strong")
    p.add_argument("--config", help="YAML file with model/data/train sections")
    p.add_argument("--workers", type=int, help="Ray Train workers (train.num_workers)")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per worker (train.use_gpu)")
    p.add_argument("--epochs", type=int, help="shortcut for train.epochs=N")
    p.add_argument("--evaluate", action="store_true", help="evaluate the best model on the test split after training")
    p.add_argument("overrides", nargs="*", help="section.field=value")
    a = p.parse_args(argv)

    from crnn.config import from_job_args

    try:
        cfg = from_job_args(a.preset, a.config, a.overrides, data=a.data, workers=a.workers,
                            use_gpu=a.use_gpu, epochs=a.epochs)
    except (KeyError, TypeError, ValueError) as e:
        p.error(str(e))

    from crnn.runtime import init_ray
    from crnn.train import fit

    init_ray()
    result = fit(cfg, a.out)
    best = result.get_best_checkpoint("val_loss", "min") or result.checkpoint
    print(f"run directory: {a.out}")
    print(f"  model:   {a.out.rstrip('/')}/model  (best checkpoint, from {best.path})")
    print(f"  metrics: {a.out.rstrip('/')}/metrics.csv")
    if a.evaluate:
        from crnn.evaluate import evaluate, format_table

        res = evaluate(f"{a.out.rstrip('/')}/model", a.data, out=f"{a.out.rstrip('/')}/eval")
        print(format_table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
