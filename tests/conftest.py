import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def load_benchmark(name: str):
    """A script of benchmarks/ as a module (they are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ray_local():
    """An embedded local Ray (2 CPUs like this machine) per test module, shut down after it, so
    no Ray outlives the module that needed it (tests that start their own cluster stay alone)."""
    import ray

    from crnn.runtime import init_ray

    # init_ray, as the jobs: with the dashboard, Ray's state API answers, so Ray Train's
    # placement-group cleaner stops at once when a run ends instead of holding its teardown 12 s
    address = os.environ.pop("RAY_ADDRESS", None)
    try:
        init_ray(num_cpus=2, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": ROOT}})
    finally:
        if address is not None:
            os.environ["RAY_ADDRESS"] = address
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A local S3 server (moto's: cluster_utils.S3Server) per test module: (server, bucket URI),
    with the AWS variables set in this process (restored afterwards)."""
    from cluster_utils import S3Server

    server = S3Server(tmp_path_factory.mktemp("moto"))
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    try:
        yield server, server.create_bucket("crnn-test")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.close()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """80 simulated series (ages 10..30, 32x16) published as shards: 68 train / 4 val / 8 test.

    Made by the real job in a subprocess (its own short-lived embedded Ray), once per session.
    """
    out = str(tmp_path_factory.mktemp("data") / "pines")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "jobs", "generate.py"), "--num-series", "80",
                        "--seed", "7", "--shard-size", "32", "--out", out, "--num-cpus", "2"],
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, RAY_AUTH_MODE="disabled"))
    assert r.returncode == 0, r.stderr[-3000:]
    return out

def tiny_config(data_path, **overrides):
    """A small, fast CRNN config for tests."""
    from crnn.config import load_config

    base = {"data.path": data_path, "model.conv_filters": [4, 8], "model.lstm_units": 16,
            "train.epochs": 2, "train.batch_size": 8, "train.cpus_per_worker": 0.5}
    base.update(overrides)
    return load_config("quick", overrides=base)
