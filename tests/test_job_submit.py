"""`ray job submit --working-dir . -- python jobs/train.py ...` against a real `ray start --head`."""

import os
import time

import pytest

from cluster_utils import base_env, read_address_file, start_node, stop, submit, wait_for_head, wait_job


@pytest.fixture
def head_node(tmp_path):
    """A head node in its own process group, on free ports; stopped with it afterwards."""
    env = base_env()
    log = tmp_path / "head.log"
    before = read_address_file()
    proc, info = start_node(log, env, num_cpus=2)
    try:
        wait_for_head(proc, info["dashboard"], env, log)
        deadline = time.time() + 30  # `ray start` records its address (just after the head is up) ...
        while read_address_file() == before:
            assert time.time() < deadline, "ray start did not write /tmp/ray/ray_current_cluster"
            time.sleep(0.5)
        yield info["dashboard"], env
    finally:
        stop(proc)
    # ... and stopping it leaves no stale address for later local Rays to chase
    assert read_address_file() == before


def test_ray_job_submit_quick_training(head_node, tiny_dataset, tmp_path):
    address, env = head_node
    out = str(tmp_path / "run")
    submit(address, env, "crnn-quick-test",
           ["python", "jobs/train.py", "--data", tiny_dataset, "--preset", "quick", "--out", out,
            "model.conv_filters=[4,8]", "model.lstm_units=16", "train.epochs=1"])
    status, logs = wait_job(address, "crnn-quick-test", timeout=400)
    assert status == "SUCCEEDED", logs[-4000:]
    assert f"run directory: {out}" in logs
    assert os.path.exists(os.path.join(out, "model", "model.pt"))
    with open(os.path.join(out, "metrics.csv")) as f:
        assert len(f.read().strip().splitlines()) == 2  # header + 1 epoch
