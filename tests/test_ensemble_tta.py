"""benchmarks/ensemble_tta.py: ensembles and mirror test-time augmentation."""

import numpy as np
import pytest
import torch

from benchmarks import ensemble_tta as et
from crnn.checkpoint import save_model_dir
from crnn.config import load_config
from crnn.model import build_model


def test_per_age_mse_rounds_like_delivery():
    frames = np.zeros((1, 2, 2, 2, 3), np.uint8)
    frames[0, 1] = 10
    pred = np.full((1, 1, 3, 2, 2), 10.4 / 255)        # rounds to 10: no error
    assert et.per_age_mse(pred, frames, 1) == [0.0]
    assert et.per_age_mse(np.zeros_like(pred), frames, 1) == [100.0]


def _model(tmp_path, name, data, seed, head=0.0):
    cfg = load_config("convlstm-fast", overrides={"data.path": data, "model.convlstm.hidden": [4]})
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    with torch.no_grad():
        model.head.weight.normal_(0, head)
    save_model_dir(str(tmp_path / name), model, cfg, epoch=0)
    return str(tmp_path / name)


def test_persistence_like_models_gain_nothing_and_ensembles_compare(tiny_dataset, tmp_path, capsys):
    # an untrained residual ConvLSTM is persistence, which commutes with the mirror: TTA changes
    # nothing, two copies are perfectly correlated; a model with a random head is not
    zero = _model(tmp_path, "zero", tiny_dataset, 0)
    res = et.measure([zero, _model(tmp_path, "zero2", tiny_dataset, 1)], tiny_dataset)
    assert res["split"] == "test" and res["series"] == 8 and res["mirror_column"] == 8
    r = res["models"][zero]
    assert r["plain"] == r["mirror_tta"] == r["mirror_only"] and len(r["plain"]) == 4
    assert res["ensemble"]["plain"] == r["plain"]
    assert list(res["error_correlation"].values()) == [pytest.approx(1.0)]
    noisy = _model(tmp_path, "noisy", tiny_dataset, 2, head=0.3)
    res = et.measure([zero, noisy], tiny_dataset, mirror_column=3)
    assert res["models"][noisy]["mirror_tta"] != res["models"][noisy]["plain"]
    # its augmented forecast is what jobs/evaluate.py --tta hflip scores (the same MirrorTTA)
    from crnn.evaluate import evaluate

    one = et.measure([noisy], tiny_dataset)
    ev = evaluate(noisy, tiny_dataset, tta="hflip", mirror_axis=one["mirror_column"])
    assert one["mirror_column"] == 8.0
    assert one["models"][noisy]["mirror_tta"][-1] == pytest.approx(ev["results"]["model"]["30"]["mse"], abs=1.0)
    assert list(res["error_correlation"].values())[0] < 0.999
    assert et.main(["--data", tiny_dataset, zero, noisy]) == 0
    assert "mean of the 2 models" in capsys.readouterr().out


def test_cli_names_bad_input_before_forecasting(tiny_dataset, tmp_path, capsys, monkeypatch):
    zero = _model(tmp_path, "zero", tiny_dataset, 0)
    monkeypatch.setattr(et, "forecast_window", lambda *a, **k: pytest.fail("forecast before the checks"))
    for argv, needle in ([["--data", tiny_dataset, zero, "--mirror-column", "16"], "mirror column 16"],
                         [["--data", tiny_dataset, zero, "--mirror-column", "7.25"], "mirror column 7.25"],
                         [["--data", str(tmp_path / "none"), zero], "none"],
                         [["--data", tiny_dataset, str(tmp_path / "nomodel")], "nomodel"]):
        with pytest.raises(SystemExit):
            et.main(argv)
        assert needle in capsys.readouterr().err
