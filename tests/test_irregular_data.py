"""Irregular series (issue #14, data layer): generation with per-series ages, the padded layout,
its checks, the readers and ingest of folders holding different sets of ages."""

import json
import math
import os
import shutil

import numpy as np
import pytest

from crnn import irregular as irr
from crnn.shardcheck import ShardError
from crnn.shards import read_card, read_numpy

SPEC = irr.IrregularSpec(min_inputs=2, max_inputs=4, min_targets=1, max_targets=2, age_min=1, age_max=30)


# ----------------------------------------------------------------------------- unit (no Ray)
def test_sample_is_seeded_sorted_and_within_the_spec():
    seen = set()
    for i in range(200):
        ages, n_in = SPEC.sample(7, i)
        assert (ages, n_in) == SPEC.sample(7, i)               # reproducible
        assert 2 <= n_in <= 4 and 1 <= len(ages) - n_in <= 2
        assert all(b > a for a, b in zip(ages, ages[1:]))      # strictly increasing: targets after inputs
        assert 1 <= ages[0] and ages[-1] <= 30 and all(float(a).is_integer() for a in ages)
        seen.add(ages)
    assert len(seen) > 150                                     # really irregular
    assert SPEC.sample(8, 0) != SPEC.sample(7, 0) or SPEC.sample(8, 1) != SPEC.sample(7, 1)


def test_spec_refuses_bad_options():
    for low in (0, 1):  # one input frame: no model takes it, training could not use the series
        with pytest.raises(ValueError, match=r"need 2 <= min_inputs .* got %d\.\.6" % low):
            irr.IrregularSpec(min_inputs=low).check(50)
    with pytest.raises(ValueError, match="MAX_AGE"):
        irr.IrregularSpec(age_max=60).check(50)
    with pytest.raises(ValueError, match="fewer than max_inputs"):
        irr.IrregularSpec(age_min=1, age_max=5).check(50)
    from crnn.generate import check_generate

    with pytest.raises(ValueError, match="whole years"):
        check_generate(4, 4, (10,), 16, 8, "pines", irr.IrregularSpec(age_step=0.5))
    check_generate(4, 4, (10,), 16, 8, "shapes", irr.IrregularSpec(age_step=0.5))  # shapes: real ages


def _batch():
    rows = [{"series_id": f"s{i}", "seed": i, "split": "train", "ages": ages, "num_inputs": 1,
             "frames": np.full((len(ages), 4, 2, 3), 7 + i, np.uint8)}
            for i, ages in enumerate([[1.0, 2.5], [3.0, 4.0, 9.0]])]
    return irr.rows_to_batch(rows, 4, ())


CARD = {"max_frames": 4, "age_range": [0.0, 10.0]}


def test_rows_to_batch_pads_and_check_values_accepts_it():
    b = _batch()
    assert b["frames"].shape == (2, 4, 4, 2, 3) and b["ages"].dtype == np.float32
    assert b["ages"].tolist() == [[1.0, 2.5, 0, 0], [3.0, 4.0, 9.0, 0]]
    assert b["num_frames"].tolist() == [2, 3] and not b["frames"][0, 2:].any()
    assert irr.frame_mask(b["num_frames"], 4).tolist() == [[1, 1, 0, 0], [1, 1, 1, 0]]
    irr.check_values(b, "x.parquet", CARD)


@pytest.mark.parametrize("rows", [[], [0], [1]])
def test_check_values_takes_any_number_of_rows_including_none(rows):
    """A shard with no row of the split read (its rows filtered out first) is checked as an empty
    batch: was a numpy reshape error on the zero-size frames (read_numpy of the test split)."""
    b = {k: v[rows] for k, v in _batch().items()}
    irr.check_values(b, "x.parquet", CARD)
    assert b["frames"].shape[0] == len(rows)


@pytest.mark.parametrize("change, column", [
    (lambda b: b["ages"].__setitem__((1, 1), 2.0), "ages"),          # decreasing
    (lambda b: b["ages"].__setitem__((1, 0), 11.0), "ages"),         # outside age_range
    (lambda b: b["ages"].__setitem__((0, 3), 5.0), "ages"),          # padding not 0
    (lambda b: b["frames"].__setitem__((0, 2), 1), "frames"),        # an image where the mask says none
    (lambda b: b["num_frames"].__setitem__(0, 5), "num_frames"),     # more than max_frames
    (lambda b: b["num_inputs"].__setitem__(1, 3), "num_inputs"),     # no target left
])
def test_check_values_names_the_file_and_column(change, column):
    b = _batch()
    change(b)
    with pytest.raises(ShardError, match=rf"x\.parquet: column '{column}'"):
        irr.check_values(b, "x.parquet", CARD)


def test_card_checks():
    from crnn.shardcheck import check_card

    card = {"num_series": 0, "height": 1, "width": 1, "channels": 3, "splits": {}, "shards": [],
            "layout": "irregular", "max_frames": 4, "age_unit": "years", "age_range": [1.0, 9.0]}
    check_card(card, "c.json")  # no ``ages`` list needed
    with pytest.raises(ShardError, match="c.json: field 'age_range'"):
        check_card({**card, "age_range": [9, 1]}, "c.json")
    with pytest.raises(ShardError, match="c.json: field 'layout'"):
        check_card({**card, "layout": "ragged"}, "c.json")
    # age_unit (the second review: a blank or non-string unit passed, then a model recorded 'None')
    regular = {k: v for k, v in card.items() if k not in ("layout", "max_frames", "age_unit", "age_range")}
    regular["ages"] = [10, 15]
    check_card(regular, "c.json")                                  # absent on the regular grid: years
    for c in (card, regular):
        check_card({**c, "age_unit": "months"}, "c.json")
        for unit in ("", "  ", None, 5):
            with pytest.raises(ShardError, match="c.json: field 'age_unit' is .*expected the unit of the ages"):
                check_card({**c, "age_unit": unit}, "c.json")
    with pytest.raises(ShardError, match="c.json: field 'age_unit' is missing"):
        check_card({k: v for k, v in card.items() if k != "age_unit"}, "c.json")


# ----------------------------------------------------------------------------- with Ray
@pytest.fixture(scope="module")
def irr_dataset(ray_local, tmp_path_factory):
    from crnn.generate import generate

    out = str(tmp_path_factory.mktemp("irr") / "pines-irr")
    card = generate(out, num_series=12, seed=3, height=16, width=8, shard_size=12, irregular=SPEC)
    return out, card


def test_generate_irregular_round_trip(irr_dataset):
    out, card = irr_dataset
    assert card["layout"] == "irregular" and "ages" not in card and card["max_frames"] == 6
    assert card["age_unit"] == "years" and card["age_range"] == [1.0, 30.0]
    assert card["irregular"]["min_inputs"] == 2 and "num_frames" in card["columns"]
    data = read_numpy(out)
    n = data["num_frames"]
    assert data["ages"].shape == (12, 6) and data["ages"].dtype == np.float32
    assert data["frames"].shape == (12, 6, 16, 8, 3)
    for i in range(12):
        ages, n_in = SPEC.sample(3, i)                         # the seed decides the ages
        assert data["ages"][i, :n[i]].tolist() == list(ages) and data["num_inputs"][i] == n_in
        assert not data["ages"][i, n[i]:].any() and not data["frames"][i, n[i]:].any()
        assert data["frames"][i, :n[i]].reshape(n[i], -1).any(axis=1).all()
    assert len(set(n.tolist())) > 1                            # a variable number of frames
    # the pixels are the simulator's at those ages
    from crnn import pine

    _, frames = pine.make_series(int(data["seed"][0]), ages=[int(a) for a in data["ages"][0, :n[0]]],
                                 height=16, width=8)
    np.testing.assert_array_equal(data["frames"][0, :n[0]], frames)


def test_read_numpy_of_a_split_some_shards_lack(ray_local, tmp_path):
    """Shards of 4 series: most hold no test series (the test split is the paper's indices), so the
    split filter leaves them empty -- read_numpy returns just the split's rows, every column."""
    from crnn.generate import generate

    out = str(tmp_path / "irr4")
    card = generate(out, num_series=12, seed=3, height=16, width=8, shard_size=4, irregular=SPEC)
    for split, n in card["splits"].items():
        data = read_numpy(out, split=split)
        assert len(data["frames"]) == n and set(data["split"]) == {split}
        assert data["frames"].shape[1:] == (card["max_frames"], 16, 8, 3)
    assert len(read_numpy(out, split="val", columns=["ages"])["ages"]) == card["splits"].get("val", 0)


def test_read_ray_streams_irregular(irr_dataset):
    from crnn.shards import read_ray

    out, _ = irr_dataset
    ref = read_numpy(out)
    rows = sorted(read_ray(out).take_all(), key=lambda r: r["series_id"])
    assert [r["series_id"] for r in rows] == sorted(ref["series_id"].tolist())
    order = np.argsort(ref["series_id"])
    np.testing.assert_array_equal(np.stack([r["ages"] for r in rows]), ref["ages"][order])
    np.testing.assert_array_equal(np.stack([r["frames"] for r in rows]), ref["frames"][order])
    assert [r["num_frames"] for r in rows] == ref["num_frames"][order].tolist()
    # a split and a projection: the columns asked for, rows of that split only
    ds = read_ray(out, split="train", columns=["series_id", "ages", "num_frames", "num_inputs", "frames"])
    batch = next(iter(ds.iter_batches(batch_size=4, batch_format="numpy")))
    assert set(batch) == {"series_id", "ages", "num_frames", "num_inputs", "frames"}
    assert batch["ages"].shape == (len(batch["series_id"]), 6)
    t = irr.torch_series(batch)
    assert t["frames"].shape == (len(batch["series_id"]), 6, 3, 16, 8) and float(t["frames"].max()) <= 1.0
    assert t["mask"].sum(1).tolist() == batch["num_frames"].tolist()
    assert t["ages"].dtype.is_floating_point and t["num_inputs"].tolist() == batch["num_inputs"].tolist()


def _rewrite(out, tmp_path, change):
    """A copy of the dataset whose only shard has ``change`` applied to its columns."""
    import ray.data

    from crnn.shards import list_shards, write_ray_dataset

    bad = str(tmp_path / "bad")
    shutil.copytree(out, bad)
    data = read_numpy(bad)
    change(data)
    ds = ray.data.from_items([{k: v[i] for k, v in data.items()} for i in range(len(data["seed"]))],
                             override_num_blocks=1)
    write_ray_dataset(ds, str(tmp_path / "w"))
    (shard,) = list_shards(bad)
    shutil.copy(os.path.join(tmp_path / "w", os.path.basename(shard)), shard)
    return bad, shard


def _decreasing(d):
    d["ages"][0, :2] = d["ages"][0, 1::-1]


def _frames_beyond_mask(d):
    d["num_frames"][0] -= 1
    d["num_inputs"][0] = min(d["num_inputs"][0], d["num_frames"][0] - 1)
    d["ages"][0, d["num_frames"][0]] = 0


@pytest.mark.parametrize("change, column", [(_decreasing, "ages"), (_frames_beyond_mask, "frames")])
def test_bad_irregular_shard_names_file_and_column(irr_dataset, tmp_path, change, column):
    from crnn.shards import read_ray

    bad, shard = _rewrite(irr_dataset[0], tmp_path, change)
    with pytest.raises(ShardError, match=rf"{shard}: column '{column}'"):
        read_numpy(bad)
    with pytest.raises(Exception, match=rf"column '{column}'") as e:
        read_ray(bad).take_all()
    assert shard in str(e.value)


def _footer_case(column, values):
    def change(t):
        import pyarrow as pa

        i = t.schema.get_field_index(column)
        return t.set_column(i, t.schema.field(i), pa.array(values(t.num_rows), type=t.schema.field(i).type))
    return change


@pytest.mark.parametrize("column, values, match", [
    ("height", lambda n: [99] * n, r"column 'height' has values 99\.\.99, but the frames are 16x8x3"),
    ("width", lambda n: [8] * (n - 1) + [7], r"column 'width' has values 7\.\.8"),
    ("split", lambda n: [None] + ["train"] * (n - 1), r"column 'split' has 1 null values"),
    ("split", lambda n: ["train"] * (n - 1) + ["holdout"], r"column 'split' has the value 'holdout'"),
    ("num_frames", lambda n: [None] * n, r"column 'num_frames' has \d+ null values"),
    ("num_frames", lambda n: [12] + [3] * (n - 1), r"column 'num_frames' has values 3\.\.12; expected 2\.\.6"),
])
def test_irregular_footer_checks_name_file_and_column(irr_dataset, tmp_path, column, values, match):
    """The footer statistics of an irregular shard get the regular layout's checks (sizes, nulls,
    splits) plus num_frames' range: a ShardError naming the shard, before any frame is decoded."""
    import pyarrow.parquet as pq

    from crnn.shards import list_shards, validate

    bad = str(tmp_path / "bad")
    shutil.copytree(irr_dataset[0], bad)
    (shard,) = list_shards(bad)
    pq.write_table(_footer_case(column, values)(pq.read_table(shard)), shard)
    with pytest.raises(ShardError, match=rf"{shard}: " + match):
        validate(bad)


# ----------------------------------------------------------------------------- ingest
def _photos(root, ages_per_series):
    from PIL import Image

    for k, (name, ages) in enumerate(ages_per_series.items()):
        d = root / name
        d.mkdir(parents=True)
        for a in ages:
            rng = np.random.default_rng(10 * k + a)
            Image.fromarray(rng.integers(1, 256, (20, 10, 3), dtype=np.uint8)).save(d / f"age_{a}.png")


def test_ingest_folders_with_different_ages(ray_local, tmp_path):
    from crnn.ingest import ingest

    _photos(tmp_path / "p", {"cat": (2, 5, 9), "dog": (1, 3, 6, 12, 18), "fern": (4, 8), "lone": (7,)})
    out = str(tmp_path / "ds")
    report = ingest(str(tmp_path / "p"), out, height=8, width=4, irregular=True, age_unit="months")
    assert report.irregular and "lone" in report.problems and "at least 2" in report.problems["lone"]
    card = read_card(out)
    assert card["layout"] == "irregular" and card["max_frames"] == 5 and card["age_unit"] == "months"
    assert card["age_range"] == [1.0, 18.0]
    data = read_numpy(out)
    got = {sid: data["ages"][i, :data["num_frames"][i]].tolist() for i, sid in enumerate(data["series_id"])}
    assert got == {"cat": [2, 5, 9], "dog": [1, 3, 6, 12, 18], "fern": [4, 8]}
    assert (data["num_inputs"] == 0).all()                     # ingest does not say: training chooses
    with open(os.path.join(out, "dataset.json")) as f:
        assert json.load(f)["columns"]["num_frames"].startswith("int32")


def test_ingest_irregular_when_all_agree_is_the_regular_dataset(ray_local, tmp_path):
    from crnn.ingest import ingest

    _photos(tmp_path / "p", {"a": (1, 2, 3), "b": (1, 2, 3)})
    out = str(tmp_path / "ds")
    report = ingest(str(tmp_path / "p"), out, height=8, width=4, irregular=True)
    assert not report.irregular and report.ages == (1, 2, 3)
    card = read_card(out)
    assert "layout" not in card and card["ages"] == [1, 2, 3]
    assert read_numpy(out)["ages"].dtype == np.int32


# ----------------------------------------------------------------------------- jobs
def test_jobs_refuse_bad_irregular_options_before_ray(tmp_path, capsys):
    from jobs import generate as gen_job
    from jobs import ingest as ing_job

    assert gen_job.main(["--irregular", "--age-step", "0.5", "--out", str(tmp_path / "g")]) == 2
    assert "whole years" in capsys.readouterr().err
    assert gen_job.main(["--irregular", "--inputs", "3,2", "--out", str(tmp_path / "g")]) == 2
    assert "min_inputs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        gen_job.main(["--irregular", "--targets", "1", "--out", str(tmp_path / "g")])
    assert e.value.code == 2 and "--targets must be MIN,MAX" in capsys.readouterr().err
    # irregular options without --irregular, or --ages with it: refused, not silently ignored
    for argv, said in ((["--inputs", "2,3"], "--inputs only apply with --irregular"),
                       (["--age-range", "5,10", "--age-step", "2"], "--age-range, --age-step only apply with"),
                       (["--irregular", "--ages", "10,20"], "--ages is the regular grid")):
        with pytest.raises(SystemExit) as e:
            gen_job.main([*argv, "--out", str(tmp_path / "g")])
        assert e.value.code == 2 and said in capsys.readouterr().err
    assert gen_job.main(["--irregular", "--inputs", "1,3", "--out", str(tmp_path / "g")]) == 2
    assert "need 2 <= min_inputs" in capsys.readouterr().err
    (tmp_path / "p").mkdir()
    assert ing_job.main(["--src", str(tmp_path / "p"), "--out", str(tmp_path / "i"), "--irregular",
                         "--ages", "1,2"]) == 2
    assert "do not give --ages" in capsys.readouterr().err
    assert not (tmp_path / "g").exists() and not (tmp_path / "i").exists()


def test_generate_job_irregular_shapes_with_fractional_ages(ray_local, tmp_path):
    from jobs import generate as gen_job

    out = str(tmp_path / "shapes-irr")
    assert gen_job.main(["--scene", "shapes", "--irregular", "--inputs", "2,3", "--targets", "1,1",
                         "--age-range", "0,10", "--age-step", "0.5", "--num-series", "5", "--seed", "9",
                         "--height", "8", "--width", "4", "--out", out]) == 0
    card = read_card(out)
    assert card["max_frames"] == 4 and card["age_range"] == [0.0, 10.0] and card["scene"] == "shapes"
    data = read_numpy(out)
    spec = irr.IrregularSpec(2, 3, 1, 1, 0.0, 10.0, 0.5)
    for i in range(5):
        ages, n_in = spec.sample(9, i)
        assert data["ages"][i, :data["num_frames"][i]].tolist() == list(ages)
        assert data["num_inputs"][i] == n_in and data["num_frames"][i] == n_in + 1
    assert (data["ages"] % 1 != 0).any()                      # real (half-year) ages, stored exactly


def test_regular_only_stages_refuse_an_irregular_dataset_by_name(irr_dataset, tmp_path):
    """Training, evaluation and prediction read the regular grid only: an irregular dataset is a
    ValueError naming the dataset and what it is, before any work (not a KeyError on 'ages')."""
    from crnn.config import load_config
    from crnn.evaluate import evaluate
    from crnn.model import build_model
    from crnn.checkpoint import save_model_dir
    from crnn.predict import predict_dataset
    from crnn.shards import read_card
    from crnn.train import check_data

    irr_dataset, card = irr_dataset
    assert read_card(irr_dataset) == card
    cfg = load_config("quick", overrides={"data.path": irr_dataset, "model.height": 16, "model.width": 8})
    with pytest.raises(ValueError, match=r"irregular dataset .*time-aware model only: model.kind='crnn' .*timevp"):
        check_data(cfg, card)
    model = str(tmp_path / "model")
    save_model_dir(model, build_model(cfg.model), cfg, epoch=0)
    with pytest.raises(ValueError, match=r"irregular dataset .*evaluation takes a regular dataset"):
        evaluate(model, irr_dataset)
    # a grid model is refused by kind, with or without target ages (not "3 input frames; needs 4")
    for kw in ({}, {"target_ages": [38, 40]}):
        with pytest.raises(ValueError, match=r"grid model \(model.kind='crnn'\).*irregular dataset.*timevp"):
            predict_dataset(model, irr_dataset, str(tmp_path / "fc"), **kw)
    assert not os.path.exists(tmp_path / "fc")


def test_timevp_trains_on_an_irregular_dataset_with_ray_train(irr_dataset, tmp_path):
    """The irregular training path end to end: Ray Data streams ages/num_frames/num_inputs with the
    frames, Ray Train fits a time-aware model, and the model directory keeps the data summary that
    says what ages it answers; its forecasts at off-grid ages come back labelled by shape."""
    from crnn.config import load_config
    from crnn.inference import load_model
    from crnn.timeaware import forecast_at, time_domain
    from crnn.train import check_data, fit

    path, card = irr_dataset
    cfg = load_config("timevp-fast", overrides={
        "data.path": path, "model.height": 16, "model.width": 8, "model.timevp.hid_s": 8,
        "model.timevp.hid_t": 16, "train.epochs": 2, "train.batch_size": 4, "train.cpus_per_worker": 0.5})
    assert check_data(cfg, card) == card["splits"]["train"]
    for cache in (True, False):
        out = str(tmp_path / f"run-{cache}")
        result = fit(cfg, out=out, cache=cache)
        assert result.error is None
        model, mcfg, meta = load_model(f"{out}/model")
        assert meta["data"] == {"layout": "irregular", "age_unit": "years",
                                "age_range": [float(v) for v in card["age_range"]],
                                "mirror_axis": card["mirror_axis"]}    # the pines' trunk column, 8 // 2
        assert card["mirror_axis"] == 4.0
        assert math.isfinite(meta["metrics"]["val_loss"])
        domain = time_domain(mcfg, meta["data"])
        assert domain.time_aware and domain.age_range == tuple(card["age_range"])
        frames = np.zeros((3, 16, 8, 3), np.uint8)
        (pred,) = forecast_at(model, domain, [frames], [[2.0, 3.5, 7.0]], [[8.25, 11.0]])
        assert pred.shape == (2, 16, 8, 3) and pred.dtype == np.uint8


def test_train_job_evaluate_on_an_irregular_dataset_scores_by_gap(irr_dataset, tmp_path, capsys):
    """``jobs/train.py --evaluate`` on an irregular dataset runs the time-aware evaluation (error by
    forecast gap, trust), not the regular one (which refuses an irregular dataset)."""
    from jobs.train import main

    path, _ = irr_dataset
    out = str(tmp_path / "run")
    assert main(["--data", path, "--preset", "timevp-fast", "--out", out, "--evaluate", "model.height=16",
                 "model.width=8", "model.timevp.hid_s=8", "model.timevp.hid_t=16", "train.epochs=1",
                 "train.batch_size=4"]) == 0
    text = capsys.readouterr().out
    assert "MSE by forecast gap" in text and "persistence" in text
    for f in ("result.json", "table.txt", "mse_by_gap.png", "trust.json"):
        assert os.path.exists(os.path.join(out, "eval", f)), f
    with open(os.path.join(out, "model", "trust.json")) as f:   # what Serve's GET /model shows
        assert set(json.load(f)["better_than_persistence"]) == {"2x", "1.2x"}


def test_usable_series_and_training_refuses_splits_without_lessons(irr_dataset, tmp_path):
    """A series with one input (or nothing after its inputs) teaches nothing: training counts only
    the usable ones and refuses, naming the split, a training or validation split with none (its
    validation loss would be NaN) -- before Ray Train starts."""
    from crnn.config import load_config
    from crnn.train import check_data

    assert irr.usable([3, 3, 2, 3, 5], [2, 1, 0, 0, 4]).tolist() == [True, False, False, True, True]
    path, card = irr_dataset
    cfg = load_config("timevp-fast", overrides={"data.path": path, "model.height": 16, "model.width": 8})
    assert check_data(cfg, card) == card["splits"]["train"]        # SPEC: 2..4 inputs, every series usable

    def one_input(d):
        d["num_inputs"][:] = 1
    bad, _ = _rewrite(path, tmp_path, one_input)
    cfg.data.path = bad
    with pytest.raises(ValueError, match=r"the training split\(s\) \['train'\] have \d+ series but none"):
        check_data(cfg, read_card(bad))


# ----------------------------------------------------------------------------- fine-tuning across age units
YEARS = {"layout": "irregular", "age_unit": "years", "age_range": [1.0, 30.0]}


def _in_months(path: str, dest) -> str:
    """A copy of the dataset ``path`` whose card says its ages are months (the shards unchanged)."""
    shutil.copytree(path, dest)
    with open(os.path.join(dest, "dataset.json")) as f:
        card = json.load(f)
    with open(os.path.join(dest, "dataset.json"), "w") as f:
        json.dump({**card, "age_unit": "months"}, f)
    return str(dest)


@pytest.mark.parametrize("was, now, ok", [
    ("years", "years", True), ("Years", " years ", True),   # case and spaces do not matter
    ("year", "years", True), ("YEARS", "Year ", True), ("months", "month", True),  # nor a plural s
    ("yr", "years", False), ("s", "years", False),
    ("m", "ms", False), ("s", "ss", False), ("hr", "hrs", False), ("days", "day", True),  # 2nd review
    (None, "years", True),                                    # a model directory without a data summary: years
    ("years", "months", False), ("months", "years", False), ("days", "weeks", False),
    (None, "months", False), ("years", None, True), ("months", None, False),  # a card without age_unit: years
])
def test_check_start_ages_compares_the_units_of_a_time_aware_starting_model(was, now, ok):
    from crnn.config import load_config
    from crnn.timeaware import check_start_ages

    source = load_config("timevp-fast")
    source_data = None if was is None else {**YEARS, "age_unit": was}
    card = {"layout": "irregular"} if now is None else {"layout": "irregular", "age_unit": now}
    if ok:
        check_start_ages("m", source, source_data, card, "data/x")
    else:
        with pytest.raises(ValueError) as e:
            check_start_ages("m", source, source_data, card, "data/x")
        msg = str(e.value)
        assert "train.init_from='m'" in msg and "the dataset data/x counts them in" in msg
        assert repr(was or "years") in msg and repr(now or "years") in msg
        assert ("its directory records no unit: years assumed" in msg) == (was is None)
        assert ("its card records no unit: years assumed" in msg) == (now is None)
        assert "ingest does not convert ages" in msg and "or drop train.init_from" in msg
    # a grid model does not read ages: any units pass
    check_start_ages("m", load_config("convlstm-fast"), source_data, card, "data/x")


def test_fine_tuning_a_time_aware_model_on_ages_in_another_unit_is_refused(irr_dataset, tmp_path, capsys):
    """A time-aware model trained on years, fine-tuned on a dataset whose ages are months, would
    read 18 months as 18 years: train and tune refuse it before Ray, naming both units, the model
    and the dataset; --out is never made. The same model on data in years passes the check."""
    from jobs.train import main as train_main
    from jobs.tune import main as tune_main
    from crnn.config import load_config
    from crnn.train import check_start_data
    from tests.helpers import random_timevp_dir

    path, card = irr_dataset
    months = _in_months(path, tmp_path / "months")
    start = random_timevp_dir(str(tmp_path / "years-model"), YEARS, **{"model.height": 16, "model.width": 8})
    size = ["model.height=16", "model.width=8", "model.timevp.hid_s=8", "model.timevp.hid_t=16",
            "model.timevp.n_t=2", "train.epochs=1"]
    out = str(tmp_path / "run")
    space = tmp_path / "space.yaml"
    space.write_text(f"train.init_from: {{choice: ['{start}']}}\n")
    for main, argv in ((train_main, ["--out", out, f"train.init_from={start}"]),
                       (tune_main, ["--out", out, f"train.init_from={start}", "--space", str(tmp_path / "lr.yaml")]),
                       (tune_main, ["--out", out, "--space", str(space)])):
        (tmp_path / "lr.yaml").write_text("train.lr: {choice: [0.001]}\n")
        assert main(["--data", months, "--preset", "timevp-fast", *size, *argv]) == 2
        err = capsys.readouterr().err
        assert f"train.init_from={start!r}" in err and "'years'" in err and "'months'" in err and months in err, err
        assert not os.path.exists(out)
    cfg = load_config("timevp-fast", overrides=[f"data.path={path}", f"train.init_from={start}", *size])
    check_start_data(cfg, card)                      # the same units: fine
    with pytest.raises(ValueError, match="'months'"):
        check_start_data(cfg, {**card, "age_unit": "months"})


def test_fine_tuning_checks_the_units_in_the_plain_loop_and_not_on_resume(irr_dataset, tmp_path):
    """fit_plain checks the units from the one read of the starting model; a run resuming from its
    own checkpoint does not read the starting model again (it may be gone), as check_config."""
    from crnn.config import load_config
    from crnn.loop import fit_plain
    from crnn.shards import read_numpy
    from crnn.train import check_start_data
    from tests.helpers import random_timevp_dir

    path, card = irr_dataset
    start = random_timevp_dir(str(tmp_path / "years-model"), YEARS, **{"model.height": 16, "model.width": 8})
    cfg = load_config("timevp-fast", overrides={"model.height": 16, "model.width": 8, "model.timevp.hid_s": 8,
                                                "model.timevp.hid_t": 16, "model.timevp.n_t": 2,
                                                "train.epochs": 1, "train.init_from": start})
    data = read_numpy(path, split="train")
    with pytest.raises(ValueError, match="reads ages in 'years', the training data counts them in 'months'"):
        fit_plain(cfg, data, data, out=str(tmp_path / "m"), data={**YEARS, "age_unit": "months"})
    assert not os.path.exists(tmp_path / "m")
    fit_plain(cfg, data, data, data=YEARS)           # the same units: trains
    shutil.rmtree(start)
    resumed = tmp_path / "resumed"
    (resumed / "ray" / "train" / "checkpoint_000000").mkdir(parents=True)
    check_start_data(cfg, {**card, "age_unit": "months"}, str(resumed))   # resuming: not read again
    with pytest.raises(Exception, match="train.init_from"):
        check_start_data(cfg, card, str(resumed), overwrite=True)         # starting over: read, gone


@pytest.mark.parametrize("start_data", [{**YEARS, "age_unit": "months"}, YEARS, None],
                         ids=["months", "years", "no-summary"])
def test_plain_fine_tune_without_data_keeps_the_starting_models_ages(irr_dataset, tmp_path, start_data):
    """The last notes' leftover: fit_plain fine-tuning a months model on in-memory series given no
    ``data`` summary wrote a model directory without one, and everything after read its ages as years.
    The start's summary is kept (none when it had none); given ``data``, that is what is written."""
    from crnn.config import load_config
    from crnn.loop import fit_plain
    from crnn.shards import read_numpy
    from crnn.checkpoint import read_model_file
    from tests.helpers import random_timevp_dir

    path, _ = irr_dataset
    size = {"model.height": 16, "model.width": 8}
    start = random_timevp_dir(str(tmp_path / "start"), start_data, **size)
    cfg = load_config("timevp-fast", overrides={**size, "model.timevp.hid_s": 8, "model.timevp.hid_t": 16,
                                                "model.timevp.n_t": 2, "train.epochs": 1, "train.init_from": start})
    data = read_numpy(path, split="train")
    fit_plain(cfg, data, out=str(tmp_path / "tuned"))
    assert read_model_file(str(tmp_path / "tuned")).get("data") == start_data
    given = {**YEARS, "age_range": [2.0, 20.0]} if start_data in (YEARS, None) else None
    if given is not None:  # a summary of its own wins over the start's
        fit_plain(cfg, data, out=str(tmp_path / "given"), data=given)
        assert read_model_file(str(tmp_path / "given"))["data"] == given


def test_ingest_records_the_age_unit_in_either_layout(ray_local, tmp_path):
    """The review's hole: photos whose folders all share their ages give the regular layout, whose
    card did not record ``--age-unit`` -- a time-aware model fine-tuned on them read months as years.
    Both layouts record it now (and the time-aware model trained on them keeps it); a blank unit is
    refused before any work."""
    from crnn.ingest import ingest
    from crnn.timeaware import data_summary

    _photos(tmp_path / "p", {"cat": (6, 12, 18, 24), "dog": (6, 12, 18, 24), "fern": (6, 12, 18, 24)})
    out = str(tmp_path / "ds")
    report = ingest(str(tmp_path / "p"), out, height=8, width=4, age_unit=" months ")
    card = read_card(out)
    assert not report.irregular and card.get("layout", "regular") == "regular" and card["age_unit"] == "months"
    assert data_summary(card, 3)["age_unit"] == "months"
    report = ingest(str(tmp_path / "p"), out, height=8, width=4, irregular=True, overwrite=True)
    assert read_card(out)["age_unit"] == "years"                         # the default, in either layout
    for blank in ("", "  ", None):
        with pytest.raises(ValueError, match="age_unit must name the unit"):
            ingest(str(tmp_path / "p"), str(tmp_path / "never"), height=8, width=4, age_unit=blank)
    assert not os.path.exists(tmp_path / "never")
