"""benchmarks/recipes.py: every recipe resolves to a valid config, and the time-to-quality verdict."""

import json

import pytest

from crnn.config import load_config


def _recipes():
    from benchmarks import recipes

    return recipes


def test_every_recipe_is_a_valid_config():
    rec = _recipes()
    for name, (preset, ov) in rec.RUNS.items():
        cfg = load_config(preset, overrides=ov)  # a misspelt preset or field raises, naming it
        cfg.model.validate()  # and a value outside a field's choices or range
        cfg.train.validate()
    assert load_config(rec.RUNS["paper-warmup"][0]).train.batch_size == 16  # the reference is the paper's


def _run(mse, train_s, wall_s):
    return {"test": {"mse": mse}, "train_epochs_s": train_s, "wall_s": wall_s}


def test_time_to_quality_verdict():
    rec = _recipes()
    summary = {"paper-warmup": _run(120.0, 2400.0, 2500.0),
               "quick-good": _run(110.0, 100.0, 130.0),     # better and 1/24 of the time
               "quick-bad": _run(130.0, 60.0, 80.0),        # fast but worse
               "slow-good": _run(100.0, 600.0, 620.0)}      # better but 1/4 of the time
    v = rec.time_to_quality(summary, "paper-warmup")
    assert set(v) == {"quick-good", "quick-bad", "slow-good"}
    assert v["quick-good"] == {"reached": True, "test_mse": 110.0, "reference_test_mse": 120.0,
                               "train_time_ratio": round(100 / 2400, 4), "wall_time_ratio": 0.052,
                               "goal_met": True}
    assert v["quick-bad"]["reached"] is False and v["quick-bad"]["goal_met"] is False
    assert v["slow-good"]["reached"] is True and v["slow-good"]["goal_met"] is False
    assert rec.time_to_quality(summary, "absent") == {}


def test_unknown_run_is_named(capsys):
    rec = _recipes()
    with pytest.raises(SystemExit):
        rec.main(["--data", "d", "--out", "o", "--runs", "strong-fast,nope"])
    assert "nope" in capsys.readouterr().err


def test_resume_keeps_finished_runs_without_starting_ray(tmp_path, capsys, monkeypatch):
    rec = _recipes()
    import crnn.runtime

    monkeypatch.setattr(crnn.runtime, "init_ray", lambda **kw: pytest.fail("Ray started for finished runs"))
    f = tmp_path / "recipes.json"
    f.write_text(json.dumps({"paper-warmup": _run(120.0, 2400.0, 2500.0), "strong-fast": _run(105.0, 100.0, 125.0),
                             "time_to_quality": {"stale": {}}}))
    out = rec.main(["--data", "d", "--out", str(tmp_path / "o"), "--device", "cpu", "--resume",
                    "--runs", "strong-fast,paper-warmup", "--json", str(f)])
    assert out["time_to_quality"]["strong-fast"]["goal_met"] is True
    assert "stale" not in out["time_to_quality"]
    text = capsys.readouterr().out
    assert "skip strong-fast" in text and "skip paper-warmup" in text and "goal (<= 1/20) met" in text


def test_bench_step_times_a_presets_optimizers_side_by_side(capsys):
    """benchmarks/bench_step.py --preset demo --muon: the preset's model (its AdamW as the loop/foreach/
    fused baselines) and train.optimizer=muon, one line each with a positive rate; overrides apply."""
    from benchmarks import bench_step

    bench_step.main(["--preset", "demo", "--batch", "2", "--steps", "1", "--rounds", "1", "--muon",
                     "model.convlstm.hidden=8,8"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("demo model (convlstm, fp32), batch 2")
    rows = {line.split("  ")[1].strip(): float(line.split()[-3]) for line in out[1:] if "series/s" in line}
    assert set(rows) == {"loop", "foreach", "fused (make_optimizer)", "muon (MuonAdamW)"}
    assert all(r > 0 for r in rows.values())
    with pytest.raises(KeyError, match="nopreset"):
        bench_step.main(["--preset", "nopreset"])
