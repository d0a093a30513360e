"""benchmarks/error_anatomy.py: where a forecaster's error sits."""

import numpy as np
import pytest
import torch

from benchmarks import error_anatomy
from crnn.checkpoint import save_model_dir
from crnn.config import load_config
from crnn.model import build_model


def _frames(n=4, h=4, w=2):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_anatomy_values_by_hand():
    truth = np.zeros((2, 4, 2, 3), np.uint8)
    last = truth.copy()
    last[0, 1, 0] = 5                                   # series 0, row 1 changed since the last input
    pred = truth.copy()
    pred[0, 1, 0, 0] = 10                               # error 100 on one value of row 1, series 0
    pred[1, 3, 1, :] = 2                                # error 4 on three values of row 3, series 1
    a = error_anatomy.anatomy(pred, truth, last, reference_series_mse=np.array([3.0, 1.0]))
    total = 100 + 12
    assert a["mse"] == pytest.approx(total / truth.size)
    assert a["by_row"] == pytest.approx([0, 100 / 12, 0, 12 / 12])          # per row: 2 series x 2 cols x 3
    assert a["series_mse"] == pytest.approx([100 / 24, 12 / 24])
    assert a["changed_fraction"] == pytest.approx(1 / 16)
    assert a["changed_share"] == pytest.approx(100 / total)
    # the worst 1 % of the 48 values is the single worst one (at least one value)
    assert a["top_value_share"]["0.01"] == pytest.approx(100 / total)
    assert a["top_value_share"]["0.2"] == pytest.approx(1.0)
    assert a["worst_decile_share"] == pytest.approx(100 / total)
    assert a["corr_with_change"] == pytest.approx(1.0)


def test_anatomy_of_a_perfect_forecast_and_bad_shapes():
    f = _frames()
    a = error_anatomy.anatomy(f, f, f)
    assert a["mse"] == 0 and a["changed_share"] == 0 and a["top_value_share"]["0.05"] == 0
    assert "corr_with_change" not in a
    with pytest.raises(ValueError, match=r"one shape, got \(4, 4, 2, 3\), \(3, 4, 2, 3\)"):
        error_anatomy.anatomy(f, f[:3], f)
    with pytest.raises(ValueError, match="one shape"):
        error_anatomy.anatomy(f[0], f[0], f[0])


def test_untrained_residual_model_is_persistence(tiny_dataset, tmp_path, capsys):
    # a residual ConvLSTM starts with a zero head: its forecast is the last frame, so its anatomy is
    # persistence's, value for value; the headline MSE is the evaluation's
    cfg = load_config("convlstm-fast", overrides={"data.path": tiny_dataset, "model.convlstm.hidden": [4]})
    torch.manual_seed(0)
    save_model_dir(str(tmp_path / "m"), build_model(cfg.model), cfg, epoch=0)
    res = error_anatomy.measure([str(tmp_path / "m")], tiny_dataset)
    assert res["split"] == "test" and res["series"] == 8 and res["step"] == 4
    pers, model = res["models"]["persistence"], res["models"][str(tmp_path / "m")]
    assert model["series_mse"] == pers["series_mse"] and model["by_row"] == pers["by_row"]
    assert model["changed_share"] == pytest.approx(1.0) and model["corr_with_change"] == pytest.approx(1.0)
    assert len(model["by_row"]) == 32
    assert error_anatomy.main(["--data", tiny_dataset, str(tmp_path / "m"),
                               "--json", str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    assert f"- {tmp_path / 'm'}: MSE {pers['mse']:.2f}" in out and "by row band" in out
    assert (tmp_path / "a.json").exists()


def test_cli_names_a_bad_model_before_reading_frames(tiny_dataset, tmp_path, capsys):
    with pytest.raises(SystemExit):
        error_anatomy.main(["--data", tiny_dataset, str(tmp_path / "nope")])
    assert "nope" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least one model"):
        error_anatomy.measure([], tiny_dataset)
    with pytest.raises(SystemExit):                     # --data names the card file, not the dataset
        error_anatomy.main(["--data", f"{tiny_dataset}/dataset.json", str(tmp_path / "nope")])
    assert "Traceback" not in capsys.readouterr().err


def test_transitions_partition_the_pixels_by_hand():
    bg, green, grey, brown = (236, 240, 244), (40, 120, 40), (128, 128, 128), (110, 70, 40)
    last = np.full((1, 3, 4, 3), bg, np.uint8)            # 12 pixels, mostly backdrop
    truth = last.copy()
    truth[0, 0, 0] = green                                # appeared (growth)
    last[0, 0, 1] = green                                 # vanished (shed)
    last[0, 1, 0], truth[0, 1, 0] = green, grey           # greyed (a branch dies)
    last[0, 1, 1], truth[0, 1, 1] = green, brown          # changed, not to grey
    last[0, 2, 0], truth[0, 2, 0] = brown, (112, 72, 42)  # unchanged within BG_TOL
    masks = error_anatomy.transitions(last, truth)
    where = {k: [tuple(int(i) for i in ij) for ij in zip(*np.nonzero(m[0]))] for k, m in masks.items()}
    assert where == {"background": [(0, 2), (0, 3), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)],
                     "appeared": [(0, 0)], "vanished": [(0, 1)],
                     "greyed": [(1, 0)], "changed": [(1, 1)], "unchanged": [(2, 0)]}
    # a grey object staying grey but shifting colour is "changed", not "greyed"; grey -> green too
    last2, truth2 = last.copy(), truth.copy()
    last2[0, 1, 0], truth2[0, 1, 0] = grey, (90, 90, 90)
    last2[0, 1, 1], truth2[0, 1, 1] = grey, green
    m2 = error_anatomy.transitions(last2, truth2)
    assert not m2["greyed"].any() and m2["changed"][0, 1, 0] and m2["changed"][0, 1, 1]
    # the backdrop is each series' own most frequent colour (a dark scene works the same way)
    dark_last, dark_truth = 255 - last, 255 - truth
    both = error_anatomy.transitions(np.concatenate([last, dark_last]), np.concatenate([truth, dark_truth]))
    assert both["appeared"][1, 0, 0] and both["vanished"][1, 0, 1] and both["background"][1, 2, 1]


def test_anatomy_error_shares_by_transition():
    bg, green, grey = (236, 240, 244), (40, 120, 40), (128, 128, 128)
    last = np.full((1, 2, 2, 3), bg, np.uint8)
    truth = last.copy()
    truth[0, 0, 0] = green                                # appeared
    last[0, 1, 1], truth[0, 1, 1] = green, grey           # greyed
    pred = truth.astype(np.int16)
    pred[0, 0, 0, 1] += 10                                # 100 on the appeared pixel
    pred[0, 1, 1, :] += 2                                 # 3 x 4 on the greyed pixel
    pred[0, 0, 1, 0] -= 1                                 # 1 on a background pixel
    a = error_anatomy.anatomy(pred.astype(np.uint8), truth, last)
    t, total = a["transitions"], 100 + 12 + 1
    assert set(t) == {"background", "appeared", "vanished", "greyed", "changed", "unchanged"}
    assert sum(v["pixels"] for v in t.values()) == pytest.approx(1.0)
    assert sum(v["share"] for v in t.values()) == pytest.approx(1.0)
    assert t["appeared"] == pytest.approx({"pixels": 0.25, "share": 100 / total, "mse": 100 / 3})
    assert t["greyed"] == pytest.approx({"pixels": 0.25, "share": 12 / total, "mse": 4.0})
    assert t["background"] == pytest.approx({"pixels": 0.5, "share": 1 / total, "mse": 1 / 6})
    assert t["vanished"] == {"pixels": 0.0, "share": 0.0, "mse": 0.0}


def test_transitions_and_anatomy_refuse_what_they_would_mislabel():
    bg = (236, 240, 244)
    last = np.full((1, 2, 2, 3), bg, np.uint8)
    truth = last.copy()
    last[0, 0, 0], truth[0, 0, 0] = (100, 100, 125), (100, 100, 124)   # crosses the grey line by 1 level
    masks = error_anatomy.transitions(last, truth)
    assert masks["unchanged"][0, 0, 0] and not masks["greyed"].any()     # greyed needs a real change
    for bad, match in [(last.astype(np.float32) / 255, "uint8"), (last[0], r"\(N, H, W, C\)"),
                       (last.astype(np.uint16), "uint8")]:
        with pytest.raises(ValueError, match=match):
            error_anatomy.transitions(bad, truth)
    with pytest.raises(ValueError, match="one shape"):
        error_anatomy.transitions(last, truth[:, :1])
    with pytest.raises(ValueError, match="pred must be uint8"):
        error_anatomy.anatomy(truth.astype(np.float64), truth, last)
    with pytest.raises(ValueError, match="N = 0"):
        error_anatomy.anatomy(truth[:0], truth[:0], last[:0])
