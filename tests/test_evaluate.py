import copy
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from crnn.checkpoint import save_model_dir
from crnn.config import Config, DataConfig
from crnn.evaluate import evaluate, format_table
from crnn.inference import forecast_window, to_uint8
from crnn.metrics import PAPER_TABLE3, per_age_metrics
from crnn.model import ModelConfig, build_model
from crnn.shards import base_card, publish, read_numpy, rows_to_batch, write_ray_dataset
from crnn.storage import json_safe

AGES = (10, 15, 20, 25, 30)
H, W, C = 32, 16, 3
N_SERIES = 12


def _series(i: int) -> np.ndarray:
    """(5, 32, 16, 3) uint8: a 'trunk' growing upward from the bottom, colour and width per series."""
    f = np.full((len(AGES), H, W, C), 235, np.uint8)
    colour = np.array([40 + 15 * i, 120 + 5 * i, 30], np.uint8)
    half = 2 + i % 4
    for t in range(len(AGES)):
        top = H - (6 + 6 * t)
        f[t, max(top, 0):, W // 2 - half:W // 2 + half] = colour
        f[t, max(top, 0), :] = 255 - 20 * t  # a crown line that changes colour with age
    return f


def _split(i: int) -> str:
    return "test" if i % 3 == 0 else "train"  # 4 test series, no "val"


@pytest.fixture(scope="module")
def dataset(ray_local, tmp_path_factory):
    import ray.data

    rows = [{"series_id": f"toy-{i:02d}", "seed": i, "split": _split(i), "ages": list(AGES),
             "frames": _series(i), "params": {}} for i in range(N_SERIES)]
    batch = rows_to_batch(rows, ())
    ds = ray.data.from_items([{k: v[i] for k, v in batch.items()} for i in range(N_SERIES)],
                             override_num_blocks=2)
    splits = {s: sum(_split(i) == s for i in range(N_SERIES)) for s in ("train", "val", "test")}
    card = base_card(num_series=N_SERIES, ages=AGES, height=H, width=W, channels=C, splits=splits,
                     source="test_evaluate toy series")
    out = str(tmp_path_factory.mktemp("eval") / "toy")
    publish(lambda d: write_ray_dataset(ds, d), out, card)
    return out


def _tiny_cfg(**model_kw) -> Config:
    mc = ModelConfig(conv_filters=(4,), lstm_units=8, **model_kw)
    return Config(model=mc, data=DataConfig(in_frames=4))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = _tiny_cfg()
    path = str(tmp_path_factory.mktemp("models") / "tiny")
    save_model_dir(path, build_model(cfg.model), cfg, epoch=3, metrics={"val_loss": 0.1})
    return path


@pytest.fixture(scope="module")
def result(dataset, model_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("evalout") / "eval")
    return evaluate(model_dir, dataset, out=out, num_examples=3)


def _test_frames(dataset) -> np.ndarray:
    return read_numpy(dataset, split="test", columns=["frames"])["frames"].astype(np.float64)


# ----------------------------------------------------------------------------- predict
def test_predict_shapes_range_and_persistence():
    frames = np.stack([_series(i) for i in range(5)])
    pers = build_model(ModelConfig(kind="persistence"))
    p = forecast_window(pers, frames, in_frames=4, batch_size=2)
    assert p.shape == (5, 4, C, H, W) and p.dtype == np.float32
    np.testing.assert_allclose(p, frames[:, :4].transpose(0, 1, 4, 2, 3) / 255.0, atol=1e-7)
    np.testing.assert_array_equal(to_uint8(p), frames[:, :4])

    torch.manual_seed(0)
    crnn = build_model(_tiny_cfg().model)
    crnn.train()
    a = forecast_window(crnn, frames, batch_size=256)
    b = forecast_window(crnn, frames, batch_size=2)  # eval mode: no dropout, batching does not matter
    assert crnn.training  # mode restored
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert a.min() >= 0.0 and a.max() <= 1.0
    with pytest.raises(ValueError, match="in_frames=6"):
        forecast_window(pers, frames, in_frames=6)


# ----------------------------------------------------------------------------- evaluate
def test_evaluate_structure(result, dataset, model_dir):
    assert result["model"] == model_dir and result["data"] == dataset
    assert result["split"] == "test" and result["num_series"] == 4
    assert result["ages"] == [15, 20, 25, 30] and result["input_ages"] == [10, 15, 20, 25]
    assert result["headline_age"] == 30
    assert set(result["results"]) == {"model", "persistence", "linear", "analog"}
    for name, per_age in result["results"].items():
        assert list(per_age) == ["15", "20", "25", "30"]
        assert set(per_age["30"]) >= {"mae", "mse", "rmse", "psnr", "snr", "snr_db", "ssim"}
        assert result["headline"][name] == per_age["30"]
    assert "paper" not in result  # toy series, not the pine simulator's (test_the_paper_row_is_for_...)
    assert result["model_config"]["lstm_units"] == 8 and result["epoch"] == 3
    assert json.loads(json.dumps(result, allow_nan=False)) == result  # strict JSON, round trip exact


def test_baseline_metrics_match_hand_computation(result, dataset):
    f = _test_frames(dataset)  # (4, 5, H, W, C) on 0-255
    pers, lin = result["results"]["persistence"], result["results"]["linear"]
    for t, age in enumerate(["15", "20", "25", "30"]):
        diff = f[:, t] - f[:, t + 1]
        assert pers[age]["mse"] == pytest.approx(np.mean(diff**2), rel=1e-6)
        assert pers[age]["mae"] == pytest.approx(np.mean(np.abs(diff)), rel=1e-6)
    # headline: persistence = frame 3 (age 25) for frame 4 (age 30)
    assert pers["30"]["mse"] == pytest.approx(np.mean((f[:, 4] - f[:, 3]) ** 2), rel=1e-6)
    lin_pred = np.clip(2 * f[:, 3] - f[:, 2], 0, 255)
    assert lin["30"]["mse"] == pytest.approx(np.mean((lin_pred - f[:, 4]) ** 2), rel=1e-6)
    assert lin["15"]["mse"] == pers["15"]["mse"]  # linear falls back to persistence at step 0
    snr = np.mean(f[:, 4] ** 2) / np.mean((f[:, 4] - f[:, 3]) ** 2)
    assert pers["30"]["snr"] == pytest.approx(snr, rel=1e-6)


def test_analog_baseline_matches_hand_computation(result, dataset):
    """The toy data has 8 training series and the analog bank takes k=8 neighbours: all of them, so
    its forecast is the last frame plus the mean change of every training series at that step."""
    from crnn.evaluate import ANALOG_K

    bank = read_numpy(dataset, split="train", columns=["frames"])["frames"].astype(np.float64)
    assert len(bank) == ANALOG_K
    f = _test_frames(dataset)
    for t, age in enumerate(["15", "20", "25", "30"]):
        pred = np.clip(f[:, t] + (bank[:, t + 1] - bank[:, t]).mean(0), 0, 255)
        want = np.mean((pred - f[:, t + 1]) ** 2)
        assert result["results"]["analog"][age]["mse"] == pytest.approx(want, rel=1e-4, abs=1e-3)


def test_field_convention_mse(result):
    """mse_frame01: squared error summed over a frame's C*H*W values on [0, 1] (OpenSTL, PredRNN)."""
    for per_age in result["results"].values():
        for m in per_age.values():
            assert m["mse_frame01"] == pytest.approx(m["mse"] * C * H * W / 255**2)


def test_model_metrics_and_improvement(result, dataset, model_dir):
    from crnn.inference import load_model

    model, cfg, _ = load_model(model_dir)
    frames = read_numpy(dataset, split="test", columns=["frames"])["frames"]
    pred = forecast_window(model, frames, cfg.data.in_frames)
    target = frames[:, 1:5].transpose(0, 1, 4, 2, 3)
    want = per_age_metrics(pred.astype(np.float64) * 255, target.astype(np.float64), [15, 20, 25, 30], scale=1.0)
    for k in ("mae", "mse", "ssim"):
        assert result["results"]["model"]["30"][k] == pytest.approx(want[30][k], rel=1e-5)
    ratio = result["headline"]["persistence"]["mse"] / result["headline"]["model"]["mse"]
    assert result["improvement_over_persistence"] == pytest.approx(ratio)


def test_files_written(result):
    files = result["files"]
    with open(files["metrics"]) as fh:
        assert json.load(fh) == result
    with Image.open(files["predictions"]) as im:
        im.load()
        assert im.format == "PNG" and im.mode == "RGB"
        # 3 example series x 3 rows (real, model, persistence) of 32*6-pixel frames, 4 age columns
        assert im.height > 9 * H * 6 and im.width > 4 * W * 6


def _as_pines(result: dict) -> dict:
    """The toy result as the pine simulator's data would have it: with the paper's Table 3 row."""
    from crnn.evaluate import PAPER_AGE

    return {**copy.deepcopy(result), "paper": {**PAPER_TABLE3, "age": PAPER_AGE}}


def test_the_paper_row_is_for_the_pine_simulators_data_only(result):
    """A new user's input: the paper's age-30 row (MAE 8.57, MSE 377.35, measured on its own pines) was
    printed beside the scores of their own photos. Only a pine-simulator dataset's evaluation carries it
    now; the toy series here (like photos, the shapes scene, forecasts) do not, and print no paper row."""
    from crnn.evaluate import is_paper_scene

    assert "paper" not in result
    text = format_table(result)
    assert "377.35" not in text and not any(line.startswith("paper") for line in text.splitlines()), text
    assert "Forecast of age 30:" in text and "is not shown" not in text
    for source, pines in (("simulator pine-1", True), ("simulator pine-2", True), ("simulator shapes-1", False),
                          ("ingested from /home/me/photos", False), ("forecasts of data/pines by m", False), ("", False)):
        assert is_paper_scene({"source": source}) == pines, source
    assert not is_paper_scene({})


def test_format_table(result):
    result = _as_pines(result)
    text = format_table(result)
    lines = text.splitlines()
    for row in ("model", "persistence", "linear", "analog", "paper"):
        assert any(line.startswith(row) for line in lines), row
    for col in ("MAE", "MSE", "PSNR dB", "SSIM", "SNR (ratio)", "SNR dB", "age 30", "age 15"):
        assert col in text
    assert "8.57" in text and "377.35" in text and "322.55 (definition unknown)" in text
    assert f"{result['headline']['persistence']['mse']:.2f}" in text
    assert "MSE per forecast age" in text


@pytest.mark.parametrize("unit, paper", [("years", True), (" Year", True), (None, True), ("months", False),
                                         ("weeks", False)])
def test_format_table_labels_ages_in_another_unit_and_leaves_the_paper_out(result, unit, paper):
    """Photos ingested with --age-unit months: the table says "age 30 months" and does not put the
    paper's age-30-years row beside it (it did, unlabelled). Years (or no unit: a card without one)
    keep the paper's rows."""
    assert result["age_unit"] == "years"  # the toy card has no age_unit: years
    r = _as_pines(result)
    if unit is None:
        del r["age_unit"]  # a metrics.json written before age_unit was recorded
    else:
        r["age_unit"] = unit
    text = format_table(r)
    assert (("377.35" in text) and any(line.startswith("paper") for line in text.splitlines())) == paper
    assert ("Forecast of age 30:" in text) == paper and ("is not shown beside ages" in text) != paper
    if not paper:
        assert f"Forecast of age 30 {unit}:" in text and f"MSE per forecast age (ages in {unit})" in text
        assert f"persistence MSE / model MSE at age 30 {unit}:" in text


def test_non_finite_values_become_none_and_print_as_inf(result):
    assert json_safe({1: float("inf"), "x": [np.float32(2.5), float("nan")]}) == {"1": None, "x": [2.5, None]}
    r = copy.deepcopy(result)
    r["results"]["model"]["30"].update(mse=0.0, mae=0.0, psnr=None, snr=None, snr_db=None, ssim=1.0)
    r["improvement_over_persistence"] = None
    model_line = next(line for line in format_table(r).splitlines() if line.startswith("model "))
    assert model_line.split()[1:] == ["0.00", "0.00", "inf", "1.0000", "inf", "inf"]


# ----------------------------------------------------------------------------- errors
def test_errors(dataset, model_dir, tmp_path):
    with pytest.raises(ValueError, match="'val'"):
        evaluate(model_dir, dataset, split="val")
    with pytest.raises(ValueError, match="'nonesuch'"):
        evaluate(model_dir, dataset, split="nonesuch")

    cfg = _tiny_cfg(height=24)
    small = str(tmp_path / "small")
    save_model_dir(small, build_model(cfg.model), cfg, epoch=0)
    with pytest.raises(ValueError, match=r"32x16x3.*24x16x3"):
        evaluate(small, dataset)

    cfg = _tiny_cfg()
    cfg.data.in_frames = 5  # needs 6 frames; the data has 5
    five = str(tmp_path / "five")
    save_model_dir(five, build_model(cfg.model), cfg, epoch=0)
    with pytest.raises(ValueError, match=r"5 frames per series.*needs 6"):
        evaluate(five, dataset)

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            evaluate(model_dir, dataset, device="cuda")


def test_baseline_model_dir_takes_any_size(dataset, tmp_path):
    cfg = Config(model=ModelConfig(kind="persistence", height=8, width=8))
    path = str(tmp_path / "pers")
    save_model_dir(path, build_model(cfg.model), cfg, epoch=0)
    r = evaluate(path, dataset, split="train")
    assert r["num_series"] == 8 and r["results"]["model"] == r["results"]["persistence"]
    assert r["improvement_over_persistence"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- job
def test_job_main(dataset, model_dir, tmp_path, capsys):
    from jobs import evaluate as job

    out = str(tmp_path / "job-out")
    assert job.main(["--model", model_dir, "--data", dataset, "--out", out, "--num-examples", "2"]) == 0
    text = capsys.readouterr().out
    assert "persistence" in text and "metrics.json" in text and "377.35" not in text  # toy series: no paper row
    assert os.path.exists(os.path.join(out, "metrics.json")) and os.path.exists(os.path.join(out, "predictions.png"))

    # an empty split is a usage error found before any work (exit 2), naming the split
    assert job.main(["--model", model_dir, "--data", dataset, "--split", "val"]) == 2
    assert "'val'" in capsys.readouterr().err


def test_analog_bank_is_capped_and_needs_k_series(dataset, monkeypatch):
    """The bank keeps at most max_bank series and ANALOG_MAX_BYTES of float32 frames (fewer series
    for larger images), and refuses a split with fewer than k series, naming the dataset."""
    import crnn.evaluate as ev

    assert ev.analog_baseline(dataset, ["train"], 4, k=2, max_bank=3).bank.shape[0] == 3
    monkeypatch.setattr(ev, "ANALOG_MAX_BYTES", 5 * 4 * (5 * H * W * C))  # room for 5 series of 5 frames
    assert ev.analog_baseline(dataset, ["train"], 4, k=2).bank.shape[0] == 5
    with pytest.raises(ValueError, match="needs >= 9 series"):
        ev.analog_baseline(dataset, ["train"], 4, k=9)


def test_analog_never_uses_the_evaluated_series(dataset, model_dir):
    """Evaluating the training split: its series are excluded from the analog bank (else the analog
    would be exact by looking itself up); with fewer than k left the analog is skipped, said in the
    result and the table, and the rest of the evaluation stands."""
    import crnn.evaluate as ev

    ids = [str(i) for i in read_numpy(dataset, split="train", columns=["series_id"])["series_id"]]
    assert ev.analog_baseline(dataset, ["train"], 4, k=2, exclude=ids[:3]).bank.shape[0] == len(ids) - 3
    res = evaluate(model_dir, dataset, split="train")
    assert set(res["results"]) == {"model", "persistence", "linear"}
    assert "needs >= 8 series" in res["skipped_baselines"]["analog"]
    text = format_table(res)
    assert "analog: skipped (" in text and not any(ln.startswith("analog ") for ln in text.splitlines())


@pytest.mark.parametrize("h, w", [(10, 16), (32, 8), (11, 11)])
def test_frames_smaller_than_the_ssim_window_are_evaluated(ray_local, tmp_path, h, w):
    """A model trained on a user's small images (under SSIM's 11x11 window in either dimension) is
    scored: every metric but SSIM, which is null in metrics.json and "n/a" in the table (evaluation
    failed at the SSIM step, after training). At 11 px SSIM is a number as before."""
    import ray.data

    rows = [{"series_id": f"toy-{i:02d}", "seed": i, "split": _split(i), "ages": list(AGES),
             "frames": np.ascontiguousarray(_series(i)[:, :h, :w]), "params": {}} for i in range(N_SERIES)]
    batch = rows_to_batch(rows, ())
    ds = ray.data.from_items([{k: v[i] for k, v in batch.items()} for i in range(N_SERIES)])
    splits = {s: sum(_split(i) == s for i in range(N_SERIES)) for s in ("train", "val", "test")}
    data = str(tmp_path / "small")
    publish(lambda d: write_ray_dataset(ds, d), data,
            base_card(num_series=N_SERIES, ages=AGES, height=h, width=w, channels=C, splits=splits, source="small"))
    torch.manual_seed(0)
    cfg = _tiny_cfg(height=h, width=w)
    model = str(tmp_path / "model")
    save_model_dir(model, build_model(cfg.model), cfg, epoch=1)
    r = evaluate(model, data, out=str(tmp_path / "eval"), num_examples=2)
    small = min(h, w) < 11
    with open(tmp_path / "eval" / "metrics.json") as f:
        saved = json.load(f)
    f = read_numpy(data, split="test", columns=["frames"])["frames"].astype(np.float64)
    for name in ("model", "persistence", "linear", "analog"):
        m = saved["results"][name]["30"]
        assert (m["ssim"] is None) == small and m["mse"] > 0 and m["mae"] > 0
    pers = ((f[:, 3] - f[:, 4]) ** 2).mean()  # the age-25 frame as the age-30 forecast
    assert saved["results"]["persistence"]["30"]["mse"] == pytest.approx(pers)
    model_line = next(line for line in format_table(r).splitlines() if line.startswith("model "))
    assert (model_line.split()[4] == "n/a") == small
