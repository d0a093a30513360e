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
    base_card, list_shards, publish, read_card, read_numpy, read_ray, rows_to_batch, torch_frames, validate,
    write_ray_dataset,
)
from crnn.loop import fit_plain
from tests.helpers import random_timevp_dir, tiny_config

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


def test_mirror_test_time_augmentation_end_to_end(dataset, model_dir, tmp_path):
    """predict_dataset(tta="hflip"): every forecast is MirrorTTA's, and the output card says so (with
    the axis and a model version of its own). The toy card has no scene: its axis would be the image
    centre; the model (fit_plain, no data summary) records none; the given axis wins."""
    out = str(tmp_path / "fc-tta")
    card = predict_dataset(model_dir, dataset, out, batch_size=8, tta="hflip", mirror_axis=8)
    plain = predict_dataset(model_dir, dataset, str(tmp_path / "fc-plain"), batch_size=8)
    f = card["forecast"]
    assert f["tta"] == "hflip" and f["mirror_axis"] == 8.0 and f["model_version"] == plain["forecast"]["model_version"] + "+hflip"
    assert plain["forecast"]["tta"] == "none" and "mirror_axis" not in plain["forecast"]
    got, src = _by_id(read_numpy(out)), _by_id(read_numpy(dataset))
    want = to_uint8(forecast_window(load_model(model_dir, tta="hflip", mirror_axis=8)[0], src["frames"], 4))
    assert np.abs(got["frames"].astype(int) - want).max() <= 1 and (got["frames"] == want).mean() > 0.99
    assert not np.array_equal(got["frames"], _by_id(read_numpy(str(tmp_path / "fc-plain")))["frames"])


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
    # an embedded Ray too small for the actors and a read/write task hung; now refused before Ray
    for extra, need in ((["--ray-num-cpus", "1"], "2"), (["--ray-num-cpus", "2", "--num-cpus", "1.5"], "2.5"),
                        (["--ray-num-cpus", "3", "--concurrency", "3"], "4")):
        assert job.main(["--model", model_dir, "--data", dataset, "--out", str(tmp_path / "y"), *extra]) == 2
        assert f"give --ray-num-cpus >= {need}" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "y")


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


@pytest.mark.parametrize("kind,extra", [
    ("convlstm", {}),
    ("convlstm", {"model.convlstm.norm": True, "model.convlstm.skip": True, "model.convlstm.hidden": [8, 8]}),
    ("predrnn", {}),
    ("simvp", {}),
    ("timevp", {}),
], ids=["convlstm", "convlstm-norm-skip", "predrnn", "simvp", "timevp"])
def test_every_family_round_trips_through_predict_evaluate_and_serve(dataset, tmp_path, kind, extra):
    """A model directory of each new family, trained one epoch by fit_plain, is rebuilt from the
    directory alone by offline prediction, evaluation and Serve's engine, which all agree."""
    from crnn.evaluate import evaluate
    from crnn.model import FAMILIES
    from crnn.serve import ForecastEngine

    cfg = tiny_config("unused", **{"train.epochs": 1, "model.kind": kind, "model.simvp.hid_s": 8,
                                   "model.simvp.hid_t": 16, "model.simvp.n_t": 2, "model.convlstm.hidden": [8],
                                   "model.predrnn.hidden": [8, 8],
                                   "model.timevp.hid_s": 8, "model.timevp.hid_t": 16, "model.timevp.n_t": 2,
                                   **extra})
    model_path = str(tmp_path / "model")
    fit_plain(cfg, _frames(16, 2), out=model_path)
    model, loaded, _ = load_model(model_path)
    assert loaded.model.kind == kind and type(model) is FAMILIES[kind]
    assert loaded.model == cfg.model                 # the family's own fields come back (norm, skip)
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


# ----------------------------------------------------------------------------- target ages (#14)
TA_DATA = {"layout": "irregular", "age_unit": "years", "age_range": [1.0, 50.0]}


@pytest.fixture(scope="module")
def ta_model_dir(tmp_path_factory):
    """A tiny time-aware model (random weights: its untrained residual head would be persistence at
    every age) that answers ages 1..50 years."""
    return random_timevp_dir(str(tmp_path_factory.mktemp("pred") / "ta-model"), TA_DATA)


@pytest.fixture(scope="module")
def irregular_dataset(ray_local, tmp_path_factory):
    """24 simulated series of 2..4 input frames and 1..2 targets at ages 1..30 (irregular layout)."""
    from crnn.generate import generate
    from crnn.irregular import IrregularSpec

    out = str(tmp_path_factory.mktemp("pred") / "irr")
    generate(out, num_series=24, seed=3, shard_size=12, irregular=IrregularSpec(
        min_inputs=2, max_inputs=4, min_targets=1, max_targets=2, age_min=1, age_max=30, age_step=1))
    return out


def _forecast_at(model_path, frames, ages, targets):
    from crnn.timeaware import forecast_at, time_domain

    model, cfg, meta = load_model(model_path)
    return np.stack(forecast_at(model, time_domain(cfg, meta["data"], meta["metrics"]), frames, ages,
                                [targets] * len(frames)))


def _output(out):
    """An output dataset through crnn.shards' own reader (every card, footer and value checked), by id."""
    got = _by_id(read_numpy(out, columns=["series_id", "ages", "frames"]))
    return got["series_id"], got["ages"], got["frames"]


def test_target_ages_on_a_regular_dataset_grid_model(dataset, model_dir, tmp_path):
    out = str(tmp_path / "fc")
    card = predict_dataset(model_dir, dataset, out, target_ages=[35, 40], split="test", batch_size=3)
    assert card["ages"] == [35, 40] and card["forecast"]["mode"] == "ages" and "ages_dtype" not in card
    assert card["forecast"]["target_ages"] == [35, 40] and card["columns"]["ages"].startswith("tensor int32")
    got, src = _by_id(read_numpy(out)), _by_id(read_numpy(dataset, split="test"))
    assert list(got["series_id"]) == list(src["series_id"]) and (got["ages"] == [35, 40]).all()
    assert got["ages"].dtype == np.int32  # whole target ages: the int32 contract, as before
    want = _forecast_at(model_dir, list(src["frames"][:, :4]), [[10, 15, 20, 25]] * len(src["frames"]), [35, 40])
    assert got["frames"].shape == want.shape and np.abs(got["frames"].astype(int) - want).max() <= 1
    with torch.no_grad():  # a grid model's target ages are steps of its rollout: steps 2 and 3 here
        roll = to_uint8(rollout(load_model(model_dir)[0], torch_frames(src["frames"][:, :4]), 3).numpy())
    assert np.abs(want.astype(int) - roll[:, 1:]).max() <= 1


def test_fractional_target_ages_time_aware_model_float32_ages(dataset, ta_model_dir, tmp_path):
    out = str(tmp_path / "fc")
    card = predict_dataset(ta_model_dir, dataset, out, target_ages="32.5,40", inputs="last", batch_size=4)
    assert card["ages"] == [32.5, 40.0] and card["ages_dtype"] == "float32"
    assert card["columns"]["ages"].startswith("tensor float32 (K,)") and card["forecast"]["input_ages"] == [15, 20, 25, 30]
    # the project's own readers open what it published: card, footers, every value, Ray Data
    assert read_card(out) == card and validate(out) == card
    ids, ages, frames = _output(out)
    assert ages.dtype == np.float32 and len(ids) == N
    assert np.array_equal(ages, np.tile(np.float32([32.5, 40.0]), (N, 1)))
    streamed = read_ray(out, split="test", columns=["series_id", "ages"]).take_batch(N, batch_format="numpy")
    assert streamed["ages"].dtype == np.float32 and len(streamed["ages"]) == sum(_split(i) == "test" for i in range(N))
    assert np.array_equal(streamed["ages"], np.tile(np.float32([32.5, 40.0]), (len(streamed["ages"]), 1)))
    src = _by_id(read_numpy(dataset))
    want = _forecast_at(ta_model_dir, list(src["frames"][:, 1:]), [[15, 20, 25, 30]] * N, [32.5, 40])
    assert (want[:, 0] != want[:, 1]).mean() > 0.05  # each age answered differently: the order is visible
    assert list(ids) == list(src["series_id"]) and np.abs(frames.astype(int) - want).max() <= 1


def test_target_ages_on_an_irregular_dataset(irregular_dataset, ta_model_dir, tmp_path):
    """Each series' inputs are its own first num_inputs frames at its own ages."""
    out = str(tmp_path / "fc")
    card = predict_dataset(ta_model_dir, irregular_dataset, out, target_ages=[31.5, 40], batch_size=5)
    assert card["num_series"] == 24 and card["forecast"]["input_ages"] == "per series"
    src = _by_id(read_numpy(irregular_dataset))
    k = np.where(src["num_inputs"] > 0, src["num_inputs"], src["num_frames"])
    assert len(set(k)) > 1  # ragged: series of several lengths
    frames = [src["frames"][i, :k[i]] for i in range(24)]
    ages = [list(src["ages"][i, :k[i]]) for i in range(24)]
    want = _forecast_at(ta_model_dir, frames, ages, [31.5, 40])
    ids, got_ages, got = _output(out)
    assert list(ids) == list(src["series_id"]) and np.array_equal(got_ages, np.tile([31.5, 40.0], (24, 1)))
    assert np.abs(got.astype(int) - want).max() <= 1 and (got == want).mean() > 0.99


def test_bad_target_ages_are_refused_naming_the_series_before_any_output(irregular_dataset, dataset, model_dir,
                                                                         ta_model_dir, tmp_path, capsys):
    from crnn.predict import plan_predict
    from jobs import predict as job

    src = _by_id(read_numpy(irregular_dataset))
    k = np.where(src["num_inputs"] > 0, src["num_inputs"], src["num_frames"])
    last = np.array([src["ages"][i, k[i] - 1] for i in range(24)])
    target = float(np.sort(last)[-2])  # before or at the last input of some series
    out = str(tmp_path / "fc")
    with pytest.raises(ValueError, match=r"series \S+: target age .* is not after the last input age") as e:
        plan_predict(ta_model_dir, irregular_dataset, out, target_ages=[target])
    bad = e.value.args[0].split("series ")[1].split(":")[0]
    assert bad in set(src["series_id"][last >= target])  # the id named is one that cannot be answered
    # ... and how many of all cannot (every series at its own ages: counted, not only the first)
    assert e.value.args[0].endswith(f"; {int((last >= target).sum())} of 24 series cannot be answered at these "
                                    f"target ages")
    with pytest.raises(ValueError, match="age 80 is far outside the ages the model was trained on"):
        predict_dataset(ta_model_dir, irregular_dataset, out, target_ages=[40, 80])
    with pytest.raises(ValueError, match=r"series toy-\d+ \(and 19 other series with these input ages\): ages "
                                         r"\[10, 15, 20, 25\] -> \[37\] are off a grid model's grid"):
        predict_dataset(model_dir, dataset, out, target_ages=[37])
    # a grid model rolls out at most MAX_HORIZON steps, as --horizon and Serve (it was unbounded here)
    with pytest.raises(ValueError, match=r"series toy-\d+ \(and 19 other series with these input ages\): target age "
                                         r"80 is 11 steps of 5 after the last input age 25; a grid model rolls out "
                                         r"at most 10 steps \(crnn.inference.MAX_HORIZON, as --horizon\)"):
        plan_predict(model_dir, dataset, out, target_ages=[35, 80])
    assert plan_predict(model_dir, dataset, out, target_ages=[30, 75])["out_ages"] == [30, 75]  # 10 steps: the limit
    with pytest.raises(ValueError, match="give one"):
        predict_dataset(model_dir, dataset, out, target_ages=[35], horizon=2)
    plan = plan_predict(model_dir, dataset, out, target_ages=[35])  # a plan is for its own arguments only
    with pytest.raises(ValueError, match=r"plan was made by plan_predict for other arguments "
                                         r"\(\{'target_ages': \[35\]"):
        predict_dataset(model_dir, dataset, out, target_ages=[40], plan=plan)
    with pytest.raises(ValueError, match="irregular dataset.*target ages"):
        predict_dataset(ta_model_dir, irregular_dataset, out)  # window/horizon: regular datasets only
    assert not os.path.exists(out) and _no_leftovers(out)
    # the job: a usage error (status 2) naming the series before Ray starts; flags that exclude each other
    rc = job.main(["--model", ta_model_dir, "--data", irregular_dataset, "--out", out, "--target-ages", f"{target:g}"])
    assert rc == 2 and f"series {bad}" in capsys.readouterr().err and not os.path.exists(out)
    with pytest.raises(SystemExit) as e:
        job.main(["--model", model_dir, "--data", dataset, "--out", out, "--target-ages", "35", "--horizon", "2"])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    rc = job.main(["--model", model_dir, "--data", dataset, "--out", out, "--target-ages", "35,x"])
    assert rc == 2 and "expected numbers" in capsys.readouterr().err


def test_job_cli_target_ages_with_preview(irregular_dataset, ta_model_dir, tmp_path, capsys, monkeypatch):
    import crnn.predict
    from jobs import predict as job

    calls, check = [], crnn.predict.check_series_ages
    monkeypatch.setattr(crnn.predict, "check_series_ages", lambda d, path, *a: calls.append(path) or check(d, path, *a))

    out, png = str(tmp_path / "fc"), str(tmp_path / "preview.png")
    rc = job.main(["--model", ta_model_dir, "--data", irregular_dataset, "--out", out, "--split", "train",
                   "--target-ages", "33,45.5", "--preview", png, "--batch-size", "8"])
    assert rc == 0 and os.path.getsize(png) > 0
    assert "(ages [33.0, 45.5])" in capsys.readouterr().out
    ids, ages, frames = _output(out)
    assert frames.shape[1:] == (2, H, W, C) and np.array_equal(ages[0], [33.0, 45.5])
    assert calls == [irregular_dataset]  # the job's check before Ray is the run's: the ages are read once


def test_forecast_ages_keep_the_source_dtype():
    """A window/horizon forecast of a dataset of real ages ("ages_dtype": "float32") continues its
    ages as float32 (no truncation to whole years); whole ages stay int32."""
    from crnn.predict import forecast_ages

    whole = forecast_ages(np.array([10, 15, 20, 25]), 2)
    assert whole.dtype == np.int32 and whole.tolist() == [30, 35]
    real = forecast_ages(np.float32([[10.5, 13.0, 15.5], [1.25, 1.5, 1.75]]), None)  # (B, T)
    assert real.dtype == np.float32 and real.tolist() == [[13.0, 15.5, 18.0], [1.5, 1.75, 2.0]]
    assert forecast_ages([22.5, 40.0], 1).tolist() == [57.5]


def test_window_forecast_of_a_real_ages_dataset_reads_back_float32(ray_local, model_dir, tmp_path):
    """A dataset of real ages ("ages_dtype": "float32", e.g. a fractional forecasts output) is an
    input like any other: its window forecast continues the ages as float32, and the card's ages are
    exactly what every row holds (the readers check each value against the card)."""
    import ray.data

    ages = [0.1, 0.2, 0.3, 0.4, 0.7]  # not exact in float32: the card and the rows must round alike
    frames = _frames(4, 5)
    rows = [{"series_id": f"r-{i}", "seed": i, "split": "test", "ages": np.float32(ages), "frames": frames[i],
             "height": np.int32(H), "width": np.int32(W), "channels": np.int32(C)} for i in range(4)]
    src = str(tmp_path / "real")
    card = base_card(num_series=4, ages=ages, ages_dtype="float32", height=H, width=W, channels=C,
                     splits={"train": 0, "val": 0, "test": 4}, source="real ages")
    publish(lambda d: write_ray_dataset(ray.data.from_items(rows), d), src, card)
    assert read_numpy(src)["ages"].dtype == np.float32
    out = str(tmp_path / "fc")
    card = predict_dataset(model_dir, src, out, batch_size=2)
    want = np.float32([0.2, 0.3, 0.4, 0.5])  # the next age of each of the first in_frames=4 inputs
    assert card["ages_dtype"] == "float32" and np.array_equal(np.float32(card["ages"]), want)
    assert card["forecast"]["input_ages"] == [0.1, 0.2, 0.3, 0.4]
    got = read_numpy(out)
    assert got["ages"].dtype == np.float32 and np.array_equal(got["ages"], np.tile(want, (4, 1)))


# ----------------------------------------------------------------------------- age units (#14 leftover)
def _with_unit(path: str, dest, unit) -> str:
    """A copy of the dataset ``path`` whose card counts its ages in ``unit`` (None: no age_unit), shards unchanged."""
    import json

    shutil.copytree(path, dest)
    card_path = os.path.join(dest, "dataset.json")
    with open(card_path) as f:
        card = {k: v for k, v in json.load(f).items() if k != "age_unit"}
    with open(card_path, "w") as f:
        json.dump(card if unit is None else {**card, "age_unit": unit}, f)
    return str(dest)


@pytest.mark.parametrize("was, now, ok", [
    ("years", "years", True), ("Years", " year ", True), (None, "years", True), ("years", None, True),
    ("months", "Month", True), ("years", "months", False), ("months", "years", False), (None, "months", False),
    ("months", None, False), ("m", "ms", False), ("days", "weeks", False),
])
def test_check_data_unit_compares_a_time_aware_models_unit_with_the_datasets(was, now, ok):
    from crnn.config import load_config
    from crnn.timeaware import check_data_unit

    model_data = {**TA_DATA, "age_unit": was} if was is not None else {k: v for k, v in TA_DATA.items()
                                                                       if k != "age_unit"}
    card = {"ages": [10, 15]} if now is None else {"ages": [10, 15], "age_unit": now}
    if ok:
        check_data_unit("runs/m", load_config("timevp-fast"), model_data, card, "data/d")
    else:
        with pytest.raises(ValueError) as e:
            check_data_unit("runs/m", load_config("timevp-fast"), model_data, card, "data/d")
        msg = str(e.value)
        assert "model runs/m is time-aware and reads ages in" in msg and "data/d counts them in" in msg
        assert repr(was or "years") in msg and repr(now or "years") in msg
        assert ("its directory records no unit: years assumed" in msg) == (was is None)
        assert ("its card records no unit: years assumed" in msg) == (now is None)
        # no advice to re-ingest the same files with another --age-unit (that relabels, not converts)
        assert "ingest does not convert ages" in msg and f"or a model trained on ages in {now or 'years'!r}" in msg
    check_data_unit("runs/m", load_config("convlstm-fast"), model_data, card, "data/d")  # a grid model: any unit


def test_a_time_aware_model_refuses_a_dataset_in_another_age_unit(irregular_dataset, dataset, ta_model_dir,
                                                                  model_dir, tmp_path, capsys):
    """A model that counts years asked about a dataset counting months ("what at 18 months?") would
    answer at 18 years: predict and evaluate (regular and time-aware, functions and jobs) refuse it
    before any work, naming the model, the dataset and both units; nothing is written at --out. A grid
    model reads no ages (passes), and a model trained on months forecasts months data, the output card
    keeping the unit."""
    from crnn.evaluate import check_evaluate, evaluate
    from crnn.predict import plan_predict
    from crnn.timeeval import check_time_evaluate, evaluate_time
    from jobs import evaluate as eval_job, predict as pred_job

    irr_months = _with_unit(irregular_dataset, tmp_path / "irr-months", "months")
    reg_months = _with_unit(dataset, tmp_path / "reg-months", "months")
    out = str(tmp_path / "fc")
    checks = [lambda: plan_predict(ta_model_dir, irr_months, out, target_ages=[31.5]),
              lambda: plan_predict(ta_model_dir, reg_months, out, target_ages=[32.5]),
              lambda: plan_predict(ta_model_dir, reg_months, out),                      # a window forecast too
              lambda: check_time_evaluate(ta_model_dir, irr_months),
              lambda: evaluate_time(ta_model_dir, irr_months),
              lambda: check_evaluate(ta_model_dir, reg_months),
              lambda: evaluate(ta_model_dir, reg_months)]
    for i, check in enumerate(checks):
        with pytest.raises(ValueError) as e:
            check()
        msg = f"check {i}: {e.value}"
        assert f"model {ta_model_dir} is time-aware and reads ages in 'years'" in msg, msg
        assert "counts them in 'months'" in msg and ("irr-months" in msg or "reg-months" in msg)
    for argv in (["--data", irr_months, "--target-ages", "31.5"], ["--data", reg_months]):
        assert pred_job.main(["--model", ta_model_dir, "--out", out, *argv]) == 2
        err = capsys.readouterr().err
        assert "'years'" in err and "'months'" in err and argv[1] in err, err
    for data in (irr_months, reg_months):
        assert eval_job.main(["--model", ta_model_dir, "--data", data, "--out", str(tmp_path / "ev")]) == 2
        assert "counts them in 'months'" in capsys.readouterr().err
    assert not os.path.exists(out) and not os.path.exists(tmp_path / "ev")
    # a grid model reads no ages: the unit does not matter
    assert plan_predict(model_dir, reg_months, out)["num_series"] == N
    assert check_evaluate(model_dir, reg_months) == "test"
    # the same data in the model's unit (or none, read as years) passes; a months model takes months data
    assert "age_unit" not in read_card(dataset)
    plan_predict(ta_model_dir, dataset, out, target_ages=[32.5])
    plan_predict(ta_model_dir, _with_unit(dataset, tmp_path / "reg-years", " Years"), out, target_ages=[32.5])
    assert check_evaluate(ta_model_dir, dataset) == "test"
    months_model = random_timevp_dir(str(tmp_path / "months-model"), {**TA_DATA, "age_unit": " Months"})
    card = predict_dataset(months_model, irr_months, out, target_ages=[31.5], split="test", batch_size=8)
    assert card["age_unit"] == "months" and read_card(out)["age_unit"] == "months"
    with pytest.raises(ValueError, match=f"model {months_model} is time-aware and reads ages in 'Months', but "
                                         f"{irregular_dataset} counts them in 'years': "):  # as written, unpadded
        plan_predict(months_model, irregular_dataset, str(tmp_path / "fc2"), target_ages=[31.5])


def test_forecast_cards_keep_the_source_age_unit(dataset, model_dir, tmp_path):
    """The forecasts' ages count in the source's unit: the output card says so (years when the source
    card has none), so a model trained or scored on the forecasts reads them as the source's ages."""
    assert predict_dataset(model_dir, dataset, str(tmp_path / "a"), split="test", batch_size=8)["age_unit"] == "years"
    weeks = _with_unit(dataset, tmp_path / "weeks", "weeks")
    card = predict_dataset(model_dir, weeks, str(tmp_path / "b"), split="test", horizon=2, batch_size=8)
    assert card["age_unit"] == "weeks" and validate(str(tmp_path / "b"))["age_unit"] == "weeks"


def test_a_time_aware_models_window_is_at_the_datasets_ages_and_its_rollout_needs_its_grid(
        dataset, ta_model_dir, model_dir, tmp_path, capsys):
    """model(frames) reads frame t of a time-aware model at model.timevp.grid_start + t * grid_step
    whatever the dataset says: --inputs last (ages 15..30) was forecast as ages 10..25 and labelled 35.
    The window forecast now asks it at the inputs' own ages (step 3 is forecast_at's 15..30 -> 35, up
    to uint8 rounding); the rollout (--horizon), which feeds its forecasts back as grid frames, is
    refused before any work, naming both sets of ages and --target-ages; grid models read no ages."""
    from crnn.predict import plan_predict
    from crnn.timeaware import forecast_at, time_domain
    from jobs import predict as pred_job

    out = str(tmp_path / "fc")
    with pytest.raises(ValueError) as e:
        plan_predict(ta_model_dir, dataset, out, inputs="last", horizon=2)
    msg = str(e.value)
    assert f"model {ta_model_dir} is time-aware: the rollout (--horizon)" in msg and "grid ages [10, 15, 20, 25]" in msg
    assert "inputs are at ages [15, 20, 25, 30]" in msg and "--target-ages" in msg
    assert pred_job.main(["--model", ta_model_dir, "--data", dataset, "--out", out, "--inputs", "last",
                          "--horizon", "2"]) == 2
    assert "grid ages [10, 15, 20, 25]" in capsys.readouterr().err and not os.path.exists(out)
    plan = plan_predict(ta_model_dir, dataset, out, inputs="last")
    assert plan["out_ages"] == [20, 25, 30, 35] and plan["window_ages"] == [15, 20, 25, 30, 35]
    assert plan_predict(ta_model_dir, dataset, out)["window_ages"] is None               # at the grid: model(x)
    assert plan_predict(ta_model_dir, dataset, out, horizon=2)["out_ages"] == [30, 35]  # at the grid: fine
    assert plan_predict(model_dir, dataset, out, inputs="last")["window_ages"] is None   # a grid model
    done = str(tmp_path / "fc-last")
    card = predict_dataset(ta_model_dir, dataset, done, split="test", inputs="last", batch_size=8)
    assert card["ages"] == [20, 25, 30, 35]
    got = read_numpy(done)
    src = read_numpy(dataset, split="test")
    model, cfg, meta = load_model(ta_model_dir)
    order = np.argsort(got["series_id"])
    want = np.stack(forecast_at(model, time_domain(cfg, meta["data"]), list(src["frames"][:, 1:5]),
                                [[15, 20, 25, 30]] * len(src["frames"]), [[35]] * len(src["frames"])))
    diff = np.abs(got["frames"][order][:, 3].astype(int) - want[np.argsort(src["series_id"])][:, 0].astype(int))
    assert diff.max() <= 1, diff.max()
    # a time-aware model on another grid (1, 2, 3, ...): its window at the dataset's ages too
    other = random_timevp_dir(str(tmp_path / "grid1"), TA_DATA, **{"model.timevp.grid_start": 1.0,
                                                                    "model.timevp.grid_step": 1.0})
    assert plan_predict(other, dataset, out)["window_ages"] == [10, 15, 20, 25, 30]
    with pytest.raises(ValueError, match=r"grid ages \[1, 2, 3, 4\] \(model.timevp.grid_start 1, grid_step 1\), "
                                         r"but \S+'s inputs are at ages \[10, 15, 20, 25\]"):
        plan_predict(other, dataset, out, horizon=1)
    assert plan_predict(other, dataset, out, target_ages=[32.5])["out_ages"] == [32.5]


def test_the_window_of_unevenly_spaced_ages_forecasts_the_next_frames_age(ray_local, ta_model_dir, model_dir,
                                                                          tmp_path):
    """The second review's input: ages 10, 12, 16, 24, 40. The window's last step was labelled (and a
    time-aware model asked at) the last input age plus the last spacing, 32, though the dataset holds
    the next frame at 40 (which the evaluation scores). It is 40 now, in the card and every row, for
    a time-aware model; with --inputs last the next frame is unknown: the last spacing goes on (56). A
    grid model's last step is the next step of its grid: 32 stays its label."""
    import ray.data

    from crnn.predict import plan_predict
    from crnn.timeaware import forecast_at, time_domain

    ages = (10, 12, 16, 24, 40)
    frames = _frames(6, 2)
    rows = [{"series_id": f"u-{i}", "seed": 200 + i, "split": "test", "ages": list(ages), "frames": frames[i],
             "params": {}} for i in range(6)]
    batch = rows_to_batch(rows, ())
    ds = ray.data.from_items([{k: v[i] for k, v in batch.items()} for i in range(6)], override_num_blocks=1)
    uneven = str(tmp_path / "uneven")
    publish(lambda d: write_ray_dataset(ds, d), uneven,
            base_card(num_series=6, ages=ages, height=H, width=W, channels=C, splits={"test": 6}, source="uneven"))
    plan = plan_predict(ta_model_dir, uneven, str(tmp_path / "p"))
    assert plan["out_ages"] == [12, 16, 24, 40] and plan["window_ages"] == [10, 12, 16, 24, 40]
    last = plan_predict(ta_model_dir, uneven, str(tmp_path / "p"), inputs="last")
    assert last["out_ages"] == [16, 24, 40, 56] and last["window_ages"] == [12, 16, 24, 40, 56]
    assert plan_predict(model_dir, uneven, str(tmp_path / "p"))["out_ages"] == [12, 16, 24, 32]  # a grid model
    out = str(tmp_path / "fc")
    assert predict_dataset(ta_model_dir, uneven, out, batch_size=4)["ages"] == [12, 16, 24, 40]
    got = read_numpy(out)
    assert (got["ages"] == [12, 16, 24, 40]).all()
    model, cfg, meta = load_model(ta_model_dir)
    want = np.stack(forecast_at(model, time_domain(cfg, meta["data"]), list(frames[:, :4]), [list(ages[:4])] * 6,
                                [[40]] * 6))[:, 0]
    order = np.argsort(got["series_id"])
    assert np.abs(got["frames"][order][:, 3].astype(int) - want.astype(int)).max() <= 1


def test_the_evaluation_asks_a_time_aware_model_off_its_grid_at_the_datasets_ages(dataset, tmp_path):
    """The last note's leftover: a time-aware model whose grid (1, 2, 3, ...) is not the dataset's
    ages (10, 15, 20, 25 -> 30) was refused by the regular evaluation. It is now scored at the
    dataset's ages: each step is what forecast_at answers from the frames so far (checked at age 30,
    and for ages 20 and 25), the grid path stays bit-identical, and ages the model cannot answer
    (far outside its training range) are refused before any work, naming the dataset."""
    from crnn.evaluate import check_evaluate, evaluate
    from crnn.metrics import per_age_metrics
    from crnn.timeaware import AgeError, AtAges, forecast_at, time_domain

    other = random_timevp_dir(str(tmp_path / "grid1"), TA_DATA, seed=3, **{"model.timevp.grid_start": 1.0,
                                                                            "model.timevp.grid_step": 1.0})
    assert check_evaluate(other, dataset) == "test"
    result = evaluate(other, dataset)
    model, cfg, meta = load_model(other)
    test = read_numpy(dataset, split="test")
    frames, ages = test["frames"], [float(a) for a in AGES]
    domain = time_domain(cfg, meta["data"])
    for k in (2, 3, 4):                                    # the forecast of age ages[k] from frames 0..k-1
        at = np.stack(forecast_at(model, domain, list(frames[:, :k]), [ages[:k]] * len(frames), [[ages[k]]] * len(frames)))
        want = per_age_metrics(at.transpose(0, 1, 4, 2, 3).astype(np.float64),
                               frames[:, k:k + 1].transpose(0, 1, 4, 2, 3).astype(np.float64), [AGES[k]], scale=1.0)
        got = result["results"]["model"][str(AGES[k])]["mse"]   # forecast_at rounds to uint8: ~1/12 apart
        assert got == pytest.approx(want[AGES[k]]["mse"], abs=0.3), (k, got, want)
    on_grid = forecast_window(model, frames, 4)[:, 3].astype(np.float64) * 255  # read as ages 1..4 -> 5
    assert abs(((on_grid - frames[:, 4].transpose(0, 3, 1, 2)) ** 2).mean() - result["results"]["model"]["30"]["mse"]) > 3
    mirrored = evaluate(other, dataset, tta="hflip")       # the mirror TTA wraps the model at the dataset's ages
    assert mirrored["tta"] == "hflip" and mirrored["results"]["model"]["30"]["mse"] != result["results"]["model"]["30"]["mse"]
    x = torch.rand(2, 4, 3, 32, 16)
    with torch.no_grad():                                  # at the grid ages: what model(x) answers, exactly
        assert torch.equal(AtAges(model, [1, 2, 3, 4, 5])(x), model(x))
        assert not torch.allclose(AtAges(model, ages)(x), model(x))
    with pytest.raises(ValueError, match=r"ages of shape \(4,\) for 4 frames; expected 5"):
        AtAges(model, [1, 2, 3, 4])(x)
    with pytest.raises(ValueError, match="strictly increasing"):
        model.forward_grid(x, [1, 2, 2, 4, 5])
    young = {**TA_DATA, "age_range": [1.0, 8.0]}  # accepted up to 9.75 off the 1, 2, 3 grid; 13 on the 10, 15 one
    far = random_timevp_dir(str(tmp_path / "young"), young, **{"model.timevp.grid_start": 1.0,
                                                                "model.timevp.grid_step": 1.0})
    on_grid = random_timevp_dir(str(tmp_path / "young-grid"), young)  # the dataset's ages are its grid: checked too
    for m, age in ((far, 10), (on_grid, 15)):
        for check in (lambda: check_evaluate(m, dataset), lambda: evaluate(m, dataset)):
            with pytest.raises(AgeError, match=rf"{dataset} \(a regular dataset; model {m}\): age {age} is far outside"):
                check()
    for grid in ({}, {"model.timevp.grid_start": 1.0, "model.timevp.grid_step": 1.0}):  # one input frame: a window
        one = random_timevp_dir(str(tmp_path / f"one{len(grid)}"), TA_DATA, **{"data.in_frames": 1, **grid})
        assert check_evaluate(one, dataset) == "test" and list(evaluate(one, dataset)["results"]["model"]) == ["15"]


@pytest.mark.parametrize("text, want", [
    ("30,35,40", [30.0, 35.0, 40.0]), (" 32.5 , 40 ", [32.5, 40.0]), ("1e1,18", [10.0, 18.0]), ([18, 24.5], [18.0, 24.5]),
    ("18,,24", None), ("abc", None), ("", None), ("40,30", None), ("30,30", None),
    ("nan", None), ("inf", None), ([True, 2], None),
])
def test_target_ages_are_read_as_numbers_and_mistakes_refused(text, want):
    """--target-ages: numbers as typed (Python's number syntax, as every numeric option); empty
    items, words, unsorted or repeated ages and non-finite ones are refused, naming the value."""
    from crnn.predict import parse_target_ages

    if want is not None:
        assert parse_target_ages(text) == want
        return
    with pytest.raises(ValueError, match="target_ages="):
        parse_target_ages(text)
