"""From one machine to a cluster: cluster.yaml against Ray's own schema, the shared-storage guard,
and a real two-node Ray (two `ray start` processes on this machine) running the jobs on S3."""

import copy
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest
import yaml

from tests.cluster_utils import (BIN, ROOT, S3Server, base_env, start_node, stop, submit, wait_for_head,
                           wait_for_nodes, wait_job)

CLUSTER_YAML = os.path.join(ROOT, "cluster.yaml")


def _load() -> dict:
    with open(CLUSTER_YAML) as f:
        return yaml.safe_load(f)


def _prepare_and_validate(config: dict) -> dict:
    """What `ray up` does to the file before touching the cloud (no boto3, no credentials)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


# ----------------------------------------------------------------------------- cluster.yaml
def test_cluster_yaml_matches_rays_schema():
    config = _prepare_and_validate(_load())
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["max_workers"] == 0
    gpu = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) > 0}
    assert any(t["resources"]["GPU"] == 1 for t in gpu.values()), "a single-GPU worker type"
    assert any(t["resources"]["GPU"] > 1 for t in gpu.values()), "a multi-GPU worker type"
    for name, t in gpu.items():  # autoscaling from zero
        assert t["min_workers"] == 0 and t["max_workers"] >= 1, name
        assert "IamInstanceProfile" in t["node_config"], f"{name}: workers need S3 access"
    assert 0 < config["idle_timeout_minutes"] <= 30
    assert config["max_workers"] >= sum(t["max_workers"] for t in gpu.values())


def test_cluster_yaml_pins_this_project():
    """The images run the Ray this project pins, and the nodes install its pinned torch."""
    import ray

    config = _prepare_and_validate(_load())
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        ray_pin = re.search(r'"ray\[[^\]]*\]==([^"]+)"', f.read()).group(1)
    with open(os.path.join(ROOT, "Makefile")) as f:
        torch_pin = re.search(r"^TORCH_SPEC \?= (\S+)", f.read(), re.M).group(1)
    assert ray_pin == ray.__version__
    for image in (config["docker"]["image"], config["docker"]["head_image"]):
        assert image.startswith(f"rayproject/ray:{ray_pin}-py311-"), image
    for cmds in (config["head_setup_commands"], config["worker_setup_commands"]):
        assert any(torch_pin in c for c in cmds), cmds
        assert any("crnn-forecast" in c for c in cmds), cmds
    for remote, local in config["file_mounts"].items():
        assert os.path.exists(os.path.join(ROOT, local)), local
    locations = config["metadata"]["crnn"]
    bucket = locations["bucket"]
    assert bucket.startswith("s3://")
    assert all(v == bucket or v.startswith(bucket + "/") for v in locations.values()), locations


@pytest.mark.parametrize("typo, message", [
    (lambda c: c.update(idle_timout_minutes=c.pop("idle_timeout_minutes")), "'idle_timout_minutes' was unexpected"),
    (lambda c: c["available_node_types"]["gpu_1x"].update(min_worker=0), "'min_worker' was unexpected"),
    (lambda c: c["docker"].update(pull_befor_run=True), "'pull_befor_run' was unexpected"),
    (lambda c: c["available_node_types"]["gpu_1x"].update(resources={"GPU": "one"}), "'one' is not of type"),
])
def test_cluster_yaml_typos_fail(typo, message):
    import jsonschema

    config = _load()
    typo(config)
    with pytest.raises(jsonschema.ValidationError, match=message):
        _prepare_and_validate(config)


# ----------------------------------------------------------------------------- shared storage guard
class _FakeRay:
    def __init__(self, nodes, here="a"):
        self._nodes, self._here = nodes, here

    def is_initialized(self):
        return True

    def nodes(self):
        return self._nodes

    def get_runtime_context(self):
        here = self._here
        return type("Ctx", (), {"get_node_id": lambda self: here})()


def _node(node_id, alive=True, **resources):
    return {"NodeID": node_id, "Alive": alive, "Resources": {"CPU": 4.0, **resources}}


def test_local_storage_refused_on_multinode(monkeypatch):
    import sys

    from crnn.runtime import check_shared_storage

    monkeypatch.delenv("CRNN_ALLOW_LOCAL_STORAGE", raising=False)
    two = _FakeRay([_node("a"), _node("b", GPU=1.0), _node("c", alive=False)])
    monkeypatch.setitem(sys.modules, "ray", two)
    with pytest.raises(ValueError, match=r"2 nodes, but out='runs/x' is a node-local path.*s3://") as e:
        check_shared_storage({"data.path": "s3://b/pines", "out": "runs/x"})
    assert "CRNN_ALLOW_LOCAL_STORAGE=1" in str(e.value)
    with pytest.raises(ValueError, match="are node-local paths"):
        check_shared_storage({"data.path": "data/pines", "out": "file:///tmp/x"})
    check_shared_storage({"data.path": "s3://b/pines", "out": "s3://b/runs/x"})  # URIs: fine
    monkeypatch.setenv("CRNN_ALLOW_LOCAL_STORAGE", "1")  # an NFS mount, say
    check_shared_storage({"data.path": "/mnt/nfs/pines", "out": "/mnt/nfs/runs/x"})
    monkeypatch.delenv("CRNN_ALLOW_LOCAL_STORAGE")

    one = _FakeRay([_node("a"), _node("b", alive=False)])  # one alive node: local paths are fine
    monkeypatch.setitem(sys.modules, "ray", one)
    check_shared_storage({"data.path": "data/pines", "out": "runs/x"})
    # ... unless GPU workers must run elsewhere (a CPU head whose GPU workers autoscale)
    with pytest.raises(ValueError, match="this node has no GPU"):
        check_shared_storage({"data.path": "data/pines", "out": "runs/x"}, use_gpu=True)
    monkeypatch.setitem(sys.modules, "ray", _FakeRay([_node("a", GPU=8.0)]))
    check_shared_storage({"data.path": "data/pines", "out": "runs/x"}, use_gpu=True)


# ----------------------------------------------------------------------------- two real nodes
@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A head and a second node (`ray start --block` each, own process groups, every port free),
    both seeing a local S3 server; (dashboard URL, env, {"node_a"|"node_b": node id}, bucket)."""
    logs = tmp_path_factory.mktemp("cluster")
    node_tmp = tempfile.mkdtemp(prefix="crnn-ray-", dir="/tmp")  # short: Ray's socket paths live in it
    s3 = S3Server(logs)
    env = base_env(**s3.env)
    procs = []
    try:
        bucket = s3.create_bucket("crnn-cluster")
        # 3 CPUs per node and 2 per Train worker: one worker per node, one CPU left for Ray Data
        head, info = start_node(logs / "head.log", env, num_cpus=3, resources={"node_a": 1})
        procs.append(head)
        wait_for_head(head, info["dashboard"], env, logs / "head.log")
        node, _ = start_node(logs / "node.log", env, head_address=info["gcs"], num_cpus=3,
                             resources={"node_b": 1}, temp_dir=node_tmp)
        procs.append(node)
        nodes = wait_for_nodes(info["dashboard"], env, 2, procs)
        ids = {name: n["node_id"] for n in nodes for name in ("node_a", "node_b")
               if name in n.get("resources_total", {})}
        assert len(ids) == 2, nodes
        yield info["dashboard"], env, ids, bucket
    finally:
        for p in reversed(procs):  # the second node first, then the head
            stop(p)
        s3.close()
        shutil.rmtree(node_tmp, ignore_errors=True)


@pytest.mark.e2e
def test_two_node_training_on_s3(two_nodes, tmp_path, monkeypatch):
    dashboard, env, ids, bucket = two_nodes
    data, run = f"{bucket}/pines", f"{bucket}/runs/two-nodes"
    tiny = ["model.conv_filters=[4,8]", "model.lstm_units=16", "train.epochs=1", "train.batch_size=8",
            "train.torch_threads=1"]
    submit(dashboard, env, "crnn-generate", ["python", "jobs/generate.py", "--num-series", "48", "--seed", "5",
                                             "--shard-size", "16", "--out", data])
    status, logs = wait_job(dashboard, "crnn-generate", timeout=240)
    assert status == "SUCCEEDED", logs[-4000:]
    # a run directory on this node's disk is refused (the other node cannot see it); after the
    # dataset exists, since train checks --data before it looks at the cluster
    local_out = str(tmp_path / "local-run")
    submit(dashboard, env, "crnn-local-out", ["python", "jobs/train.py", "--data", data, "--out", local_out,
                                              "--workers", "2", "train.cpus_per_worker=2", *tiny])
    status, logs = wait_job(dashboard, "crnn-local-out", timeout=240)
    assert status == "FAILED", logs[-3000:]
    assert "2 nodes, but out=" in logs and "node-local path" in logs and "CRNN_ALLOW_LOCAL_STORAGE" in logs
    assert not os.path.exists(local_out)

    submit(dashboard, env, "crnn-train", ["python", "jobs/train.py", "--data", data, "--out", run,
                                          "--workers", "2", "train.cpus_per_worker=2", *tiny])
    status, logs = wait_job(dashboard, "crnn-train", timeout=360)
    assert status == "SUCCEEDED", logs[-4000:]
    assert f"run directory: {run}" in logs

    # both nodes trained: one Ray Train worker (DDP rank) on each
    r = subprocess.run([f"{BIN}/ray", "list", "actors", "--address", dashboard, "--format", "json", "--detail",
                        "--filter", "class_name=RayTrainWorker"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    workers = json.loads(r.stdout)
    assert len(workers) == 2, workers
    assert {w["node_id"] for w in workers} == set(ids.values())

    import pyarrow.fs as pafs

    from crnn.storage import resolve

    for k, v in env.items():  # this process reads the results from S3 too
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    fs, root = resolve(run)
    with fs.open_input_stream(f"{root}/metrics.csv") as f:
        rows = f.read().decode().strip().splitlines()
    assert len(rows) == 2  # header + 1 epoch
    assert fs.get_file_info(f"{root}/model/model.pt").type == pafs.FileType.File
