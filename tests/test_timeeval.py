"""The time-aware evaluation (crnn/timeeval.py, issue #14): the baselines given the same ages, the
analog bank, binning by forecast gap and input spacing, trust, the grid-model refusal, and a tiny
time-aware model evaluated end to end through jobs/evaluate.py on a generated irregular dataset."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from crnn.config import Config, DataConfig
from crnn.model import ModelConfig, build_model
from crnn.models.timevp import TimeVPConfig
from crnn.timeeval import (
    GAP_EDGES, AnalogBank, _bank_key, assign_bins, bank_indices, bin_edges, linear_at, load_or_render_bank,
    persistence_at, refuse_grid_model, render_bank, score_by_bins, trust_from_bins,
)

H, W = 16, 8
SPEC = dict(min_inputs=2, max_inputs=4, min_targets=1, max_targets=3, age_min=1.0, age_max=20.0, age_step=1.0)


def _card(**change):
    card = {"irregular": dict(SPEC), "base_seed": 5, "scene": "pines", "generator_version": "pine-1",
            "height": H, "width": W, "channels": 3, "layout": "irregular"}
    card.update(change)
    return card


# ----------------------------------------------------------------------------- baselines
def test_persistence_returns_the_last_input_for_every_target():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 4, 2, 3), dtype=np.uint8)
    out = persistence_at(frames, [1, 4, 9], [10, 12.5, 30])
    assert out.shape == (3, 4, 2, 3) and out.dtype == np.uint8
    assert all(np.array_equal(o, frames[-1]) for o in out)
    with pytest.raises(ValueError, match="target ages"):
        persistence_at(frames, [1, 4, 9], [])


def test_linear_in_time_is_exact_through_two_frames_at_their_ages_and_clipped():
    # pixel 0 rises 5 per year (10 at age 2, 30 at age 6), pixel 1 falls 5 per year, pixel 2 is flat;
    # an older first input (age 0.5) is not used: the line goes through the last two
    f = np.zeros((3, 1, 3, 1), np.uint8)
    f[0, 0] = [[200], [200], [200]]
    f[1, 0] = [[10], [240], [77]]
    f[2, 0] = [[30], [220], [77]]
    out = linear_at(f, [0.5, 2.0, 6.0], [10.0, 6.5, 60.0])
    assert out.dtype == np.uint8 and out.shape == (3, 1, 3, 1)
    np.testing.assert_array_equal(out[0, 0, :, 0], [50, 200, 77])        # age 10: 30 + 4 * 5
    np.testing.assert_array_equal(out[1, 0, :, 0], [32, 218, 77])        # age 6.5: 30 + 2.5 exactly -> 32 (even)
    np.testing.assert_array_equal(out[2, 0, :, 0], [255, 0, 77])         # age 60: 300 and -50, clipped
    with pytest.raises(ValueError, match=r"linear_at: needs >= 2 input frames"):
        linear_at(f[:1], [2.0], [3.0])
    with pytest.raises(ValueError, match="do not increase"):
        linear_at(f, [1.0, 6.0, 6.0], [7.0])


# ----------------------------------------------------------------------------- analog
def test_analog_forecast_on_a_constructed_bank():
    """k nearest in summed L2 over the query's input ages, forecast = last input + mean change of the
    neighbours from the last input age to the target age, clipped; ties go to the lower index."""
    ages = [1.0, 2.0, 3.0, 4.0]
    bank = np.zeros((3, 4, 1, 1, 1), np.uint8)
    bank[0, :, 0, 0, 0] = [10, 20, 30, 40]     # near the query at ages 1 and 3
    bank[1, :, 0, 0, 0] = [12, 90, 34, 60]     # near at 1 and 3 too (distance 4 + 16)
    bank[2, :, 0, 0, 0] = [200, 0, 250, 0]     # far
    b = AnalogBank(bank, ages)
    q = np.array([10, 30], np.uint8).reshape(2, 1, 1, 1)   # inputs at ages 1 and 3
    (one,) = b.forecast([q], [[1, 3]], [[4]], k=1)
    assert one.shape == (1, 1, 1, 1) and one.item() == 30 + (40 - 30)
    (two,) = b.forecast([q], [[1, 3]], [[2, 4]], k=2)
    # change from age 3: tree 0 (-10, +10), tree 1 (+56, +26) -> mean (+23, +18)
    np.testing.assert_array_equal(two[:, 0, 0, 0], [53, 48])
    (three,) = b.forecast([q], [[1, 3]], [[4]], k=3)        # tree 2: 0 - 250: the mean goes below 0
    assert three.item() == int(np.clip(np.rint(30 + (10 + 26 - 250) / 3), 0, 255))
    (skip0,) = b.forecast([q], [[1, 3]], [[4]], k=1, exclude=[0])   # tree 0 taken out: tree 1 answers
    assert skip0.item() == 30 + (60 - 34)
    with pytest.raises(ValueError, match=r"k=3 must be an int in \[1, 2\]"):
        b.forecast([q], [[1, 3]], [[4]], k=3, exclude=[2])
    with pytest.raises(ValueError, match=r"series\[0\]: age 2.5 is not on the analog bank's age grid"):
        b.forecast([q], [[1, 2.5]], [[4]], k=1)
    with pytest.raises(ValueError, match="k=4"):
        b.forecast([q], [[1, 3]], [[4]], k=4)


def test_bank_holds_training_trees_only():
    from crnn.shards import split_for_index

    idx = bank_indices(3000)
    assert len(idx) == len(set(idx)) == 3000 and idx == sorted(idx)
    assert {split_for_index(i) for i in idx} == {"train"}
    assert idx[:8] == [0, 1, 2, 3, 5, 6, 7, 8]   # 4 is validation, 9 test


def test_analog_is_exact_when_the_bank_contains_the_query_series():
    """A dataset series rendered from the same seed is in the bank: with k=1 it is its own nearest
    neighbour (distance 0) and its forecast is exactly its own future, at irregular ages."""
    from crnn.generate import generate_rows
    from crnn.irregular import IrregularSpec

    key = _bank_key(_card())
    assert key["ages"] == list(range(1, 21)) and key["base_seed"] == 5
    bank, seconds = render_bank(key, 6, workers=1)
    assert bank.frames.shape == (6, 20, H, W, 3) and seconds > 0 and bank.info["size"] == 6
    idx = bank_indices(6)
    rows = generate_rows(idx, base_seed=5, ages=(), height=H, width=W, irregular=IrregularSpec(**SPEC))
    frames = [r["frames"][:r["num_inputs"]] for r in rows]
    ages = [r["ages"][:r["num_inputs"]] for r in rows]
    targets = [r["ages"][r["num_inputs"]:] for r in rows]
    out = bank.forecast(frames, ages, targets, k=1)
    for r, o in zip(rows, out):
        np.testing.assert_array_equal(o, r["frames"][r["num_inputs"]:])
    pooled, _ = render_bank(key, 6, workers=2, chunk=3)             # worker processes: the same trees
    np.testing.assert_array_equal(pooled.frames, bank.frames)


def test_bank_cache_is_reused_only_when_it_matches(tmp_path):
    path = str(tmp_path / "bank" / "analog_bank.npy")
    first = load_or_render_bank(_card(), 5, path, workers=1)
    assert first.info["cached"] is False and (tmp_path / "bank" / "analog_bank.json").exists()
    again = load_or_render_bank(_card(), 3, path, workers=1)      # a smaller bank: the cache's first 3
    assert again.info["cached"] is True and np.array_equal(again.frames, first.frames[:3])
    other = load_or_render_bank(_card(base_seed=6), 3, path, workers=1)   # another dataset: rendered
    assert other.info["cached"] is False and not np.array_equal(other.frames, first.frames[:3])
    with pytest.raises(ValueError, match="not generated by a simulator"):
        load_or_render_bank({k: v for k, v in _card().items() if k != "irregular"}, 3)


# ----------------------------------------------------------------------------- bins, scores, trust
def test_bins_are_right_closed_and_cover_wide_ranges():
    assert bin_edges(50) == list(GAP_EDGES)
    assert bin_edges(120) == [0, 2, 5, 10, 20, 50, 100, 200]
    np.testing.assert_array_equal(assign_bins([0.5, 2, 2.0001, 5, 10, 19.9, 20, 20.5, 50], GAP_EDGES),
                                  [0, 0, 1, 1, 2, 3, 3, 4, 4])
    for bad in (0.0, -1.0, 50.5, math.nan):
        with pytest.raises(ValueError, match="outside the bins"):
            assign_bins([1.0, bad], GAP_EDGES)


def test_score_by_bins_matches_hand_computation():
    truth = [np.full((2, 2, 3), v, np.uint8) for v in (100, 100, 50)]
    preds = {"model": [np.full((2, 2, 3), v, np.uint8) for v in (101, 103, 50)],
             "persistence": [np.full((2, 2, 3), v, np.uint8) for v in (90, 100, 60)]}
    rows = score_by_bins(preds, truth, np.array([0, 0, 2]), [0, 2, 5, 10])
    assert [r["label"] for r in rows] == ["(0, 2]", "(2, 5]", "(5, 10]"]
    assert [r["targets"] for r in rows] == [2, 0, 1] and rows[1]["metrics"] == {}
    assert rows[0]["metrics"]["model"]["mse"] == pytest.approx((1 + 9) / 2)
    assert rows[0]["metrics"]["model"]["mae"] == pytest.approx((1 + 3) / 2)
    assert rows[0]["metrics"]["persistence"]["mse"] == pytest.approx(100 / 2)
    assert rows[2]["metrics"]["model"]["mse"] == 0 and rows[2]["metrics"]["persistence"]["mse"] == 100
    with pytest.raises(ValueError, match="3 targets, 2 bins"):
        score_by_bins(preds, truth, np.array([0, 0]), [0, 2])
    rows = score_by_bins(preds, truth, np.array([0, 0, 2]), [0, 2, 5, 10], values=[0.5, 1.5, 7.0])
    assert [r.get("max") for r in rows] == [1.5, None, 7.0]


def _table(pairs, edges=(0, 2, 5, 10, 20, 50)):
    """By-gap rows from (model MSE, persistence MSE) per bin; None: a bin without targets."""
    rows = []
    for i, p in enumerate(pairs):
        m = {} if p is None else {"model": {"mse": p[0]}, "persistence": {"mse": p[1]}}
        rows.append({"bin": [edges[i], edges[i + 1]], "targets": 0 if p is None else 7, "metrics": m})
    return rows


@pytest.mark.parametrize("pairs, expect", [
    ([(10, 30), (10, 25), (10, 15), (10, 11), (10, 5)], {"2x": 5.0, "1.2x": 10.0}),
    ([(10, 19.9), (10, 30), (10, 30)], {"2x": None, "1.2x": 10.0}),       # the first bin fails 2x
    ([(10, 11), (10, 30)], {"2x": None, "1.2x": None}),                   # nothing trusted
    ([None, (10, 30), (10, 30), None, (10, 30)], {"2x": 10.0, "1.2x": 10.0}),  # leading empty skipped, gap stops
    ([(0, 5), (0, 0)], {"2x": 5.0, "1.2x": 5.0}),                         # perfect model: any ratio
    ([None, None], {"2x": None, "1.2x": None}),
])
def test_trust_from_a_constructed_table(pairs, expect):
    assert trust_from_bins(_table(pairs)) == expect


def test_trust_never_reaches_beyond_the_gaps_measured():
    """A bin's upper edge can lie past every gap in it (ages 5..40 give gaps up to 35 in a (20, 50]
    bin): the trusted gap is the largest gap measured there, not the edge."""
    rows = _table([(10, 30), (10, 30), (10, 30), (10, 30), (10, 30)])
    rows[-1]["max"] = 33.0
    assert trust_from_bins(rows) == {"2x": 33.0, "1.2x": 33.0}
    rows[1]["max"], rows[2]["max"] = 4.0, 9.5    # earlier bins: their edge stands when the run goes on
    rows[3].update(metrics={"model": {"mse": 10}, "persistence": {"mse": 15}}, max=18.0)  # fails 2x
    assert trust_from_bins(rows) == {"2x": 9.5, "1.2x": 33.0}


# ----------------------------------------------------------------------------- grid models
def _grid_model_dir(tmp_path, kind="crnn"):
    from crnn.checkpoint import save_model_dir

    mc = ModelConfig(kind=kind, height=H, width=W, conv_filters=(4,), lstm_units=8)
    cfg = Config(model=mc, data=DataConfig(in_frames=4))
    path = str(tmp_path / f"grid-{kind}")
    save_model_dir(path, build_model(mc), cfg, epoch=0)
    return path, cfg


def test_a_grid_model_is_refused_by_name_before_any_work(tmp_path):
    from crnn.timeeval import check_time_evaluate, evaluate_time

    path, cfg = _grid_model_dir(tmp_path)
    pattern = r"grid model \(model.kind='crnn'\).*irregular dataset.*model.kind=timevp"
    with pytest.raises(ValueError, match=pattern):
        refuse_grid_model(cfg, path, "data/irr")
    # the dataset is never read: a path that does not exist is not what is reported
    with pytest.raises(ValueError, match=pattern):
        check_time_evaluate(path, str(tmp_path / "no-such-data"))
    with pytest.raises(ValueError, match=pattern):
        evaluate_time(path, str(tmp_path / "no-such-data"))
    refuse_grid_model(Config(model=ModelConfig(kind="timevp", height=H, width=W)), path, "d")  # accepted


# ----------------------------------------------------------------------------- end to end
TINY_TIMEVP = dict(hid_s=8, hid_t=16, n_t=2, window=4, time_dim=8)


def _timevp_dir(tmp_path, name="timevp", perturb=False, scale=0.05):
    from crnn.checkpoint import save_model_dir

    mc = ModelConfig(kind="timevp", height=H, width=W, timevp=TimeVPConfig(**TINY_TIMEVP))
    cfg = Config(model=mc, data=DataConfig(in_frames=4))
    torch.manual_seed(0)
    model = build_model(mc)
    if perturb:  # an untrained residual model is persistence; random weights make it differ
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, scale)
    path = str(tmp_path / name)
    save_model_dir(path, model, cfg, epoch=0,
                   data={"layout": "irregular", "age_unit": "years", "age_range": [1.0, 20.0]})
    return path


@pytest.fixture(scope="module")
def irr_data(ray_local, tmp_path_factory):
    from crnn.generate import generate
    from crnn.irregular import IrregularSpec

    out = str(tmp_path_factory.mktemp("timeeval") / "pines-irr")
    generate(out, num_series=60, seed=5, height=H, width=W, shard_size=30, irregular=IrregularSpec(**SPEC))
    return out


def test_untrained_model_equals_persistence_in_every_bin(irr_data, tmp_path):
    """An untrained residual TimeVP forecasts exactly the last input: its scores equal persistence's
    bin by bin (the targets, forecasts and bins line up), so it is trusted nowhere."""
    from crnn.shards import read_numpy
    from crnn.timeeval import evaluate_time, format_time_table, markdown_trust_table

    res = evaluate_time(_timevp_dir(tmp_path), irr_data, bank_size=12, bank_workers=1)
    test = read_numpy(irr_data, split="test", columns=["num_frames", "num_inputs"])
    assert res["num_series"] == 6 and res["num_targets"] == int((test["num_frames"] - test["num_inputs"]).sum())
    assert res["forecasters"] == ["model", "persistence", "linear", "analog"] and not res["skipped_baselines"]
    for key in ("by_gap", "by_spacing"):
        assert sum(r["targets"] for r in res[key]["bins"]) == res["num_targets"]
        for r in res[key]["bins"]:
            if r["targets"]:
                assert r["metrics"]["model"] == r["metrics"]["persistence"]
                assert all(math.isfinite(r["metrics"][n]["mse"]) for n in res["forecasters"])
    assert res["trust"] == {"2x": None, "1.2x": None}
    assert res["analog"]["bank"]["size"] == 12 and res["analog"]["bank"]["cached"] is False
    assert res["analog"]["bank"]["excluded"] == 0           # test series are never in the bank
    assert json.loads(json.dumps(res)) == res
    assert "MSE by forecast gap (years)" in format_time_table(res)
    assert markdown_trust_table(res).startswith("| gap (years) | targets | model (timevp) |")


def test_job_writes_result_table_plot_and_trust(irr_data, tmp_path, capsys):
    from jobs.evaluate import main
    from crnn.storage import read_json

    model = _timevp_dir(tmp_path, "perturbed", perturb=True)
    out = tmp_path / "eval"
    rc = main(["--model", model, "--data", irr_data, "--out", str(out), "--bank-size", "12",
               "--bank-workers", "1", "--write-trust-to-model"])
    text = capsys.readouterr().out
    assert rc == 0 and "MSE by forecast gap (years)" in text and "trust" in text
    for f in ("result.json", "table.txt", "mse_by_gap.png", "trust.json", "analog_bank.npy"):
        assert (out / f).exists(), f
    res = read_json(str(out / "result.json"))
    assert (out / "table.txt").read_text().startswith(f"timevp on {irr_data}")
    with Image.open(out / "mse_by_gap.png") as im:
        assert im.size[0] > 600
    trust = read_json(str(out / "trust.json"))
    assert read_json(f"{model}/trust.json") == trust
    assert set(trust) >= {"unit", "better_than_persistence", "bins", "dataset", "series"}
    assert trust["unit"] == "years" and trust["dataset"] == irr_data and trust["series"] == res["num_series"]
    assert set(trust["better_than_persistence"]) == {"2x", "1.2x"}
    assert [b["gap"] for b in trust["bins"]] == [r["bin"] for r in res["by_gap"]["bins"]]
    # a second run reads the bank from its cache
    rc = main(["--model", model, "--data", irr_data, "--out", str(out), "--bank-size", "12"])
    assert rc == 0 and "read from its cache" in capsys.readouterr().out


def test_mirror_tta_scores_the_augmented_forecast_and_says_so(irr_data, tmp_path):
    """tta="hflip": the model's forecasts are MirrorTTA's (computed by hand here), the baselines are
    scored as they are, and the result, its table and trust.json say which axis."""
    from crnn.inference import load_model
    from crnn.mirror import MirrorTTA
    from crnn.shards import read_numpy
    from crnn.timeaware import forecast_at, time_domain
    from crnn.timeeval import _series, evaluate_time, format_time_table, trust_record

    path = _timevp_dir(tmp_path, "perturbed", perturb=True, scale=0.3)   # far from mirror-equivariant
    plain = evaluate_time(path, irr_data, bank_size=0)
    res = evaluate_time(path, irr_data, bank_size=0, tta="hflip")
    assert plain["tta"] == "none" and "mirror_axis" not in plain
    assert res["tta"] == "hflip" and res["mirror_axis"] == W // 2           # the pines' trunk column
    for name in ("persistence", "linear"):
        assert res["overall"][name] == plain["overall"][name]
    assert res["overall"]["model"]["mse"] != plain["overall"]["model"]["mse"]
    model, cfg, meta = load_model(path)
    series, _ = _series(read_numpy(irr_data, split="test",
                                   columns=["series_id", "ages", "frames", "num_frames", "num_inputs"]))
    preds = forecast_at(MirrorTTA(model, W // 2), time_domain(cfg, meta["data"], meta["metrics"]),
                        [s["frames"] for s in series], [s["ages"] for s in series],
                        [s["target_ages"] for s in series])
    err = np.concatenate(preds).astype(np.float64) - np.concatenate([s["targets"] for s in series])
    assert res["overall"]["model"]["mse"] == pytest.approx((err ** 2).mean(), rel=1e-12)
    assert f"mirror test-time augmentation (hflip, about pixel column {W // 2:.1f})" in format_time_table(res)
    assert trust_record(res)["tta"] == "hflip" and trust_record(res)["mirror_axis"] == W // 2
    assert trust_record(plain)["tta"] == "none" and "mirror_axis" not in trust_record(plain)
    assert evaluate_time(path, irr_data, bank_size=0, tta="hflip", mirror_axis=3.5)["mirror_axis"] == 3.5


@pytest.mark.parametrize("argv, needle", [
    (["--tta", "hflip", "--mirror-axis", "7.5"], "mirror axis 7.5"),          # beyond an 8-column image
    (["--tta", "hflip", "--mirror-axis", "2.25"], "mirror axis 2.25"),        # not a column or a boundary
    (["--mirror-axis", "4"], "only used with tta hflip"),
])
def test_job_refuses_a_bad_tta_axis_before_any_work(irr_data, tmp_path, capsys, argv, needle):
    from jobs.evaluate import main

    path = _timevp_dir(tmp_path)
    out = tmp_path / "e"
    assert main(["--model", path, "--data", irr_data, "--out", str(out), *argv]) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()


def test_job_with_tta_writes_the_axis_into_trust(irr_data, tmp_path, capsys):
    from crnn.storage import read_json
    from jobs.evaluate import main

    path = _timevp_dir(tmp_path, "perturbed", perturb=True)
    out = tmp_path / "e"
    assert main(["--model", path, "--data", irr_data, "--out", str(out), "--bank-size", "0", "--tta", "hflip"]) == 0
    assert f"about pixel column {W // 2:.1f}" in capsys.readouterr().out
    assert read_json(str(out / "trust.json"))["tta"] == "hflip"
    assert read_json(str(out / "result.json"))["mirror_axis"] == W // 2


def test_job_refuses_a_grid_model_on_an_irregular_dataset(irr_data, tmp_path, capsys):
    from jobs.evaluate import main

    path, _ = _grid_model_dir(tmp_path, "convlstm")
    assert main(["--model", path, "--data", irr_data, "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "grid model (model.kind='convlstm')" in err and "model.kind=timevp" in err
    assert not (tmp_path / "e").exists()


def test_small_frames_are_scored_like_crnn_metrics_without_ssim():
    from crnn.metrics import frame_metrics
    from crnn.timeeval import _frame_scores

    rng = np.random.default_rng(1)
    t, p = (rng.integers(0, 256, (3, 12, 11, 3), dtype=np.uint8) for _ in range(2))
    ref = frame_metrics(p, t, scale=1.0, channels_last=True)
    got = _frame_scores(p, t)
    assert got == {k: ref[k] for k in ("mse", "mae", "rmse", "psnr", "ssim")}
    small = _frame_scores(p[:, :10], t[:, :10])                     # below SSIM's 11x11 window
    ref = frame_metrics(np.pad(p[:, :10], ((0, 0), (0, 1), (0, 0), (0, 0))),
                        np.pad(t[:, :10], ((0, 0), (0, 1), (0, 0), (0, 0))), scale=1.0, channels_last=True)
    assert small["ssim"] is None and small["mse"] == pytest.approx(ref["mse"] * 11 / 10)


def test_time_trust_benchmark_prints_the_readme_table(irr_data, tmp_path, capsys):
    from benchmarks import time_trust  # importing runs nothing

    res = time_trust.main(["--model", _timevp_dir(tmp_path), "--data", irr_data, "--bank-size", "0"])
    text = capsys.readouterr().out
    assert res["skipped_baselines"] == {"analog": "--bank-size 0"} and res["forecasters"][-1] == "linear"
    assert "| gap (years) | targets | model (timevp) | persistence | linear-in-time | persistence / model |" in text
    assert "| (0, 2] |" in text and "1.00x" in text   # the untrained model is persistence
    assert "2x up to — (not even the first bin)" in text


def test_job_refuses_time_aware_options_on_a_regular_dataset(monkeypatch, capsys):
    import crnn.evaluate
    from jobs.evaluate import main

    monkeypatch.setattr(crnn.evaluate, "check_evaluate", lambda *a, **k: "test")  # a regular dataset that checks out
    assert main(["--model", "M", "--data", "D", "--write-trust-to-model"]) == 2
    assert "D: a regular dataset; --write-trust-to-model, --bank-size and --bank belong" in capsys.readouterr().err


def test_evaluated_training_series_are_never_their_own_analogs(irr_data, tmp_path):
    from crnn.shards import read_numpy
    from crnn.timeeval import evaluate_time

    train = read_numpy(irr_data, split="train", columns=["series_id"])["series_id"]
    res = evaluate_time(_timevp_dir(tmp_path), irr_data, split="train", bank_size=len(train) + 8, bank_workers=1)
    assert res["analog"]["bank"]["excluded"] == len(train) and "analog" in res["forecasters"]
    res = evaluate_time(_timevp_dir(tmp_path), irr_data, split="train", bank_size=len(train), bank_workers=1)
    assert "fewer than k=8" in res["skipped_baselines"]["analog"]


def test_the_analog_bank_is_no_bigger_than_the_training_split(irr_data, tmp_path):
    """The analog forecast gets the trees a network learned from and no more: a bank asked larger
    than the dataset's training split is cut to it (an evaluation of the training split itself may
    reach past it, its own series being taken out: the test above)."""
    from crnn.shards import read_card
    from crnn.timeeval import evaluate_time

    n_train = read_card(irr_data)["splits"]["train"]
    res = evaluate_time(_timevp_dir(tmp_path), irr_data, bank_size=10_000, bank_workers=1)
    assert res["analog"]["bank"]["size"] == n_train and "analog" in res["forecasters"]
    with pytest.raises(ValueError, match=r"--bank-size must be an integer >= 0, got -5"):
        evaluate_time(_timevp_dir(tmp_path), irr_data, bank_size=-5)
