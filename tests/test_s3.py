"""Shared storage for real: generate -> train -> checkpoint -> load -> evaluate, all on ``s3://``.

The S3 server is moto's (``moto_server``) on 127.0.0.1, a real HTTP endpoint reached through
pyarrow's S3 filesystem (so Ray Data and Ray Train's ``storage_path`` use it exactly as they would
use AWS). Processes find it through the standard AWS variables (AWS_ENDPOINT_URL_S3, keys, region),
as cluster nodes find AWS through their instance profile: the URIs stay plain ``s3://bucket/...``.
"""

import json
import os

import numpy as np
import pytest

from tests.cluster_utils import ROOT
from tests.helpers import tiny_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ray_s3(s3):
    """An embedded local Ray whose workers see the S3 variables."""
    import ray

    server, _ = s3
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": ROOT, **server.env}})
    try:
        yield ray
    finally:
        ray.shutdown()


def _files(uri: str) -> dict[str, int]:
    """{path relative to ``uri``: size} of every object under ``uri``."""
    import pyarrow.fs as pafs

    from crnn.storage import resolve

    fs, root = resolve(uri)
    return {i.path[len(root) + 1:]: i.size for i in fs.get_file_info(pafs.FileSelector(root, recursive=True))
            if i.type == pafs.FileType.File}


def test_generate_train_checkpoint_load_on_s3(s3, ray_s3):
    import torch

    from crnn.inference import load_model
    from crnn.evaluate import evaluate
    from crnn.generate import generate
    from crnn.shards import read_numpy, validate
    from crnn.train import fit

    _, bucket = s3
    data, run = f"{bucket}/pines", f"{bucket}/runs/quick"

    card = generate(data, num_series=40, seed=3, shard_size=16)
    assert validate(data)["num_series"] == 40
    assert sum(s["rows"] for s in card["shards"]) == 40 and len(card["shards"]) == 3
    test = read_numpy(data, split="test", columns=["frames"])
    assert test["frames"].shape == (card["splits"]["test"], 5, 32, 16, 3)

    result = fit(tiny_config(data, **{"train.epochs": 1, "train.torch_threads": 1}), run)
    assert result.error is None
    assert result.checkpoint.path.startswith("crnn-test/runs/quick/ray/")  # Train storage on S3
    files = _files(run)
    assert {"config.yaml", "metrics.csv", "model/model.pt", "model/config.yaml"} <= set(files)
    assert "model/optimizer.pt" not in files  # the published model is weights only
    assert any(f.startswith("ray/train/checkpoint_") and f.endswith("/optimizer.pt") for f in files)
    assert not os.path.exists("s3:") and not os.path.exists(os.path.join(ROOT, "s3:"))  # nothing went local

    model, cfg, meta = load_model(f"{run}/model")
    assert meta["epoch"] == 0 and cfg.data.path == data
    x = torch.as_tensor(test["frames"][:2]).permute(0, 1, 4, 2, 3).float()[:, :4] / 255
    with torch.no_grad():
        assert model(x).shape == (2, 4, 3, 32, 16)

    res = evaluate(f"{run}/model", data, out=f"{run}/eval", num_examples=2)
    assert res["files"]["metrics"] == f"{run}/eval/metrics.json"
    from crnn.storage import resolve

    fs, root = resolve(f"{run}/eval/metrics.json")
    with fs.open_input_stream(root) as f:
        stored = json.loads(f.read())
    assert stored["num_series"] == card["splits"]["test"]
    assert np.isfinite(stored["headline"]["model"]["mse"])
    assert "predictions.png" in _files(f"{run}/eval")


def test_failed_overwrite_on_s3_keeps_the_old_dataset(s3):
    """Object stores have no rename: an overwrite stages the new shards and swaps only on success."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from crnn.shards import base_card, publish, read_card
    from crnn.storage import resolve

    bucket = s3[0].create_bucket("crnn-overwrite")
    out = f"{bucket}/ds"

    def write_rows(n):
        def write(directory):
            fs, root = resolve(directory)
            with fs.open_output_stream(f"{root}/shard-00000.parquet") as f:
                pq.write_table(pa.table({"x": list(range(n))}), f)
        return write

    def card(n):
        return base_card(num_series=n, ages=[1, 2], height=2, width=2, splits={"train": n}, source="test")

    publish(write_rows(3), out, card(3))
    with pytest.raises(RuntimeError, match="wrote 5 rows but expected 4"):
        publish(write_rows(5), out, card(4), overwrite=True)  # fails after writing its shards
    assert read_card(out)["num_series"] == 3
    assert set(_files(bucket)) == {"ds/dataset.json", "ds/shard-00000.parquet"}  # no staging left

    publish(write_rows(4), out, card(4), overwrite=True)
    assert read_card(out)["num_series"] == 4
    assert set(_files(bucket)) == {"ds/dataset.json", "ds/shard-00000.parquet"}
