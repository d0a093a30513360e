"""Fixtures, and the tests' cost classes (markers, `make test-fast`):

- ``unit``: no Ray, no subprocess jobs; seconds. Every test without another mark is one, and an
  autouse guard fails a unit test that starts Ray (mark it ``ray``).
- ``ray``: starts an embedded Ray (via a fixture of :data:`RAY_FIXTURES`, or marked by hand).
- ``e2e``: whole jobs, ``ray start`` clusters, S3 servers, subprocess pipelines (marked by hand).

``make test`` runs all of them; ``make test-fast`` (``pytest -m unit``) the unit tests alone.
Helpers to import are in tests/helpers.py, never here.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # before anything imports crnn, jobs, benchmarks or tests.helpers
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# fixtures that start Ray (or a process that does): a test using one, even indirectly, is a `ray` test
RAY_FIXTURES = {"ray_local", "ray_dashboard", "ray_s3", "two_nodes", "tiny_dataset", "s3"}
COST_MARKS = ("unit", "ray", "e2e")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(item.get_closest_marker(m) for m in COST_MARKS):
            continue
        item.add_marker(pytest.mark.ray if RAY_FIXTURES & set(item.fixturenames) else pytest.mark.unit)


@pytest.fixture(autouse=True)
def _unit_tests_start_no_ray(request, monkeypatch):
    """A test marked ``unit`` that reaches ``ray.init`` is mis-classified: fail it, naming the mark."""
    if request.node.get_closest_marker("unit") is None:
        return
    import ray

    def refuse(*_a, **_k):
        raise AssertionError(f"{request.node.nodeid} is a unit test but starts Ray: mark it "
                             "@pytest.mark.ray (or use a Ray fixture)")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.fixture(autouse=True)
def _restore_warning_format(monkeypatch):
    """A job's ``main`` called in a test sets how the process shows warnings
    (``crnn.config.job_warnings``); put Python's back after each test, so pytest's own warning summary
    keeps each warning's file and line."""
    import warnings

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)


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
    from tests.cluster_utils import S3Server

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
