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
