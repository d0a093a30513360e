import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_local():
    """One embedded local Ray for the whole session (2 CPUs like this machine), shut down after."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": ROOT}})
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def tiny_dataset(ray_local, tmp_path_factory):
    """80 simulated series (ages 10..30, 32x16) published as shards: 66 train / 6 val / 8 test."""
    from crnn.generate import generate

    out = str(tmp_path_factory.mktemp("data") / "pines")
    generate(out, num_series=80, seed=7, shard_size=32)
    return out


def tiny_config(data_path, **overrides):
    """A small, fast CRNN config for tests."""
    from crnn.config import load_config

    base = {"data.path": data_path, "model.conv_filters": [4, 8], "model.lstm_units": 16,
            "train.epochs": 2, "train.batch_size": 8, "train.cpus_per_worker": 0.5}
    base.update(overrides)
    return load_config("quick", overrides=base)
