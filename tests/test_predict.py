"""crnn.predict / jobs/predict.py: offline forecasting over Parquet shards with a Ray Data actor pool."""

import os
import shutil

import numpy as np
import pytest
import torch

from crnn.inference import forecast_window, load_model, to_uint8
from crnn.model import rollout
from crnn.predict import predict_dataset
from crnn.shardcheck import ShardError
from crnn.shards import (
    base_card, list_shards, publish, read_card, read_numpy, rows_to_batch, torch_frames, validate,
    write_ray_dataset,
)
from crnn.loop import fit_plain
from tests.helpers import tiny_config

AGES = (10, 15, 20, 25, 30)
H, W, C = 32, 16, 3
N = 20


def _frames(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = np.full((n, len(AGES), H, W, C), 225, np.uint8)
    for i in range(n):
        col = rng.integers(20, 200, 3)
        for k in range(len(AGES)):
            f[i, k, H - 6 - 4 * k:, 4:12] = col
    return np.clip(f.astype(int) + rng.integers(-6, 7, f.shape), 0, 255).astype(np.uint8)


def _split(i: int) -> str:
    return "test" if i % 4 == 3 else "train"


@pytest.fixture(scope="module")
def dataset(ray_local, tmp_path_factory):
    import ray.data

    frames = _frames(N, 1)
    rows = [{"series_id": f"toy-{i:02d}", "seed": 100 + i, "split": _split(i), "ages": list(AGES),
             "frames": frames[i], "params": {}} for i in range(N)]
    batch = rows_to_batch(rows, ())
    ds = ray.data.from_items([{k: v[i] for k, v in batch.items()} for i in range(N)], override_num_blocks=2)
    splits = {s: sum(_split(i) == s for i in range(N)) for s in ("train", "val", "test")}
    card = base_card(num_series=N, ages=AGES, height=H, width=W, channels=C, splits=splits,
                     source="test_predict toy series")
    out = str(tmp_path_factory.mktemp("pred") / "toy")
    publish(lambda d: write_ray_dataset(ds, d), out, card)
    assert len(list_shards(out)) == 2
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pred") / "model")
    fit_plain(tiny_config("unused", **{"train.epochs": 1}), _frames(16, 2), out=out)
    return out


def _by_id(data):
    order = np.argsort(data["series_id"])
    return {k: v[order] for k, v in data.items()}


def test_window_forecasts_match_the_model(dataset, model_dir, tmp_path):
    out = str(tmp_path / "fc")
    card = predict_dataset(model_dir, dataset, out, batch_size=8)
    assert card["kind"] == "forecasts" and card["num_series"] == N and card["ages"] == [15, 20, 25, 30]
    assert card["forecast"]["mode"] == "window" and card["forecast"]["input_ages"] == [10, 15, 20, 25]
    validate(out)  # a regular dataset: readable by every reader in crnn.shards
    got = _by_id(read_numpy(out))
    src = _by_id(read_numpy(dataset))
    assert list(got["series_id"]) == list(src["series_id"])
    assert list(got["source_split"]) == list(src["split"]) == list(got["split"])
    assert got["frames"].shape == (N, 4, H, W, C) and got["frames"].dtype == np.uint8
    assert (got["ages"] == [15, 20, 25, 30]).all()
    model, cfg, _ = load_model(model_dir)
    want = to_uint8(forecast_window(model, src["frames"], 4))
    assert np.abs(got["frames"].astype(int) - want).max() <= 1 and (got["frames"] == want).mean() > 0.99


def _no_leftovers(out):
    parent, name = os.path.split(out)
    return [p for p in os.listdir(parent) if p.startswith(name + ".")] == []


def test_truncated_shard_fails_with_its_name(dataset, model_dir, tmp_path):
    data = str(tmp_path / "data")
    shutil.copytree(dataset, data)
    bad = list_shards(data)[1]
    with open(bad, "r+b") as f:
        f.truncate(os.path.getsize(bad) // 2)
    out = str(tmp_path / "fc")
    with pytest.raises(ShardError, match=os.path.basename(bad)):
        predict_dataset(model_dir, data, out)
    assert not os.path.exists(out) and _no_leftovers(out)


def test_corrupt_pages_fail_with_name_and_keep_previous_output(dataset, model_dir, tmp_path):
    data = str(tmp_path / "data")
    shutil.copytree(dataset, data)
    out = str(tmp_path / "fc")
    shutil.copytree(dataset, out)  # stands for an earlier run's output
    before = read_card(out)
    bad = list_shards(data)[0]
    size = os.path.getsize(bad)
    with open(bad, "r+b") as f:  # footer intact, data pages garbage: only a full read notices
        f.seek(64)
        f.write(np.random.default_rng(0).integers(0, 256, size // 2, dtype=np.uint8).tobytes())
    validate(data)  # the footers still look fine
    with pytest.raises(ShardError, match=os.path.basename(bad)):
        predict_dataset(model_dir, data, out, overwrite=True)
    assert read_card(out) == before and _no_leftovers(out)  # the earlier dataset is untouched


def test_bad_arguments(dataset, model_dir, tmp_path):
    with pytest.raises(ValueError, match="horizon"):
        predict_dataset(model_dir, dataset, str(tmp_path / "a"), horizon=0)
    with pytest.raises(ValueError, match="unknown split"):
        predict_dataset(model_dir, dataset, str(tmp_path / "a"), split="nope")
    with pytest.raises(FileExistsError):
        predict_dataset(model_dir, dataset, dataset)


def test_job_cli_rollout_on_one_split_with_preview(dataset, model_dir, tmp_path, capsys):
    from jobs import predict as job

    out, png = str(tmp_path / "fc"), str(tmp_path / "preview.png")
    rc = job.main(["--model", model_dir, "--data", dataset, "--out", out, "--split", "test", "--horizon", "3",
                   "--preview", png, "--batch-size", "4"])
    n_test = sum(_split(i) == "test" for i in range(N))
    assert rc == 0 and os.path.getsize(png) > 0
    assert f"wrote forecasts of {n_test} series (ages [30, 35, 40])" in capsys.readouterr().out
    card = read_card(out)
    assert card["forecast"]["horizon"] == 3 and card["forecast"]["mode"] == "rollout"
    got = _by_id(read_numpy(out))
    assert set(got["split"]) == {"test"} and got["frames"].shape == (n_test, 3, H, W, C)
    assert (got["ages"] == [30, 35, 40]).all()
    src = _by_id(read_numpy(dataset, split="test"))
    model, _, _ = load_model(model_dir)
    with torch.no_grad():
        want = to_uint8(rollout(model, torch_frames(src["frames"][:, :4]), 3).numpy())
    assert np.abs(got["frames"].astype(int) - want).max() <= 1
    # checked before Ray: a usage error (status 2) naming the path
    assert job.main(["--model", model_dir, "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert str(tmp_path / "missing") in capsys.readouterr().err


def test_plain_list_ages_forecast_like_the_contract(dataset, model_dir, tmp_path):
    """A dataset whose ``ages`` column is a plain list<int32> (no tensor type, another writer's
    output) forecasts exactly like the original (it crashed inside a Ray task, #11)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = str(tmp_path / "data")
    shutil.copytree(dataset, data)
    for shard in list_shards(data):
        t = pq.read_table(shard)
        col = t.column("ages").combine_chunks()
        col = col.storage if isinstance(col, pa.ExtensionArray) else col
        plain = pa.array(col.to_pylist(), pa.list_(pa.int32()))
        t = t.set_column(t.schema.get_field_index("ages"), pa.field("ages", plain.type), plain)
        t = t.set_column(t.schema.get_field_index("split"), pa.field("split", pa.string_view()),
                         t.column("split").cast(pa.string_view()))
        pq.write_table(t, shard)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    predict_dataset(model_dir, dataset, a, split="test", horizon=2, batch_size=8)
    predict_dataset(model_dir, data, b, split="test", horizon=2, batch_size=8)
    got, want = _by_id(read_numpy(b)), _by_id(read_numpy(a))
    assert list(got["series_id"]) == list(want["series_id"]) and len(got["series_id"]) == N // 4
    np.testing.assert_array_equal(got["ages"], want["ages"])
    np.testing.assert_array_equal(got["frames"], want["frames"])


@pytest.mark.parametrize("kind", ["convlstm", "simvp", "timevp"])
def test_every_family_round_trips_through_predict_evaluate_and_serve(dataset, tmp_path, kind):
    """A model directory of each new family, trained one epoch by fit_plain, is rebuilt from the
    directory alone by offline prediction, evaluation and Serve's engine, which all agree."""
    from crnn.evaluate import evaluate
    from crnn.serve import ForecastEngine

    cfg = tiny_config("unused", **{"train.epochs": 1, "model.kind": kind, "model.simvp.hid_s": 8,
                                   "model.simvp.hid_t": 16, "model.simvp.n_t": 2, "model.convlstm.hidden": [8],
                                   "model.timevp.hid_s": 8, "model.timevp.hid_t": 16, "model.timevp.n_t": 2})
    model_path = str(tmp_path / "model")
    fit_plain(cfg, _frames(16, 2), out=model_path)
    model, loaded, _ = load_model(model_path)
    assert loaded.model.kind == kind and type(model).__name__ in ("ConvLSTMForecaster", "SimVP", "TimeVP")
    src = _by_id(read_numpy(dataset))
    want = to_uint8(forecast_window(model, src["frames"], 4))
    assert not (want == src["frames"][:, :4]).all()  # trained: not persistence any more

    out = str(tmp_path / "fc")
    predict_dataset(model_path, dataset, out, batch_size=8)
    got = _by_id(read_numpy(out))["frames"]
    assert np.abs(got.astype(int) - want).max() <= 1

    res = evaluate(model_path, dataset)
    assert res["model_config"]["kind"] == kind and set(res["results"]) >= {"model", "analog"}

    engine = ForecastEngine.load(model_path, device="cpu")
    served = engine.forecast(src["frames"][:3, :4], [2, 2, 2])
    with torch.no_grad():
        ref = to_uint8(rollout(model, torch_frames(src["frames"][:3, :4]), 2).numpy())
    assert np.abs(np.stack(served).astype(int) - ref).max() <= 1
