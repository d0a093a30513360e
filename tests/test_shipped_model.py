"""The model shipped in ``models/pine-convlstm``: it loads from its directory alone, and the scores its
card and its recorded evaluations quote are what it scores -- recomputed here on the default dataset's
384 test trees, simulated again from their seeds (no dataset on disk needed), through the same
``forecast_window`` and ``per_age_metrics`` that ``jobs/evaluate.py`` uses (the model and the persistence
and linear baselines; the analog row needs the 3,270 training trees and is checked only against the
card). The project README's figures for it are tied to the same files."""
import hashlib
import json
import os
import re

import numpy as np
import pytest

from crnn.generate import generate_rows
from crnn.inference import forecast_window, load_model
from crnn.metrics import per_age_metrics
from crnn.model import ModelConfig, build_model
from crnn.pine import DEFAULT_AGES
from crnn.shards import split_for_index
from tests.helpers import ROOT

MODEL = os.path.join(ROOT, "models", "pine-convlstm")
#: the default dataset: ``jobs/generate.py --num-series 3847 --seed 0 --out data/pines`` (README)
DEFAULT_NUM_SERIES, DEFAULT_SEED = 3847, 0
AGES = (15, 20, 25, 30)


def _recorded(tta: str) -> dict:
    with open(os.path.join(MODEL, "eval-hflip" if tta == "hflip" else "eval", "metrics.json")) as f:
        return json.load(f)


def _text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _card() -> str:
    return _text(os.path.join(MODEL, "README.md"))


@pytest.fixture(scope="module")
def test_trees() -> np.ndarray:
    """(384, 5, 32, 16, 3) uint8: the default dataset's test split, ages 10..30."""
    idx = [i for i in range(DEFAULT_NUM_SERIES) if split_for_index(i) == "test"]
    rows = generate_rows(idx, base_seed=DEFAULT_SEED, ages=DEFAULT_AGES, height=32, width=16)
    assert len(rows) == 384 and all(r["split"] == "test" for r in rows)
    return np.stack([r["frames"] for r in rows])


def _scores(model, frames: np.ndarray) -> dict:
    pred = forecast_window(model, frames, len(AGES))
    target = frames[:, 1:len(AGES) + 1].transpose(0, 1, 4, 2, 3).astype(np.float64)
    return per_age_metrics(pred.astype(np.float64) * 255.0, target, AGES, scale=1.0)


def test_it_loads_from_its_directory_alone():
    model, cfg, meta = load_model(MODEL)
    assert cfg.model.kind == "convlstm"
    assert (cfg.model.height, cfg.model.width, cfg.model.channels, cfg.data.in_frames) == (32, 16, 3, 4)
    assert sum(p.numel() for p in model.parameters()) == 1_066_508
    assert meta["data"]["mirror_axis"] == 8.0  # --tta hflip mirrors about the trunk
    assert meta["data"]["ages"] == [10.0, 15.0, 20.0, 25.0, 30.0]


@pytest.mark.parametrize("tta", ["none", "hflip"])
def test_its_recorded_test_scores_are_what_it_scores(test_trees, tta):
    rec = _recorded(tta)
    assert (rec["split"], rec["num_series"], rec["tta"], rec["ages"]) == ("test", 384, tta, list(AGES))
    assert (rec["model"], rec["data"]) == ("models/pine-convlstm", "data/pines")  # this folder's evaluation
    model, _, _ = load_model(MODEL, tta=tta)
    got = _scores(model, test_trees)
    for age in AGES:
        want = rec["results"]["model"][str(age)]
        assert got[age]["mse"] == pytest.approx(want["mse"], rel=1e-3), (tta, age)
        assert got[age]["mae"] == pytest.approx(want["mae"], rel=1e-3), (tta, age)
        assert got[age]["ssim"] == pytest.approx(want["ssim"], abs=1e-3), (tta, age)
    assert got[30]["mse"] < rec["results"]["persistence"]["30"]["mse"] / 10


@pytest.mark.parametrize("kind", ["persistence", "linear"])
def test_its_recorded_baseline_rows_are_these_trees(test_trees, kind):
    """The recorded persistence and linear rows (every age, both evaluations) are these 384 trees'
    -- the baselines the card's table quotes beside the model."""
    got = _scores(build_model(ModelConfig(kind=kind, height=32, width=16, channels=3)), test_trees)
    for tta in ("none", "hflip"):  # --tta mirrors the model only; the baselines are scored as they are
        rec = _recorded(tta)["results"][kind]
        for age in AGES:  # evaluate scores them through float32 [0, 1], as here
            for key in ("mse", "mae", "ssim"):
                assert got[age][key] == pytest.approx(rec[str(age)][key], rel=1e-6), (kind, tta, age, key)


#: the card's score rows: their first cell, and (tta, row of the recorded ``results``) they quote
CARD_ROWS = {"this model": ("none", "model"), "this model, `--tta hflip`": ("hflip", "model"),
             "analog forecast": ("none", "analog"), "persistence": ("none", "persistence"),
             "linear extrapolation": ("none", "linear")}


def _card_table(card: str) -> dict[str, list[str]]:
    """{row label: its cells} of the card's score table (the first cell up to any parenthesis)."""
    rows = {}
    for line in card.splitlines():
        cells = [c.strip().strip("*").strip() for c in line.strip().strip("|").split("|")]
        label = cells[0].split(" (")[0]
        if label in CARD_ROWS:
            rows[label] = cells[1:]
    return rows


def test_its_card_quotes_the_recorded_scores_and_its_weights():
    card = _card()
    rows = _card_table(card)
    assert set(rows) == set(CARD_ROWS)
    for label, (tta, key) in CARD_ROWS.items():  # every figure, in its row and column
        rec = _recorded(tta)["results"][key]
        want = [f"{rec[str(a)]['mse']:.2f} / {rec[str(a)]['mae']:.2f} / {rec[str(a)]['ssim']:.3f}" for a in AGES]
        assert rows[label] == want + [f"{rec['30']['mse_frame01']:.2f}"], label
    for name in re.findall(r"`([\w./-]+\.(?:json|png|yaml|pt))`", card):  # the files it names are here
        assert (os.path.isfile(os.path.join(MODEL, name))
                or all(os.path.isfile(os.path.join(MODEL, d, name)) for d in ("eval", "eval-hflip"))), name
    with open(os.path.join(MODEL, "model.pt"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert f"sha256 {digest}" in card  # a model swapped without its card fails here


def test_the_project_readme_quotes_its_recorded_scores():
    """The README's section on the shipped model and its rows in the forecast-quality table quote the
    recorded evaluations (a model updated without its README fails here)."""
    readme = _text(os.path.join(ROOT, "README.md"))
    plain, mirror = (_recorded(t)["results"] for t in ("none", "hflip"))
    section = readme.split("## The trained model in `models/`", 1)[1].split("\n## ", 1)[0]
    section = " ".join(section.split())  # the paragraph's line breaks as spaces

    def fig(r, age=30, mse="{:.2f}"):
        return f"{mse.format(r[str(age)]['mse'])} / {r[str(age)]['mae']:.2f} / {r[str(age)]['ssim']:.3f}"

    m = plain["model"]["30"]
    assert (f"**MSE {m['mse']:.2f} / MAE {m['mae']:.2f} / SSIM {m['ssim']:.3f}, {fig(mirror['model'])} "
            f"with the test-time mirror**") in section
    assert (f"persistence's {plain['persistence']['30']['mse']:.1f} and the analog forecast's "
            f"{plain['analog']['30']['mse']:.1f}") in section
    lines = readme.splitlines()
    at = [i for i, line in enumerate(lines) if line.startswith("|") and "`models/pine-convlstm`, in the repository" in line]
    assert len(at) == 1, "one row of the quality table names the shipped model"
    for line, r in ((lines[at[0]], plain["model"]), (lines[at[0] + 1], mirror["model"])):  # the mirror's row next
        cells = [c.strip().strip("*").strip() for c in line.strip().strip("|").split("|")][1:]
        assert cells == [fig(r, a, "{:.1f}") for a in AGES] + [f"{r['30']['mse_frame01']:.2f}"], line[:60]
