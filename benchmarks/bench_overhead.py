"""Where a Ray Train run's time goes outside its epochs (tiny model, so epochs are ~free).

    python benchmarks/bench_overhead.py --data data/pines [--epochs 1] [--health-check-interval 0.2]
        [--no-dashboard | --unpinned]

Prints: imports, ray.init, fit (in all), the worker's setup_s (worker start -> first batch) and
epoch_s from metrics.csv, teardown (last report -> Train returns: the last write of metrics.csv to
the start of finish_run), finish_run (model copy, TensorBoard, curve), and ray.shutdown.
--unpinned starts Ray without crnn.runtime pointing Ray's state API at this Ray's dashboard, and
--no-dashboard without a dashboard at all (as the test fixture once did): both leave Ray Train's
placement-group cleaner to find the cluster on its own.
"""

import argparse
import os
import sys
import tempfile
import time

t0 = time.perf_counter()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--health-check-interval", type=float, help="sets RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--unpinned", action="store_true", help="do not pin RAY_API_SERVER_ADDRESS")
    g.add_argument("--no-dashboard", action="store_true", help="ray.init(include_dashboard=False)")
    a = p.parse_args(argv)
    if a.unpinned:
        os.environ["RAY_API_SERVER_ADDRESS"] = ""  # set (so init_ray leaves it), and empty for Ray
    if a.health_check_interval is not None:
        os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = str(a.health_check_interval)

    import ray

    from crnn import rundir, train as T
    from crnn.config import load_config
    from crnn.runtime import init_ray

    cfg = load_config("quick", overrides={"data.path": a.data, "train.epochs": a.epochs,
                                          "model.conv_filters": [4, 8], "model.lstm_units": 16})
    t1 = time.perf_counter()
    init_ray(log_to_driver=False, **({"include_dashboard": False} if a.no_dashboard else {}))
    t2 = time.perf_counter()
    finish = {}
    orig = rundir.finish_run

    def timed_finish(out, *args, **kw):
        finish["teardown"] = time.time() - os.path.getmtime(os.path.join(out, "metrics.csv"))
        s = time.perf_counter()
        orig(out, *args, **kw)
        finish["s"] = time.perf_counter() - s

    T.finish_run = timed_finish  # where fit looks it up
    with tempfile.TemporaryDirectory() as out:
        T.fit(cfg, out)
        t3 = time.perf_counter()
        rows = rundir.read_metrics_csv(os.path.join(out, "metrics.csv"))
    ray.shutdown()
    t4 = time.perf_counter()
    print(f"imports {t1 - t0:.1f} s | ray.init {t2 - t1:.1f} s | fit {t3 - t2:.1f} s "
          f"(worker setup_s {float(rows[0]['setup_s']):.1f}, epochs {rundir.epoch_summary(rows)['epochs_s']:.1f}, "
          f"teardown {finish.get('teardown', 0):.1f}, finish_run {finish.get('s', 0):.1f}) | "
          f"ray.shutdown {t4 - t3:.1f} s")


if __name__ == "__main__":
    main()
