"""Mirror test-time augmentation (crnn.mirror.MirrorTTA) through load_model, evaluate, predict and Serve."""

import numpy as np
import pytest
import torch

from crnn.checkpoint import save_model_dir
from crnn.config import load_config
from crnn.inference import forecast_window, load_model
from crnn.mirror import MirrorTTA, mirror, mirror_index, paired_columns
from crnn.model import build_model
from crnn.timeaware import data_summary

PINES = {"width": 16, "scene": "pines", "ages": [10, 15, 20, 25, 30]}


class ColumnBias(torch.nn.Module):
    """Not mirror-equivariant: adds 0.01 * column index to every value (its mirror adds the reverse)."""

    def forward(self, x):
        return x + 0.01 * torch.arange(x.shape[-1], dtype=x.dtype)


def test_mirror_tta_by_hand():
    x = torch.rand(2, 4, 3, 6, 6)
    out = MirrorTTA(ColumnBias(), 3)(x)
    plain = ColumnBias()(x)
    back = mirror(ColumnBias()(mirror(x, 3)), 3)
    keep = torch.as_tensor(paired_columns(6, 3))
    assert torch.allclose(out[..., keep], 0.5 * (plain + back)[..., keep])
    assert torch.equal(out[..., 0], plain[..., 0])                    # column 0 has no partner: plain
    # columns 1..5 pair c <-> 6 - c: the biases 0.01 c and 0.01 (6 - c) average to 0.03 everywhere
    assert torch.allclose(out[..., 1:] - x[..., 1:], torch.full_like(x[..., 1:], 0.03), atol=1e-6)
    # an equivariant model (persistence) is unchanged by TTA
    ident = torch.nn.Identity()
    assert torch.equal(MirrorTTA(ident, 3)(x), x)


def test_extra_arguments_pass_through():
    seen = []

    class TimeAware(torch.nn.Module):
        def forward(self, frames, ages, mask=None):
            seen.append((ages, mask))
            return frames

    x, ages = torch.rand(1, 2, 3, 4, 4), torch.tensor([[1.0, 2.0]])
    assert torch.equal(MirrorTTA(TimeAware(), 1.5)(x, ages, mask="m"), x)
    assert len(seen) == 2 and all(a is ages and m == "m" for a, m in seen)


def _model_dir(tmp_path, name="m", data=PINES, head=0.3, seed=0, path=None):
    cfg = load_config("convlstm-fast", overrides={"model.convlstm.hidden": [4],
                                                  **({"data.path": path} if path else {})})
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    with torch.no_grad():
        model.head.weight.normal_(0, head)                           # not persistence: TTA changes it
    out = str(tmp_path / name)
    save_model_dir(out, model, cfg, epoch=0, data=data_summary(data, 4) if data else None)
    return out


def test_load_model_wraps_about_the_training_datas_axis(tmp_path):
    path = _model_dir(tmp_path)
    plain, _, meta = load_model(path, version=True)
    tta, _, tmeta = load_model(path, version=True, tta="hflip")
    assert isinstance(tta, MirrorTTA) and tta.axis == 8.0 and tmeta["tta"] == "hflip" and meta["tta"] == "none"
    assert tmeta["version"] == meta["version"] + "+hflip"               # other forecasts, another version
    frames = np.random.default_rng(0).integers(0, 255, (3, 5, 32, 16, 3), dtype=np.uint8)
    p, t = forecast_window(plain, frames), forecast_window(tta, frames)
    with torch.no_grad():                                               # by hand, clamped at the end as delivered
        x = torch.as_tensor(frames[:, :4]).permute(0, 1, 4, 2, 3).float() / 255.0
        idx = torch.as_tensor(mirror_index(16, 8))
        a, back = plain(x), plain(x[..., idx])[..., idx]
        expect = torch.cat([a[..., :1], 0.5 * (a[..., 1:] + back[..., 1:])], -1).clamp(0, 1).numpy()
    assert np.allclose(t, expect, atol=1e-6) and not np.allclose(t, p, atol=1e-3)
    assert load_model(path, tta="hflip", mirror_axis=7.5)[0].axis == 7.5  # given: it wins


def test_load_model_names_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="tta='vflip': expected one of none, hflip"):
        load_model(str(tmp_path / "nowhere"), tta="vflip")             # before reading anything
    old = _model_dir(tmp_path, "old", data=None)                        # written before the axis was kept
    with pytest.raises(ValueError, match="old: tta=hflip needs the axis.*mirror_axis"):
        load_model(old, tta="hflip")
    assert isinstance(load_model(old, tta="hflip", mirror_axis=8)[0], MirrorTTA)
    for axis in (16, 7.25, -1):
        with pytest.raises(ValueError, match=f"old: mirror axis {axis}"):
            load_model(old, tta="hflip", mirror_axis=axis)
    with pytest.raises(ValueError, match="mirror axis 8: only used with tta hflip"):
        load_model(old, mirror_axis=8)


def test_evaluate_with_tta_scores_the_augmented_forecast(tiny_dataset, tmp_path, capsys):
    from crnn.evaluate import check_evaluate, evaluate, format_table
    from crnn.shards import read_numpy

    path = _model_dir(tmp_path, path=tiny_dataset)
    plain = evaluate(path, tiny_dataset)
    res = evaluate(path, tiny_dataset, tta="hflip")
    assert plain["tta"] == "none" and "mirror_axis" not in plain
    assert res["tta"] == "hflip" and res["mirror_axis"] == 8.0
    frames = read_numpy(tiny_dataset, split="test", columns=["frames"])["frames"]
    t = forecast_window(load_model(path, tta="hflip")[0], frames)
    target = frames[:, 1:5].transpose(0, 1, 4, 2, 3).astype(np.float64)
    assert res["results"]["model"]["30"]["mse"] == pytest.approx(((t[:, 3] * 255.0 - target[:, 3]) ** 2).mean())
    assert res["results"]["model"]["30"]["mse"] != plain["results"]["model"]["30"]["mse"]
    assert res["results"]["persistence"] == plain["results"]["persistence"]   # baselines as they are
    assert "mirror test-time augmentation (hflip, about pixel column 8.0)" in format_table(res)
    old = _model_dir(tmp_path, "old", data=None, path=tiny_dataset)     # no axis kept: the dataset's
    assert evaluate(old, tiny_dataset, tta="hflip")["mirror_axis"] == 8.0
    for kw, needle in (({"tta": "vflip"}, "tta='vflip'"), ({"mirror_axis": 3.0}, "only used with tta hflip"),
                       ({"tta": "hflip", "mirror_axis": 15.5}, "mirror axis 15.5")):
        with pytest.raises(ValueError, match=needle):
            check_evaluate(path, tiny_dataset, **kw)


def test_evaluate_job_flags(tiny_dataset, tmp_path, capsys):
    import jobs.evaluate as job

    path = _model_dir(tmp_path, path=tiny_dataset)
    assert job.main(["--model", path, "--data", tiny_dataset, "--tta", "hflip"]) == 0
    assert "about pixel column 8.0" in capsys.readouterr().out
    for argv, needle in ((["--tta", "hflip", "--mirror-axis", "2.2"], "mirror axis 2.2"),
                         (["--mirror-axis", "8"], "only used with tta hflip")):
        assert job.main(["--model", path, "--data", tiny_dataset, *argv]) == 2
        assert needle in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:                                # argparse's choices
        job.main(["--model", path, "--data", tiny_dataset, "--tta", "x"])
    assert e.value.code == 2 and "invalid choice: 'x'" in capsys.readouterr().err


def test_predict_plan_and_forecaster_use_the_axis(tiny_dataset, tmp_path):
    from crnn.predict import BatchForecaster, plan_predict
    from crnn.shards import read_numpy

    path = _model_dir(tmp_path, path=tiny_dataset)
    plan = plan_predict(path, tiny_dataset, str(tmp_path / "out"), tta="hflip")
    assert plan["mirror_axis"] == 8.0 and plan["args"]["tta"] == "hflip"
    assert plan_predict(path, tiny_dataset, str(tmp_path / "out"))["mirror_axis"] is None
    with pytest.raises(ValueError, match="mirror axis 99"):
        plan_predict(path, tiny_dataset, str(tmp_path / "out"), tta="hflip", mirror_axis=99)
    with pytest.raises(ValueError, match="tta='flip'"):
        plan_predict(path, tiny_dataset, str(tmp_path / "out"), tta="flip")
    batch = read_numpy(tiny_dataset, split="test")
    got = BatchForecaster(path, tta="hflip", mirror_axis=8.0)(batch)["frames"]
    want = BatchForecaster(path)(batch)["frames"]
    expect = forecast_window(load_model(path, tta="hflip")[0], batch["frames"])
    assert np.array_equal(got, np.clip(np.rint(expect * 255.0), 0, 255).astype(np.uint8).transpose(0, 1, 3, 4, 2))
    assert not np.array_equal(got, want)


def test_serve_engine_and_job_check(tiny_dataset, tmp_path, capsys):
    import jobs.serve as job
    from crnn.serve.model import ForecastEngine
    from crnn.serve.settings import ServeSettings

    path = _model_dir(tmp_path, path=tiny_dataset)
    engine = ForecastEngine.load(path, "cpu", 1, tta="hflip")
    plain = ForecastEngine.load(path, "cpu", 1)
    assert engine.version == plain.version + "+hflip" and engine.info()["tta"] == "hflip"
    x = np.random.default_rng(1).integers(0, 255, (2, 4, 32, 16, 3), dtype=np.uint8)
    assert not np.array_equal(engine.forecast(x, [1, 1])[0], plain.forecast(x, [1, 1])[0])
    s = ServeSettings.model_validate({"model": path, "tta": "hflip", "mirror_axis": 8})
    assert s.replica_args()["tta"] == "hflip" and s.replica_args()["mirror_axis"] == 8.0
    with pytest.raises(ValueError, match="tta"):
        ServeSettings.model_validate({"model": path, "tta": "vflip"})
    old = _model_dir(tmp_path, "old", data=None, path=tiny_dataset)
    assert job.main(["--model", old, "--tta", "hflip", "--ray-num-cpus", "1"]) == 2   # before Ray starts
    assert "needs the axis" in capsys.readouterr().err


def test_evaluate_job_warns_once_when_the_models_and_the_datasets_axes_differ(tiny_dataset, tmp_path, capsys):
    """The up-front check and the run both resolve the axis; the job says a disagreement once."""
    import warnings

    import jobs.evaluate as job
    from crnn.mirror import MirrorAxisWarning

    path = _model_dir(tmp_path, data={**PINES, "scene": "shapes"}, path=tiny_dataset)   # axis 7.5; data 8
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert job.main(["--model", path, "--data", tiny_dataset, "--tta", "hflip"]) == 0
    said = [w for w in seen if issubclass(w.category, MirrorAxisWarning)]
    assert len(said) == 1 and "column 7.5, this dataset about 8.0" in str(said[0].message)
    assert "(to choose: --mirror-axis, or Serve's mirror_axis)" in str(said[0].message)  # the option, by its name
    assert "about pixel column 7.5" in capsys.readouterr().out
