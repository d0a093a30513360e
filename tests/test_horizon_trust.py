"""benchmarks/horizon_trust.py: importable without running, and a tiny run's table."""

import math

import numpy as np
import torch


def test_import_runs_nothing_and_mse_matches_uint8_delivery():
    from benchmarks import horizon_trust as ht  # importing must not simulate or train

    truth = np.full((1, 2, 2, 2, 3), 100, np.uint8)
    pred = torch.full((1, 2, 3, 2, 2), 101 / 255)  # rounds to 101: error 1 per pixel
    assert ht.mse_per_age(pred, truth) == [1.0, 1.0]


def test_tiny_run_reports_every_forecaster_per_age(tmp_path):
    from benchmarks import horizon_trust as ht
    from crnn.storage import read_json

    out = str(tmp_path / "trust.json")
    res = ht.main(["30", "1", out])
    assert set(res) >= {"persistence", "linear", *ht.VARIANTS}
    assert all(len(res[k]) == 5 and all(math.isfinite(v) and v >= 0 for v in res[k])
               for k in ("persistence", "linear", *ht.VARIANTS))
    assert read_json(out) == res
