"""benchmarks/saturation.py: the diagnosis of a CRNN whose hard-sigmoid gates are stuck."""

import re

import torch

from benchmarks import saturation
from crnn.checkpoint import save_model_dir
from crnn.config import load_config
from crnn.model import build_model


def test_dead_gates_and_constant_forecasts_are_reported(tiny_dataset, tmp_path, capsys):
    cfg = load_config("quick", overrides={"data.path": tiny_dataset, "model.conv_filters": [4, 8],
                                          "model.lstm_units": 16})
    torch.manual_seed(0)
    alive = build_model(cfg.model)
    dead = build_model(cfg.model)
    with torch.no_grad():  # every gate pre-activation far beyond hard-sigmoid's +-2.5
        dead.lstm.kernel.zero_()
        dead.lstm.recurrent_kernel.zero_()
        dead.lstm.bias.fill_(50.0)
    save_model_dir(str(tmp_path / "alive"), alive, cfg, epoch=0)
    save_model_dir(str(tmp_path / "dead"), dead, cfg, epoch=0)
    saturation.main(["--data", tiny_dataset, str(tmp_path / "alive"), str(tmp_path / "dead")])
    out = capsys.readouterr().out
    alive_part, dead_part = out.split(str(tmp_path / "dead"))
    assert re.search(r"i: 100% dead, mean 1\.00; f: 100% dead, mean 1\.00; o: 100% dead, mean 1\.00", dead_part)
    assert "spread of forecasts across series / of true frames: 0.00" in dead_part
    spread = float(re.search(r"true frames: ([0-9.]+)", alive_part).group(1))
    assert spread > 0.01  # a fresh model's forecasts still depend on the series
    assert re.search(r"MSE at the last age \(4 val series\): [0-9.]+", dead_part)
